"""One authorization path: every route, every WebSocket frame and every action on a channel or a
chain asks the ``authorize`` hook; a plugin's False refuses, a plugin that raises refuses too."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect

from chat_helpers import PASSWORD, make_user, recv_until, send
from conftest import OWNER_PASSWORD, live_server, llm_settings, login, make_settings, running_app
from fake_llm import Reply
from plugins.workflows import runner
from xiajiao import hookimpl


class Recorder:
    """Denies what ``deny(action, resource)`` says; records every question it is asked."""

    def __init__(self, deny=lambda action, resource: True, raises=False):
        self.deny, self.raises, self.asked = deny, raises, []

    @hookimpl
    def authorize(self, actor, action, resource):
        self.asked.append((action, resource))
        if self.deny(action, resource):
            if self.raises:
                raise RuntimeError("a broken authorization plugin")
            return False
        return None

    def actions(self, action):
        return [r for a, r in self.asked if a == action]


def _example_path(rule) -> str:
    path = rule.rule
    for arg in rule.arguments:
        path = path.replace(f"<path:{arg}>", "x").replace(f"<{arg}>", "x")
    return path


@pytest.mark.parametrize("raises", [False, True], ids=["denies", "raises"])
async def test_every_route_asks_the_hook_and_a_refusal_stops_it(tmp_path, raises):
    from xiajiao import auth

    plugin = Recorder(raises=raises)
    async with running_app(make_settings(tmp_path), plugins=[plugin]) as app:
        owner = await auth.owner(app.xj.db)  # POST /api/login is refused too: the session is made here
        token = await auth.create_session(app.xj.db, owner["id"], days=1)
        client = app.test_client()
        client.set_cookie("localhost", auth.SESSION_COOKIE, token)
        refused = {}
        for rule in app.url_map.iter_rules():
            if rule.endpoint in ("static", "openapi") or rule.websocket:
                continue
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                plugin.asked.clear()
                resp = await client.open(_example_path(rule), method=method, json={})
                asked = [r["route"] for r in plugin.actions("route")]
                refused[(method, rule.rule)] = (resp.status_code, asked == [rule.endpoint])
        assert len(refused) > 60
        assert {k: v for k, v in refused.items() if v != (403, True)} == {}


async def test_every_websocket_frame_asks_the_hook(tmp_path):
    plugin = Recorder(deny=lambda action, resource: action == "frame" and resource["frame"] != "auth")
    async with live_server(make_settings(tmp_path), plugins=[plugin]) as (app, base):
        async with httpx.AsyncClient(base_url=base) as http:
            token = (await http.post("/api/login", json={"password": OWNER_PASSWORD})).cookies["session"]
        types = sorted(app.xj.ws_handlers)
        assert {"auth", "ping", "subscribe", "unsubscribe", "typing", "stop", "chain_decision",
                "approval_decision"} <= set(types)
        async with connect(base.replace("http", "ws") + "/ws") as ws:
            await send(ws, {"type": "auth", "token": token})
            await recv_until(ws, "auth_ok")
            for type_ in types:
                if type_ == "auth":
                    continue
                await send(ws, {"type": type_, "data": {"channelId": "ch_x", "chainId": "c", "messageId": "m"}})
                err, _ = await recv_until(ws, "error")
                assert (err["data"]["type"], err["data"]["code"]) == (type_, "forbidden")
        assert sorted({r["frame"] for r in plugin.actions("frame")}) == types


# ------------------------------------------------------------------ actions on channels and chains


@pytest.fixture
async def world(tmp_path, fake_llm):
    """A group of the owner with a two-step chain that waits for approval, and a paused run of it."""
    plugin = Recorder(deny=lambda action, resource: False)
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[plugin]) as app:
        owner = app.test_client()
        await login(owner)
        resp = await owner.post("/api/channels", json={"name": "g", "type": "group",
                                                        "agentIds": ["novelist", "editor"]})
        cid = (await resp.get_json())["id"]
        await owner.put(f"/api/channels/{cid}/chain", json={"agentIds": ["novelist", "editor"], "approval": True})
        fake_llm.script(Reply(text="draft"), Reply(text="polished"))
        run = await (await owner.post("/api/chains", json={"channelId": cid, "input": "write"})).get_json()
        for _ in range(1000):
            if (await app.xj.engine.chains.get(run["chainId"])).status == "paused":
                break
            await asyncio.sleep(0.01)
        mid = (await (await owner.get(f"/api/messages?channelId={cid}")).get_json())["messages"][0]["id"]
        approval = await pending_approval(app, cid, mid)
        app.plugin, app.owner, app.ids = plugin, owner, {"channel": cid, "chain": run["chainId"], "message": mid,
                                                         "approval": approval}
        yield app


async def pending_approval(app, channel_id: str, message_id: str) -> str:
    """A tool call of a turn the owner started, waiting for approval in the channel."""
    owner = await app.xj.db.fetchval("SELECT id FROM users WHERE role = 'owner'")
    row = await app.xj.engine.approvals.create(
        channel_id=channel_id, message_id=None, reply_to=message_id, call_id="call_1", agent_id="novelist",
        tool_name="manage_schedule", arguments={"action": "list"}, requested_by=owner)
    return row["id"]


# (method, path, body, the action whose refusal stops it)
CHANNEL_ROUTES = [
    ("GET", "/api/channels/{channel}", None, "channel.read"),
    ("PUT", "/api/channels/{channel}", {"name": "n"}, "channel.manage"),
    ("DELETE", "/api/channels/{channel}", None, "channel.manage"),
    ("POST", "/api/channels/{channel}/members", {"agentIds": ["translator"]}, "channel.manage"),
    ("DELETE", "/api/channels/{channel}/members/editor", None, "channel.manage"),
    ("POST", "/api/channels/{channel}/read", {}, "channel.read"),
    ("GET", "/api/channels/{channel}/export", None, "channel.read"),
    ("GET", "/api/channels/{channel}/chain", None, "channel.read"),
    ("PUT", "/api/channels/{channel}/chain", {"agentIds": ["editor"]}, "channel.manage"),
    ("GET", "/api/messages?channelId={channel}", None, "channel.read"),
    ("POST", "/api/messages", {"channelId": "{channel}", "content": "hi"}, "channel.write"),
    ("PUT", "/api/messages/{message}", {"content": "x"}, "channel.write"),
    ("DELETE", "/api/messages/{message}", None, "channel.read"),
    ("GET", "/api/messages/search?q=write&channelId={channel}", None, "channel.read"),
    ("GET", "/api/turns?channelId={channel}", None, "channel.read"),
    ("POST", "/api/turns/stop", {"channelId": "{channel}"}, "channel.write"),
    ("POST", "/api/chains", {"channelId": "{channel}", "input": "again"}, "channel.write"),
    ("GET", "/api/chains/{chain}", None, "channel.read"),
    ("POST", "/api/chains/{chain}/decision", {"action": "approve"}, "chain.decide"),
    ("GET", "/api/channels/{channel}/chains", None, "channel.read"),
    ("GET", "/api/channels/{channel}/tree", None, "channel.read"),
    ("POST", "/api/channels/{channel}/archive", {"archived": True}, "channel.manage"),
    ("POST", "/api/channels/{channel}/fork", {"messageId": "{message}"}, "channel.write"),
    ("POST", "/api/channels/{channel}/topics", {"name": "t"}, "channel.write"),
    ("POST", "/api/messages/{message}/regenerate", None, "channel.write"),
    ("POST", "/api/messages/{message}/resend", {"content": "x"}, "channel.write"),
    ("POST", "/api/messages/{message}/retry", None, "channel.write"),
    ("POST", "/api/turns", {"channelId": "{channel}", "content": "hi"}, "channel.write"),
    ("GET", "/api/approvals?channelId={channel}", None, "channel.read"),
    ("GET", "/api/approvals/{approval}", None, "channel.read"),
    ("POST", "/api/approvals/{approval}", {"decision": "approve"}, "tool.approve"),
    ("GET", "/api/channels/{channel}/workflows", None, "channel.read"),
    ("POST", "/api/channels/{channel}/workflows", {"name": "w", "steps": [{"agentId": "novelist"}]}, "channel.manage"),
    ("GET", "/api/rag/citations/{message}", None, "channel.read"),
    ("GET", "/api/rag/citations/{message}/document?n=1", None, "channel.read"),
]


def _fill(value, ids):
    if isinstance(value, str):
        for k, v in ids.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method,path,body,action", CHANNEL_ROUTES, ids=[f"{m} {p}" for m, p, _, _ in CHANNEL_ROUTES])
async def test_a_refused_channel_action_stops_the_route(world, method, path, body, action):
    world.plugin.deny = lambda a, resource: a == action
    before = await world.xj.db.fetchval("SELECT count(*) FROM messages")
    resp = await world.owner.open(_fill(path, world.ids), method=method, json=_fill(body, world.ids))
    assert resp.status_code in (403, 404), await resp.get_data(as_text=True)
    assert world.plugin.actions(action), "the hook was not asked"
    assert await world.xj.db.fetchval("SELECT count(*) FROM messages") == before  # nothing was stored
    assert (await world.xj.engine.chains.get(world.ids["chain"])).status == "paused"  # nothing was decided
    assert (await world.xj.engine.approvals.get(world.ids["approval"]))["status"] == "pending"


async def test_a_refused_search_hides_the_channel_from_lists(world):
    world.plugin.deny = lambda a, resource: a == "channel.read" and resource.get("name") == "g"
    results = await (await world.owner.get("/api/messages/search?q=write")).get_json()
    channels = await (await world.owner.get("/api/channels")).get_json()
    assert (results["results"], channels["channels"]) == ([], [])


async def test_every_channel_route_is_in_the_table(world):
    covered = {(m, p.split("?")[0]) for m, p, _, _ in CHANNEL_ROUTES}
    named = set()
    for rule in world.url_map.iter_rules():
        if {"channel_id", "chain_id", "message_id"} & set(rule.arguments) or rule.endpoint.split(".")[0] in (
                "turns", "chains", "approvals"):
            path = rule.rule.replace("<channel_id>", "{channel}").replace("<chain_id>", "{chain}") \
                .replace("<approval_id>", "{approval}") \
                .replace("<message_id>", "{message}").replace("<member_id>", "editor")
            named |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert named - covered == set()


@pytest.mark.parametrize("frame,action", [
    ({"type": "subscribe", "data": {"channelId": "{channel}"}}, "channel.read"),
    ({"type": "typing", "data": {"channelId": "{channel}"}}, "channel.write"),
    ({"type": "stop", "data": {"channelId": "{channel}"}}, "channel.write"),
    ({"type": "chain_decision", "data": {"chainId": "{chain}", "action": "approve"}}, "chain.decide"),
    ({"type": "approval_decision", "data": {"approvalId": "{approval}", "decision": "approve"}}, "tool.approve"),
    ({"type": "workflow_decision", "data": {"runId": "{run}", "action": "approve"}}, "chain.decide"),
])
async def test_a_refused_channel_action_stops_the_frame(tmp_path, fake_llm, frame, action):
    plugin = Recorder(deny=lambda a, resource: False)
    async with live_server(llm_settings(tmp_path, fake_llm), plugins=[plugin]) as (app, base):
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/login", json={"password": OWNER_PASSWORD})
            cid = (await http.post("/api/channels", json={"name": "g", "type": "group",
                                                           "agentIds": ["novelist", "editor"]})).json()["id"]
            await http.put(f"/api/channels/{cid}/chain", json={"agentIds": ["novelist", "editor"], "approval": True})
            fake_llm.script(Reply(text="draft"))
            chain = (await http.post("/api/chains", json={"channelId": cid, "input": "w"})).json()["chainId"]
            while (await app.xj.engine.chains.get(chain)).status != "paused":
                await asyncio.sleep(0.01)
            token = http.cookies["session"]
            approval = await pending_approval(app, cid, (await app.xj.db.fetchval(
                "SELECT id FROM messages WHERE channel_id = ? AND user_id IS NOT NULL", (cid,))))
            wf = (await http.post(f"/api/channels/{cid}/workflows", json={
                "name": "w", "steps": [{"agentId": "novelist", "approval": True}]})).json()["workflow"]
            run = (await http.post(f"/api/workflows/{wf['id']}/runs", json={"input": "w"})).json()["run"]["id"]
            while (await http.get(f"/api/workflow-runs/{run}")).json()["run"]["status"] != "paused":
                await asyncio.sleep(0.01)
        plugin.deny = lambda a, resource: a == action
        async with connect(base.replace("http", "ws") + "/ws") as ws:
            await send(ws, {"type": "auth", "token": token})
            await recv_until(ws, "auth_ok")
            await send(ws, _fill(frame, {"channel": cid, "chain": chain, "approval": approval, "run": run}))
            err, _ = await recv_until(ws, "error")
        assert err["data"]["code"] in ("forbidden", "channel_not_found", "chain_not_found", "read_only",
                                       "not_your_chain", "not_your_approval")
        assert plugin.actions(action)
        assert (await app.xj.engine.chains.get(chain)).status == "paused"
        assert (await runner(app.xj).snapshot(run))["status"] == "paused"


# ------------------------------------------------------------------ who may decide a chain


async def test_a_guest_cannot_decide_the_owners_chain(world):
    guest = await make_user(world, "guest", "guest")
    await world.owner.post(f"/api/channels/{world.ids['channel']}/members", json={"userIds": [guest["id"]]})
    gc = world.test_client()
    await login(gc, PASSWORD, "guest")
    chain = world.ids["chain"]
    resp = await gc.post(f"/api/chains/{chain}/decision", json={"action": "approve"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "not_your_chain")
    assert (await gc.get(f"/api/chains/{chain}")).status_code == 200  # he may still watch it
    turn_stop = await gc.post("/api/turns/stop", json={"channelId": world.ids["channel"]})
    assert turn_stop.status_code == 200
    assert (await world.xj.engine.chains.get(chain)).status == "paused"
    resp = await world.owner.post(f"/api/chains/{chain}/decision", json={"action": "stop"})
    assert resp.status_code == 200
    for _ in range(500):
        if (await world.xj.engine.chains.get(chain)).status != "paused":
            break
        await asyncio.sleep(0.01)
    assert (await world.xj.engine.chains.get(chain)).status == "stopped"  # a stopped run reads stopped
