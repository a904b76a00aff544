"""Background tasks: one agent turn run later, its events kept, a signed webhook on completion.

A task is a row of ``tasks`` (queued → running → succeeded | failed | cancelled, or
interrupted when the server stopped under it) and its numbered events in ``task_events``
(``status``, ``text``, ``tool``, ``tool_end``, ``end``). At most ``task_concurrency`` run at
once; the others wait queued. Events are kept in memory while the task lives (for live
readers) and written in small batches, so a crash loses at most the last fraction of a
second. On start, tasks left running are marked interrupted (their text so far rebuilt
from their events); queued ones are queued again.

The webhook is POSTed with the JSON result, signed with HMAC-SHA256 over the exact body
with the secret of the API key that created the task (``X-Xiajiao-Signature: sha256=<hex>``);
the body carries ``sentAt``, also sent as ``X-Xiajiao-Timestamp``, so a replayed delivery is
recognisable. Failed deliveries are retried with exponential backoff; every attempt is kept
on the task.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from . import auth, chat
from .addresses import check_url, parse_allowed
from .errors import BadRequest, Conflict, NotFound, XiajiaoError
from .ids import new_id, now_iso
from .models import Actor

log = logging.getLogger("xiajiao.tasks")

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TERMINAL = frozenset(STATES[2:])
FLUSH_SECONDS = 0.2


def sign(secret: str, body: bytes) -> str:
    """The ``X-Xiajiao-Signature`` value of a webhook body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def task_json(row: dict) -> dict:
    usage = json.loads(row.get("usage") or "{}")
    return {"taskId": row["id"], "status": row["status"], "agentId": row["agent_id"], "sessionId": row["channel_id"],
            "input": row["input"], "webhook": row["webhook"], "text": row["text"],
            "usage": usage, "rounds": row["rounds"], "done": row["status"] == "succeeded",
            "error": json.loads(row["error"]) if row.get("error") else None,
            "deliveries": json.loads(row.get("deliveries") or "[]"), "createdAt": row["created_at"],
            "startedAt": row["started_at"], "finishedAt": row["finished_at"]}


