"""Realistic bilingual text generated from the sentences of the project's doc corpus.

The corpus is the Markdown folder named by ``XIAJIAO_BENCH_CORPUS`` (docs/benchmarks.md names
the bilingual one its figures were measured on), else the project's own README and docs/. It is
read at run time, never copied. Markdown markup, HTML and code are stripped; what is left is cut
into English and Chinese sentences.
"""
from __future__ import annotations

import os
import random
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ["XIAJIAO_BENCH_CORPUS"]) if os.environ.get("XIAJIAO_BENCH_CORPUS") else None


def corpus_files() -> list[Path]:
    if CORPUS is not None:
        return sorted(CORPUS.rglob("*.md"))
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"```.*?```", re.S)
_TAG = re.compile(r"<[^>]+>")
_FRONT = re.compile(r"^---\n.*?\n---\n", re.S)
_LINKS = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"[*_`#>|]+")
_SPLIT = re.compile(r"(?<=[.!?。!?])\s*")
_WORD = re.compile(r"[A-Za-z]+")


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """Every sentence of the corpus (English and Chinese), 12 to 300 characters long."""
    found: list[str] = []
    for path in corpus_files():
        text = path.read_text(encoding="utf-8")
        text = _FRONT.sub("", text)
        text = _FENCE.sub(" ", text)
        text = _TAG.sub(" ", text)
        text = _LINKS.sub(r"\1", text)
        text = _MARKS.sub(" ", text)
        for line in text.splitlines():
            line = " ".join(line.split()).strip(" -")
            for s in _SPLIT.split(line):
                s = s.strip()
                if 12 <= len(s) <= 300:
                    found.append(s)
    if not found:
        raise SystemExit(f"bench: no sentences found in {CORPUS or ROOT / 'docs'}")
    return tuple(found)


class TextMaker:
    """Deterministic random messages and documents made of corpus sentences."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.pool = sentences()

    def message(self) -> str:
        return " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(1, 3)))

    def document(self, nbytes: int) -> str:
        """Paragraphs of sentences until the UTF-8 text has about ``nbytes`` bytes."""
        out, size = [], 0
        while size < nbytes:
            para = " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(3, 8)))
            out.append(para)
            size += len(para.encode("utf-8")) + 2
        return "\n\n".join(out)


def english_word_counts() -> Counter:
    return Counter(w.lower() for s in sentences() for w in _WORD.findall(s))
