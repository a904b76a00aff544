"""Background tasks: states, bounded concurrency, cancel, owner-only visibility, the replayable
event stream, signed webhooks with retries, and a real server restarted under a running task."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from httpx_sse import aconnect_sse

from chat_helpers import make_user
from conftest import ROOT, live_server, llm_settings, running_app
from test_crash import server_env, wait_http
from fake_llm import Reply
from xiajiao import auth
from xiajiao.addresses import is_public
from xiajiao.db import Database

TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


class Receiver:
    """A webhook receiver on loopback (a real HTTP server): records every POST, fails the first ``fail`` ones."""

    def __init__(self, fail: int = 0):
        self.fail = fail
        self.received: list[tuple[dict, bytes]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body))
        status = 500 if len(self.received) <= self.fail else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        if status == 200:
            self.arrived.set()


@contextlib.asynccontextmanager
async def receiver(fail: int = 0):
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = Receiver(fail)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(app, config, shutdown_trigger=stop.wait))
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{port}/hook"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def task_settings(tmp_path, fake, **kw):
    return llm_settings(tmp_path, fake, webhook_allowed_hosts="127.0.0.1", webhook_backoff=0.05, **kw)


@pytest.fixture
async def live(tmp_path, fake_llm):
    async with live_server(task_settings(tmp_path, fake_llm)) as (app, base):
        yield app, base


async def api_key(app, username="alice", role="member") -> tuple[str, dict, dict]:
    """(secret, key row with webhookSecret, user) of a new user's key."""
    user = await make_user(app, username, role)
    key, secret = await auth.create_api_key(app.xj.db, user["id"], "ci")
    return secret, key, user


async def wait_status(http, task_id, wanted, timeout=20.0):
    async def loop():
        while True:
            body = (await http.get(f"/v1/tasks/{task_id}")).json()
            if body["status"] in wanted:
                return body
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(loop(), timeout)


async def read_events(http, task_id, **headers):
    async with aconnect_sse(http, "GET", f"/v1/tasks/{task_id}/events", headers=headers) as source:
        return [(int(e.id), e.event, json.loads(e.data)) async for e in source.aiter_sse()]


async def test_a_task_runs_and_its_signed_webhook_is_delivered_after_a_retry(live, fake_llm):
    app, base = live
    secret, key, _ = await api_key(app)
    fake_llm.script(Reply(text="The report is ready.", chunks=3, prompt_tokens=30, completion_tokens=6))
    async with receiver(fail=1) as (hooks, url), httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
        made = await http.post("/v1/tasks", json={"agent": "translator", "input": "Write the report", "webhook": url})
        assert made.status_code == 202, made.text
        body = made.json()
        assert body["status"] == "queued" and body["taskId"].startswith("task_") and body["concurrency"] == 2
        await asyncio.wait_for(hooks.arrived.wait(), 20)
        task = (await http.get(f"/v1/tasks/{body['taskId']}")).json()
    assert task["status"] == "succeeded" and task["text"] == "The report is ready." and task["done"] is True
    assert task["usage"] == {"promptTokens": 30, "completionTokens": 6, "totalTokens": 36}
    headers, raw = hooks.received[-1]
    expected = "sha256=" + hmac.new(key["webhookSecret"].encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-xiajiao-signature"], expected)
    payload = json.loads(raw)
    assert {k: payload[k] for k in ("taskId", "status", "text", "rounds", "done", "sessionId")} == {
        "taskId": body["taskId"], "status": "succeeded", "text": "The report is ready.", "rounds": 1, "done": True,
        "sessionId": task["sessionId"]}
    assert payload["sentAt"] == headers["x-xiajiao-timestamp"] and headers["x-xiajiao-task"] == body["taskId"]
    assert len(hooks.received) == 2  # the first delivery got a 500 and was retried
    assert [(d["attempt"], d["status"], d["ok"]) for d in task["deliveries"]] == [(1, 500, False), (2, 200, True)]


async def test_events_replay_from_last_event_id_and_close_at_the_end(live, fake_llm):
    app, base = live
    secret, _, _ = await api_key(app)
    fake_llm.script(Reply(text="abcdef", chunks=3))
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
        task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "go"})).json()["taskId"]
        await wait_status(http, task_id, TERMINAL)
        events = await read_events(http, task_id)
        later = await read_events(http, task_id, **{"Last-Event-ID": "3"})
        resp = await http.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "abc"})
    assert [(i, k) for i, k, _ in events] == [(1, "status"), (2, "status"), (3, "text"), (4, "text"), (5, "text"),
                                              (6, "end")]
    assert [d.get("status") for _, k, d in events if k == "status"] == ["queued", "running"]
    assert "".join(d["delta"] for _, k, d in events if k == "text") == "abcdef"
    assert events[-1][2]["status"] == "succeeded" and events[-1][2]["text"] == "abcdef"
    assert later == events[3:]
    assert (resp.status_code, resp.json()["code"]) == (400, "invalid_last_event_id")


