"""Text helpers shared by every full-text index: Chinese + English tokenization for FTS5.

FTS5's ``unicode61`` tokenizer treats a run of Chinese characters as one token, and
``trigram`` cannot match one or two characters. So the text we index is rewritten
first: each run of CJK characters becomes its single characters plus its bigrams,
other words are kept (lower-cased). A query is rewritten the same way: a CJK run
becomes a phrase of its bigrams (or its single character), so ``部署``, ``署``
and ``部署流程`` all match, and so do English words and prefixes.
"""
from __future__ import annotations

import html
import re
import string

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_]+", re.UNICODE)
_CJK_RUN = re.compile(rf"^[{_CJK}]+$")
_CJK_RUNS = re.compile(rf"[{_CJK}]+")
_ASCII_LETTERS = string.ascii_letters.encode()


def letter_counts(text: str) -> tuple[int, int]:
    """(CJK characters, ASCII letters) in ``text``: what tells a Chinese text from an English one.

    Counted in C, since it runs for every search candidate and every embedded text: bytes.translate
    for the ASCII letters, one regex over runs for the CJK ones (a text without non-ASCII characters
    skips it)."""
    ascii_only = text.encode("ascii", "ignore")
    latin = len(ascii_only) - len(ascii_only.translate(None, _ASCII_LETTERS))
    cjk = sum(map(len, _CJK_RUNS.findall(text))) if len(ascii_only) < len(text) else 0
    return cjk, latin


def _cjk_grams(run: str) -> list[str]:
    grams = list(run)
    grams += [run[i:i + 2] for i in range(len(run) - 1)]
    return grams


def index_text(text: str) -> str:
    """The form of ``text`` stored in an FTS5 (unicode61) column."""
    out: list[str] = []
    for tok in _TOKEN.findall(text or ""):
        if _CJK_RUN.match(tok):
            out.extend(_cjk_grams(tok))
        else:
            out.append(tok.lower())
    return " ".join(out)


def query_terms(query: str) -> list[str]:
    """The words of a query as the user meant them (for highlighting)."""
    return [t for t in _TOKEN.findall(query or "")]


def fts_query(query: str, *, mode: str = "and", prefix: bool = True) -> str | None:
    """An FTS5 MATCH expression for a user's query, or None when it has no searchable word.

    Every word is quoted (no FTS5 syntax leaks through); ``mode`` joins words with AND or OR.
    """
    parts: list[str] = []
    for tok in _TOKEN.findall(query or ""):
        if _CJK_RUN.match(tok):
            grams = [tok] if len(tok) == 1 else [tok[i:i + 2] for i in range(len(tok) - 1)]
            parts.append('"' + " ".join(grams) + '"')
        else:
            word = tok.lower().replace('"', '""')
            parts.append(f'"{word}"' + ("*" if prefix else ""))
    if not parts:
        return None
    return f" {mode.upper()} ".join(parts)


def fts_any(query: str) -> str | None:
    """A loose FTS5 MATCH expression for ranked retrieval (BM25): any word of the query.

    A Chinese run longer than two characters counts by its character pairs, so a
    paraphrase that shares some of them still matches; the more it shares, the
    better it ranks.
    """
    return " OR ".join(fts_any_parts(query)) or None


# Words that say how a question is asked, not what it is about: left out of ranked retrieval
# (``fts_any_parts``), where they would match most texts. A CJK gram is left out when all its
# characters are such function characters (什么, 怎么, 多少, 可以 …).
STOPWORDS = frozenset("""a an and are as at be been but by can could did do does for from had has have how i if in
into is it its me my no not of on or our should so than that the their them then there these they this to
us was we were what when where which who whom why will with would you your""".split())
_FUNCTION_CHARS = frozenset("的了吗呢吧啊是什么怎样哪些个多少久可以能如何为有没在和与及或我你他她它们这那就都也还要会把被让给对从到该请")


def fts_any_parts(query: str) -> list[str]:
    """The terms ``fts_any`` joins with OR, each a quoted word (``"word"*``, a prefix) or CJK gram (``"部署"``).

    Question words (:data:`STOPWORDS`, one-letter words, CJK grams of function characters only)
    are left out unless nothing else remains."""
    parts: list[str] = []
    dropped: list[str] = []
    for tok in _TOKEN.findall(query or ""):
        grams = [tok[i:i + 2] for i in range(len(tok) - 1)] if _CJK_RUN.match(tok) and len(tok) > 2 else [tok]
        for g in grams:
            weak = (g.lower() in STOPWORDS or (len(g) == 1 and g.isalpha())) if not _CJK_RUN.match(g) \
                else all(c in _FUNCTION_CHARS for c in g)
            (dropped if weak else parts).extend(p for p in (fts_query(g),) if p)
    return list(dict.fromkeys(parts or dropped))


def snippet(text: str, query: str, *, width: int = 120, mark: tuple[str, str] = ("<mark>", "</mark>")) -> str:
    """An HTML-escaped excerpt of ``text`` around the first hit, hits wrapped in ``mark``."""
    terms = sorted({t for t in query_terms(query) if t}, key=len, reverse=True)
    if not terms:
        return html.escape(text[:width])
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    first = pattern.search(text)
    start = 0 if first is None else max(0, first.start() - width // 3)
    end = min(len(text), start + width)
    piece = text[start:end]
    out, pos = [], 0
    for m in pattern.finditer(piece):
        out.append(html.escape(piece[pos:m.start()]))
        out.append(mark[0] + html.escape(m.group(0)) + mark[1])
        pos = m.end()
    out.append(html.escape(piece[pos:]))
    return ("…" if start > 0 else "") + "".join(out) + ("…" if end < len(text) else "")


def estimate_tokens(text: str) -> int:
    """A quick token estimate: CJK characters count one each, other text ~4 characters a token."""
    if not text:
        return 0
    cjk = len(re.findall(rf"[{_CJK}]", text))
    return cjk + (len(text) - cjk + 3) // 4


def within_budget(pieces, budget: int, sep: str = "\n", *, min_cut: int = 20) -> str:
    """Join ``pieces`` (best first) with ``sep`` while they fit in ``budget`` characters.

    When not even the first fits, it is cut to the budget (if the budget is worth it).
    """
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) + len(sep) > budget:
            if not kept and budget > min_cut:
                kept.append(piece[:budget - 1] + "…")
            break
        kept.append(piece)
        used += len(piece) + len(sep)
    return sep.join(kept)
