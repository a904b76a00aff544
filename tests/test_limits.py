"""Limits that fit people and scripts: reads are cheap, what is expensive has its own bucket, logins
back off per address and per account, /health and invites never share the login bucket."""
from __future__ import annotations

import io

import pytest
from quart.datastructures import FileStorage

from chat_helpers import make_agent, make_channel, post
from conftest import OWNER_PASSWORD, make_settings, running_app
from test_ratelimit import Clock
from xiajiao.ratelimit import Backoff
from xiajiao.settings import SETTINGS

DEFAULTS = {s.name: s.default for s in SETTINGS if s.name.startswith(("rate_limit", "login_", "turn_", "upload_"))}


def peer(address: str) -> dict:
    return {"client": (address, 40000)}


def test_backoff_doubles_after_the_free_failures_and_a_success_clears_it():
    clock = Clock()
    b = Backoff(2, base=1.0, cap=8.0, forget=3600, clock=clock)
    waits = []
    for _ in range(6):
        waits.append(b.wait("k"))
        b.failed("k")
    assert waits == [0, 0, 1.0, 2.0, 4.0, 8.0]
    assert b.wait("k") == 8.0  # capped
    clock.now += 8.0
    assert b.wait("k") == 0
    b.succeeded("k")
    b.failed("k")
    assert b.wait("k") == 0  # counting starts again
    clock.now += 3601
    assert b._failures.get("k") and b.wait("k") == 0 and "k" not in b._failures  # forgotten when quiet


async def test_ten_wrong_passwords_do_not_lock_the_owner_out_from_another_address(tmp_path):
    async with running_app(make_settings(tmp_path, **DEFAULTS)) as app:
        c = app.test_client()
        wrong = [(await c.post("/api/login", json={"password": "wrong-password"}, scope_base=peer("203.0.113.5")))
                 .status_code for _ in range(10)]
        assert wrong == [401] * 10
        from_there = await c.post("/api/login", json={"password": OWNER_PASSWORD}, scope_base=peer("203.0.113.5"))
        assert from_there.status_code == 429 and int(from_there.headers["Retry-After"]) >= 1
        resp = await c.post("/api/login", json={"password": OWNER_PASSWORD}, scope_base=peer("198.51.100.7"))
        assert resp.status_code == 200


async def test_an_account_attacked_from_many_addresses_backs_off(tmp_path):
    async with running_app(make_settings(tmp_path, login_failures_per_account=5)) as app:
        c = app.test_client()
        for i in range(5):
            resp = await c.post("/api/login", json={"username": "owner", "password": "wrong"},
                                scope_base=peer(f"203.0.113.{i}"))
            assert resp.status_code == 401
        resp = await c.post("/api/login", json={"username": "owner", "password": OWNER_PASSWORD},
                            scope_base=peer("198.51.100.7"))
        assert resp.status_code == 429


async def test_health_never_answers_429(tmp_path):
    async with running_app(make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=1)) as app:
        c = app.test_client()
        assert {(await c.get("/health")).status_code for _ in range(50)} == {200}
        assert (await c.get("/api/me")).status_code == 401
        assert (await c.get("/api/me")).status_code == 429  # the anonymous bucket is empty, /health still fine
        assert (await c.get("/health")).status_code == 200


async def test_invites_do_not_share_the_login_bucket(tmp_path):
    from xiajiao import auth

    async with running_app(make_settings(tmp_path, login_attempts_per_minute=3)) as app:
        c = app.test_client()
        for _ in range(3):
            await c.post("/api/login", json={"password": "wrong-password"})
        assert (await c.post("/api/login", json={"password": "wrong-password"})).status_code == 429
        owner = auth.Actor((await auth.owner(app.xj.db))["id"], "owner")
        _, token = await auth.create_invite(app.xj.db, created_by=owner, role="member")
        resp = await c.post("/api/invites/accept", json={"token": token, "username": "newbie",
                                                         "password": "password-123"})
        assert resp.status_code == 200


async def test_reads_and_people_talk_never_meet_the_default_limits(tmp_path):
    async with running_app(make_settings(tmp_path, **DEFAULTS)) as app:
        c = app.test_client()
        await c.post("/api/login", json={"password": OWNER_PASSWORD})
        cid = await make_channel(c, agentIds=())  # people only: no agent turn starts
        statuses = {(await c.get(f"/api/messages?channelId={cid}")).status_code for _ in range(400)}
        for i in range(100):
            await post(c, cid, f"note {i}")
        assert statuses == {200}


async def test_messages_that_start_turns_have_their_own_bucket(tmp_path):
    async with running_app(make_settings(tmp_path, turn_rate_per_minute=1, turn_rate_burst=3)) as app:
        c = app.test_client()
        await c.post("/api/login", json={"password": OWNER_PASSWORD})
        await make_agent(app, "agent_poet")
        with_agent = await make_channel(c)
        people = await make_channel(c, agentIds=())
        got = [(await c.post("/api/messages", json={"channelId": with_agent, "content": f"hi {i}"})).status_code
               for i in range(4)]
        assert got == [200, 200, 200, 429]
        assert (await c.post("/api/messages", json={"channelId": people, "content": "hi"})).status_code == 200
        assert (await c.get(f"/api/messages?channelId={with_agent}")).status_code == 200
        stored = await app.xj.db.fetchval("SELECT count(*) FROM messages WHERE channel_id = ? AND user_id IS NOT "
                                          "NULL", (with_agent,))
        assert stored == 3  # the refused message was not stored


@pytest.mark.parametrize("route", ["/api/upload", "/api/rag/upload"])
async def test_upload_bytes_have_their_own_bucket(tmp_path, route):
    size = 40_000
    settings = make_settings(tmp_path, upload_bytes_per_minute=size * 2 + 100, max_upload_bytes=size * 2)
    async with running_app(settings) as app:
        c = app.test_client()
        await c.post("/api/login", json={"password": OWNER_PASSWORD})
        await make_agent(app, "agent_poet")
        body = ("知识 knowledge\n" * (size // 18)).encode()[:size]
        got = []
        for i in range(3):
            resp = await c.post(route, form={"agentId": "agent_poet"},
                                files={"file": FileStorage(io.BytesIO(body), filename=f"n{i}.txt")})
            got.append(resp.status_code)
        assert got[2] == 429 and 429 not in got[:2]
        assert (await c.get("/api/me")).status_code == 200  # reads are not touched
