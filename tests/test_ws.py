"""The WebSocket protocol on a real server: auth, subscribe, fan-out, replay, backpressure."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_helpers import PASSWORD, make_agent, make_user, recv, recv_until, send
from conftest import OWNER_PASSWORD, live_server, make_settings
from xiajiao import auth


async def http_login(base: str, password: str = OWNER_PASSWORD, username: str | None = None) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=base)
    body = {"password": password} | ({"username": username} if username else {})
    resp = await c.post("/api/login", json=body)
    assert resp.status_code == 200
    return c


async def until(condition, tries: int = 500) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def ws_as(base: str, token: str):
    ws = await connect(ws_url(base))
    await send(ws, {"type": "auth", "token": token})
    assert (await recv(ws))["type"] == "auth_ok"
    return ws


async def new_channel(http: httpx.AsyncClient, **extra) -> str:
    resp = await http.post("/api/channels", json={"name": "g", "type": "group", "agentIds": ["agent_poet"], **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def say(http: httpx.AsyncClient, channel_id: str, content: str) -> str:
    resp = await http.post("/api/messages", json={"channelId": channel_id, "content": content, "type": "text"})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


@pytest.fixture
async def live(tmp_path):
    async with live_server(make_settings(tmp_path)) as (app, base):
        await make_agent(app)
        http = await http_login(base)
        yield app, base, http
        await http.aclose()


async def test_the_seeds_wscat_flow(live):
    app, base, http = live
    token = http.cookies["session"]
    owner_id = (await http.get("/api/me")).json()["user"]["id"]
    cid = await new_channel(http)
    async with connect(ws_url(base), additional_headers={"Cookie": f"session={token}"}) as ws:
        await ws.send('{"type":"auth","token":"%s"}' % token)
        assert await recv(ws) == {"type": "auth_ok", "userId": owner_id, "data": {"userId": owner_id}}
        await ws.send('{"type":"subscribe","channelId":"%s"}' % cid)
        sub = await recv(ws)
        assert sub["type"] == "subscribed" and sub["data"]["channelId"] == cid
        mid = await say(http, cid, "@代码助手 hello")
        frame, _ = await recv_until(ws, "message")
        assert frame["channelId"] == cid and frame["seq"] == sub["data"]["seq"] + 1
        assert {k: frame["data"][k] for k in ("id", "channelId", "agentId", "userId", "content", "type")} == \
            {"id": mid, "channelId": cid, "agentId": None, "userId": owner_id, "content": "@代码助手 hello",
             "type": "text"}


async def test_nested_frames_ping_and_cookie_only_auth(live):
    app, base, http = live
    token = http.cookies["session"]
    async with connect(ws_url(base)) as ws:
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
    async with connect(ws_url(base), additional_headers={"Cookie": f"session={token}"}) as ws:
        await send(ws, {"type": "auth", "data": {}})  # the browser cannot read its HttpOnly cookie
        assert (await recv(ws))["type"] == "auth_ok"
        cid = await new_channel(http)
        await send(ws, {"type": "subscribe", "data": {"channelId": cid, "since": 0}})
        assert (await recv(ws))["type"] == "subscribed"


async def test_a_cookie_from_another_sites_page_does_not_authenticate(live):
    app, base, http = live
    token = http.cookies["session"]
    host = base.split("//", 1)[1]
    own = {"Cookie": f"session={token}", "Origin": f"http://{host}"}
    async with connect(ws_url(base), additional_headers=own) as ws:
        await send(ws, {"type": "auth", "data": {}})
        assert (await recv(ws))["type"] == "auth_ok"
    foreign = {"Cookie": f"session={token}", "Origin": "http://evil.example"}
    async with connect(ws_url(base), additional_headers=foreign) as ws:
        await send(ws, {"type": "auth", "data": {}})
        frame = await recv(ws)
        assert (frame["type"], frame["data"]["code"]) == ("error", "invalid_token")
        await send(ws, {"type": "auth", "token": token})  # a token it knows still works
        assert (await recv(ws))["type"] == "auth_ok"


async def test_api_key_authenticates_a_socket(live):
    app, base, http = live
    secret = (await http.post("/api/keys", json={"name": "bot"})).json()["secret"]
    async with connect(ws_url(base)) as ws:
        await send(ws, {"type": "auth", "token": secret})
        assert (await recv(ws))["type"] == "auth_ok"


async def test_unauthenticated_frames_get_errors_then_the_socket_closes(live):
    app, base, http = live
    async with connect(ws_url(base)) as ws:
        await send(ws, {"type": "auth", "token": "not-a-token"})
        assert (await recv(ws))["data"]["code"] == "invalid_token"
        await send(ws, {"type": "subscribe", "channelId": "ch_x"})
        assert (await recv(ws))["data"]["code"] == "unauthenticated"
        await ws.send("not json")
        assert (await recv(ws))["data"]["code"] == "invalid_json"
        await send(ws, {"type": "typing", "channelId": "ch_x"})
        err = await recv(ws)
        assert err == {"type": "error", "data": {"code": "unauthenticated", "message": "Send an auth frame first",
                                                 "type": "typing"}}
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd.code == 1008


@pytest.mark.parametrize("frame,code", [
    ({"type": "subscribe"}, "invalid_frame"),
    ({"type": "subscribe", "channelId": "ch_nope"}, "channel_not_found"),
    ({"type": "subscribe", "channelId": "CH", "since": -1}, "invalid_frame"),
    ({"type": "subscribe", "channelId": "CH", "since": "3"}, "invalid_frame"),
    ({"type": "dance"}, "unknown_type"),
    ({"data": {}}, "invalid_frame"),
])
async def test_bad_frames_get_error_frames_with_codes(live, frame, code):
    app, base, http = live
    cid = await new_channel(http)
    frame = json.loads(json.dumps(frame).replace('"CH"', f'"{cid}"'))
    async with await ws_as(base, http.cookies["session"]) as ws:
        await send(ws, frame)
        err = await recv(ws)
        assert (err["type"], err["data"]["code"]) == ("error", code)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}  # the socket stays usable


async def test_guest_never_receives_frames_of_a_channel_he_is_not_in(live):
    app, base, http = live
    guest = await make_user(app, "gus", "guest")
    ghttp = await http_login(base, PASSWORD, "gus")
    secret_ch = await new_channel(http)
    his_ch = await new_channel(http, userIds=[guest["id"]])
    async with await ws_as(base, ghttp.cookies["session"]) as ws:
        await send(ws, {"type": "subscribe", "channelId": secret_ch})
        assert (await recv(ws))["data"]["code"] == "channel_not_found"
        await send(ws, {"type": "subscribe", "channelId": his_ch})
        assert (await recv(ws))["type"] == "subscribed"
        await say(http, secret_ch, "top secret")
        await say(http, his_ch, "hello gus")
        frame, before = await recv_until(ws, "message")
        assert frame["data"]["content"] == "hello gus"
        assert all(f.get("channelId") != secret_ch for f in before)
        # removed from the channel: unsubscribed at once, nothing more arrives
        await http.delete(f"/api/channels/{his_ch}/members/{guest['id']}")
        frame, before = await recv_until(ws, "unsubscribed")
        assert frame["data"] == {"channelId": his_ch, "reason": "removed"}
        await say(http, his_ch, "after removal")
        await say(http, secret_ch, "more secrets")
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
    await ghttp.aclose()


async def test_reconnect_with_since_replays_exactly_the_gap(live):
    app, base, http = live
    cid = await new_channel(http)
    token = http.cookies["session"]
    async with await ws_as(base, token) as ws:
        await send(ws, {"type": "subscribe", "channelId": cid})
        sub = (await recv(ws))["data"]
        await say(http, cid, "one")
        seen, _ = await recv_until(ws, "message")
        last, epoch = seen["seq"], sub["epoch"]
    for _ in range(200):  # the server notices the close (and says "offline") before we go on
        if app.xj.hub.channels[cid].seq > last:
            break
        await asyncio.sleep(0.01)
    m2 = await say(http, cid, "two")
    m3 = await say(http, cid, "three")
    await http.put(f"/api/messages/{m2}", json={"content": "two, edited"})
    await http.delete(f"/api/messages/{m3}")
    async with await ws_as(base, token) as ws:
        await send(ws, {"type": "subscribe", "channelId": cid, "since": last, "epoch": epoch})
        sub = await recv(ws)
        # missed: going offline, two messages, an edit, a delete, coming back online
        assert sub["type"] == "subscribed" and sub["data"]["replayed"] == 6
        frames = [await recv(ws) for _ in range(6)]
        assert [(f["type"], f["seq"]) for f in frames] == [
            ("presence", last + 1), ("message", last + 2), ("message", last + 3), ("message_updated", last + 4),
            ("message_deleted", last + 5), ("presence", last + 6)]
        assert [f["data"].get("status") for f in (frames[0], frames[5])] == ["offline", "online"]
        assert [frames[1]["data"]["content"], frames[2]["data"]["content"], frames[3]["data"]["content"],
                frames[4]["data"]["id"]] == ["two", "three", "two, edited", m3]
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}  # nothing else was replayed


async def test_a_gap_too_old_or_another_epoch_asks_for_a_reload(tmp_path):
    async with live_server(make_settings(tmp_path, ws_replay_size=3)) as (app, base):
        await make_agent(app)
        http = await http_login(base)
        cid = await new_channel(http)
        for i in range(5):
            await say(http, cid, f"m{i}")
        async with await ws_as(base, http.cookies["session"]) as ws:
            await send(ws, {"type": "subscribe", "channelId": cid, "since": 1, "epoch": app.xj.hub.epoch})
            frame = await recv(ws)
            assert (frame["type"], frame["data"]["reason"]) == ("resync", "gap_too_old")
            await send(ws, {"type": "subscribe", "channelId": cid, "since": 4, "epoch": "other-start"})
            assert (await recv(ws))["type"] == "resync"
            await send(ws, {"type": "subscribe", "channelId": cid, "since": 3, "epoch": app.xj.hub.epoch})
            # kept: seq 4-6 (m3, m4, and the owner coming online)
            sub = await recv(ws)
            assert (sub["type"], sub["data"]["replayed"]) == ("subscribed", 3)
            frames = [await recv(ws) for _ in range(3)]
            assert [(f["seq"], f["type"], f["data"].get("content")) for f in frames] == \
                [(4, "message", "m3"), (5, "message", "m4"), (6, "presence", None)]
        await http.aclose()


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer that reads only when told."""

    def __init__(self, port: int, token: str):
        self.sock = socket.create_connection
        self.port, self.token = port, token

    async def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no autotuning: a truly slow reader
        sock.connect(("127.0.0.1", self.port))
        sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=2 ** 14)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Cookie: session={self.token}\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")

    def send(self, frame: dict) -> None:
        payload = json.dumps(frame).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask +
                          bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the server."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)


