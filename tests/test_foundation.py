"""The foundation: settings, storage, plugins, health, logging, startup checks."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from conftest import OWNER_PASSWORD, ROOT, bundled_settings, login, make_settings, running_app, \
    with_bundled_plugins
from xiajiao import auth
from xiajiao.db import Database, driver, sqlite_module, vec_blob
from xiajiao.errors import PluginError, SettingsError, StartupError
from xiajiao.settings import SETTINGS, load_settings
from xiajiao.text import fts_query, index_text


# ------------------------------------------------------------------ settings


def test_the_readme_settings_tables_are_the_generated_ones():
    from xiajiao.cli import settings_table

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = settings_table(bundled_settings())
    assert table in section, "run `python run.py settings --markdown` and paste its output into README.md"
    assert all(f"`{s.env}`" in table for s in SETTINGS)


def test_settings_read_from_env():
    s = load_settings(env={"XIAJIAO_PORT": "9999", "XIAJIAO_HOST": "0.0.0.0", "XIAJIAO_DATA_DIR": "/tmp/x"})
    assert (s.port, s.host, str(s.data_dir)) == (9999, "0.0.0.0", "/tmp/x")


@pytest.mark.parametrize("env,fragment", [
    ({"XIAJIAO_PORT": "abc"}, "XIAJIAO_PORT='abc' is not a whole number"),
    ({"XIAJIAO_PORT": "70000"}, "out of range"),
    ({"XIAJIAO_ACCESS_LOG": "maybe"}, "XIAJIAO_ACCESS_LOG='maybe' is not true or false"),
    ({"XIAJIAO_RERANK": "maybe"}, "XIAJIAO_RERANK='maybe' is not true or false"),  # a plugin's setting
])
def test_bad_setting_values_say_what_to_change(env, fragment):
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(")):
        with_bundled_plugins(load_settings(env=env))


def test_secrets_are_masked_in_public_settings():
    s = with_bundled_plugins(load_settings(env={"XIAJIAO_OPENAI_API_KEY": "sk-1234567890abcdef"}))
    assert s.public()["openai_api_key"] == "sk-…cdef"
    assert "1234567890" not in json.dumps(s.public())


# ------------------------------------------------------------------ storage


async def test_sqlite_vec_knn_works_on_this_python(tmp_path):
    db = Database(tmp_path / "v.db", migrations=[(1, "vec", "CREATE VIRTUAL TABLE v USING vec0(e float[4])")])
    await db.open()
    vectors = {1: [1, 0, 0, 0], 2: [0, 1, 0, 0], 3: [0.9, 0.1, 0, 0]}
    await db.executemany("INSERT INTO v (rowid, e) VALUES (?, ?)", [(k, vec_blob(v)) for k, v in vectors.items()])
    rows = await db.fetchall("SELECT rowid, distance FROM v WHERE e MATCH ? AND k = 2 ORDER BY distance",
                             (vec_blob([1, 0, 0, 0]),))
    assert [r["rowid"] for r in rows] == [1, 3]
    await db.close()
    if not sqlite_module().__name__ == "sqlite3":
        import sqlite3
        with pytest.raises(Exception):
            c = sqlite3.connect(":memory:")
            c.enable_load_extension(True)


@pytest.mark.parametrize("query,expected", [
    ("部署", {1}), ("署", {1}), ("部署流程", {1}), ("流程", {1, 2}), ("deploy", {3}), ("Deploy", {3}),
    ("deploy 服务器", {3}), ("知识库", {2}), ("库", {2}), ("虾", set()),
])
async def test_fulltext_finds_chinese_and_english_words(tmp_path, query, expected):
    db = Database(tmp_path / "f.db", migrations=[(1, "fts", "CREATE VIRTUAL TABLE f USING fts5(body)")])
    docs = {1: "我们的部署流程非常简单。", 2: "上传文档到知识库的流程", 3: "Deploy the server (服务器) with Docker"}
    await db.executemany("INSERT INTO f (rowid, body) VALUES (?, ?)", [(k, index_text(v)) for k, v in docs.items()])
    rows = await db.fetchall("SELECT rowid FROM f WHERE f MATCH ?", (fts_query(query),))
    assert {r["rowid"] for r in rows} == expected
    await db.close()


def test_fts_query_cannot_inject_syntax():
    assert fts_query('" * ( :') is None
    assert fts_query('x OR NEAR(y') == '"x"* AND "or"* AND "near"* AND "y"*'
    assert fts_query('a" OR "b') == '"a"* AND "or"* AND "b"*'


async def test_migrations_are_recorded_and_applied_once(tmp_path):
    migs = [(1, "a", "CREATE TABLE a (x)"), (2, "b", "CREATE TABLE b (x)")]
    db = Database(tmp_path / "m.db", migrations=migs)
    await db.open()
    await db.close()
    db = Database(tmp_path / "m.db", migrations=migs + [(3, "c", "CREATE TABLE c (x)")])
    await db.open()
    rows = await db.fetchall("SELECT id, name FROM _migrations ORDER BY id")
    assert [(r["id"], r["name"]) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
    assert (await db.fetchval("PRAGMA journal_mode")) == "wal"
    await db.close()


async def test_failed_migration_leaves_nothing_half_applied(tmp_path):
    db = Database(tmp_path / "m.db", migrations=[(1, "bad", "CREATE TABLE a (x);\nCREATE TABLE a (x);")])
    with pytest.raises(StartupError, match="migration 0001_bad failed"):
        await db.open()
    await db.close()
    db = Database(tmp_path / "m.db", migrations=[])
    await db.open()
    assert await db.fetchall("SELECT name FROM sqlite_master WHERE name = 'a'") == []
    await db.close()


async def test_newer_database_is_reported_not_replaced(tmp_path):
    db = Database(tmp_path / "m.db", migrations=[(1, "a", "CREATE TABLE a (x)"), (2, "b", "CREATE TABLE b (x)")])
    await db.open()
    await db.close()
    old = Database(tmp_path / "m.db", migrations=[(1, "a", "CREATE TABLE a (x)")])
    with pytest.raises(StartupError, match="newer Xiajiao"):
        await old.open()
    assert (tmp_path / "m.db").exists()


async def test_corrupt_database_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "c.db"
    garbage = b"this is not a database" * 500
    path.write_bytes(garbage)
    with pytest.raises(StartupError, match="corrupt"):
        await Database(path, migrations=[(1, "a", "CREATE TABLE a (x)")]).open()
    assert path.read_bytes() == garbage


async def test_skip_migrations_refuses_an_unmigrated_database(tmp_path):
    db = Database(tmp_path / "s.db", migrations=[(1, "a", "CREATE TABLE a (x)")], skip_migrations=True)
    with pytest.raises(StartupError, match="XIAJIAO_SKIP_MIGRATIONS"):
        await db.open()


async def test_writes_are_serialized_and_reads_concurrent(tmp_path):
    db = Database(tmp_path / "w.db", migrations=[(1, "t", "CREATE TABLE t (n INTEGER)")], readers=3)
    await db.open()

    def bump(conn):
        n = conn.execute("SELECT COUNT(*) AS c FROM t").fetchone()["c"]
        conn.execute("INSERT INTO t (n) VALUES (?)", (n,))

    await asyncio.gather(*(db.run_write(bump) for _ in range(50)))
    rows = await db.fetchall("SELECT n FROM t ORDER BY n")
    assert [r["n"] for r in rows] == list(range(50))  # no two writers saw the same count
    counts = await asyncio.gather(*(db.fetchval("SELECT COUNT(*) FROM t") for _ in range(20)))
    assert set(counts) == {50}
    await db.close()


async def test_failed_write_rolls_back(tmp_path):
    db = Database(tmp_path / "r.db", migrations=[(1, "t", "CREATE TABLE t (n INTEGER)")])
    await db.open()

    def work(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await db.run_write(work)
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
    await db.close()


async def test_workspace_databases_open_lazily_and_close_when_idle(app):
    core = app.xj
    folder = core.workspace("agent_x")
    assert not (folder / "memory.db").exists()
    db = await core.workspace_db("agent_x", "memory.db", [(1, "m", "CREATE TABLE m (x)")])
    assert (folder / "memory.db").exists() and core.workspaces.open_count() == 1
    await db.execute("INSERT INTO m VALUES (1)")
    closed = await core.workspaces.close_idle(now=time.monotonic() + core.settings.workspace_idle_seconds + 1)
    assert closed == 1 and core.workspaces.open_count() == 0
    db = await core.workspace_db("agent_x", "memory.db", [(1, "m", "CREATE TABLE m (x)")])
    assert await db.fetchval("SELECT COUNT(*) FROM m") == 1


def test_workspace_folder_refuses_path_tricks(tmp_path):
    from xiajiao.db import WorkspaceDatabases
    ws = WorkspaceDatabases(tmp_path, idle_seconds=1)
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            ws.folder(bad)


# ------------------------------------------------------------------ app, health, owner


async def test_health_ok(client):
    resp = await client.get("/health")
    assert resp.status_code == 200
    body = await resp.get_json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok" and body["version"]
    assert body["checks"]["providers"] == {"demo": "closed"}


async def test_health_503_when_database_is_not_writable(app, client):
    path = app.xj.db.path
    conn = driver.connect_sync(path)
    conn.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        resp = await client.get("/health")
        body = await resp.get_json()
        assert resp.status_code == 503
        assert body["status"] == "error" and body["checks"]["database"].startswith("error")
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert (await client.get("/health")).status_code == 200


async def test_request_id_is_echoed_or_generated(client):
    resp = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/health")
    assert len(resp.headers["X-Request-ID"]) == 16


async def test_one_json_log_line_per_request(tmp_path, caplog):
    settings = make_settings(tmp_path, access_log=True)
    async with running_app(settings) as app:
        with caplog.at_level(logging.INFO, logger="xiajiao.access"):
            await app.test_client().get("/health", headers={"X-Request-ID": "req-1"})
    records = [r for r in caplog.records if r.name == "xiajiao.access"]
    assert len(records) == 1
    from xiajiao.logs import JsonFormatter
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-1" and line["method"] == "GET" and line["route"] == "/health"
    assert line["status"] == 200 and isinstance(line["ms"], float)


async def test_owner_is_created_once_with_only_a_hash(app):
    rows = await app.xj.db.fetchall("SELECT * FROM users WHERE role = 'owner'")
    assert len(rows) == 1
    assert OWNER_PASSWORD not in rows[0]["password_hash"] and rows[0]["password_hash"].startswith("$argon2id$")


async def test_generated_owner_password_is_printed_once(tmp_path, capsys):
    settings = make_settings(tmp_path, owner_password="")
    async with running_app(settings) as app:
        password = app.xj.generated_password
    out = capsys.readouterr().out
    assert password and len(password) >= 20 and password in out
    async with running_app(settings) as app:
        assert app.xj.generated_password is None
        assert await auth.login(app.xj.db, username=None, password=password) is not None
    assert password not in capsys.readouterr().out


def test_unwritable_data_dir_stops_startup_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _run(["-m", "xiajiao.cli", "serve"], env={"XIAJIAO_DATA_DIR": str(blocker / "data"),
                                                    "XIAJIAO_PORT": str(__import__("conftest").free_port())})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not writable" in lines[0] and "XIAJIAO_DATA_DIR" in lines[0]


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/api/nope")
    assert resp.status_code == 404
    assert await resp.get_json() == {"error": "Not found", "code": "not_found"}


# ------------------------------------------------------------------ command line, run.py


def _run(args, env=None, timeout=60):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false", **(env or {})})


def test_run_py_help_lists_commands():
    out = _run(["run.py", "--help"]).stdout
    for cmd in ("serve", "test", "plugins", "settings"):
        assert cmd in out


def test_busy_port_gives_a_clear_message(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _run(["-m", "xiajiao.cli", "serve"], env={"XIAJIAO_PORT": str(port),
                                                        "XIAJIAO_DATA_DIR": str(tmp_path / "d")})
    assert res.returncode == 2
    assert f"port {port}" in res.stderr and "XIAJIAO_PORT" in res.stderr


def test_bad_port_setting_stops_with_one_line(tmp_path):
    res = _run(["-m", "xiajiao.cli", "serve"], env={"XIAJIAO_PORT": "eighty"})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["xiajiao: XIAJIAO_PORT='eighty' is not a whole number; change or unset XIAJIAO_PORT."]


def test_serve_starts_and_answers_health(tmp_path):
    from conftest import free_port
    import urllib.request
    port = free_port()
    env = {**os.environ, "XIAJIAO_PORT": str(port), "XIAJIAO_DATA_DIR": str(tmp_path / "d"),
           "XIAJIAO_OWNER_PASSWORD": "", "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not answer /health")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Owner password:" in out and f"http://127.0.0.1:{port}" in out
    assert (tmp_path / "d" / "xiajiao.db").exists()


# ------------------------------------------------------------------ plugins


PLUGIN_FILE = '''
from xiajiao import hookimpl, Tool
__version__ = "1.2.3"

async def shout(args, ctx):
    return args["text"].upper()

@hookimpl
def register_tools(register):
    register(Tool(name="shout", description="Upper-case text", parameters={"type": "object",
                  "properties": {"text": {"type": "string"}}}, fn=shout))
'''


async def test_single_file_plugin_appears_at_plugins_endpoint(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "shouter.py").write_text(PLUGIN_FILE)
    settings = make_settings(tmp_path, plugins_dir=str(folder))
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        body = await (await c.get("/-/plugins")).get_json()
    found = [p for p in body["plugins"] if p["name"] == "shouter"]
    assert found == [{"name": "shouter", "version": "1.2.3", "source": "file", "hooks": ["register_tools"],
                      "registered": {"tools": ["shout"]}}]


async def test_plugins_endpoint_is_owner_only(client):
    assert (await client.get("/-/plugins")).status_code == 401


def test_plugins_command_lists_plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "shouter.py").write_text(PLUGIN_FILE)
    res = _run(["-m", "xiajiao.cli", "plugins", "--json"], env={"XIAJIAO_PLUGINS_DIR": str(folder)})
    assert res.returncode == 0, res.stderr
    listed = {p["name"]: p for p in json.loads(res.stdout)}
    assert listed["shouter"]["version"] == "1.2.3" and listed["shouter"]["registered"] == {"tools": ["shout"]}


async def test_plugin_that_fails_to_import_stops_startup_naming_it(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text("raise RuntimeError('nope')\n")
    with pytest.raises(PluginError, match="broken.py failed to import"):
        make_app = __import__("xiajiao.app", fromlist=["create_app"]).create_app
        make_app(make_settings(tmp_path, plugins_dir=str(folder)))


async def test_duplicate_registration_is_refused_with_both_names(tmp_path):
    from xiajiao import Tool, hookimpl

    async def fn(args, ctx):
        return "x"

    class A:
        @hookimpl
        def register_tools(self, register):
            register(Tool("dup", "d", {"type": "object"}, fn))

    class B(A):
        pass

    from xiajiao.app import create_app
    with pytest.raises(PluginError, match="registered twice"):
        create_app(make_settings(tmp_path), plugins=[A(), B()])


async def test_invalid_registration_is_refused(tmp_path):
    from xiajiao import Tool, hookimpl

    def not_async(args, ctx):
        return "x"

    class P:
        @hookimpl
        def register_tools(self, register):
            register(Tool("sync_tool", "d", {"type": "object"}, not_async))

    from xiajiao.app import create_app
    with pytest.raises(PluginError, match="must be an async function"):
        create_app(make_settings(tmp_path), plugins=[P()])


async def test_failing_hook_is_logged_by_name_and_does_not_break_the_caller(tmp_path, caplog):
    from xiajiao import hookimpl

    seen = []

    class Broken:
        @hookimpl
        def on_agent_created(self, app, agent):
            raise RuntimeError("plugin bug")

    class Fine:
        @hookimpl
        async def on_agent_created(self, agent):
            seen.append(agent["id"])

    async with running_app(make_settings(tmp_path), plugins=[Broken(), Fine()]) as app:
        seen.clear()  # the first start created the default agents
        with caplog.at_level(logging.ERROR):
            results = await app.xj.hook("on_agent_created", agent={"id": "a1"})
    assert seen == ["a1"] and results == []
    assert any("failed in hook on_agent_created" in r.getMessage() and "Broken" in r.getMessage()
               for r in caplog.records)


async def test_prepare_connection_startup_and_shutdown_hooks(tmp_path):
    from xiajiao import hookimpl

    events = []

    class P:
        @hookimpl
        def prepare_connection(self, conn, database):
            conn.create_function("shout", 1, lambda s: s.upper())
            events.append(("conn", database))

        @hookimpl
        async def startup(self, app):
            events.append(("startup", app.started))

        @hookimpl
        def shutdown(self, app):
            events.append(("shutdown", app.db.is_open))

    async with running_app(make_settings(tmp_path), plugins=[P()]) as app:
        assert await app.xj.db.fetchval("SELECT shout('abc')") == "ABC"
        ws = await app.xj.workspace_db("agent_p", "x.db")
        assert await ws.fetchval("SELECT shout('x')") == "X"
    assert ("startup", False) in events and events[-1] == ("shutdown", True)
    assert ("conn", "xiajiao.db") in events and ("conn", "agent_p/x.db") in events


async def test_metrics_count_requests_and_are_admin_only(client, owner):
    assert (await client.get("/metrics")).status_code == 401
    await owner.get("/health")
    await owner.get("/api/nope")
    text = await (await owner.get("/metrics")).get_data(as_text=True)
    assert 'xiajiao_http_requests_total{status="2xx"}' in text
    assert 'xiajiao_http_requests_total{status="4xx"}' in text
    assert "xiajiao_websocket_connections 0" in text
    assert "xiajiao_resident_memory_bytes " in text


async def test_every_route_is_in_the_api_reference(app):
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if f"| {method} | `{rule.rule}` |" not in doc:
                missing.append(f"{method} {rule.rule}")
    assert missing == []


async def test_a_closed_database_refuses_late_work_but_an_idle_one_reopens(tmp_path):
    from xiajiao.db.driver import DatabaseClosed

    db = Database(tmp_path / "late.db", migrations=[(1, "t", "CREATE TABLE t (n)")])
    await db.open()
    await db.close(final=False)  # closed for being idle: the next use reopens it
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0
    await db.close()  # closed for good (the app is stopping)
    with pytest.raises(DatabaseClosed):
        await db.execute("INSERT INTO t VALUES (1)")
    await db.open()  # an explicit open is always allowed
    await db.execute("INSERT INTO t VALUES (1)")
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
    await db.close()
