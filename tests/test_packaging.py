"""A user's clone and a user's install: the suite needs nothing outside the repository, and the
built wheel serves the app from any folder."""
from __future__ import annotations

import re

import pytest

from conftest import CORPUS, ROOT

# ------------------------------------------------------------------ a fresh clone


def test_tests_and_bench_read_nothing_outside_the_repository():
    outside = re.compile(r"ROOT\.parent|\.\./shared|[\"']shared[\"']\s*/")
    files = sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert found == []


def test_the_bilingual_test_pages_are_in_the_repository_and_small():
    pages = sorted(CORPUS.rglob("*.md"))
    langs = {p.relative_to(CORPUS).parts[0] for p in pages}
    assert {"en", "zh"} <= langs
    assert sum(p.stat().st_size for p in pages) < 64 * 1024
    zh = (CORPUS / "zh" / "features" / "rag.md").read_text(encoding="utf-8")
    assert len(re.findall(r"[\u4e00-\u9fff]", zh)) > 500


def test_the_bench_draws_on_the_test_pages_unless_told_otherwise(tmp_path, monkeypatch):
    from bench import corpus

    monkeypatch.delenv(corpus.CORPUS_ENV, raising=False)
    assert corpus.corpus_dir() == CORPUS
    (tmp_path / "a.md").write_text("A sentence long enough to count. 另一个足够长的中文句子在这里。", encoding="utf-8")
    monkeypatch.setenv(corpus.CORPUS_ENV, str(tmp_path))
    corpus.sentences.cache_clear()
    try:
        assert corpus.sentences() == ("A sentence long enough to count.", "另一个足够长的中文句子在这里。")
    finally:
        corpus.sentences.cache_clear()
    monkeypatch.setenv(corpus.CORPUS_ENV, str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="XIAJIAO_BENCH_CORPUS=.* is not a folder"):
        corpus.corpus_dir()
