"""Who may call what: every chat-core route for anonymous, guest, member, a second member
(outside the channel), admin and owner; plus the declaration of every route's caller."""
from __future__ import annotations

import asyncio
import io
import itertools

import pytest
from quart.datastructures import FileStorage

from chat_helpers import PASSWORD, make_agent, make_user
from conftest import make_settings, running_app
from xiajiao import auth, chat, hookimpl

ROLES = ("anon", "guest", "member", "second", "admin", "owner")
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")

# (method, path, body, expected status for anon, guest, member, second, admin, owner)
# {channel}: a fresh group of the owner with guest and member in it; {message}: the member's
# message there; {user}: a fresh member; {key}: the caller's own key; {invite}: an owner's invite.
MATRIX = [
    ("GET", "/health", None, (200, 200, 200, 200, 200, 200)),
    ("GET", "/-/plugins", None, (401, 403, 403, 403, 403, 200)),
    ("GET", "/metrics", None, (401, 403, 403, 403, 200, 200)),
    ("GET", "/api/me", None, (401, 200, 200, 200, 200, 200)),
    ("PUT", "/api/me", {"displayName": "Me", "avatar": "🦐"}, (401, 200, 200, 200, 200, 200)),
    ("POST", "/api/me/password", {"currentPassword": "not-mine-1", "newPassword": "another-pass-1"},
     (401, 400, 400, 400, 400, 400)),
    ("GET", "/api/team", None, (401, 200, 200, 200, 200, 200)),
    # the passages a reply cites: whoever may read its channel ("second" is not in it)
    ("GET", "/api/rag/citations/{message}", None, (401, 200, 200, 404, 200, 200)),
    ("GET", "/api/rag/citations/{message}/document?n=1", None, (401, 404, 404, 404, 404, 404)),
    ("POST", "/api/login", {"password": "wrong-password"}, (401, 401, 401, 401, 401, 401)),
    ("POST", "/api/logout", None, (200, 200, 200, 200, 200, 200)),
    ("GET", "/api/users", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/api/users", {"username": "{uname}", "password": PASSWORD}, (401, 403, 403, 403, 201, 201)),
    ("PUT", "/api/users/{user}", {"displayName": "X"}, (401, 403, 403, 403, 200, 200)),
    ("DELETE", "/api/users/{user}", None, (401, 403, 403, 403, 200, 200)),
    ("GET", "/api/keys", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/api/keys", {"name": "k"}, (401, 201, 201, 201, 201, 201)),
    ("DELETE", "/api/keys/{key}", None, (401, 200, 200, 200, 200, 200)),
    ("GET", "/api/invites", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/api/invites", {"role": "guest"}, (401, 403, 403, 403, 201, 201)),
    ("POST", "/api/invites", {"role": "guest", "channelIds": ["{channel}"], "maxUses": 5, "hours": 1},
     (401, 403, 403, 403, 201, 201)),
    ("DELETE", "/api/invites/{invite}", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/api/invites/accept", {"token": "{invite_token}", "username": "{uname}", "password": PASSWORD},
     (200, 200, 200, 200, 200, 200)),
    ("GET", "/api/channels", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/api/channels", {"name": "n", "type": "group", "agentIds": ["agent_poet"]},
     (401, 403, 201, 201, 201, 201)),
    ("GET", "/api/channels/{channel}", None, (401, 200, 200, 404, 200, 200)),
    ("PUT", "/api/channels/{channel}", {"name": "n"}, (401, 403, 403, 404, 200, 200)),
    ("DELETE", "/api/channels/{channel}", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/channels/{channel}/members", {"agentIds": ["agent_coder"]}, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/channels/{channel}/read", {}, (401, 200, 200, 404, 200, 200)),
    ("DELETE", "/api/channels/{channel}/members/agent_poet", None, (401, 403, 403, 404, 200, 200)),
    ("GET", "/api/messages?channelId={channel}", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/messages", {"channelId": "{channel}", "content": "hi"}, (401, 200, 200, 404, 403, 200)),
    ("PUT", "/api/messages/{message}", {"content": "x"}, (401, 403, 200, 404, 403, 403)),
    ("DELETE", "/api/messages/{message}", None, (401, 403, 200, 404, 200, 200)),
    ("GET", "/api/messages/search?q=hi", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/api/upload", "FILE", (401, 200, 200, 200, 200, 200)),
    # conversations: the tree of topics and branches, reply versions, the JSON turn, chain runs
    ("GET", "/api/channels/{channel}/tree", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/channels/{channel}/topics", {"name": "t"}, (401, 201, 201, 404, 403, 201)),
    ("POST", "/api/channels/{channel}/fork", {"messageId": "msg_0000000000000000"}, (401, 404, 404, 404, 403, 404)),
    ("POST", "/api/channels/{channel}/archive", {"archived": True}, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/messages/{message}/regenerate", None, (401, 400, 400, 404, 403, 400)),
    ("POST", "/api/messages/{message}/retry", None, (401, 409, 409, 404, 403, 409)),
    ("POST", "/api/messages/{message}/resend", {"content": "again"}, (401, 403, 202, 404, 403, 403)),
    ("POST", "/api/turns", {"channelId": "{channel}", "content": "hi"}, (401, 200, 200, 404, 403, 200)),
    ("GET", "/api/channels/{channel}/chains", None, (401, 200, 200, 404, 200, 200)),
    ("GET", "/api/providers/demo/models", None, (401, 403, 403, 403, 400, 400)),
    ("GET", "/uploads/{upload}", None, (401, 200, 200, 200, 200, 200)),
    ("GET", "/api/turns?channelId={channel}", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/turns/stop", {"channelId": "{channel}"}, (401, 200, 200, 404, 403, 200)),
    ("GET", "/api/channels/{channel}/chain", None, (401, 200, 200, 404, 200, 200)),
    ("PUT", "/api/channels/{channel}/chain", {"agentIds": ["agent_poet"]}, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/chains", {"channelId": "{chained}", "input": "hi"}, (401, 201, 201, 404, 403, 201)),
    ("GET", "/api/chains/{run}", None, (401, 200, 200, 404, 200, 200)),
    # a run the owner started: who started it and admins decide it, other people in the room do not
    ("POST", "/api/chains/{run}/decision", {"action": "stop"}, (401, 403, 403, 404, 200, 200)),
    # tool approvals ({approval}: a call of the owner's turn waiting in {channel}): he and admins decide it
    ("GET", "/api/approvals?channelId={channel}", None, (401, 200, 200, 404, 200, 200)),
    ("GET", "/api/approvals/{approval}", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/approvals/{approval}", {"decision": "reject"}, (401, 403, 403, 404, 200, 200)),
    ("GET", "/api/keys/{key}/webhook-secret", None, (401, 200, 200, 200, 200, 200)),
    # workflows ({workflow}: in a fresh group of the owner; {wfrun}: a run of it the owner started, waiting for
    # approval): readers see them, who manages the group changes them, who posts starts them, who started a run
    # and admins decide it
    ("GET", "/api/channels/{channel}/workflows", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/channels/{channel}/workflows", {"name": "w", "steps": [{"agentId": "agent_poet"}]},
     (401, 403, 403, 404, 201, 201)),
    ("GET", "/api/workflows/{workflow}", None, (401, 200, 200, 404, 200, 200)),
    ("PUT", "/api/workflows/{workflow}", {"name": "n"}, (401, 403, 403, 404, 200, 200)),
    ("DELETE", "/api/workflows/{workflow}", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflows/{workflow}/token", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflows/{workflow}/runs", {"input": "hi"}, (401, 201, 201, 404, 403, 201)),
    ("GET", "/api/workflows/{workflow}/runs", None, (401, 200, 200, 404, 200, 200)),
    ("GET", "/api/workflow-runs/{wfrun}", None, (401, 200, 200, 404, 200, 200)),
    ("POST", "/api/workflow-runs/{wfrun}/approve", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflow-runs/{wfrun}/reject", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflow-runs/{wfrun}/suspend", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflow-runs/{wfrun}/cancel", None, (401, 403, 403, 404, 200, 200)),
    ("POST", "/api/workflow-runs/{wfrun}/resume", None, (401, 403, 403, 404, 409, 409)),
    # an incoming webhook: anyone may knock, the token decides (none given here)
    ("POST", "/api/triggers/{workflow}", None, (401, 401, 401, 401, 401, 401)),
    # the machine API (/v1): members and above; a task ({task}: the member's, finished) only to its owner and admins
    ("GET", "/v1/models", None, (401, 403, 200, 200, 200, 200)),
    ("POST", "/v1/chat/completions", {"model": "agent/agent_poet", "messages": [{"role": "user", "content": "hi"}]},
     (401, 403, 200, 200, 200, 200)),
    ("POST", "/v1/run", {"agent": "agent_poet", "input": "hi"}, (401, 403, 200, 200, 200, 200)),
    ("POST", "/v1/stream", {"agent": "agent_poet", "input": "hi"}, (401, 403, 200, 200, 200, 200)),
    ("POST", "/v1/tasks", {"agent": "agent_poet", "input": "hi"}, (401, 403, 202, 202, 202, 202)),
    ("GET", "/v1/tasks", None, (401, 200, 200, 200, 200, 200)),
    ("GET", "/v1/tasks/{task}", None, (401, 404, 200, 404, 200, 200)),
    ("GET", "/v1/tasks/{task}/events", None, (401, 404, 200, 404, 200, 200)),
    ("POST", "/v1/tasks/{task}/cancel", None, (401, 404, 409, 404, 409, 409)),
    ("GET", "/api/channels/{channel}/export", None, (401, 403, 200, 404, 200, 200)),
    ("POST", "/api/channels/import", {"format": "x"}, (401, 403, 403, 403, 400, 400)),
    ("GET", "/api/backups", None, (401, 403, 403, 403, 403, 200)),
    ("POST", "/api/backups", None, (401, 403, 403, 403, 403, 201)),
    ("GET", "/api/backups/{backup}", None, (401, 403, 403, 403, 403, 200)),
    ("GET", "/api/system", None, (401, 403, 403, 403, 403, 200)),
    # the agents as MCP tools: anyone signed in (each sees the agents he may talk to)
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "matrix", "version": "1"}}},
     (401, 200, 200, 200, 200, 200)),
    # MCP servers the agents use as tools: admins; a stdio one (a program run here) only the owner
    ("GET", "/api/mcp/servers", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/api/mcp/servers", {"id": "matrix", "transport": "stdio", "command": "true", "enabled": False},
     (401, 403, 403, 403, 403, 201)),
    ("GET", "/api/mcp/servers/{mcp}", None, (401, 403, 403, 403, 200, 200)),
    ("PUT", "/api/mcp/servers/{mcp}", {"name": "Renamed"}, (401, 403, 403, 403, 200, 200)),
    ("DELETE", "/api/mcp/servers/{mcp}", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/api/mcp/servers/{mcp}/refresh", {}, (401, 403, 403, 403, 409, 409)),  # disabled: not started
]
# headers a route needs besides its body: the MCP transport answers only callers accepting both kinds
HEADERS = {"/mcp": {"Accept": "application/json, text/event-stream"}}
OPENAI_SHAPED = ("/v1/models", "/v1/chat/")  # errors in OpenAI's shape: {"error": {"message", "type", "code"}}
# /ws accepts anyone and authorizes each frame; its matrix is in tests/test_ws.py.
WS_COVERED = {("GET", "/ws")}
OURS = {"auth", "users", "keys", "invites", "channels", "messages", "uploads", "ws", "backups",  # the chat core's blueprints
        "openai", "machine", "turns", "chains", "mcp", "approvals", "mcp_client", "triggers", "workflows"}
_names = itertools.count()


class World:
    def __init__(self, app):
        self.app = app
        self.clients: dict = {}
        self.users: dict = {}

    async def build(self):
        app = self.app
        await make_agent(app, "agent_poet")
        await make_agent(app, "agent_coder", "程序员")
        await app.xj.engine.agents.load()  # the agents written above take part in chains
        self.clients["anon"] = app.test_client()
        self.users["owner"] = await auth.owner(app.xj.db)
        for role, name in (("guest", "guest"), ("member", "member"), ("member", "second"), ("admin", "admin")):
            self.users[name] = await make_user(app, name, role)
        for name in ROLES[1:]:  # sessions made directly: logging in itself is tested in test_auth.py
            token = await auth.create_session(app.xj.db, self.users[name]["id"], days=1)
            self.clients[name] = app.test_client()
            self.clients[name].set_cookie("localhost", auth.SESSION_COOKIE, token)
        return self

    async def fill(self, text: str, caller: str) -> str:
        app, db = self.app, self.app.xj.db
        if "{chained}" in text or "{run}" in text:
            ch = await chat.create_channel(db, name="c", type="group", creator_id=self.users["owner"]["id"],
                                           agent_ids=["agent_poet", "agent_coder"],
                                           user_ids=[self.users["guest"]["id"], self.users["member"]["id"]])
            await db.execute("UPDATE channels SET chain = ?, config = ? WHERE id = ?",
                             ('["agent_poet", "agent_coder"]', '{"chainApproval": true}', ch["id"]))
            text = text.replace("{chained}", ch["id"])
            if "{run}" in text:
                run = await self.start_run(ch["id"])
                text = text.replace("{run}", run.id)
        if "{approval}" in text:
            text = text.replace("{approval}", await self.approval())
        if "{workflow}" in text or "{wfrun}" in text:
            text = await self.workflow(text)
        if "{channel}" in text or "{message}" in text:
            ch = await chat.create_channel(db, name="c", type="group", creator_id=self.users["owner"]["id"],
                                           agent_ids=["agent_poet"],
                                           user_ids=[self.users["guest"]["id"], self.users["member"]["id"]])
            text = text.replace("{channel}", ch["id"])
            if "{message}" in text:
                msg = await chat.create_message(app.xj, channel_id=ch["id"], content="hi",
                                                user_id=self.users["member"]["id"])
                text = text.replace("{message}", msg["id"])
        if "{uname}" in text:
            text = text.replace("{uname}", f"fresh{next(_names)}")
        if "{user}" in text:
            text = text.replace("{user}", (await make_user(app, f"target{next(_names)}"))["id"])
        if "{key}" in text:
            owner_id = self.users.get(caller, self.users["owner"])["id"]
            key, _ = await auth.create_api_key(db, owner_id)
            text = text.replace("{key}", key["id"])
        if "{invite" in text:
            inv, token = await auth.create_invite(db, created_by=auth.Actor(self.users["owner"]["id"], "owner"),
                                                  role="member")
            text = text.replace("{invite}", inv["id"]).replace("{invite_token}", token)
        if "{task}" in text:
            task_id = f"task_{next(_names):016x}"
            await db.execute("INSERT INTO tasks (id, user_id, agent_id, input, status, created_at) VALUES (?,?,?,?,?,?)",
                             (task_id, self.users["member"]["id"], "agent_poet", "hi", "succeeded", "2026-01-01"))
            text = text.replace("{task}", task_id)
        if "{mcp}" in text:  # a disabled streamable HTTP server (never contacted)
            from plugins.mcp_client import store

            sid = f"matrix{next(_names)}"
            defs = store.load(app.xj)
            defs[sid] = store.check({"id": sid, "transport": "http", "url": "http://127.0.0.1:9/mcp", "enabled": False})
            store.save(app.xj, defs)
            text = text.replace("{mcp}", sid)
        if "{backup}" in text:
            text = text.replace("{backup}", (await app.xj.backups.run())["path"].rsplit("/", 1)[-1])
        if "{upload}" in text:
            resp = await self.clients["owner"].post("/api/upload", files={
                "file": FileStorage(io.BytesIO(PNG), filename="a.png")})
            text = text.replace("{upload}", (await resp.get_json())["url"].removeprefix("/uploads/"))
        return text

    async def approval(self) -> str:
        """A tool call of a turn the owner started, waiting for approval in a group with guest and member."""
        app, owner = self.app, self.users["owner"]["id"]
        ch = await chat.create_channel(app.xj.db, name="c", type="group", creator_id=owner, agent_ids=["agent_poet"],
                                       user_ids=[self.users["guest"]["id"], self.users["member"]["id"]])
        msg = await chat.create_message(app.xj, channel_id=ch["id"], content="go", user_id=owner)
        row = await app.xj.engine.approvals.create(
            channel_id=ch["id"], message_id=None, reply_to=msg["id"], call_id="call_1", agent_id="agent_poet",
            tool_name="shout", arguments={"text": "hi"}, requested_by=owner)
        return row["id"]

    async def workflow(self, text: str) -> str:
        """A workflow in a fresh group of the owner (guest and member in it) whose first step asks first."""
        from plugins.workflows import runner
        from plugins.workflows import store as wstore

        app = self.app
        ch = await chat.create_channel(app.xj.db, name="w", type="group", creator_id=self.users["owner"]["id"],
                                       agent_ids=["agent_poet"],
                                       user_ids=[self.users["guest"]["id"], self.users["member"]["id"]])
        row, _ = await wstore.create(app.xj, channel_id=ch["id"], name="w", creator=self.users["owner"]["id"],
                                     steps=[{"agentId": "agent_poet", "instruction": "{{input}}", "approval": True,
                                             "onError": "stop", "retries": 0}], stop_when=None)
        text = text.replace("{workflow}", row["id"])
        if "{wfrun}" in text:
            owner = auth.Actor(self.users["owner"]["id"], "owner", "owner")
            run = await runner(app.xj).start(row, actor=owner, text="go", reason="api")
            for _ in range(1000):
                if (await wstore.run_row(app.xj, run["id"]))["status"] == "paused":
                    break
                await asyncio.sleep(0.01)
            text = text.replace("{wfrun}", run["id"])
        return text

    async def start_run(self, channel_id: str):
        """A chain run the owner started, paused for approval after its first step."""
        app = self.app
        channel = await chat.get_channel(app.xj.db, channel_id)
        message = await chat.create_message(app.xj, channel_id=channel_id, content="go",
                                            user_id=self.users["owner"]["id"])
        owner = auth.Actor(self.users["owner"]["id"], "owner")
        run = await app.xj.engine.chains.start(channel, ["agent_poet", "agent_coder"], message, owner)
        for _ in range(1000):
            if run.status == "paused":
                return run
            await asyncio.sleep(0.01)
        raise AssertionError(f"the chain never paused: {run.status} {run.reason}")


async def call(world: World, role: str, method: str, path: str, body):
    client = world.clients[role]
    path = await world.fill(path, role)
    if body == "FILE":
        return await client.post(path, files={"file": FileStorage(io.BytesIO(PNG), filename="a.png")})
    if isinstance(body, dict):
        import json
        body = json.loads(await world.fill(json.dumps(body), role))
        return await client.open(path, method=method, json=body, headers=HEADERS.get(path))
    return await client.open(path, method=method, headers=HEADERS.get(path))


@pytest.mark.parametrize("method,path,body,expected", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
async def test_route_matrix(app, method, path, body, expected):
    world = await World(app).build()
    got = []
    for role in ROLES:
        resp = await call(world, role, method, path, body)
        got.append(resp.status_code)
        if resp.status_code >= 400:
            assert_error_shape(path, await resp.get_json())
    assert dict(zip(ROLES, got)) == dict(zip(ROLES, expected))


def assert_error_shape(path: str, err: dict) -> None:
    if path == "/mcp" and "jsonrpc" in err:  # the protocol's own errors: JSON-RPC, with a numeric code
        assert isinstance(err["error"]["code"], int) and err["error"]["message"]
    elif path.startswith(OPENAI_SHAPED):
        assert set(err["error"]) >= {"message", "type", "code"} and isinstance(err["error"]["code"], str)
    else:
        assert set(err) >= {"error", "code"} and isinstance(err["code"], str)


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule


async def test_every_chat_route_is_in_the_matrix(app):
    covered = {(m, p.split("?")[0]) for m, p, _, _ in MATRIX} | WS_COVERED
    ours = set()
    for method, rule in _routes(app):
        if rule.endpoint.split(".")[0] in OURS:
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<{arg}>", "{x}")
            ours.add((method, path))
    normalise = {(m, p.replace("{channel}", "{x}").replace("{message}", "{x}").replace("{user}", "{x}")
                  .replace("{key}", "{x}").replace("{invite}", "{x}").replace("{backup}", "{x}").replace("{mcp}", "{x}").replace("agent_poet", "{x}")
                  .replace("{run}", "{x}").replace("{approval}", "{x}").replace("{workflow}", "{x}").replace("{wfrun}", "{x}")
                  .replace("{task}", "{x}")
                  .replace("/uploads/{upload}", "/uploads/{x}/{x}")) for m, p in covered}
    assert ours - normalise == set()


async def test_every_route_declares_its_caller(app):
    exempt = {"static", "openapi"}  # the framework's static files and the public API description
    undeclared = [rule.rule for rule in app.url_map.iter_rules()
                  if rule.endpoint not in exempt
                  and not hasattr(app.view_functions[rule.endpoint], "required_role")]
    assert undeclared == []


async def test_openapi_is_served(client):
    resp = await client.get("/openapi.json")
    doc = await resp.get_json()
    assert resp.status_code == 200
    assert {"/api/messages", "/api/channels", "/api/login", "/api/upload"} <= set(doc["paths"])
    machine = {"/v1/models", "/v1/chat/completions", "/v1/run", "/v1/stream", "/v1/tasks", "/v1/tasks/{task_id}",
               "/v1/tasks/{task_id}/cancel", "/v1/tasks/{task_id}/events"}
    assert machine <= set(doc["paths"])
    assert "model" in str(doc["paths"]["/v1/chat/completions"]) and "webhook" in str(doc["paths"]["/v1/tasks"])


class HiddenChannels:
    """Hides channels named 'hidden' from everyone and lets guests manage channels."""

    @hookimpl
    def authorize(self, actor, action, resource):
        if resource.get("name") == "hidden":
            return False
        if action == "channel.manage" and actor.role == "guest" and resource.get("_member"):
            return True
        return None


async def test_plugins_take_part_in_authorization(tmp_path):
    async with running_app(make_settings(tmp_path), plugins=[HiddenChannels()]) as app:
        world = await World(app).build()
        owner, guest = world.clients["owner"], world.clients["guest"]
        hidden = await owner.post("/api/channels", json={"name": "hidden", "type": "group", "agentIds": []})
        hid = (await hidden.get_json())["id"]
        assert (await owner.get(f"/api/channels/{hid}")).status_code == 404
        cid = await world.fill("{channel}", "owner")
        resp = await guest.put(f"/api/channels/{cid}", json={"name": "renamed by guest"})
        assert (resp.status_code, (await resp.get_json())["channel"]["name"]) == (200, "renamed by guest")


BAD_BODIES = [b"", b"null", b"[]", b'"text"', b"42", b"{", b"\xff\xfe\x00"]


@pytest.mark.parametrize("method,path", sorted({(m, p) for m, p, b, _ in MATRIX if isinstance(b, dict)}))
async def test_bad_bodies_are_4xx_never_500(app, method, path):
    world = await World(app).build()
    for raw in BAD_BODIES:
        resp = await world.clients["owner"].open(await world.fill(path, "owner"), method=method, data=raw,
                                                 headers={"Content-Type": "application/json", **HEADERS.get(path, {})})
        assert 400 <= resp.status_code < 500, (raw, resp.status_code, await resp.get_data(as_text=True))
        assert_error_shape(path, await resp.get_json())
