"""Foundation fixes, each reproduced first: a cancelled breaker probe, one writer per workspace file,
concurrent agents of one name, password hashing off the event loop, the settings round trip."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest

from conftest import llm_settings, login, make_settings, running_app
from fake_llm import Reply
from xiajiao import auth
from xiajiao.db import WorkspaceDatabases
from xiajiao.errors import ProviderError
from xiajiao.models import ChatMessage, ChatRequest


def req() -> ChatRequest:
    return ChatRequest(model="env-openai/fake-model", messages=[ChatMessage("user", "hi")])


async def collect(gw) -> str:
    return "".join([e.text async for e in gw.stream(req(), fallback=[]) if hasattr(e, "text")])


async def test_a_cancelled_probe_does_not_leave_the_breaker_half_open(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, provider_retries=0, breaker_failures=1, breaker_cooldown=0.05)
    async with running_app(settings) as app:
        gw = app.xj.engine.gateway
        fake_llm.script(Reply(status=500), Reply(text="never", first_byte_delay=30), Reply(text="back again"))
        with pytest.raises(ProviderError):
            await collect(gw)
        await asyncio.sleep(0.1)  # the cooldown passes: the next call is the probe
        probe = asyncio.ensure_future(collect(gw))
        while len(fake_llm.chat_requests()) < 2:
            await asyncio.sleep(0.01)
        probe.cancel()  # Stop, a timeout or shutdown
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert await collect(gw) == "back again"
        assert gw.breaker("env-openai").state == "closed"


async def test_an_idle_close_never_leaves_two_writers_on_one_file(tmp_path):
    dbs = WorkspaceDatabases(tmp_path, idle_seconds=0.0)
    migrations = [(1, "t", "CREATE TABLE t (n INTEGER)")]
    first = await dbs.get("agent_a", "memory.db", migrations)
    held = first  # a caller keeps the object across an idle close (as the memory plugin does)
    assert await dbs.close_idle() == 1
    await held.execute("INSERT INTO t VALUES (1)")  # it reopens on use ...
    again = await dbs.get("agent_a", "memory.db", migrations)
    assert again is held  # ... and everybody gets that same object: one writer
    await asyncio.gather(*(again.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(20)),
                         *(held.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(20)))
    assert await again.fetchval("SELECT count(*) FROM t") == 41
    await dbs.close()


async def test_an_idle_close_waits_for_running_work(tmp_path):
    dbs = WorkspaceDatabases(tmp_path, idle_seconds=0.0)
    db = await dbs.get("agent_a", "rag.db", [(1, "t", "CREATE TABLE t (n INTEGER)")])
    started, release = threading.Event(), threading.Event()

    def slow(conn):
        started.set()
        release.wait(5)
        conn.execute("INSERT INTO t VALUES (1)")

    work = asyncio.ensure_future(db.run_write(slow))
    await asyncio.to_thread(started.wait, 5)
    assert await dbs.close_idle() == 0  # busy: not closed under the running transaction
    release.set()
    await work
    assert await db.fetchval("SELECT count(*) FROM t") == 1
    await dbs.close()


async def test_two_concurrent_agents_of_one_name_cannot_both_be_created(tmp_path):
    async with running_app(make_settings(tmp_path)) as app:
        c = app.test_client()
        await login(c)
        for attempt in range(3):
            name = f"Twin {attempt}"
            got = await asyncio.gather(*(c.post("/api/agents", json={"name": name}) for _ in range(4)))
            codes = sorted([r.status_code for r in got])
            assert codes == [201, 409, 409, 409]
            assert await app.xj.db.fetchval("SELECT count(*) FROM agents WHERE name = ?", (name,)) == 1
            conflict = [await r.get_json() for r in got if r.status_code == 409]
            assert {b["code"] for b in conflict} == {"agent_name_taken"}


async def test_an_older_database_with_duplicate_names_still_migrates(tmp_path):
    from xiajiao.app import MIGRATIONS
    from xiajiao.db import Database, migrations_from_dir

    every = migrations_from_dir(MIGRATIONS)
    before = [m for m in every if m[0] < 15]
    db = await Database(tmp_path / "x.db", migrations=before).open()
    for i in (1, 2):
        await db.execute("INSERT INTO agents (id, name, created_at, updated_at) VALUES (?, 'Same', '', '')",
                         (f"agent_{i}",))
    await db.close()
    db = await Database(tmp_path / "x.db", migrations=every).open()
    names = [r["name"] for r in await db.fetchall("SELECT name FROM agents ORDER BY rowid")]
    assert names == ["Same", "Same (agent_2)"]
    await db.close()


class RecordingHasher:
    """The real hasher, noting the thread each hash and check ran in."""

    def __init__(self, real):
        self.real, self.threads = real, set()

    def hash(self, password):
        self.threads.add(threading.get_ident())
        return self.real.hash(password)

    def verify(self, stored, password):
        self.threads.add(threading.get_ident())
        return self.real.verify(stored, password)


async def test_password_hashing_runs_off_the_event_loop(tmp_path, monkeypatch):
    async with running_app(make_settings(tmp_path)) as app:
        recording = RecordingHasher(auth._hasher)
        monkeypatch.setattr(auth, "_hasher", recording)
        c = app.test_client()
        await login(c)
        await c.post("/api/users", json={"username": "alice", "password": "password-123"})
        assert recording.threads and threading.get_ident() not in recording.threads


async def test_put_settings_accepts_exactly_what_get_settings_returned(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        c = app.test_client()
        await login(c)
        before = await (await c.get("/api/settings")).get_json()
        assert {p["id"] for p in before["providers"]} >= {"demo", "env-openai"}  # read-only ones included
        resp = await c.put("/api/settings", json=before)
        assert resp.status_code == 200, await resp.get_data(as_text=True)
        after = await resp.get_json()
        assert after == before
        assert await app.xj.db.fetchval("SELECT count(*) FROM settings WHERE key = 'default_model'") == 0


async def test_agent_models_from_settings_reach_agent_json(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        c = app.test_client()
        await login(c)
        agent = await (await c.post("/api/agents", json={"name": "Scribe"})).get_json()
        resp = await c.put("/api/settings", json={"agentModels": {agent["id"]: "env-openai/fake-model-2"}})
        assert resp.status_code == 200
        manifest = json.loads((app.xj.workspace(agent["id"]) / "agent.json").read_text(encoding="utf-8"))
        row = await app.xj.db.fetchone("SELECT model FROM agents WHERE id = ?", (agent["id"],))
        assert manifest["model"] == row["model"] == "env-openai/fake-model-2"
