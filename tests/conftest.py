"""Shared fixtures: a fresh data folder, the app run through its lifespan, logged-in
clients, and a real server on loopback for WebSocket and browser tests."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from xiajiao.app import create_app
from xiajiao.settings import load_settings

OWNER_PASSWORD = "owner-password-1"
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"  # small bilingual pages written for the tests; see its README.md


def make_settings(tmp_path: Path, **overrides):
    base = dict(data_dir=tmp_path / "data", owner_password=OWNER_PASSWORD, load_entrypoint_plugins=False,
                access_log=False, rate_limit_per_minute=100000, rate_limit_burst=100000,
                login_attempts_per_minute=1000, port=free_port())
    base.update(overrides)
    return load_settings(env={}, **base)


def with_bundled_plugins(settings):
    """``settings`` completed with those the bundled plugins declare (what ``app.xj.settings`` holds)."""
    from xiajiao.app import build_plugins, resolve_settings

    return resolve_settings(settings, build_plugins(load_settings(env={}, load_entrypoint_plugins=False)))


def bundled_settings(tmp_path: Path | None = None, **overrides):
    return with_bundled_plugins(make_settings(tmp_path or Path("."), **overrides))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@contextlib.asynccontextmanager
async def running_app(settings, plugins=()):
    app = create_app(settings, plugins=plugins)
    async with app.test_app() as test_app:
        yield test_app.app if hasattr(test_app, "app") else app


@pytest.fixture
async def app(settings):
    async with running_app(settings) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


async def login(client, password=OWNER_PASSWORD, username=None):
    body = {"password": password}
    if username:
        body["username"] = username
    resp = await client.post("/api/login", json=body)
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return resp


@pytest.fixture
async def owner(app):
    c = app.test_client()
    await login(c)
    return c


@contextlib.asynccontextmanager
async def live_server(settings, plugins=()):
    """The real app on a real Hypercorn server on loopback; yields its base URL."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    app = create_app(settings, plugins=plugins)
    config = Config()
    config.bind = [f"127.0.0.1:{settings.port}"]
    config.graceful_timeout = 2
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(app, config, shutdown_trigger=stop.wait))
    base = f"http://127.0.0.1:{settings.port}"
    for _ in range(200):
        if task.done():
            task.result()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", settings.port)
            w.close()
            if app.xj.started:
                break
        except OSError:
            pass
        await asyncio.sleep(0.02)
    try:
        yield app, base
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def server_env(settings, *extra: str) -> dict:
    """The environment of a real server process (``python -m xiajiao.cli serve``) with these settings."""
    settings = with_bundled_plugins(settings)  # plugin settings (the providers') resolved too
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAJIAO_")}
    for name in ("data_dir", "port", "owner_password", "openai_base_url", "openai_api_key", "openai_models",
                 "default_model", "load_entrypoint_plugins", "access_log", "rate_limit_per_minute",
                 "rate_limit_burst", "login_attempts_per_minute", *extra):
        env["XIAJIAO_" + name.upper()] = str(getattr(settings, name))
    env["PYTHONPATH"] = str(ROOT)
    return env


async def wait_http(base: str, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert proc.poll() is None, "the server exited early"
            try:
                if (await client.get(base + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the server did not start")


@contextlib.asynccontextmanager
async def server_process(settings, *extra: str):
    """A real server process on these settings (``extra``: more setting names to pass); yields (proc, base URL)."""
    import sys

    base = f"http://127.0.0.1:{settings.port}"
    proc = subprocess.Popen([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT, env=server_env(settings, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_http(base, proc)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
async def server(settings):
    async with live_server(settings) as (app, base):
        yield app, base


@pytest.fixture
async def fake_llm():
    """A fake OpenAI-compatible (and Anthropic) model server on loopback; see tests/fake_llm.py."""
    from fake_llm import FakeLLM

    async with FakeLLM() as fake:
        yield fake


# ------------------------------------------------------------------ engine: channels, frames, an app on the fake model


class Frames:
    """Frames the hub pushes to one subscriber (a real hub connection), decoded."""

    def __init__(self, app, *channel_ids):
        import json as _json

        self.items: list[dict] = []
        self._event = asyncio.Event()

        async def send(text):
            self.items.append(_json.loads(text))
            self._event.set()

        async def close(code):
            pass

        self.conn = app.xj.hub.connect(send, close)
        for cid in channel_ids:
            app.xj.hub.subscribe(self.conn, cid)

    def of(self, type_):
        return [f["data"] for f in self.items if f["type"] == type_]

    async def wait_for(self, type_, pred=lambda d: True, timeout=10.0):
        async def loop():
            while True:
                for f in self.items:
                    if f["type"] == type_ and pred(f.get("data")):
                        return f["data"]
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(loop(), timeout)


async def make_channel(app, agent_ids, *, type="group", name="room", default_agent_id=None, users=("owner",),
                       chain=(), config=None):
    """A channel with these agents (and users) as members, written straight to the database."""
    import json as _json

    from xiajiao.ids import new_id, now_iso

    cid = new_id("ch")
    now = now_iso()
    owner_id = await app.xj.db.fetchval("SELECT id FROM users WHERE role = 'owner'")

    def work(conn):
        conn.execute("INSERT INTO channels (id, name, type, created_by, default_agent_id, chain, config, created_at, "
                     "updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                     (cid, name, type, owner_id, default_agent_id, _json.dumps(list(chain)),
                      _json.dumps(config or {}), now, now))
        for aid in agent_ids:
            conn.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at) VALUES (?,?,?,?)",
                         (cid, "agent", aid, now))
        for uid in users:
            conn.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at) VALUES (?,?,?,?)",
                         (cid, "user", owner_id if uid == "owner" else uid, now))

    await app.xj.db.run_write(work)
    return await app.xj.db.fetchone("SELECT * FROM channels WHERE id = ?", (cid,))


async def owner_actor(app):
    from xiajiao.models import Actor

    row = await app.xj.db.fetchone("SELECT id, username FROM users WHERE role = 'owner'")
    return Actor(row["id"], "owner", row["username"])


async def user_says(app, channel, content, actor=None):
    """Store a user message and hand it to the engine, as POST /api/messages does."""
    from xiajiao import chat

    actor = actor or await owner_actor(app)
    msg = await chat.create_message(app.xj, channel_id=channel["id"], content=content, user_id=actor.id)
    routed = await app.xj.engine.handle_user_message(msg, channel, actor)
    return msg, routed


def llm_settings(tmp_path, fake, **overrides):
    base = dict(openai_base_url=fake.base_url, openai_api_key="sk-test-key-123456", openai_models="fake-model,fake-model-2",
                anthropic_base_url=fake.anthropic_base_url, anthropic_api_key="sk-ant-test-123456",
                anthropic_models="fake-claude", default_model="env-openai/fake-model", demo_delay=0.0,
                stream_coalesce_ms=0.0,  # one frame per delta, so tests can assert each chunk
                allow_private_provider_urls=True)  # the fake model server is on loopback
    base.update(overrides)
    return make_settings(tmp_path, **base)


@pytest.fixture
async def llm_app(tmp_path, fake_llm):
    """The app, its providers pointed at the fake model server."""
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        yield app