async def test_a_reader_attached_while_it_runs_gets_the_rest_live(live, fake_llm):
    app, base = live
    secret, _, _ = await api_key(app)
    fake_llm.script(Reply(text="slow words here", chunks=3, delay=0.3))
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
        task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "go"})).json()["taskId"]
        await wait_status(http, task_id, {"running"})
        events = await read_events(http, task_id)
    assert events[-1][1] == "end" and "".join(d["delta"] for _, k, d in events if k == "text") == "slow words here"
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))


async def test_concurrency_is_bounded_and_cancel_works_queued_or_running(tmp_path, fake_llm):
    async with live_server(task_settings(tmp_path, fake_llm, task_concurrency=1)) as (app, base):
        secret, _, _ = await api_key(app)
        fake_llm.script(Reply(text="abcdefgh", chunks=4, hang_after=1), Reply(text="second done"))
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
            first = (await http.post("/v1/tasks", json={"agent": "translator", "input": "one"})).json()["taskId"]
            await wait_status(http, first, {"running"})
            second = (await http.post("/v1/tasks", json={"agent": "novelist", "input": "two"})).json()
            third = (await http.post("/v1/tasks", json={"agent": "novelist", "input": "three"})).json()["taskId"]
            assert (second["status"], second["running"], second["queued"]) == ("queued", 1, 1)
            # streaming has begun in the first: wait for its first word
            for _ in range(500):
                if "ab" in "".join(d.get("delta", "") for _, k, d in await read_events_now(app, first)):
                    break
                await asyncio.sleep(0.02)
            assert (await http.get(f"/v1/tasks/{second['taskId']}")).json()["status"] == "queued"
            cancelled = await http.post(f"/v1/tasks/{third}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            stopped = (await http.post(f"/v1/tasks/{first}/cancel")).json()
            assert (stopped["status"], stopped["text"], stopped["error"]["code"]) == ("cancelled", "ab", "cancelled")
            done = await wait_status(http, second["taskId"], TERMINAL)
            again = await http.post(f"/v1/tasks/{first}/cancel")
            listed = (await http.get("/v1/tasks", params={"status": "cancelled"})).json()
    assert (done["status"], done["text"]) == ("succeeded", "second done")
    assert (again.status_code, again.json()["code"]) == (409, "task_finished")
    assert {t["taskId"] for t in listed["tasks"]} == {first, third}


async def read_events_now(app, task_id):
    return [(e["id"], e["type"], e["data"]) for e in (app.xj.tasks.live[task_id].events
                                                       if task_id in app.xj.tasks.live else [])]


async def test_only_the_owner_sees_a_task_and_admins_see_all(live, fake_llm):
    app, base = live
    alice, _, _ = await api_key(app, "alice")
    bob, _, _ = await api_key(app, "bob")
    boss, _, _ = await api_key(app, "boss", "admin")
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "x"},
                                   headers={"X-API-Key": alice})).json()["taskId"]
        for path, method in ((f"/v1/tasks/{task_id}", "GET"), (f"/v1/tasks/{task_id}/events", "GET"),
                             (f"/v1/tasks/{task_id}/cancel", "POST")):
            resp = await http.request(method, path, headers={"X-API-Key": bob})
            assert (resp.status_code, resp.json()["code"]) == (404, "task_not_found"), path
        assert (await http.get("/v1/tasks", headers={"X-API-Key": bob})).json()["tasks"] == []
        seen = (await http.get("/v1/tasks", headers={"X-API-Key": boss})).json()["tasks"]
        one = await http.get(f"/v1/tasks/{task_id}", headers={"X-API-Key": boss})
    assert [t["taskId"] for t in seen] == [task_id] and one.status_code == 200


