"""Tool approvals: a call of a tool that needs approval pauses the turn until a person approves,
edits or rejects it (over REST and WS); no answer in time counts as a rejection; who may decide;
a pending approval does not outlive the server."""
from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
from websockets.asyncio.client import connect

from chat_helpers import PASSWORD, make_user, recv_until, send
from conftest import (Frames, OWNER_PASSWORD, live_server, llm_settings, login, make_channel, running_app,
                      server_process)
from fake_llm import Call, Reply
from xiajiao import Tool, hookimpl

SCHEMA = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 20}}, "required": ["text"]}


class Tools:
    """``post_note`` needs approval; ``shout`` does not (unless the agent asks for approval of every tool)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    @hookimpl
    def register_tools(self, register):
        async def post_note(args, ctx):
            self.calls.append(("post_note", args))
            return f"posted: {args['text']}"

        async def shout(args, ctx):
            self.calls.append(("shout", args))
            return args["text"].upper()

        register(Tool("post_note", "Post a note on the team board", SCHEMA, post_note, read_only=False,
                      mutating=True, approval=True))
        register(Tool("shout", "Upper-case a text", SCHEMA, shout))


def settings_for(tmp_path, fake_llm, **extra):
    return llm_settings(tmp_path, fake_llm, **extra)


@pytest.fixture
async def app(tmp_path, fake_llm):
    tools = Tools()
    async with running_app(settings_for(tmp_path, fake_llm), plugins=[tools]) as app:
        await ready(app, tools)
        yield app


async def ready(app, tools):
    await app.xj.engine.agents.update("novelist", {"tools": ["post_note", "shout"]})
    app.tools_plugin = tools
    app.owner = app.test_client()
    await login(app.owner)
    app.room = await make_channel(app, ["novelist"], default_agent_id="novelist")


def note_call(text="hello", id_="call_1"):
    return Reply(tool_calls=[Call("post_note", {"text": text}, id=id_)])


async def ask(app, content="post a note", client=None):
    """A user message in the room; the frames of the channel from then on."""
    frames = Frames(app, app.room["id"])
    resp = await (client or app.owner).post("/api/messages", json={"channelId": app.room["id"], "content": content})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return frames


async def pending(frames) -> dict:
    return await frames.wait_for("tool_approval", lambda d: d["status"] == "pending")


def tool_messages(fake_llm, index=-1) -> list[dict]:
    return [m for m in fake_llm.chat_requests()[index].messages if m.get("role") == "tool"]


async def test_approve_over_rest_runs_the_call_and_a_second_decision_is_409(app, fake_llm):
    fake_llm.script(note_call(), Reply(text="Done, the note is up."))
    frames = await ask(app)
    waiting = await frames.wait_for("tool_call", lambda d: d["status"] == "awaiting_approval")
    approval = await pending(frames)
    owner_id = await app.xj.db.fetchval("SELECT id FROM users WHERE role = 'owner'")
    assert (waiting["toolName"], waiting["arguments"], waiting["approvalId"]) == ("post_note", {"text": "hello"},
                                                                                   approval["id"])
    assert {k: approval[k] for k in ("channelId", "messageId", "callId", "agentId", "toolName", "arguments",
                                     "status", "requestedBy", "decidedBy")} == {
        "channelId": app.room["id"], "messageId": waiting["messageId"], "callId": "call_1", "agentId": "novelist",
        "toolName": "post_note", "arguments": {"text": "hello"}, "status": "pending", "requestedBy": owner_id,
        "decidedBy": None}
    assert app.tools_plugin.calls == []  # nothing runs before the decision
    listed = await (await app.owner.get(f"/api/approvals?channelId={app.room['id']}")).get_json()
    assert [a["id"] for a in listed["approvals"]] == [approval["id"]]

    resp = await app.owner.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
    assert resp.status_code == 200
    decided = await resp.get_json()
    assert (decided["status"], decided["decidedBy"]) == ("approved", owner_id) and decided["decidedAt"]
    end = await frames.wait_for("stream_end")
    assert end["status"] == "done"
    assert app.tools_plugin.calls == [("post_note", {"text": "hello"})]
    assert [t["content"] for t in tool_messages(fake_llm)] == ["posted: hello"]
    assert [d["status"] for d in frames.of("tool_call")] == ["awaiting_approval", "calling", "completed"]
    assert [d["status"] for d in frames.of("tool_approval")] == ["pending", "approved"]

    again = await app.owner.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})
    assert (again.status_code, (await again.get_json())["code"]) == (409, "already_decided")
    stored = await app.xj.db.fetchone("SELECT metadata FROM messages WHERE type = 'tool_call'")
    meta = json.loads(stored["metadata"])
    assert (meta["status"], meta["approval"]["status"], meta["approval"]["decidedBy"]) == (
        "completed", "approved", owner_id)
    assert (await (await app.owner.get(f"/api/approvals?channelId={app.room['id']}")).get_json())["approvals"] == []
    every = await (await app.owner.get(f"/api/approvals?channelId={app.room['id']}&status=all")).get_json()
    assert [a["status"] for a in every["approvals"]] == ["approved"]


async def test_edit_checks_the_arguments_against_the_schema_then_runs_the_edited_call(app, fake_llm):
    fake_llm.script(note_call("helo wrld"), Reply(text="Posted."))
    frames = await ask(app)
    approval = await pending(frames)
    url = f"/api/approvals/{approval['id']}"
    for body in ({"decision": "edit"}, {"decision": "edit", "arguments": ["text"]},
                 {"decision": "edit", "arguments": {}}, {"decision": "edit", "arguments": {"text": 5}},
                 {"decision": "edit", "arguments": {"text": "x" * 21}}):
        resp = await app.owner.post(url, json=body)
        assert (resp.status_code, (await resp.get_json())["code"]) == (400, "invalid_arguments"), body
    for body, code in (({"decision": "maybe"}, "invalid_decision"), ({"decision": ["approve"]}, "invalid_decision")):
        resp = await app.owner.post(url, json=body)
        assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)
    resp = await app.owner.post(url, data=b"[]", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    resp = await app.owner.post(url, json={"decision": "edit", "arguments": {"text": "hello world"}})
    assert resp.status_code == 200
    decided = await resp.get_json()
    assert (decided["status"], decided["arguments"], decided["editedArguments"]) == (
        "edited", {"text": "helo wrld"}, {"text": "hello world"})
    await frames.wait_for("stream_end")
    assert app.tools_plugin.calls == [("post_note", {"text": "hello world"})]
    calling = [d for d in frames.of("tool_call") if d["status"] == "calling"]
    assert calling[0]["arguments"] == {"text": "hello world"}
    meta = json.loads(await app.xj.db.fetchval("SELECT metadata FROM messages WHERE type = 'tool_call'"))
    assert (meta["arguments"], meta["approval"]["arguments"]) == ({"text": "hello world"}, {"text": "helo wrld"})


async def test_reject_tells_the_model_the_person_declined(app, fake_llm):
    fake_llm.script(note_call(), Reply(text="Understood, I did not post it."))
    frames = await ask(app)
    approval = await pending(frames)
    resp = await app.owner.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})
    assert (await resp.get_json())["status"] == "rejected"
    end = await frames.wait_for("stream_end")
    assert end["status"] == "done" and app.tools_plugin.calls == []
    [result] = tool_messages(fake_llm)
    assert result["content"].startswith("Declined: Owner did not approve this call of 'post_note'")
    assert frames.of("tool_call")[-1]["status"] == "rejected"
    assert frames.of("tool_result")[-1]["declined"] is True
    meta = json.loads(await app.xj.db.fetchval("SELECT metadata FROM messages WHERE type = 'tool_call'"))
    assert (meta["status"], meta["approval"]["status"]) == ("rejected", "rejected")


async def test_no_decision_in_time_counts_as_a_rejection(tmp_path, fake_llm):
    tools = Tools()
    async with running_app(settings_for(tmp_path, fake_llm, tool_approval_timeout=0.05), plugins=[tools]) as app:
        await ready(app, tools)
        fake_llm.script(note_call(), Reply(text="Nobody answered, so I left it."))
        frames = await ask(app)
        expired = await frames.wait_for("tool_approval", lambda d: d["status"] == "expired")
        assert (expired["reason"], expired["decidedBy"]) == ("timeout", None)
        await frames.wait_for("stream_end")
        assert tools.calls == []
        [result] = tool_messages(fake_llm)
        assert result["content"].startswith("Not run: nobody approved this call of 'post_note' in time")
        resp = await app.owner.post(f"/api/approvals/{expired['id']}", json={"decision": "approve"})
        assert (resp.status_code, (await resp.get_json())["code"]) == (409, "already_decided")


async def test_who_may_decide(app, fake_llm):
    guest = await make_user(app, "guest", "guest")
    member = await make_user(app, "member", "member")
    await make_user(app, "stranger", "member")
    await app.owner.post(f"/api/channels/{app.room['id']}/members", json={"userIds": [guest["id"], member["id"]]})
    clients = {}
    for name in ("guest", "member", "stranger"):
        clients[name] = app.test_client()
        await login(clients[name], PASSWORD, name)
    # the owner's message started the turn: other people in the room may watch, not decide
    fake_llm.script(note_call(), Reply(text="ok"))
    frames = await ask(app)
    approval = await pending(frames)
    url = f"/api/approvals/{approval['id']}"
    for name, status, code in (("guest", 403, "not_your_approval"), ("member", 403, "not_your_approval"),
                               ("stranger", 404, "approval_not_found")):
        resp = await clients[name].post(url, json={"decision": "approve"})
        assert (resp.status_code, (await resp.get_json())["code"]) == (status, code), name
    assert (await clients["guest"].get(url)).status_code == 200
    assert (await clients["stranger"].get(url)).status_code == 404
    listed = await clients["stranger"].get(f"/api/approvals?channelId={app.room['id']}")
    assert listed.status_code == 404
    assert (await app.owner.post(url, json={"decision": "approve"})).status_code == 200
    await frames.wait_for("stream_end")
    # the member's own message: he decides his turn's call
    fake_llm.script(note_call(id_="call_2"), Reply(text="ok"))
    frames = await ask(app, client=clients["member"])
    mine = await pending(frames)
    assert mine["requestedBy"] == member["id"]
    resp = await clients["member"].post(f"/api/approvals/{mine['id']}", json={"decision": "reject"})
    assert (resp.status_code, (await resp.get_json())["decidedBy"]) == (200, member["id"])
    await frames.wait_for("stream_end")


async def test_an_agent_can_require_approval_for_every_tool(app, fake_llm):
    resp = await app.owner.put("/api/agents/novelist", json={"requireApproval": True})
    assert (resp.status_code, (await resp.get_json())["requireApproval"]) == (200, True)
    manifest = json.loads((app.xj.workspace("novelist") / "agent.json").read_text(encoding="utf-8"))
    assert manifest["config"]["requireApproval"] is True
    fake_llm.script(Reply(tool_calls=[Call("shout", {"text": "hi"}, id="c1")]), Reply(text="HI"))
    frames = await ask(app)
    approval = await pending(frames)
    assert approval["toolName"] == "shout"
    await app.owner.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
    await frames.wait_for("stream_end")
    assert app.tools_plugin.calls == [("shout", {"text": "hi"})]
    resp = await app.owner.put("/api/agents/novelist", json={"requireApproval": False})
    assert "requireApproval" not in await resp.get_json()
    tools = (await (await app.owner.get("/api/tools")).get_json())["tools"]
    assert {t["name"]: t["approval"] for t in tools if t["name"] in ("post_note", "shout", "manage_schedule")} == {
        "post_note": True, "shout": False, "manage_schedule": True}


async def test_a_pending_approval_expires_when_the_server_stops(tmp_path, fake_llm):
    tools = Tools()
    settings = settings_for(tmp_path, fake_llm)
    async with running_app(settings, plugins=[tools]) as app:
        await ready(app, tools)
        room = app.room
        fake_llm.script(note_call())
        frames = await ask(app)
        approval = await pending(frames)
    async with running_app(settings, plugins=[tools]) as app:
        c = app.test_client()
        await login(c)
        got = await (await c.get(f"/api/approvals/{approval['id']}")).get_json()
        assert (got["status"], got["reason"]) == ("expired", "shutdown")
        reply = await app.xj.db.fetchone("SELECT status FROM messages WHERE id = ?", (approval["messageId"],))
        assert reply["status"] == "interrupted"
        resp = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        assert (resp.status_code, (await resp.get_json())["code"]) == (409, "already_decided")
        assert (await (await c.get(f"/api/approvals?channelId={room['id']}")).get_json())["approvals"] == []
    assert tools.calls == []


async def test_a_pending_approval_left_by_a_killed_server_is_expired_at_start(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:  # first start: the butler may change schedules (with approval)
        await app.xj.engine.agents.update("butler", {"tools": ["manage_schedule"]})
        room = await make_channel(app, ["butler"], default_agent_id="butler")
    fake_llm.script(Reply(tool_calls=[Call("manage_schedule", {"action": "list"}, id="c1")]))
    async with server_process(settings) as (proc, base):
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/login", json={"password": OWNER_PASSWORD})
            await http.post("/api/messages", json={"channelId": room["id"], "content": "my schedules?"})
            waiting: list = []
            for _ in range(500):  # until the call waits for approval
                waiting = (await http.get(f"/api/approvals?channelId={room['id']}")).json()["approvals"]
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    async with running_app(settings) as app:
        row = await app.xj.db.fetchone("SELECT status, reason FROM tool_approvals WHERE id = ?", (waiting[0]["id"],))
        reply = await app.xj.db.fetchval("SELECT status FROM messages WHERE id = ?", (waiting[0]["messageId"],))
    assert (row, reply) == ({"status": "expired", "reason": "restart"}, "interrupted")


async def test_decisions_over_the_websocket(tmp_path, fake_llm):
    tools = Tools()
    async with live_server(settings_for(tmp_path, fake_llm), plugins=[tools]) as (app, base):
        await app.xj.engine.agents.update("novelist", {"tools": ["post_note"]})
        room = await make_channel(app, ["novelist"], default_agent_id="novelist")
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/login", json={"password": OWNER_PASSWORD})
            token = http.cookies["session"]
            async with connect(base.replace("http", "ws") + "/ws") as ws:
                await send(ws, {"type": "auth", "token": token})
                await recv_until(ws, "auth_ok")
                await send(ws, {"type": "subscribe", "channelId": room["id"]})
                for decision, script, expect in (
                        ({"decision": "approve"}, Reply(text="posted"), ("approved", [("post_note", {"text": "hello"})])),
                        ({"decision": "edit", "arguments": {"text": "edited"}}, Reply(text="posted"),
                         ("edited", [("post_note", {"text": "edited"})])),
                        ({"decision": "reject"}, Reply(text="not posted"), ("rejected", []))):
                    tools.calls.clear()
                    fake_llm.script(note_call(), script)
                    await http.post("/api/messages", json={"channelId": room["id"], "content": "note"})
                    while True:
                        frame, _ = await recv_until(ws, "tool_approval")
                        if frame["data"]["status"] == "pending":
                            break
                    aid = frame["data"]["id"]
                    await send(ws, {"type": "approval_decision", "data": {"approvalId": aid, "decision": "dance"}})
                    err, _ = await recv_until(ws, "error")
                    assert (err["data"]["code"], err["data"]["approvalId"]) == ("invalid_decision", aid)
                    await send(ws, {"type": "approval_decision", "data": {"approvalId": aid, **decision}})
                    decided, _ = await recv_until(ws, "tool_approval")
                    assert decided["data"]["status"] == expect[0]
                    end, _ = await recv_until(ws, "stream_end")
                    assert end["data"]["status"] == "done" and tools.calls == expect[1]
                    await send(ws, {"type": "approval_decision", "data": {"approvalId": aid, "decision": "approve"}})
                    err, _ = await recv_until(ws, "error")
                    assert err["data"]["code"] == "already_decided"
                await send(ws, {"type": "approval_decision", "data": {"approvalId": "appr_nope", "decision": "approve"}})
                err, _ = await recv_until(ws, "error")
                assert err["data"]["code"] == "approval_not_found"


async def test_a_turn_outside_a_chat_cannot_ask_and_the_tool_does_not_run(app, fake_llm):
    fake_llm.script(note_call(), Reply(text="I could not post it."))
    agent = app.xj.engine.agents.get("novelist")
    owner = await app.xj.db.fetchone("SELECT id, role FROM users WHERE role = 'owner'")
    from xiajiao import Actor

    text = await app.xj.engine.ask(agent, "post a note", actor=Actor(owner["id"], "owner"))
    assert text == "I could not post it." and app.tools_plugin.calls == []
    [result] = tool_messages(fake_llm)
    assert "needs a person's approval, which cannot be asked here" in result["content"]


async def test_stopping_the_turn_expires_its_request(app, fake_llm):
    fake_llm.script(note_call())
    frames = await ask(app)
    approval = await pending(frames)
    resp = await app.owner.post("/api/turns/stop", json={"messageId": approval["messageId"]})
    assert resp.status_code == 200
    expired = await frames.wait_for("tool_approval", lambda d: d["status"] == "expired")
    assert expired["reason"] == "stopped"
    assert (await frames.wait_for("stream_end"))["status"] == "stopped"
    assert app.tools_plugin.calls == []


async def test_the_wait_for_a_person_does_not_count_toward_the_reply_time_limit(tmp_path, fake_llm):
    # the request expires only after the reply's own limit has passed, and the reply still ends well
    tools = Tools()
    settings = settings_for(tmp_path, fake_llm, max_reply_seconds=1.0, tool_approval_timeout=2.0)
    async with running_app(settings, plugins=[tools]) as app:
        await ready(app, tools)
        fake_llm.script(note_call(), Reply(text="Nobody answered."))
        frames = await ask(app)
        await frames.wait_for("tool_approval", lambda d: d["status"] == "expired")
        end = await frames.wait_for("stream_end")
        assert end["status"] == "done", end


async def test_over_the_websocket_a_guest_is_refused_and_the_timeout_expires_the_call(tmp_path, fake_llm):
    tools = Tools()
    async with live_server(settings_for(tmp_path, fake_llm, tool_approval_timeout=0.3), plugins=[tools]) as (app, base):
        await app.xj.engine.agents.update("novelist", {"tools": ["post_note"]})
        guest = await make_user(app, "guest", "guest")
        room = await make_channel(app, ["novelist"], default_agent_id="novelist", users=("owner", guest["id"]))
        async with httpx.AsyncClient(base_url=base) as owner, httpx.AsyncClient(base_url=base) as visitor:
            await owner.post("/api/login", json={"password": OWNER_PASSWORD})
            await visitor.post("/api/login", json={"password": PASSWORD, "username": "guest"})
            async with connect(base.replace("http", "ws") + "/ws") as ws:
                await send(ws, {"type": "auth", "token": visitor.cookies["session"]})
                await recv_until(ws, "auth_ok")
                await send(ws, {"type": "subscribe", "channelId": room["id"]})
                await recv_until(ws, "subscribed")
                fake_llm.script(note_call(), Reply(text="nobody approved"))
                await owner.post("/api/messages", json={"channelId": room["id"], "content": "note"})
                waiting, _ = await recv_until(ws, "tool_approval")
                assert waiting["data"]["status"] == "pending"
                await send(ws, {"type": "approval_decision",
                                "data": {"approvalId": waiting["data"]["id"], "decision": "approve"}})
                end, seen = await recv_until(ws, "stream_end")  # the refusal and the expiry, in any order
                assert [f["data"]["code"] for f in seen if f["type"] == "error"] == ["not_your_approval"]
                assert [(f["data"]["status"], f["data"]["reason"]) for f in seen if f["type"] == "tool_approval"] == [
                    ("expired", "timeout")]
                assert [f["data"]["status"] for f in seen if f["type"] == "tool_call"] == ["expired"]
                assert end["data"]["status"] == "done" and tools.calls == []


async def test_two_calls_of_one_round_wait_side_by_side_and_are_decided_each_on_its_own(app, fake_llm):
    fake_llm.script(Reply(tool_calls=[Call("post_note", {"text": "one"}, id="c1"),
                                      Call("post_note", {"text": "two"}, id="c2")]), Reply(text="One posted."))
    frames = await ask(app)
    await frames.wait_for("tool_approval", lambda d: d["callId"] == "c2" and d["status"] == "pending")
    listed = (await (await app.owner.get(f"/api/approvals?channelId={app.room['id']}")).get_json())["approvals"]
    by_call = {a["callId"]: a["id"] for a in listed}
    assert sorted(by_call) == ["c1", "c2"]
    await app.owner.post(f"/api/approvals/{by_call['c2']}", json={"decision": "reject"})
    await app.owner.post(f"/api/approvals/{by_call['c1']}", json={"decision": "approve"})
    await frames.wait_for("stream_end")
    assert app.tools_plugin.calls == [("post_note", {"text": "one"})]
    results = {m["tool_call_id"]: m["content"] for m in tool_messages(fake_llm)}
    assert results["c1"] == "posted: one" and results["c2"].startswith("Declined:")


async def test_other_turns_go_on_while_a_call_waits(app, fake_llm):
    fake_llm.script(note_call(), Reply(text="elsewhere"), Reply(text="posted"))
    frames = await ask(app)
    approval = await pending(frames)
    other = await make_channel(app, ["editor"], type="dm")
    elsewhere = Frames(app, other["id"])
    await app.owner.post("/api/messages", json={"channelId": other["id"], "content": "meanwhile"})
    assert (await elsewhere.wait_for("stream_end"))["status"] == "done"
    assert frames.of("stream_end") == []  # the first turn still waits
    await app.owner.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
    assert (await frames.wait_for("stream_end"))["status"] == "done"