async def test_a_slow_client_is_told_to_resync_and_dropped_without_delaying_others(tmp_path):
    async with live_server(make_settings(tmp_path, ws_queue_size=8)) as (app, base):
        await make_agent(app)
        http = await http_login(base)
        cid = await new_channel(http)
        token = http.cookies["session"]
        fast = await ws_as(base, token)
        slow = StalledClient(app.xj.settings.port, token)
        await slow.open()
        slow.send({"type": "subscribe", "channelId": cid})
        await send(fast, {"type": "subscribe", "channelId": cid})
        await recv_until(fast, "subscribed")
        await until(lambda: app.xj.hub.subscriber_count(cid) == 2)
        big = "x" * 30_000
        received = []

        async def read_fast():
            while len(received) < 300:
                frame = await recv(fast, 20)
                if frame["type"] == "stream_chunk":
                    received.append(frame)

        reader = asyncio.get_running_loop().create_task(read_fast())
        for i in range(300):  # 9 MB, far more than the stalled socket's buffers hold
            app.xj.hub.publish(cid, "stream_chunk", {"messageId": "msg_x", "content": big, "i": i})
            await asyncio.sleep(0.001)
        await asyncio.wait_for(reader, 30)
        assert [f["data"]["i"] for f in received] == list(range(300))
        assert app.xj.hub.subscriber_count(cid) == 1  # the stalled one was detached
        texts = []
        while True:
            opcode, payload = await asyncio.wait_for(slow.frame(), 10)
            if opcode == 0x8:
                break
            texts.append(json.loads(payload))
        assert struct.unpack("!H", payload[:2])[0] == 1008
        last = texts[-1]
        assert (last["type"], last["data"]["reason"], last["data"]["channels"]) == ("resync", "slow_client", [cid])
        chunks = [t["data"]["i"] for t in texts if t["type"] == "stream_chunk"]
        assert chunks == list(range(len(chunks))) and len(chunks) < 300
        slow.writer.close()
        await fast.close()
        await http.aclose()


