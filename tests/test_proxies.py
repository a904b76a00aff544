"""One trusted-proxy setting: X-Forwarded-For/-Proto/-Host count only from XIAJIAO_TRUSTED_PROXIES,
for the login throttle, rate limits, Secure cookies, the WebSocket origin check and the logs."""
from __future__ import annotations

import json
import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from chat_helpers import recv_until, send
from conftest import OWNER_PASSWORD, live_server, make_settings, running_app
from xiajiao import proxies
from xiajiao.errors import StartupError

LOCAL = "127.0.0.1/32, ::1"
PEER = {"client": ("127.0.0.1", 40000)}  # the test client's requests come from the local proxy


@pytest.mark.parametrize("remote,xff,trusted,expected", [
    ("10.0.0.2", "203.0.113.5", "", "10.0.0.2"),                              # no proxy trusted
    ("10.0.0.2", "203.0.113.5", "10.0.0.0/8", "203.0.113.5"),
    ("10.0.0.2", "6.6.6.6, 203.0.113.5, 10.0.0.9", "10.0.0.0/8", "203.0.113.5"),  # walk back our proxies only
    ("198.51.100.1", "203.0.113.5", "10.0.0.0/8", "198.51.100.1"),           # a stranger's header is ignored
    ("10.0.0.2", "", "10.0.0.0/8", "10.0.0.2"),
])
def test_the_client_address_believes_trusted_proxies_only(remote, xff, trusted, expected):
    seen = proxies.client(remote, "http", {"X-Forwarded-For": xff, "X-Forwarded-Proto": "https", "Host": "h"},
                          proxies.parse_trusted(trusted))
    assert seen.address == expected
    assert seen.scheme == ("https" if expected != remote or (trusted and remote.startswith("10.")) else "http")


async def test_a_bad_trusted_proxies_setting_stops_the_start(tmp_path):
    with pytest.raises(StartupError, match="TRUSTED_PROXIES.*nonsense"):
        async with running_app(make_settings(tmp_path, trusted_proxies="10.0.0.0/8, nonsense")):
            pass


@pytest.mark.parametrize("trusted,secure", [("", False), (LOCAL, True)])
async def test_the_cookie_is_secure_behind_a_trusted_https_proxy(tmp_path, trusted, secure):
    async with running_app(make_settings(tmp_path, trusted_proxies=trusted)) as app:
        resp = await app.test_client().post("/api/login", json={"password": OWNER_PASSWORD},
                                            headers={"X-Forwarded-Proto": "https"}, scope_base=PEER)
        assert ("Secure" in resp.headers["Set-Cookie"]) is secure


@pytest.mark.parametrize("trusted", ["", LOCAL])
async def test_the_login_throttle_keys_on_the_forwarded_address_only_behind_a_trusted_proxy(tmp_path, trusted):
    settings = make_settings(tmp_path, trusted_proxies=trusted, login_failures_per_address=3)
    async with running_app(settings) as app:
        c = app.test_client()
        attacker, owner = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "198.51.100.7"}
        for _ in range(4):
            await c.post("/api/login", json={"password": "wrong-password"}, headers=attacker, scope_base=PEER)
        resp = await c.post("/api/login", json={"password": OWNER_PASSWORD}, headers=owner, scope_base=PEER)
        assert resp.status_code == (200 if trusted else 429)
        resp = await c.post("/api/login", json={"password": OWNER_PASSWORD}, headers=attacker, scope_base=PEER)
        assert resp.status_code == 429


@pytest.mark.parametrize("trusted,authenticated", [("", False), (LOCAL, True)])
async def test_the_websocket_origin_check_believes_x_forwarded_host_from_a_trusted_proxy(tmp_path, trusted,
                                                                                         authenticated):
    async with live_server(make_settings(tmp_path, trusted_proxies=trusted)) as (app, base):
        async with httpx.AsyncClient(base_url=base) as http:
            token = (await http.post("/api/login", json={"password": OWNER_PASSWORD})).cookies["session"]
        headers = {"Cookie": f"session={token}", "X-Forwarded-Host": "chat.example.org"}
        async with connect(base.replace("http", "ws") + "/ws", origin="https://chat.example.org",
                           additional_headers=headers) as ws:
            await send(ws, {"type": "auth"})
            frame, _ = await recv_until(ws, "auth_ok" if authenticated else "error")
        assert frame["type"] == ("auth_ok" if authenticated else "error")


async def test_the_access_log_names_the_forwarded_client(tmp_path, caplog):
    async with running_app(make_settings(tmp_path, trusted_proxies=LOCAL, access_log=True)) as app:
        with caplog.at_level(logging.INFO, logger="xiajiao.access"):
            await app.test_client().get("/health", headers={"X-Forwarded-For": "203.0.113.5"}, scope_base=PEER)
    lines = [r for r in caplog.records if r.name == "xiajiao.access"]
    assert [getattr(r, "address", None) for r in lines] == ["203.0.113.5"]
    assert json.dumps(lines[0].address)
