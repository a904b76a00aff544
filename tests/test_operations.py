"""Operations: log lines of a real server process, the owner's system view, health per provider."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from chat_helpers import user_client
from conftest import ROOT, make_settings, server_env, wait_http
from xiajiao.errors import SettingsError
from xiajiao.settings import load_settings


def serve(settings, **env):
    e = server_env(settings)
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.Popen([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT, env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(proc) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    return err


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_served_process_writes_access_log_lines(tmp_path, fmt):
    settings = make_settings(tmp_path, access_log=True)
    proc = serve(settings, XIAJIAO_LOG_FORMAT=fmt)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        await wait_http(base, proc)
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/api/me", headers={"X-Request-ID": "req-42"})).status_code == 401
    finally:
        err = stop(proc)
    lines = [line for line in err.splitlines() if "req-42" in line]
    assert lines, err[-2000:]
    if fmt == "json":
        entry = json.loads(lines[0])
        assert entry["request_id"] == "req-42" and entry["status"] == 401 and entry["route"] == "/api/me"
        assert entry["logger"] == "xiajiao.access" and isinstance(entry["ms"], float)
        for line in err.splitlines():  # every line of ours is JSON
            if line.startswith("{"):
                json.loads(line)
    else:
        assert "xiajiao.access" in lines[0] and "status=401" in lines[0] and "route=/api/me" in lines[0]


async def test_access_log_off_writes_no_request_lines(tmp_path):
    settings = make_settings(tmp_path, access_log=False)
    proc = serve(settings)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        await wait_http(base, proc)
        async with httpx.AsyncClient(base_url=base) as c:
            await c.get("/api/me", headers={"X-Request-ID": "req-43"})
    finally:
        err = stop(proc)
    assert "req-43" not in err


def test_an_unknown_log_format_is_refused():
    with pytest.raises(SettingsError, match="XIAJIAO_LOG_FORMAT"):
        load_settings(env={"XIAJIAO_LOG_FORMAT": "xml"})


async def test_the_system_view_is_the_owners(app, owner):
    r = await owner.get("/api/system")
    assert r.status_code == 200
    body = await r.get_json()
    assert body["version"] == app.xj.version and body["uptimeSeconds"] >= 0
    assert body["databases"]["mainBytes"] > 0 and body["users"] == 1 and body["agents"] >= 1
    assert body["runningTurns"] == 0 and body["connections"] == 0
    assert {p["id"] for p in body["providers"]} >= {"demo"}
    assert all(p["state"] == "closed" for p in body["providers"])
    assert body["backups"]["last"] is None
    await owner.post("/api/backups")
    body = await (await owner.get("/api/system")).get_json()
    assert body["backups"]["last"]["ok"] is True
    admin, _ = await user_client(app, "adm", "admin")
    assert (await admin.get("/api/system")).status_code == 403
    assert (await app.test_client().get("/api/system")).status_code == 401


async def test_health_shows_each_providers_breaker_without_secrets(app, client):
    body = await (await client.get("/health")).get_json()
    assert body["checks"]["providers"]["demo"] == "closed"
    gw = app.xj.engine.gateway
    for _ in range(gw.breaker("demo").threshold):
        gw.breaker("demo").failure()
    r = await client.get("/health")
    assert r.status_code == 200 and (await r.get_json())["checks"]["providers"]["demo"] == "open"


# ------------------------------------------------------------------ CORS


async def test_cors_is_off_by_default(client):
    r = await client.options("/api/agents", headers={"Origin": "https://other.example",
                                                     "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = await client.get("/health", headers={"Origin": "https://other.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_listed_origins_get_preflights_and_credentials(tmp_path):
    from conftest import running_app

    settings = make_settings(tmp_path, cors_origins="https://app.example, https://ops.example",
                             cors_credentials=True, cors_max_age=120)
    async with running_app(settings) as app:
        c = app.test_client()
        r = await c.options("/api/messages", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type,x-api-key"})
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Max-Age"] == "120"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "x-api-key" in r.headers["Access-Control-Allow-Headers"].lower()
        r = await c.get("/health", headers={"Origin": "https://app.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        r = await c.get("/health", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("env,needle", [
    ({"XIAJIAO_CORS_ORIGINS": "*", "XIAJIAO_CORS_CREDENTIALS": "true"}, "cannot be combined"),
    ({"XIAJIAO_CORS_ORIGINS": "app.example"}, "must be an origin"),
    ({"XIAJIAO_CORS_ORIGINS": "https://app.example/path"}, "must be an origin"),
])
def test_unsafe_cors_settings_are_refused_at_start(env, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(env=env)


def test_the_cli_refuses_a_wildcard_with_credentials_with_the_reason(tmp_path):
    env = {"XIAJIAO_CORS_ORIGINS": "*", "XIAJIAO_CORS_CREDENTIALS": "true", "XIAJIAO_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "cannot be combined" in proc.stderr
