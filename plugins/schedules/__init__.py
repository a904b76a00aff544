"""Scheduled agents: an agent runs a prompt on a cron schedule or once, posting into a channel.

- Each agent keeps its schedules and their run log in its own ``schedules.db``.
- The scheduler keeps every schedule's next run in memory, wakes at the earliest one, and stores a
  schedule's next run *before* it fires (a crash never repeats a run).
- A run missed while the server was down runs once at start when the schedule says ``catchUp``,
  else it is logged as skipped; never more than once, however many were missed.
- Times are explicit: each schedule has an IANA time zone; cron fields are read in it.
- Every schedule has an incoming-webhook URL with a secret token (``POST /api/triggers/<id>``).
- The ``manage_schedule`` tool lets an agent create, list and delete its own schedules, with the
  rights of the person whose message it answers.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Callable

from xiajiao import (BadRequest, NotFound, Tool, Trigger, get_agent, get_channel, get_person, hookimpl, list_agents,
                     post_message, run_turn)

from . import store

log = logging.getLogger("xiajiao.schedules")
MAX_SLEEP = 30.0  # seconds: the loop also wakes this often, so a changed clock is noticed


class Scheduler:
    def __init__(self, app: Any):
        self.app = app
        self.now: Callable[[], dt.datetime] = lambda: dt.datetime.now(store.UTC)
        self.where: dict[str, str] = {}  # schedule id -> agent id
        self.due: dict[str, dt.datetime] = {}  # schedule id -> next run (enabled schedules only)
        self.wake = asyncio.Event()
        self.running: set[asyncio.Task] = set()

    # -- index

    def track(self, agent_id: str, row: dict) -> None:
        self.where[row["id"]] = agent_id
        when = store.parse_iso(row["next_run_at"])
        if row["enabled"] and when is not None:
            self.due[row["id"]] = when
        else:
            self.due.pop(row["id"], None)
        self.wake.set()

    def forget(self, schedule_id: str) -> None:
        self.where.pop(schedule_id, None)
        self.due.pop(schedule_id, None)

    async def load(self) -> list[asyncio.Task]:
        """Index every agent's schedules; runs missed while the server was down run once (or are skipped)."""
        now = self.now()
        tasks = []
        for agent in list_agents(self.app):
            for row in await store.all_rows(self.app, agent["id"]):
                when = store.parse_iso(row["next_run_at"])
                if row["enabled"] and when is not None and when <= now:
                    nxt = store.next_run(row["cron"], row["run_at"], row["timezone"], now)
                    row = await store.update(self.app, agent["id"], row["id"], {"next_run_at": store.iso(nxt)})
                    if row["catch_up"]:
                        tasks.append(self.spawn(agent["id"], row, "catch_up"))
                    else:
                        await store.start_run(self.app, agent["id"], row["id"], "catch_up", status="skipped",
                                              error=f"missed at {store.iso(when)} while the server was down")
                self.track(agent["id"], row)
        return tasks

    # -- running

    async def tick(self) -> list[asyncio.Task]:
        """Fire every schedule that is due now; returns the runs started."""
        now = self.now()
        tasks = []
        for sid, when in sorted(self.due.items(), key=lambda kv: kv[1]):
            if when > now:
                continue
            agent_id = self.where[sid]
            row = await store.get(self.app, agent_id, sid)
            if row is None:
                self.forget(sid)
                continue
            nxt = store.next_run(row["cron"], row["run_at"], row["timezone"], now)
            row = await store.update(self.app, agent_id, sid, {"next_run_at": store.iso(nxt)})
            self.track(agent_id, row)
            tasks.append(self.spawn(agent_id, row, "schedule"))
        return tasks

    def spawn(self, agent_id: str, row: dict, reason: str, extra: str = "") -> asyncio.Task:
        task = self.app.spawn(self.fire(agent_id, row, reason, extra), name=f"schedule:{row['id']}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def fire(self, agent_id: str, row: dict, reason: str, extra: str = "") -> dict:
        """One run: the prompt is posted in the channel as the schedule's creator, the agent answers."""
        app = self.app
        run_id = await store.start_run(app, agent_id, row["id"], reason)
        try:
            agent = get_agent(app, agent_id)
            actor = await get_person(app, row["created_by"])
            channel = await get_channel(app, row["channel_id"])
            if agent is None or channel is None or actor is None:
                what = "agent" if agent is None else "channel" if channel is None else "creator"
                raise NotFound(f"The schedule's {what} is gone", f"{what}_gone")
            text = row["prompt"] + (f"\n\n{extra}" if extra else "")
            msg = await post_message(app, channel_id=channel["id"], content=text, user_id=actor.id,
                                     metadata={"schedule": {"id": row["id"], "agentId": agent_id, "reason": reason}})
            await store.finish_run(app, agent_id, run_id, status="running", message_id=msg["id"])
            reply = await run_turn(app, agent, channel, msg, actor)
            status = reply["status"] if reply else "error"
            await store.finish_run(app, agent_id, run_id, status=status, reply_id=reply["id"] if reply else None,
                                   error=None if status == "done" else "the agent did not answer")
        except asyncio.CancelledError:
            await asyncio.shield(store.finish_run(app, agent_id, run_id, status="stopped", error="server stopped"))
            raise
        except Exception as exc:  # a failed run is logged on the schedule; the scheduler goes on
            log.warning("scheduled run failed", extra={"schedule": row["id"], "error": str(exc)})
            await store.finish_run(app, agent_id, run_id, status="error",
                                   error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        return {"runId": run_id}

    async def loop(self) -> None:
        while True:
            await self.tick()
            now = self.now()
            wait = min([MAX_SLEEP] + [max(0.0, (w - now).total_seconds()) for w in self.due.values()])
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.05, wait))
            except TimeoutError:
                pass


