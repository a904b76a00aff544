"""The tool loop: frames and stored messages, permissions, malformed arguments, timeouts, repeats, call_agent."""
from __future__ import annotations

import asyncio
import json

import pytest

from fake_llm import Call, Reply
from xiajiao import Actor, Tool, hookimpl
from conftest import Frames, llm_settings, login, make_channel, running_app, user_says

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


class Tools:
    def __init__(self):
        self.calls = []
        self.running = 0
        self.max_parallel = 0

    @hookimpl
    def register_tools(self, register):
        async def shout(args, ctx):
            self.running += 1
            self.max_parallel = max(self.max_parallel, self.running)
            await asyncio.sleep(0.05)
            self.running -= 1
            self.calls.append(("shout", args["text"], ctx.agent["id"], ctx.actor.role))
            return args["text"].upper()

        async def secret(args, ctx):
            self.calls.append(("secret",))
            return "the vault code"

        async def stall(args, ctx):
            await asyncio.sleep(30)

        async def broken(args, ctx):
            raise RuntimeError("disk on fire")

        register(Tool("shout", "Upper-case a text", SCHEMA, shout))
        register(Tool("secret", "Owner only", {"type": "object", "properties": {}}, secret, min_role="owner",
                      mutating=True, read_only=False))
        register(Tool("stall", "Hangs", {"type": "object", "properties": {}}, stall, timeout=0.2))
        register(Tool("broken", "Fails", {"type": "object", "properties": {}}, broken))


@pytest.fixture
async def tool_app(tmp_path, fake_llm):
    tools = Tools()
    async with running_app(llm_settings(tmp_path, fake_llm, tool_max_rounds=3), plugins=[tools]) as app:
        await app.xj.engine.agents.update("coder", {"tools": ["shout", "secret", "stall", "broken", "call_agent"]})
        app.tools_plugin = tools
        yield app


async def turn(app, text, script, actor=None):
    ch = await make_channel(app, ["coder"], type="dm")
    frames = Frames(app, ch["id"])
    app.fake.script(*script)
    await user_says(app, ch, text, actor=actor)
    end = await frames.wait_for("stream_end")
    return ch, frames, end


@pytest.fixture
def app_(tool_app, fake_llm):
    tool_app.fake = fake_llm
    return tool_app


async def test_a_tool_call_shows_tool_call_then_tool_result_and_is_stored(app_, fake_llm):
    ch, frames, end = await turn(app_, "shout hello", [
        Reply(text="Let me shout. ", tool_calls=[Call("shout", {"text": "hello"}, id="c1")]),
        Reply(text="Done: HELLO")])
    mid = end["messageId"]
    seq = [(f["type"], f["data"].get("status")) for f in frames.items if f["type"] in ("tool_call", "tool_result")]
    assert seq == [("tool_call", "calling"), ("tool_call", "completed"), ("tool_result", None)]
    assert frames.of("tool_call")[0] == {"messageId": mid, "toolName": "shout", "callId": "c1",
                                         "arguments": {"text": "hello"}, "status": "calling"}
    assert frames.of("tool_result") == [{"messageId": mid, "toolName": "shout", "callId": "c1", "result": "HELLO"}]
    rows = await app_.xj.db.fetchall("SELECT type, content, agent_id, status, metadata FROM messages WHERE channel_id = ? "
                                     "ORDER BY seq", (ch["id"],))
    # stored in the order it happened: the call, its result, then the reply that went on after them
    assert [(r["type"], r["content"]) for r in rows] == [
        ("text", "shout hello"), ("tool_call", 'shout({"text": "hello"})'), ("tool_result", "HELLO"),
        ("text", "Let me shout. Done: HELLO")]
    assert json.loads(rows[1]["metadata"]) == {"replyTo": mid, "toolName": "shout", "callId": "c1",
                                               "arguments": {"text": "hello"}, "status": "completed"}
    # the second model call got the tool result, in the protocol's shape
    msgs = fake_llm.last.json["messages"]
    assert msgs[-2]["tool_calls"][0]["function"] == {"name": "shout", "arguments": '{"text": "hello"}'}
    assert msgs[-1] == {"role": "tool", "content": "HELLO", "tool_call_id": "c1"}
    assert [t["function"]["name"] for t in fake_llm.chat_requests()[0].json["tools"]] == \
        ["shout", "secret", "stall", "broken", "call_agent"]


