"""Full-text search over messages: Chinese and English, ranked, highlighted, only what one may read."""
from __future__ import annotations

import re

import pytest

from chat_helpers import make_agent, make_channel, post, search, user_client
from conftest import CORPUS


def paragraphs(path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip() and len(p.strip()) < 4000]


@pytest.fixture
async def corpus_channel(app, owner):
    """The bilingual quick-start guides, one message per paragraph."""
    await make_agent(app)
    cid = await make_channel(owner)
    paras = paragraphs(CORPUS / "zh" / "guide" / "quick-start.md") + \
        paragraphs(CORPUS / "en" / "guide" / "quick-start.md")
    ids = [await post(owner, cid, p) for p in paras]
    return cid, dict(zip(ids, paras))


def expected(paras: dict[str, str], word: str) -> set[str]:
    if re.match(r"^[\u4e00-\u9fff]+$", word):
        return {i for i, p in paras.items() if word in p}
    return {i for i, p in paras.items() if re.search(rf"(?<![^\W_]){re.escape(word)}", p, re.I)}


@pytest.mark.parametrize("word", ["部署", "模型", "启动", "安装", "docker", "npm", "Node", "agent"])
async def test_search_finds_exactly_the_messages_with_the_word(owner, corpus_channel, word):
    cid, paras = corpus_channel
    want = expected(paras, word)
    assert want, f"the corpus should contain {word!r}"
    hits = await search(owner, word, limit=100)
    assert {h["id"] for h in hits} == want
    for h in hits:
        assert "<mark>" in h["snippet"] and h["channelId"] == cid


async def test_results_are_ranked_by_relevance(app, owner):
    await make_agent(app)
    cid = await make_channel(owner)
    weak = await post(owner, cid, "This long message mentions deploy once among many other unrelated words here.")
    strong = await post(owner, cid, "deploy deploy deploy")
    assert [h["id"] for h in await search(owner, "deploy")] == [strong, weak]


async def test_snippet_is_escaped_and_highlighted(app, owner):
    await make_agent(app)
    cid = await make_channel(owner)
    await post(owner, cid, "<b>虾饺</b> 部署流程很简单")
    [hit] = await search(owner, "部署流程")
    assert hit["snippet"] == "&lt;b&gt;虾饺&lt;/b&gt; <mark>部署流程</mark>很简单"


async def test_search_covers_only_channels_one_may_read(app, owner):
    await make_agent(app)
    alice, a = await user_client(app, "alice")
    bob, b = await user_client(app, "bob")
    guest, g = await user_client(app, "gus", "guest")
    mine = await make_channel(alice, name="alice")
    shared = await make_channel(alice, name="shared", userIds=[g["id"]])
    bobs = await make_channel(bob, name="bob")
    m1 = await post(alice, mine, "知识库 alpha")
    m2 = await post(alice, shared, "知识库 beta")
    m3 = await post(bob, bobs, "知识库 gamma")
    assert {h["id"] for h in await search(alice, "知识库")} == {m1, m2}
    assert {h["id"] for h in await search(bob, "知识库")} == {m3}
    assert {h["id"] for h in await search(guest, "知识库")} == {m2}
    assert {h["id"] for h in await search(owner, "知识库")} == {m1, m2, m3}
    assert {h["id"] for h in await search(alice, "知识库", channelId=shared)} == {m2}
    resp = await guest.get("/api/messages/search", query_string={"q": "知识库", "channelId": mine})
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "channel_not_found")


@pytest.mark.parametrize("q", ['"', "AND OR NOT", "(*)", "NEAR(", "—"])
async def test_query_syntax_never_breaks_search(app, owner, q):
    await make_agent(app)
    cid = await make_channel(owner)
    await post(owner, cid, "and or not near")
    resp = await owner.get("/api/messages/search", query_string={"q": q})
    assert resp.status_code == 200


@pytest.mark.parametrize("params,code", [({}, "validation_error"), ({"q": ""}, "validation_error"),
                                         ({"q": "x" * 201}, "validation_error")])
async def test_bad_search_queries_are_400(owner, params, code):
    resp = await owner.get("/api/messages/search", query_string=params)
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)
