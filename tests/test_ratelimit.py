"""Rate limits: a token bucket per user (per address before login), 429 with Retry-After."""
from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

from chat_helpers import PASSWORD, make_user, recv, send
from conftest import OWNER_PASSWORD, live_server, make_settings, running_app
from xiajiao.errors import RateLimited
from xiajiao.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_bucket_allows_a_burst_then_the_steady_rate():
    clock = Clock()
    lim = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [lim.hit("a") for _ in range(3)] == [0, 0, 0]
    assert lim.hit("a") == pytest.approx(1.0)   # one token a second
    assert lim.hit("b") == 0                     # keys are independent
    clock.now += 1.0
    assert lim.hit("a") == 0
    assert lim.hit("a") == pytest.approx(1.0)
    clock.now += 10
    assert [lim.hit("a") for _ in range(4)][:3] == [0, 0, 0]   # refills up to the burst only


def test_check_raises_with_retry_after():
    clock = Clock()
    lim = RateLimiter(per_minute=6, burst=1, clock=clock)
    lim.check("k")
    with pytest.raises(RateLimited) as err:
        lim.check("k")
    assert err.value.headers == {"Retry-After": "10"} and err.value.status == 429


async def test_login_attempts_are_throttled_per_address(tmp_path):
    async with running_app(make_settings(tmp_path, login_attempts_per_minute=3)) as app:
        c = app.test_client()
        statuses = [(await c.post("/api/login", json={"password": "wrong-password"})).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        resp = await c.post("/api/login", json={"password": OWNER_PASSWORD})
        assert resp.status_code == 429
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.get_json()
        assert (body["code"], body["retryAfter"]) == ("rate_limited", int(resp.headers["Retry-After"]))


async def test_requests_are_limited_per_user_with_a_burst(tmp_path):
    async with running_app(make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=5)) as app:
        owner = app.test_client()
        await owner.post("/api/login", json={"password": OWNER_PASSWORD})  # 1 token (by address)
        statuses = [(await owner.get("/api/me")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        # another user has his own bucket
        await make_user(app, "alice")
        alice = app.test_client()
        await alice.post("/api/login", json={"username": "alice", "password": PASSWORD})
        assert [(await alice.get("/api/me")).status_code for _ in range(6)] == [200] * 5 + [429]
        assert (await owner.get("/api/me")).status_code == 429


async def test_anonymous_callers_are_limited_per_address(tmp_path):
    async with running_app(make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=2)) as app:
        c = app.test_client()
        statuses = [(await c.get("/api/me")).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_over_limit_websocket_frames_get_an_error_frame(tmp_path):
    async with live_server(make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=3)) as (app, base):
        async with connect(base.replace("http", "ws") + "/ws") as ws:
            replies = []
            for _ in range(5):
                await send(ws, {"type": "ping"})
                replies.append(await recv(ws))
            # the upgrade request took the first token
            assert [r["type"] for r in replies] == ["pong", "pong", "error", "error", "error"]
            assert replies[2]["data"]["code"] == "rate_limited" and replies[2]["data"]["retryAfter"] >= 1
