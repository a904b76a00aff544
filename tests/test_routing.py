"""Routing: DM, @mentions (Chinese and English, punctuation, @all), default agent, agent-to-agent hops."""
from __future__ import annotations

import pytest

from fake_llm import Reply
from xiajiao import find_mentions, hookimpl
from conftest import Frames, llm_settings, make_channel, running_app, user_says

AGENTS = [{"id": "novelist", "name": "小说家", "config": {"aliases": ["Novelist"]}},
          {"id": "editor", "name": "编辑", "config": {"aliases": ["Editor"]}},
          {"id": "bob", "name": "Bob", "config": {}},
          {"id": "bobby", "name": "Bobby", "config": {}},
          {"id": "coder", "name": "代码助手", "config": {}}]


@pytest.mark.parametrize("text,ids,everyone", [
    ("@小说家 写一首诗", ["novelist"], False),
    ("@小说家写一首诗", ["novelist"], False),
    ("请(@编辑)看看,@小说家,谢谢", ["editor", "novelist"], False),
    ("＠代码助手 hello", ["coder"], False),
    ("@Novelist and @editor, please", ["novelist", "editor"], False),
    ("hi @Bobby!", ["bobby"], False),
    ("hi @Bob.", ["bob"], False),
    ("hi @Bobsled", [], False),
    ("mail me at a@b.com", [], False),
    ("@所有人 开会", [], True),
    ("@all hello", [], True),
    ("@allison hello", [], False),
    ("@coder fix it @coder", ["coder"], False),
    ("no mention at all", [], False),
])
def test_find_mentions(text, ids, everyone):
    assert find_mentions(text, AGENTS) == (ids, everyone)


async def routed(app, ch, text):
    _, ids = await user_says(app, ch, text)
    return ids


async def test_group_routes_by_chinese_mention_then_default_agent(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["butler", "novelist", "editor"], default_agent_id="butler")
    frames = Frames(llm_app, ch["id"])
    assert await routed(llm_app, ch, "@小说家 写一首关于春天的诗") == ["novelist"]
    start = await frames.wait_for("stream_start")
    assert start["agentId"] == "novelist"
    await frames.wait_for("stream_end")
    assert await routed(llm_app, ch, "今天天气怎么样?") == ["butler"]
    assert sorted(await routed(llm_app, ch, "@所有人 早上好")) == ["butler", "editor", "novelist"]
    assert await routed(llm_app, ch, "@Editor 请看看 @小说家") == ["editor", "novelist"]
    assert await routed(llm_app, ch, "@翻译官 not a member here") == ["butler"]


async def test_dm_routes_to_its_agent_whatever_is_mentioned(llm_app):
    ch = await make_channel(llm_app, ["coder"], type="dm")
    assert await routed(llm_app, ch, "@小说家 hi") == ["coder"]


async def test_group_without_default_and_mention_routes_nowhere(llm_app):
    ch = await make_channel(llm_app, ["coder", "editor"])
    assert await routed(llm_app, ch, "hello?") == []


async def test_agent_mentions_chain_stops_at_the_hop_limit(tmp_path, fake_llm):
    # every agent hands the conversation to the other one: a loop the hop limit must break
    def responder(req):
        return Reply(text="@编辑 your turn" if "小说家" in req.system else "@小说家 back to you")

    fake_llm.responder = responder
    async with running_app(llm_settings(tmp_path, fake_llm, hop_limit=3)) as app:
        ch = await make_channel(app, ["novelist", "editor"])
        frames = Frames(app, ch["id"])
        msg, _ = await user_says(app, ch, "@小说家 start")
        status = await frames.wait_for("collab_status")
        ends = frames.of("stream_end")
        starts = [d["agentId"] for d in frames.of("stream_start")]
    # user → novelist (hop 0) → editor (1) → novelist (2) → editor (3) → stopped
    assert starts == ["novelist", "editor", "novelist", "editor"]
    assert len(ends) == 4
    assert status == {"chainId": msg["id"], "currentAgent": "editor", "step": 3, "totalSteps": 3, "status": "error",
                      "reason": "hop_limit",
                      "message": "Stopped: agents handed the conversation on 3 times (hop limit 3) for one user message"}
    assert len(fake_llm.chat_requests()) == 4


async def test_an_agent_reply_without_mentions_triggers_nobody(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["novelist", "editor"], default_agent_id="editor")
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(text="a poem, no mentions")
    await user_says(llm_app, ch, "@小说家 poem")
    await frames.wait_for("stream_end")
    await llm_app.xj.engine.stop()  # waits for running turns; nothing else was started
    assert [d["agentId"] for d in frames.of("stream_start")] == ["novelist"]


class EditorFirst:
    @hookimpl
    def route_message(self, message, channel, agents):
        if "review" in message.get("content", ""):
            return ["editor"]
        return None


async def test_a_plugin_router_answering_first_wins(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[EditorFirst()]) as app:
        ch = await make_channel(app, ["novelist", "editor"], default_agent_id="novelist")
        assert await routed(app, ch, "@小说家 please review this") == ["editor"]
        assert await routed(app, ch, "@小说家 write") == ["novelist"]