def usage_json(prompt: int, completion: int) -> dict:
    return {"promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


@dataclass
class Live:
    """A task of this process, from enqueue to its last event."""

    id: str
    row: dict
    events: list[dict] = field(default_factory=list)  # every event of the task ({"id", "type", "data"})
    pending: list[tuple] = field(default_factory=list)  # not yet written
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task | None = None
    reply_id: str | None = None
    next_seq: int = 1
    started: bool = False
    cancel_requested: bool = False
    finished: bool = False
    flush_handle: asyncio.TimerHandle | None = None


class TaskQueue:
    def __init__(self, app):
        self.app = app
        self.db = app.db
        self.slots = asyncio.Semaphore(max(1, app.settings.task_concurrency))
        self.live: dict[str, Live] = {}
        self.allowed_hosts = parse_allowed(app.settings.webhook_allowed_hosts)
        self._http = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """After a restart: running tasks are interrupted (text rebuilt from their events), queued ones go on."""
        for row in await self.db.fetchall("SELECT * FROM tasks WHERE status = 'running'"):
            events = await self.db.fetchall("SELECT seq, type, data FROM task_events WHERE task_id = ? ORDER BY seq",
                                            (row["id"],))
            text = "".join(json.loads(e["data"]).get("delta", "") for e in events if e["type"] == "text")
            error = {"error": "The server stopped while the task ran", "code": "interrupted"}
            await self._finish_row(row["id"], "interrupted", text=text, error=error)
            end = self._end_data({**row, "status": "interrupted", "text": text}, error)
            await self.db.execute("INSERT INTO task_events (task_id, seq, type, data, created_at) VALUES (?,?,?,?,?)",
                                  (row["id"], (events[-1]["seq"] if events else 0) + 1, "end",
                                   json.dumps(end, ensure_ascii=False), now_iso()))
        # ended with a webhook never tried (the server stopped first): deliver now
        for row in await self.db.fetchall("SELECT id FROM tasks WHERE webhook IS NOT NULL AND deliveries = '[]' "
                                          "AND status IN ('succeeded', 'failed', 'cancelled', 'interrupted')"):
            self._deliver_later(row["id"])
        for row in await self.db.fetchall("SELECT * FROM tasks WHERE status = 'queued' ORDER BY created_at"):
            last = await self.db.fetchval("SELECT max(seq) FROM task_events WHERE task_id = ?", (row["id"],)) or 0
            self._launch(row, next_seq=last + 1)

    async def stop(self) -> None:
        workers = [t.worker for t in self.live.values() if t.worker is not None and not t.worker.done()]
        for w in workers:
            w.cancel()
        if workers:
            await asyncio.wait(workers, timeout=self.app.settings.shutdown_timeout)
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------------ creating, reading, cancelling

    async def check_webhook(self, actor: Actor, webhook: str) -> None:
        """400 unless ``webhook`` is an http(s) URL of a public (or allowed) host and the caller has an API key."""
        await check_url(webhook, self.allowed_hosts)
        if not actor.key_id:
            raise BadRequest("A task with a webhook must be created with an API key (its secret signs the "
                             "webhook)", "webhook_needs_api_key")

    async def create(self, actor: Actor, *, agent: dict, channel_id: str, text: str, webhook: str | None) -> dict:
        if webhook:
            await self.check_webhook(actor, webhook)
        row = {"id": new_id("task"), "user_id": actor.id, "api_key_id": actor.key_id, "agent_id": agent["id"],
               "channel_id": channel_id, "input": text, "webhook": webhook or None, "status": "queued", "text": "",
               "usage": json.dumps(usage_json(0, 0)), "rounds": 0, "error": None, "deliveries": "[]",
               "created_at": now_iso(), "started_at": None, "finished_at": None}
        await self.db.execute(
            f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        live = self._launch(row)
        self._emit(live, "status", {"status": "queued"})
        return task_json(row)

    async def get(self, actor: Actor, task_id: str) -> dict:
        """The task, when ``actor`` owns it (admins: any); else 404 (its existence is not revealed)."""
        row = await self.db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if row is None or (row["user_id"] != actor.id and not actor.at_least("admin")):
            raise NotFound("Task not found", "task_not_found")
        return row

    async def list(self, actor: Actor, *, status: str | None = None, limit: int = 50) -> list[dict]:
        where, params = [], []
        if not actor.at_least("admin"):
            where.append("user_id = ?")
            params.append(actor.id)
        if status:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM tasks" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC, rowid DESC LIMIT ?", (*params, limit))
        return [task_json(r) for r in rows]

    def stats(self) -> dict:
        running = sum(1 for t in self.live.values() if t.started and not t.finished)
        return {"running": running, "queued": sum(1 for t in self.live.values() if not t.started),
                "concurrency": max(1, self.app.settings.task_concurrency)}

    async def cancel(self, actor: Actor, task_id: str) -> dict:
        row = await self.get(actor, task_id)
        live = self.live.get(task_id)
        if row["status"] in TERMINAL or live is None or live.finished:
            raise Conflict(f"The task has already ended ({row['status']})", "task_finished")
        live.cancel_requested = True
        worker = live.worker
        stopped = live.reply_id is not None and self.app.engine.stop_turn(live.reply_id)
        if not stopped and worker is not None:
            worker.cancel()  # still waiting for a slot (or not yet streaming): stop it where it is
        if worker is not None:
            await asyncio.wait([worker], timeout=self.app.settings.shutdown_timeout)
        return task_json(await self.db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,)))

    async def events(self, task_id: str, after: int = 0, *, idle: float | None = None) -> AsyncIterator[dict | None]:
        """The task's events after ``after``, then the new ones as they come, until its end; ``None``
        after each ``idle`` seconds without one (a reader's cue to send a keep-alive)."""
        while True:
            live = self.live.get(task_id)
            if live is None:  # ended (or from before a restart): everything is in the database
                for r in await self.db.fetchall(
                        "SELECT seq, type, data FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq",
                        (task_id, after)):
                    yield {"id": r["seq"], "type": r["type"], "data": json.loads(r["data"])}
                return
            changed = live.changed
            for event in [e for e in live.events if e["id"] > after]:
                after = event["id"]
                yield event
            if live.finished:
                return
            try:
                await asyncio.wait_for(changed.wait(), idle)
            except TimeoutError:
                yield None

    # ------------------------------------------------------------------ running

    def _launch(self, row: dict, next_seq: int = 1) -> Live:
        live = Live(row["id"], row, next_seq=next_seq)
        self.live[row["id"]] = live
        live.worker = self.app.spawn(self._run(live), name=f"task:{row['id']}")
        return live

    def _emit(self, live: Live, type_: str, data: dict) -> None:
        event = {"id": live.next_seq, "type": type_, "data": data}
        live.next_seq += 1
        live.events.append(event)
        live.pending.append((live.id, event["id"], type_, json.dumps(data, ensure_ascii=False), now_iso()))
        changed, live.changed = live.changed, asyncio.Event()
        changed.set()
        if live.flush_handle is None:
            live.flush_handle = asyncio.get_running_loop().call_later(
                FLUSH_SECONDS, lambda: self.app.spawn(self._flush(live), name="task-events"))

    async def _flush(self, live: Live) -> None:
        if live.flush_handle is not None:
            live.flush_handle.cancel()
            live.flush_handle = None
        rows, live.pending = live.pending, []
        if rows:
            await self.db.executemany(
                "INSERT INTO task_events (task_id, seq, type, data, created_at) VALUES (?,?,?,?,?)", rows)

    def _on_turn_event(self, live: Live, kind: str, data: dict) -> None:
        if kind == "start":
            live.reply_id = data["messageId"]
        elif kind == "text":
            self._emit(live, "text", {"delta": data["delta"]})
        elif kind in ("tool", "tool_end"):
            self._emit(live, kind, data)

    async def _run(self, live: Live) -> None:
        status, text, usage, rounds, error = "failed", "", usage_json(0, 0), 0, None
        try:
            async with self.slots:
                live.started = True
                await self.db.execute("UPDATE tasks SET status = 'running', started_at = ? WHERE id = ?",
                                      (now_iso(), live.id))
                self._emit(live, "status", {"status": "running"})
                result = await self._turn(live)
                text, rounds = result.text, result.rounds
                usage = usage_json(result.usage.prompt_tokens, result.usage.completion_tokens)
                error = result.error
                if result.done:
                    status = "succeeded"
                elif result.status == "stopped" and live.cancel_requested:
                    status = "cancelled"
        except asyncio.CancelledError:
            if not live.cancel_requested:
                if live.started:  # the server is stopping under a running task
                    await asyncio.shield(self._end(live, "interrupted", self._partial(live), usage, rounds,
                                                   {"error": "The server stopped while the task ran",
                                                    "code": "interrupted"}))
                else:  # still queued: it stays queued and runs after the restart
                    self.live.pop(live.id, None)
                    await asyncio.shield(self._flush(live))
                raise
            this = asyncio.current_task()
            if this is not None:
                this.uncancel()  # cancelled on purpose: the task ends here, normally
            status, text = "cancelled", self._partial(live)
        except XiajiaoError as exc:
            error, text = {"error": exc.message, "code": exc.code}, self._partial(live)
        except Exception as exc:  # a bug must end the task as failed, not leave it running forever
            log.exception("task %s failed", live.id)
            error, text = {"error": f"The task failed: {type(exc).__name__}", "code": "task_failed"}, self._partial(live)
        if status == "cancelled":
            error = {"error": "Cancelled by the caller", "code": "cancelled"}
        await self._end(live, status, text, usage, rounds, error)

    async def _turn(self, live: Live):
        row = live.row
        user = await auth.get_user(self.db, row["user_id"])
        if user is None or user["disabled"]:
            raise NotFound("The task's user no longer exists", "user_not_found")
        actor = Actor(user["id"], user["role"], user["display_name"] or user["username"], key_id=row["api_key_id"])
        engine = self.app.engine
        agent = await engine.agents.lookup(row["agent_id"])
        channel = await chat.get_channel(self.db, row["channel_id"]) if row["channel_id"] else None
        if agent is None:
            raise NotFound(f"Agent {row['agent_id']!r} not found", "agent_not_found")
        if channel is None:
            raise NotFound("The task's session no longer exists", "session_not_found")
        return await engine.converse(agent, channel, row["input"], actor,
                                     on_event=lambda kind, data: self._on_turn_event(live, kind, data))

    @staticmethod
    def _partial(live: Live) -> str:
        return "".join(e["data"].get("delta", "") for e in live.events if e["type"] == "text")

    @staticmethod
    def _end_data(row: dict, error: dict | None) -> dict:
        usage = row["usage"] if isinstance(row.get("usage"), dict) else json.loads(row.get("usage") or "{}")
        return {"taskId": row["id"], "status": row["status"], "sessionId": row["channel_id"], "text": row["text"],
                "usage": usage, "rounds": row.get("rounds", 0), "done": row["status"] == "succeeded", "error": error}

    async def _finish_row(self, task_id: str, status: str, *, text: str, error: dict | None,
                          usage: dict | None = None, rounds: int | None = None) -> None:
        sets = "status = ?, text = ?, error = ?, finished_at = ?"
        params: list[Any] = [status, text, json.dumps(error, ensure_ascii=False) if error else None, now_iso()]
        if usage is not None:
            sets += ", usage = ?, rounds = ?"
            params += [json.dumps(usage), rounds or 0]
        await self.db.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*params, task_id))

    async def _end(self, live: Live, status: str, text: str, usage: dict, rounds: int, error: dict | None) -> None:
        await self._finish_row(live.id, status, text=text, error=error, usage=usage, rounds=rounds)
        self._emit(live, "end", self._end_data({**live.row, "status": status, "text": text, "usage": usage,
                                                "rounds": rounds}, error))
        await self._flush(live)
        live.finished = True
        self.live.pop(live.id, None)
        live.changed.set()
        self._deliver_later(live.id)

    # ------------------------------------------------------------------ webhooks

    def _deliver_later(self, task_id: str) -> None:
        self.app.spawn(self.deliver(task_id), name=f"webhook:{task_id}")

    @property
    def http(self):
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": f"Xiajiao/{self.app.version}"})
        return self._http

    async def deliver(self, task_id: str) -> None:
        """POST the task's result to its webhook, retrying with backoff; each attempt is stored on the task."""
        row = await self.db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if row is None or not row["webhook"]:
            return
        s = self.app.settings
        secret = await auth.webhook_secret(self.db, row["user_id"], row["api_key_id"]) if row["api_key_id"] else ""
        attempts: list[dict] = json.loads(row["deliveries"] or "[]")
        error = json.loads(row["error"]) if row["error"] else None
        for attempt in range(1, max(1, s.webhook_attempts) + 1):
            sent_at = now_iso()
            body = json.dumps({**self._end_data(row, error), "finishedAt": row["finished_at"], "sentAt": sent_at},
                              ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", "X-Xiajiao-Task": task_id, "X-Xiajiao-Timestamp": sent_at,
                       "X-Xiajiao-Delivery": str(attempt)}
            if secret:
                headers["X-Xiajiao-Signature"] = sign(secret, body)
            record: dict[str, Any] = {"attempt": attempt, "at": sent_at}
            t0 = time.perf_counter()
            final = False
            try:
                await check_url(row["webhook"], self.allowed_hosts)  # again: what it resolves to may have changed
                resp = await self.http.post(row["webhook"], content=body, headers=headers, timeout=s.webhook_timeout)
                record["status"] = resp.status_code
                final = 200 <= resp.status_code < 300
            except BadRequest as exc:
                record["error"], final = exc.message, True  # a refused address is not retried
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any network failure is one failed attempt
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            record["ms"] = round((time.perf_counter() - t0) * 1000, 1)
            record["ok"] = 200 <= record.get("status", 0) < 300
            attempts.append(record)
            await self.db.execute("UPDATE tasks SET deliveries = ? WHERE id = ?", (json.dumps(attempts), task_id))
            if final or attempt >= s.webhook_attempts:
                return
            await asyncio.sleep(s.webhook_backoff * 2 ** (attempt - 1))