async def test_a_reply_after_two_rounds_of_tools_is_stored_after_them_and_found_by_search(app_, fake_llm):
    ch, _, end = await turn(app_, "twice", [
        Reply(text="First. ", tool_calls=[Call("shout", {"text": "one"}, id="r1")]),
        Reply(tool_calls=[Call("shout", {"text": "two"}, id="r2")]),
        Reply(text="Both shouted zanzibar")])
    owner = app_.test_client()
    await login(owner)
    page = await (await owner.get(f"/api/messages?channelId={ch['id']}")).get_json()
    assert [(m["type"], m["content"]) for m in page["messages"]] == [
        ("text", "twice"), ("tool_call", 'shout({"text": "one"})'), ("tool_result", "ONE"),
        ("tool_call", 'shout({"text": "two"})'), ("tool_result", "TWO"), ("text", "First. Both shouted zanzibar")]
    assert page["messages"][-1]["id"] == end["messageId"]
    assert [m["seq"] for m in page["messages"]] == sorted(m["seq"] for m in page["messages"])
    found = await (await owner.get("/api/messages/search?q=zanzibar")).get_json()
    assert [m["id"] for m in found["results"]] == [end["messageId"]]
    # the page before the reply holds everything older than it, tools included
    older = await (await owner.get(f"/api/messages?channelId={ch['id']}&before={end['messageId']}")).get_json()
    assert [m["type"] for m in older["messages"]] == ["text", "tool_call", "tool_result", "tool_call", "tool_result"]


async def test_calls_of_one_round_run_in_parallel(app_, fake_llm):
    await turn(app_, "three", [Reply(tool_calls=[Call("shout", {"text": t}, id=f"c{t}") for t in "abc"]),
                               Reply(text="ok")])
    assert sorted(c[1] for c in app_.tools_plugin.calls) == ["a", "b", "c"]
    assert app_.tools_plugin.max_parallel == 3


@pytest.mark.parametrize("call,result", [
    (Call("shout", '{"text": "unterminated', id="m1"),
     "Error: arguments are not valid JSON (Unterminated string starting at at position 9)"),
    (Call("shout", "[1, 2]", id="m2"), "Error: arguments must be a JSON object"),
    (Call("shout", {}, id="m3"), "Error: missing required argument(s): text"),
    (Call("nope", {}, id="m4"), "Error: tool 'nope' is not available to this agent"),
    (Call("stall", {}, id="m5"), "Error: tool 'stall' timed out after 0.2 s"),
    (Call("broken", {}, id="m6"), "Error: RuntimeError: disk on fire"),
])
async def test_bad_calls_become_error_results_and_the_loop_goes_on(app_, fake_llm, call, result):
    _, frames, end = await turn(app_, "try", [Reply(tool_calls=[call]), Reply(text="recovered")])
    assert frames.of("tool_result") == [{"messageId": end["messageId"], "toolName": call.name, "callId": call.id,
                                         "result": result, "error": True}]
    assert [d["status"] for d in frames.of("tool_call")] == ["calling", "error"]
    assert fake_llm.last.json["messages"][-1] == {"role": "tool", "content": result, "tool_call_id": call.id}
    assert end["status"] == "done"


