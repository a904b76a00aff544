"""Helpers for the chat-core tests: users of every role, agents, channels, frames."""
from __future__ import annotations

import asyncio
import json

from conftest import login
from xiajiao import auth
from xiajiao.ids import now_iso

PASSWORD = "password-123"


async def make_user(app, username: str, role: str = "member") -> dict:
    return await auth.create_user(app.xj.db, username=username, password=PASSWORD, role=role)


async def user_client(app, username: str, role: str = "member"):
    """A test client logged in as a new user; returns (client, user row)."""
    user = await make_user(app, username, role)
    c = app.test_client()
    await login(c, PASSWORD, username)
    return c, user


async def make_agent(app, agent_id: str = "agent_poet", name: str = "诗人") -> str:
    now = now_iso()
    await app.xj.db.execute("INSERT INTO agents (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                            (agent_id, name, now, now))
    await app.xj.engine.agents.load()  # written behind the agents service's back: it reads them again
    return agent_id


async def make_channel(client, name="写作工作室", type="group", agentIds=("agent_poet",), **extra) -> str:
    resp = await client.post("/api/channels", json={"name": name, "type": type, "agentIds": list(agentIds), **extra})
    assert resp.status_code == 201, await resp.get_data(as_text=True)
    return (await resp.get_json())["id"]


async def post(client, channel_id: str, content: str, type: str = "text") -> str:
    resp = await client.post("/api/messages", json={"channelId": channel_id, "content": content, "type": type})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return (await resp.get_json())["id"]


def session_token(client) -> str:
    """The session cookie a logged-in test client holds."""
    for cookie in client.cookie_jar:
        if cookie.name == auth.SESSION_COOKIE:
            return cookie.value
    raise AssertionError("client is not logged in")


async def recv(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, type_: str, timeout: float = 5.0) -> tuple[dict, list[dict]]:
    """Read frames until one of ``type_``; returns it and the frames before it."""
    seen = []
    while True:
        frame = await recv(ws, timeout)
        if frame["type"] == type_:
            return frame, seen
        seen.append(frame)


async def send(ws, frame: dict) -> None:
    await ws.send(json.dumps(frame, ensure_ascii=False))


async def search(client, q: str, **params) -> list[dict]:
    resp = await client.get("/api/messages/search", query_string={"q": q, **params})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return (await resp.get_json())["results"]
