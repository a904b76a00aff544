"""Sessions that end: after logout or a revoked key, the sockets opened with it close (1008)."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_helpers import recv_until, send
from conftest import OWNER_PASSWORD, live_server, make_settings


@pytest.fixture
async def server(tmp_path):
    async with live_server(make_settings(tmp_path)) as (app, base):
        yield app, base


async def logged_in(base: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base)
    assert (await http.post("/api/login", json={"password": OWNER_PASSWORD})).status_code == 200
    return http


async def socket(base: str, *, frame_token: str | None = None, headers: dict | None = None):
    ws = await connect(base.replace("http", "ws") + "/ws", additional_headers=headers or {})
    if frame_token:
        await send(ws, {"type": "auth", "token": frame_token})
    else:
        await send(ws, {"type": "auth"})
    await recv_until(ws, "auth_ok")
    return ws


async def closed_with(ws) -> int:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1


async def still_open(ws) -> bool:
    await send(ws, {"type": "ping"})
    frame, _ = await recv_until(ws, "pong")
    return frame["type"] == "pong"


async def test_logout_closes_the_sockets_of_that_session_only(server):
    app, base = server
    first, second = await logged_in(base), await logged_in(base)
    token = first.cookies["session"]
    by_cookie = await socket(base, headers={"Cookie": f"session={token}"})
    by_frame = await socket(base, frame_token=token)
    other = await socket(base, frame_token=second.cookies["session"])
    assert (await first.post("/api/logout")).status_code == 200
    assert [await closed_with(by_cookie), await closed_with(by_frame)] == [1008, 1008]
    assert await still_open(other)
    await other.close()
    await first.aclose()
    await second.aclose()


async def test_a_revoked_key_closes_its_sockets_only(server):
    app, base = server
    http = await logged_in(base)
    made = (await http.post("/api/keys", json={"name": "script"})).json()
    secret = made["secret"]
    by_header = await socket(base, headers={"X-API-Key": secret})
    by_frame = await socket(base, frame_token=secret)
    by_cookie = await socket(base, frame_token=http.cookies["session"])
    assert (await http.delete(f"/api/keys/{made['key']['id']}")).status_code == 200
    assert [await closed_with(by_header), await closed_with(by_frame)] == [1008, 1008]
    assert await still_open(by_cookie)
    async with connect(base.replace("http", "ws") + "/ws") as ws:  # the key no longer opens a socket
        await send(ws, {"type": "auth", "token": secret})
        err, _ = await recv_until(ws, "error")
        assert err["data"]["code"] == "invalid_token"
    await by_cookie.close()
    await http.aclose()
