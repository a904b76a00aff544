"""The agents as MCP tools: the official SDK's client (streamable HTTP) against a live server on
loopback, the fake model answering the turns."""
from __future__ import annotations

import contextlib

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from chat_helpers import make_user
from conftest import live_server, llm_settings
from fake_llm import Reply
from xiajiao import auth, chat
from xiajiao.mcp_server import tool_names

MODES = ["auto", "legacy"]  # auto: the 2026 protocol (server/discover); legacy: the initialize handshake


@pytest.fixture
async def live(tmp_path, fake_llm):
    async with live_server(llm_settings(tmp_path, fake_llm, embedder="hash")) as (app, base):
        yield app, base


async def key_of(app, username: str | None = None, role: str = "member") -> tuple[str, dict]:
    """(secret, user row) of a new API key of the owner, or of a new user ``username``."""
    user = await auth.owner(app.xj.db) if username is None else await make_user(app, username, role)
    _, secret = await auth.create_api_key(app.xj.db, user["id"], "mcp")
    return secret, user


@contextlib.asynccontextmanager
async def mcp_client(base: str, secret: str | None, mode: str = "auto"):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(base + "/mcp", http_client=http), mode=mode) as client:
            yield client


@pytest.mark.parametrize("mode", MODES)
async def test_a_member_lists_the_agents_and_asks_one(live, fake_llm, mode):
    app, base = live
    secret, user = await key_of(app, "alice")
    agents = app.xj.engine.agents.all()
    async with mcp_client(base, secret, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"ask_agent", *(f"ask_{a['id']}" for a in agents)}
        assert tools["ask_agent"].input_schema["required"] == ["agent", "message"]
        assert set(tools["ask_agent"].input_schema["properties"]["agent"]["enum"]) == {a["id"] for a in agents}
        assert "sessionId" in tools["ask_novelist"].input_schema["properties"]

        fake_llm.script(Reply(text="从前有一只虾饺。", chunks=3))
        result = await client.call_tool("ask_agent", {"agent": "novelist", "message": "讲个故事"})
        assert not result.is_error
        assert result.content[0].text == "从前有一只虾饺。"
        session_id = result.structured_content["sessionId"]
        assert result.structured_content["agent"] == "novelist" and session_id in result.content[1].text
        assert fake_llm.last.last_user == "讲个故事"
        assert app.xj.engine.agents.soul("novelist").strip()[:40] in fake_llm.last.system

        # the turn is a conversation of the caller, shown in the web app like any other
        channel = await chat.get_channel(app.xj.db, session_id)
        assert channel["type"] == "dm" and channel["created_by"] == user["id"]
        texts = [m["content"] for m in await app.xj.db.fetchall(
            "SELECT content FROM messages WHERE channel_id = ? ORDER BY seq", (session_id,))]
        assert texts == ["讲个故事", "从前有一只虾饺。"]

        # the per-agent tool, continuing the session: the model sees the first exchange
        fake_llm.script(Reply(text="它去了海边。"))
        again = await client.call_tool("ask_novelist", {"message": "然后呢?", "sessionId": session_id})
        assert again.content[0].text == "它去了海边。" and again.structured_content["sessionId"] == session_id
        assert [m["content"] for m in fake_llm.last.messages if m["role"] != "system"] == [
            "讲个故事", "从前有一只虾饺。", "然后呢?"]


async def test_bad_calls_are_tool_errors_the_model_can_read(live, fake_llm):
    app, base = live
    secret, _ = await key_of(app)
    async with mcp_client(base, secret) as client:
        cases = [("ask_agent", {"agent": "nobody", "message": "hi"}, "agent_not_found"),
                 ("ask_agent", {"message": "hi"}, "agent_required"),
                 ("ask_novelist", {"message": "   "}, "empty_message"),
                 ("ask_novelist", {"message": 42}, "invalid_message"),
                 ("ask_novelist", {"message": "hi", "sessionId": "ch_0000000000000000"}, "session_not_found"),
                 ("ask_nobody", {"message": "hi"}, "unknown_tool")]
        for name, args, code in cases:
            result = await client.call_tool(name, args)
            assert result.is_error and f"[{code}]" in result.content[0].text, (name, result)


@pytest.mark.parametrize("secret", [None, "xj_not-a-key", "not-even-shaped"])
async def test_no_key_or_a_wrong_key_is_401(live, secret):
    app, base = live
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post("/mcp", json=body, headers=headers)
    assert resp.status_code == 401 and resp.json()["code"] == "unauthenticated"
    with pytest.raises(Exception):  # the SDK's client gives up too
        async with mcp_client(base, secret) as client:
            await client.list_tools()


async def test_a_revoked_key_is_refused_at_once(live):
    app, base = live
    secret, user = await key_of(app, "bob")
    async with mcp_client(base, secret, "legacy") as client:
        assert (await client.list_tools()).tools
        key = (await auth.list_api_keys(app.xj.db, user["id"]))[0]
        await auth.revoke_api_key(app.xj.db, user["id"], key["id"])
        with pytest.raises(Exception):
            await client.list_tools()


async def test_a_guest_sees_only_the_agents_of_its_conversations(live, fake_llm):
    app, base = live
    secret, guest = await key_of(app, "gast", role="guest")
    owner = await auth.owner(app.xj.db)
    group = await chat.create_channel(app.xj.db, name="译组", type="group", creator_id=owner["id"],
                                      agent_ids=["translator"], user_ids=[guest["id"]])
    read_only = await chat.create_channel(app.xj.db, name="只读", type="group", creator_id=owner["id"],
                                          agent_ids=["novelist"], user_ids=[])
    await app.xj.db.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at, can_write) "
                            "VALUES (?, 'user', ?, '2026-01-01', 0)", (read_only["id"], guest["id"]))
    async with mcp_client(base, secret) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"ask_agent", "ask_translator"}
        assert tools["ask_agent"].input_schema["properties"]["agent"]["enum"] == ["translator"]

        refused = await client.call_tool("ask_agent", {"agent": "novelist", "message": "hi"})
        assert refused.is_error and "[agent_not_found]" in refused.content[0].text
        fake_llm.script(Reply(text="Hello."))
        result = await client.call_tool("ask_translator", {"message": "你好"})
        assert result.content[0].text == "Hello."
        # a guest starts no conversation: the turn is in the group he shares with the agent
        assert result.structured_content["sessionId"] == group["id"]
    assert await app.xj.db.fetchval("SELECT count(*) FROM channels WHERE created_by = ?", (guest["id"],)) == 0


def test_tool_names_fit_every_provider():
    long = "a" * 64
    names = tool_names(["poet", long, long[:-1] + "b", "agent"])
    assert list(names.values()) == ["poet", long, long[:-1] + "b", "agent"]
    assert all(len(n) <= 64 and n.replace("_", "").replace("-", "").isalnum() for n in names)
    assert len(set(names)) == 4 and "ask_poet" in names and "ask_agent" not in names