async def test_edits_deletes_typing_and_presence_are_pushed(live):
    app, base, http = live
    bob = await make_user(app, "bob", "member")
    bhttp = await http_login(base, PASSWORD, "bob")
    cid = await new_channel(http, userIds=[bob["id"]])
    async with await ws_as(base, http.cookies["session"]) as ws:
        await send(ws, {"type": "subscribe", "channelId": cid})
        await recv_until(ws, "subscribed")
        async with await ws_as(base, bhttp.cookies["session"]) as bws:
            frame, _ = await recv_until(ws, "presence")
            assert frame["data"] == {"userId": bob["id"], "status": "online"}
            await send(bws, {"type": "typing", "channelId": cid})
            frame, _ = await recv_until(ws, "typing")
            assert (frame["data"]["userId"], frame["channelId"]) == (bob["id"], cid)
            mid = await say(bhttp, cid, "draft")
            await bhttp.put(f"/api/messages/{mid}", json={"content": "final"})
            await bhttp.delete(f"/api/messages/{mid}")
            up, _ = await recv_until(ws, "message_updated")
            gone, _ = await recv_until(ws, "message_deleted")
            assert (up["data"]["content"], gone["data"]["id"]) == ("final", mid)
        frame, _ = await recv_until(ws, "presence")
        assert frame["data"] == {"userId": bob["id"], "status": "offline"}
    await bhttp.aclose()


async def test_other_modules_register_frame_handlers(live):
    app, base, http = live

    async def on_stop(conn, data):
        conn.send_frame("stopped", {"messageId": data["messageId"], "by": conn.actor.id})

    app.xj.ws_handlers["stop"] = on_stop
    async with await ws_as(base, http.cookies["session"]) as ws:
        await send(ws, {"type": "stop", "messageId": "msg_1"})
        frame = await recv(ws)
        assert frame["type"] == "stopped" and frame["data"]["messageId"] == "msg_1"


async def test_disabled_user_is_disconnected(live):
    app, base, http = live
    bob = await make_user(app, "bob", "member")
    token = await auth.create_session(app.xj.db, bob["id"], days=1)
    async with await ws_as(base, token) as ws:
        assert (await http.put(f"/api/users/{bob['id']}", json={"disabled": True})).status_code == 200
        with pytest.raises(ConnectionClosed):
            await recv(ws)
