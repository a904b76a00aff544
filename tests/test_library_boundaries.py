"""No private internals of libraries, or a test that fails when the one we still lean on changes."""
from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, make_settings
from xiajiao.gateway.http import AsyncioBackend, pooled_client

PRIVATE = re.compile(r"\._(execute|conn|thread|buffer|waiters)\b")


def test_no_private_attributes_of_aiosqlite_asyncio_or_streams_are_used():
    hits = []
    for path in sorted((ROOT / "xiajiao").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PRIVATE.search(line) and "self._" not in line:
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


def test_aiosqlite_is_no_longer_a_dependency():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "aiosqlite" not in text


async def test_an_idle_connection_with_data_or_eof_waiting_is_not_reused():
    got_peer = asyncio.Event()
    writers = []

    async def serve(reader, writer):
        writers.append(writer)
        got_peer.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
    await got_peer.wait()
    assert stream.get_extra_info("is_readable") is False
    writers[0].write(b"late bytes")
    await writers[0].drain()
    for _ in range(200):
        if stream.get_extra_info("is_readable"):
            break
        await asyncio.sleep(0.01)
    assert stream.get_extra_info("is_readable") is True
    assert await stream.read(100, timeout=5) == b"late bytes"
    assert stream.get_extra_info("is_readable") is False
    writers[0].close()
    for _ in range(200):
        if stream.get_extra_info("is_readable"):
            break
        await asyncio.sleep(0.01)
    assert stream.get_extra_info("is_readable") is True  # the server hung up
    await stream.aclose()
    server.close()
    await server.wait_closed()


# Two libraries still offer no public hook for what we need; these fail when they change, so the
# fallback (httpx's own backend, quart-schema's uncached validation) never goes unnoticed.

async def test_httpx_transport_still_takes_our_network_backend():
    client = pooled_client("http://127.0.0.1:1")
    pool = client._transport._pool  # noqa: SLF001 (what this pin checks)
    assert isinstance(pool._network_backend, AsyncioBackend), (  # noqa: SLF001
        f"httpx {importlib.metadata.version('httpx')} / httpcore {importlib.metadata.version('httpcore')} "
        "changed their pool; adapt xiajiao/gateway/http.py")
    await client.aclose()


async def test_quart_schema_validation_still_uses_one_adapter_per_model(app):
    from quart_schema import conversion

    assert getattr(conversion.TypeAdapter, "_xiajiao_cached", False), (
        f"quart-schema {importlib.metadata.version('quart-schema')} no longer builds adapters through "
        "conversion.TypeAdapter; adapt xiajiao/app.py _cache_schema_adapters")


@pytest.mark.parametrize("dist", ["quart", "quart-schema", "hypercorn", "httpx", "httpcore", "pluggy",
                                  "pydantic", "sqlite-vec", "argon2-cffi", "jinja2"])
def test_installed_versions_meet_the_declared_floors(dist):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(rf'"{re.escape(dist)}(?:\[[^\]]*\])?>=([0-9.]+)', text, re.IGNORECASE)
    assert m, f"{dist} has no floor in pyproject.toml"
    floor = tuple(int(x) for x in m.group(1).split("."))
    have = tuple(int(x) for x in re.findall(r"\d+", importlib.metadata.version(dist))[:len(floor)])
    assert have >= floor


def test_the_start_imports_no_http_client_and_the_warm_up_does(tmp_path):
    """httpx + httpcore cost ≈ 0.25 s of a cold start; they load in the warm-up thread once serving."""
    code = ("import sys\nfrom xiajiao.app import create_app\nfrom xiajiao.settings import load_settings\n"
            "create_app(load_settings())\n"
            "print(sorted(m for m in ('httpx', 'httpcore') if m in sys.modules))\n"
            "from xiajiao.server import warm_up\nwarm_up()\n"
            "print(sorted(m for m in ('httpx', 'httpcore') if m in sys.modules))\n")
    env = {**os.environ, "XIAJIAO_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-2:] == ["[]", "['httpcore', 'httpx']"]


async def test_urls_built_from_lazily_compiled_routes_match_werkzeugs(tmp_path):
    """The routes' URL builders compile on first use (xiajiao.quart_app.LazyBuildRule): same URLs."""
    from werkzeug.routing import Map, Rule

    from xiajiao.app import create_app
    from xiajiao.quart_app import LazyBuildRule

    app = create_app(make_settings(tmp_path))
    assert all(isinstance(r, LazyBuildRule) for r in app.url_map.iter_rules())
    plain = Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods, websocket=r.websocket) for r in app.url_map.iter_rules()])
    ours, theirs = app.url_map.bind("example.org"), plain.bind("example.org")
    checked = 0
    for rule in app.url_map.iter_rules():
        values = {name: "7" for name in rule.arguments}  # fits every converter the routes use
        values_plus = {**values, "q": "a b/é"}  # an unknown value goes to the query string
        assert ours.build(rule.endpoint, values_plus) == theirs.build(rule.endpoint, values_plus)
        checked += bool(rule.arguments)
    assert checked > 20
