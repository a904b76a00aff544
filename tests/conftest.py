"""Shared fixtures: a fresh data folder, the app run through its lifespan, logged-in
clients, and a real server on loopback for WebSocket and browser tests."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from xiajiao.app import create_app
from xiajiao.settings import load_settings

OWNER_PASSWORD = "owner-password-1"
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "xiajiao-docs"


def make_settings(tmp_path: Path, **overrides):
    base = dict(data_dir=tmp_path / "data", owner_password=OWNER_PASSWORD, load_entrypoint_plugins=False,
                access_log=False, rate_limit_per_minute=100000, rate_limit_burst=100000,
                login_attempts_per_minute=1000, port=free_port())
    base.update(overrides)
    return load_settings(env={}, **base)


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