def scheduler(app: Any) -> Scheduler:
    sched = app.state.get("schedules")
    if sched is None:
        sched = app.state["schedules"] = Scheduler(app)
    return sched


@hookimpl
async def startup(app):
    sched = scheduler(app)
    await sched.load()
    app.spawn(sched.loop(), name="scheduler")


@hookimpl
async def on_agent_deleted(app, agent):
    sched = scheduler(app)
    for sid, aid in list(sched.where.items()):
        if aid == agent["id"]:
            sched.forget(sid)


@hookimpl
def register_routes(register):
    from .api import bp

    register(bp)


@hookimpl
def register_triggers(register):
    from .api import find_trigger, fire_trigger

    register(Trigger("schedule", "sch_", find_trigger, fire_trigger))


# ------------------------------------------------------------------ the manage_schedule tool


async def manage_schedule(args: dict, ctx) -> Any:
    from .api import create_schedule, delete_schedule, list_schedules

    app, agent = ctx.app, ctx.agent
    action = args.get("action")
    if action == "list":
        return {"schedules": [s for s in await list_schedules(app, ctx.actor, agent["id"])]}
    if action == "create":
        body = {"agentId": agent["id"], "channelId": (ctx.channel or {}).get("id", ""), "prompt": args.get("prompt", ""),
                "cron": args.get("cron"), "at": args.get("at"), "timezone": args.get("timezone") or "UTC",
                "catchUp": args.get("catchUp", True)}
        made, _token = await create_schedule(app, ctx.actor, body)
        return {"created": made}
    if action == "delete":
        await delete_schedule(app, ctx.actor, str(args.get("scheduleId", "")), agent_id=agent["id"])
        return {"deleted": args.get("scheduleId")}
    raise BadRequest("action must be create, list or delete", "invalid_action")


@hookimpl
def register_tools(register):
    register(Tool(
        name="manage_schedule",
        description="Create, list or delete your own schedules: a prompt you run on a cron schedule "
                    "(five fields, in the given IANA time zone) or once at a time, posting in this channel.",
        parameters={"type": "object", "properties": {
            "action": {"type": "string", "enum": ["create", "list", "delete"]},
            "prompt": {"type": "string", "description": "What to do at each run (create)"},
            "cron": {"type": "string", "description": "e.g. '0 9 * * 1-5' for 9:00 on weekdays (create)"},
            "at": {"type": "string", "description": "ISO 8601 time of a single run (create)"},
            "timezone": {"type": "string", "description": "IANA time zone, e.g. Asia/Shanghai (default UTC)"},
            "scheduleId": {"type": "string", "description": "The schedule to delete (delete)"},
        }, "required": ["action"]},
        fn=manage_schedule, read_only=False, mutating=True, min_role="member",
        approval=True))  # a schedule acts later, unattended: a person approves each change