async def test_a_guest_cannot_make_an_agent_run_an_owner_only_tool(app_, fake_llm):
    guest = Actor("user_guest", "guest", "guest")
    _, frames, _ = await turn(app_, "open the vault", [Reply(tool_calls=[Call("secret", {}, id="s1")]),
                                                       Reply(text="cannot")], actor=guest)
    assert [t["function"]["name"] for t in fake_llm.chat_requests()[0].json["tools"]] == ["shout", "stall", "broken"]
    assert frames.of("tool_result")[0]["result"] == "Error: tool 'secret' is not available to this agent"
    assert ("secret",) not in app_.tools_plugin.calls


class Deny:
    @hookimpl
    def decide_tool_permission(self, actor, agent, tool):
        if tool.mutating:
            return False
        if tool.name == "call_agent":
            return True
        return None


async def test_decide_tool_permission_overrides_the_role_check(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[Tools(), Deny()]) as app:
        await app.xj.engine.agents.update("coder", {"tools": ["shout", "secret", "call_agent"]})
        app.fake = fake_llm
        await turn(app, "hi", [Reply(text="ok")], actor=Actor("user_g", "guest", "g"))
    assert [t["function"]["name"] for t in fake_llm.last.json["tools"]] == ["shout", "call_agent"]


async def test_identical_repeated_calls_are_stopped(app_, fake_llm):
    same = Call("shout", {"text": "again"}, id="r")
    _, frames, end = await turn(app_, "loop", [Reply(tool_calls=[same]), Reply(tool_calls=[same]),
                                               Reply(text="fine, answering")])
    results = [d["result"] for d in frames.of("tool_result")]
    assert results == ["AGAIN", "Error: this exact call was already made in this turn; use its result above and answer"]
    assert [c[1] for c in app_.tools_plugin.calls] == ["again"]
    assert "tools" not in fake_llm.last.json  # the model is made to answer
    assert end["status"] == "done"


async def test_rounds_are_capped(app_, fake_llm):
    script = [Reply(tool_calls=[Call("shout", {"text": str(i)}, id=f"x{i}")]) for i in range(3)]
    _, frames, _ = await turn(app_, "go on forever", script + [Reply(text="final answer")])
    chats = fake_llm.chat_requests()
    assert len(chats) == 4  # tool_max_rounds=3 rounds with tools, then one without
    assert ["tools" in c.json for c in chats] == [True, True, True, False]


async def test_call_agent_asks_another_agent_and_nests_at_most_3_deep(app_, fake_llm):
    await app_.xj.engine.agents.update("translator", {"tools": ["call_agent"]})
    await app_.xj.engine.agents.update("editor", {"tools": ["call_agent"]})
    await app_.xj.engine.agents.update("novelist", {"tools": ["call_agent"]})
    script = [
        Reply(tool_calls=[Call("call_agent", {"agent": "翻译官", "message": "translate 你好"}, id="d1")]),  # coder
        Reply(tool_calls=[Call("call_agent", {"agent": "Editor", "message": "check"}, id="d2")]),  # translator
        Reply(tool_calls=[Call("call_agent", {"agent": "小说家", "message": "deeper"}, id="d3")]),  # editor
        Reply(tool_calls=[Call("call_agent", {"agent": "代码助手", "message": "deepest"}, id="d4")]),  # novelist
        Reply(text="novelist: too deep"), Reply(text="editor ok"), Reply(text="hello"), Reply(text="It means hello."),
    ]
    _, frames, end = await turn(app_, "what does 你好 mean?", script)
    chats = fake_llm.chat_requests()
    assert [c.system.split("\n")[0] for c in chats[:4]] == ["# 代码助手 / Coder", "# 翻译官 / Translator",
                                                            "# 编辑 / Editor", "# 小说家 / Novelist"]
    assert chats[4].json["messages"][-1]["content"] == "Error: call_agent may nest at most 3 deep"
    assert frames.of("tool_result") == [{"messageId": end["messageId"], "toolName": "call_agent", "callId": "d1",
                                         "result": "hello"}]  # nested asks do not stream to the channel
    assert chats[-1].json["messages"][-1] == {"role": "tool", "content": "hello", "tool_call_id": "d1"}
