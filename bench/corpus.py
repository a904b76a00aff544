"""Realistic bilingual text generated from the sentences of a folder of Markdown pages.

The pages are the small bilingual set of the test suite (``tests/corpus``) unless the environment
variable ``XIAJIAO_BENCH_CORPUS`` names a larger folder; they are read at run time. Markdown
markup, HTML and code are stripped; what is left is cut into English and Chinese sentences.
"""
from __future__ import annotations

import os
import random
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "tests" / "corpus"
CORPUS_ENV = "XIAJIAO_BENCH_CORPUS"


def corpus_dir() -> Path:
    """The folder of Markdown pages: ``$XIAJIAO_BENCH_CORPUS``, else the test suite's pages."""
    named = os.environ.get(CORPUS_ENV, "").strip()
    if not named:
        return BUNDLED
    folder = Path(named).expanduser()
    if not folder.is_dir():
        raise SystemExit(f"bench: {CORPUS_ENV}={named!r} is not a folder; fix or unset it.")
    return folder

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
    folder = corpus_dir()
    for path in sorted(folder.rglob("*.md")):
        if path.name == "README.md":
            continue
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
        raise SystemExit(f"bench: no sentences found in {folder}")
    return tuple(found)


class TextMaker:
    """Deterministic random messages and documents made of corpus sentences."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.pool = sentences()

    def message(self) -> str:
        return " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(1, 3)))

    def document(self, nbytes: int) -> str:
        """Paragraphs of sentences up to ``nbytes`` bytes of UTF-8 (never more: 10 MB must fit a 10 MB limit)."""
        out, size = [], -2
        while True:
            para = " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(3, 8)))
            grown = size + 2 + len(para.encode("utf-8"))
            if grown > nbytes:
                return "\n\n".join(out)
            out.append(para)
            size = grown


def english_word_counts() -> Counter:
    return Counter(w.lower() for s in sentences() for w in _WORD.findall(s))