@pytest.mark.parametrize("webhook,code", [
    ("ftp://example.com/hook", "invalid_webhook"),
    ("not a url", "invalid_webhook"),
    ("http://localhost:9/hook", "webhook_forbidden"),
    ("http://10.1.2.3/hook", "webhook_forbidden"),
    ("http://169.254.169.254/latest/meta-data", "webhook_forbidden"),
    ("http://[::1]:8080/hook", "webhook_forbidden"),
    ("http://[::ffff:192.168.0.1]/hook", "webhook_forbidden"),
])
async def test_webhooks_to_other_schemes_or_private_addresses_are_refused(live, webhook, code):
    app, base = live
    secret, _, _ = await api_key(app)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}) as http:
        resp = await http.post("/v1/tasks", json={"agent": "translator", "input": "x", "webhook": webhook})
    assert (resp.status_code, resp.json()["code"]) == (400, code)
    assert await app.xj.db.fetchval("SELECT count(*) FROM tasks") == 0
    assert await app.xj.db.fetchval("SELECT count(*) FROM channels") == 0


async def test_loopback_is_refused_unless_allowed(tmp_path, fake_llm):
    async with live_server(llm_settings(tmp_path, fake_llm)) as (app, base):
        secret, _, _ = await api_key(app)
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}) as http:
            resp = await http.post("/v1/tasks", json={"agent": "translator", "input": "x",
                                                      "webhook": "http://127.0.0.1:8080/hook"})
    assert (resp.status_code, resp.json()["code"]) == (400, "webhook_forbidden")


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.100.100.200", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False), ("fd00:ec2::254", False),
    ("::ffff:127.0.0.1", False), ("224.0.0.1", False), ("nonsense", False),
])
def test_address_classes(address, public):
    assert is_public(address) is public


async def test_a_webhook_needs_an_api_key(live):
    app, base = live
    from conftest import OWNER_PASSWORD

    async with httpx.AsyncClient(base_url=base) as http:
        await http.post("/api/login", json={"password": OWNER_PASSWORD})
        resp = await http.post("/v1/tasks", json={"agent": "translator", "input": "x",
                                                  "webhook": "http://127.0.0.1:9/hook"})
        fine = await http.post("/v1/tasks", json={"agent": "translator", "input": "x"})
    assert (resp.status_code, resp.json()["code"]) == (400, "webhook_needs_api_key")
    assert fine.status_code == 202


async def test_a_failed_turn_fails_the_task(live, fake_llm):
    app, base = live
    secret, _, _ = await api_key(app)
    fake_llm.script(*[Reply(status=500) for _ in range(3)])
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
        task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "x"})).json()["taskId"]
        task = await wait_status(http, task_id, TERMINAL)
    assert (task["status"], task["done"], task["error"]["code"]) == ("failed", False, "provider_http_error")


# ------------------------------------------------------------------ a real server restarted under a running task


@contextlib.asynccontextmanager
async def server_process(settings):
    proc = subprocess.Popen([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT,
                            env=server_env(settings, "webhook_allowed_hosts"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        await wait_http(base, proc)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_a_server_killed_mid_task_leaves_it_interrupted_with_its_events(tmp_path, fake_llm):
    settings = task_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:  # first start: migrations, owner, agents; a member's key
        secret, _, _ = await api_key(app)
    fake_llm.script(Reply(text="partial words then more", chunks=4, hang_after=2))
    async with server_process(settings) as (proc, base):
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
            task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "long job"})).json()["taskId"]
        db = Database(settings.data_dir / "xiajiao.db", skip_migrations=True)
        await db.open()
        try:
            for _ in range(500):  # until its streamed text has been written
                if await db.fetchval("SELECT count(*) FROM task_events WHERE task_id = ? AND type = 'text'",
                                     (task_id,)) == 2:
                    break
                await asyncio.sleep(0.02)
            assert await db.fetchval("SELECT status FROM tasks WHERE id = ?", (task_id,)) == "running"
        finally:
            await db.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    async with server_process(settings) as (proc, base):
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
            task = (await http.get(f"/v1/tasks/{task_id}")).json()
            events = await asyncio.wait_for(read_events(http, task_id), 10)  # closes: the task has ended
            after = await asyncio.wait_for(read_events(http, task_id, **{"Last-Event-ID": "2"}), 10)
    text = "".join(d["delta"] for _, k, d in events if k == "text")
    assert (task["status"], task["text"], task["error"]["code"]) == ("interrupted", text, "interrupted")
    assert text and "partial words then more".startswith(text) and text != "partial words then more"
    assert [k for _, k, _ in events] == ["status", "status", "text", "text", "end"]
    assert events[-1][2]["status"] == "interrupted"
    assert after == events[2:]


async def test_a_task_stopped_by_a_shutdown_is_interrupted_and_its_webhook_still_sent(tmp_path, fake_llm):
    settings = task_settings(tmp_path, fake_llm)
    async with receiver() as (hooks, url):
        async with running_app(settings) as app:
            secret, _, _ = await api_key(app)
            fake_llm.script(Reply(text="abcdefgh", chunks=4, hang_after=2))
            resp = await app.test_client().post("/v1/tasks", headers={"X-API-Key": secret},
                                                json={"agent": "translator", "input": "x", "webhook": url})
            task_id = (await resp.get_json())["taskId"]
            for _ in range(500):
                if "abcd" == "".join(d.get("delta", "") for _, k, d in await read_events_now(app, task_id)):
                    break
                await asyncio.sleep(0.02)
        async with running_app(settings) as app:  # the restart delivers what the shutdown cut short
            await asyncio.wait_for(hooks.arrived.wait(), 10)
            for _ in range(200):
                task = await app.xj.tasks.get(await owner_of(app, task_id), task_id)
                if any(d["ok"] for d in json.loads(task["deliveries"])):
                    break
                await asyncio.sleep(0.02)
    payload = json.loads(hooks.received[-1][1])
    assert (payload["status"], payload["text"], payload["error"]["code"]) == ("interrupted", "abcd", "interrupted")
    assert (task["status"], task["text"]) == ("interrupted", "abcd")


async def owner_of(app, task_id):
    row = await app.xj.db.fetchone("SELECT u.id, u.role FROM tasks t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
                                   (task_id,))
    return auth.Actor(row["id"], row["role"])


async def test_a_quiet_event_stream_sends_keep_alive_comments(live, fake_llm, monkeypatch):
    from xiajiao.api import machine

    monkeypatch.setattr(machine, "KEEPALIVE_SECONDS", 0.1)
    app, base = live
    secret, _, _ = await api_key(app)
    fake_llm.script(Reply(text="abcd", chunks=2, hang_after=1))
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}, timeout=30) as http:
        task_id = (await http.post("/v1/tasks", json={"agent": "translator", "input": "x"})).json()["taskId"]
        seen = []
        async with http.stream("GET", f"/v1/tasks/{task_id}/events") as resp:
            async for line in resp.aiter_lines():
                seen.append(line)
                if seen.count(": keep-alive") >= 2:
                    break
        await http.post(f"/v1/tasks/{task_id}/cancel")
    assert "event: text" in seen and 'data: {"type": "text", "delta": "ab"}' in seen
