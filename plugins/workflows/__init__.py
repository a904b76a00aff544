"""Workflows: a group channel's stored, ordered steps — each an agent with an instruction template —
run one after another, each step's output the next one's ``{{previous}}``.

- A step may ask a person first (the run is ``paused`` until someone approves or rejects it), may
  retry or be skipped when it fails, and a stop condition on a step's output ends a run early.
- Every change of a run is stored before it is announced (``workflow_run`` frames in the channel);
  the steps answer in the channel as the agents' replies, so people see the work.
- A stop of the server leaves a running step ``interrupted`` (resume runs it again); a run waiting for
  approval is still waiting after the restart. Runs can be suspended, resumed and cancelled.
- Each workflow has an incoming-webhook URL with a secret token (``POST /api/triggers/<id>``).
- People decide over REST or with the ``workflow_decision`` WebSocket frame, by the same rule: who
  started the run (while he may post in the channel) or an admin.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from xiajiao import BadRequest, Conflict, Frame, NotFound, Trigger, XiajiaoError, authorized_channel, get_agent, \
    get_channel, get_person, hookimpl, post_message, publish_frame, run_turn

from . import store

log = logging.getLogger("xiajiao.workflows")


class Runner:
    """The runs alive in this process: one task per run going on."""

    def __init__(self, app: Any):
        self.app = app
        self.tasks: dict[str, asyncio.Task] = {}
        self.intent: dict[str, str] = {}  # run id -> the status a cancelled task leaves (suspended | cancelled)

    async def snapshot(self, run_id: str) -> dict:
        row = await store.run_row(self.app, run_id)
        if row is None:
            raise NotFound("Workflow run not found", "run_not_found")
        wf = await store.get(self.app, row["workflow_id"])
        return store.run_json(row, await store.steps_of(self.app, run_id), wf["name"] if wf else "")

    async def announce(self, run_id: str) -> dict:
        run = await self.snapshot(run_id)
        publish_frame(self.app, run["channelId"], "workflow_run", run)
        return run

    # -- starting and going on

    async def start(self, workflow: dict, *, actor: Any, text: str, reason: str) -> dict:
        channel = await get_channel(self.app, workflow["channel_id"])
        if channel is None:
            raise NotFound("The workflow's channel is gone", "channel_not_found")
        run_id = await store.new_run(self.app, workflow, started_by=actor.id, reason=reason, text=text)
        msg = await post_message(self.app, channel_id=channel["id"], content=text, user_id=actor.id,
                                 metadata={"workflow": {"id": workflow["id"], "runId": run_id, "name": workflow["name"],
                                                        "reason": reason}})
        await store.set_run(self.app, run_id, message_id=msg["id"])
        self.go(run_id)
        return await self.announce(run_id)

    def go(self, run_id: str) -> asyncio.Task:
        task = self.app.spawn(self.advance(run_id), name=f"workflow-{run_id}")
        self.tasks[run_id] = task

        def done(t: asyncio.Task) -> None:
            if self.tasks.get(run_id) is t:
                del self.tasks[run_id]

        task.add_done_callback(done)
        return task

    async def advance(self, run_id: str) -> None:
        """Run the steps from the run's current one until it ends or waits for a person."""
        app = self.app
        idx = 0
        try:
            run = await store.run_row(app, run_id)
            if run is None or run["status"] != "running":
                return
            channel = await get_channel(app, run["channel_id"])
            actor = await get_person(app, run["started_by"])
            message = {"id": run["message_id"]}
            if channel is None or actor is None:
                await self.finish(run_id, "failed", "the channel or the person who started the run is gone")
                return
            steps = await store.steps_of(app, run_id)
            values = {"input": run["input"], "previous": run["input"]}
            for s in steps:
                if s["status"] == "done":
                    values["previous"] = values[f"step{s['idx'] + 1}"] = s["output"] or ""
            for idx in range(run["step"], len(steps)):
                s = steps[idx]
                if s["status"] in ("done", "skipped"):
                    continue
                await store.set_run(app, run_id, step=idx, status="running", error=None)
                if s["approval"] and s["decision"] != "approved":
                    await store.set_step(app, run_id, idx, status="waiting")
                    await store.set_run(app, run_id, status="paused")
                    await self.announce(run_id)
                    return
                if not await self.step(run_id, channel, actor, message, s, values):
                    return
                output = values["previous"]
                if store.stops(store.loads(run["stop_when"]), output) and idx + 1 < len(steps):
                    for later in steps[idx + 1:]:
                        await store.set_step(app, run_id, later["idx"], status="skipped", error="stop condition met")
                    await store.set_run(app, run_id, stopped_early=1)
                    break
            await self.finish(run_id, "completed")
        except asyncio.CancelledError:
            status = self.intent.pop(run_id, "interrupted")
            step_status = "cancelled" if status == "cancelled" else "interrupted"
            why = {"cancelled": "cancelled", "suspended": "suspended"}.get(status, "the server stopped")

            async def record():
                await store.set_step(app, run_id, idx, status=step_status, error=why)
                await store.set_run(app, run_id, status=status, error=None if status != "interrupted" else why)
                if status != "interrupted":
                    await self.announce(run_id)

            await asyncio.shield(record())
            raise

    async def step(self, run_id: str, channel: dict, actor: Any, message: dict, s: dict, values: dict) -> bool:
        """One step, with its retries; True when the run goes on."""
        app, idx = self.app, s["idx"]
        instruction = store.render(s["template"], values)
        tries = 1 + (s["retries"] if s["on_error"] == "retry" else 0)
        error = ""
        attempts = 0
        for attempt in range(tries):
            attempts = attempt + 1
            await store.set_step(app, run_id, idx, status="running", instruction=instruction, attempts=attempts,
                                 error=None, started_at=store.now(), finished_at=None)
            await self.announce(run_id)
            agent = get_agent(app, s["agent_id"])
            if agent is None:
                error = f"the agent {s['agent_id']} is gone"
                break
            reply = await run_turn(app, agent, channel, message, actor, instruction=instruction,
                                   metadata={"workflow": {"runId": run_id, "step": idx + 1}})
            if reply is not None and reply["status"] == "done":
                values["previous"] = values[f"step{idx + 1}"] = reply["content"]
                await store.set_step(app, run_id, idx, status="done", output=reply["content"], reply_id=reply["id"],
                                     finished_at=store.now())
                return True
            if reply is not None and reply["status"] == "stopped":  # someone stopped the reply: the run stops
                await store.set_step(app, run_id, idx, status="cancelled", reply_id=reply["id"], error="stopped",
                                     finished_at=store.now())
                await self.finish(run_id, "cancelled", "the step's reply was stopped")
                return False
            meta = (reply or {}).get("metadata") or {}
            error = (meta.get("error") or {}).get("error") or "the agent did not answer"
            await store.set_step(app, run_id, idx, reply_id=(reply or {}).get("id"), error=error)
        if s["on_error"] == "skip":
            await store.set_step(app, run_id, idx, status="skipped", error=error, finished_at=store.now())
            return True
        await store.set_step(app, run_id, idx, status="error", error=error, attempts=attempts, finished_at=store.now())
        await self.finish(run_id, "failed", f"step {idx + 1}: {error}")
        return False

    async def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        await store.set_run(self.app, run_id, status=status, error=error)
        await self.announce(run_id)

    # -- people's decisions

    async def decide(self, run_id: str, decision: str, actor: Any) -> dict:
        row = await store.run_row(self.app, run_id)
        if row is None:
            raise NotFound("Workflow run not found", "run_not_found")
        if row["status"] != "paused" or not await store.decide(self.app, run_id, row["step"], decision, actor):
            raise Conflict("This run is not waiting for a decision (decided already?)", "not_waiting")
        if decision == "approved":
            self.go(run_id)
        return await self.announce(run_id)

    async def suspend(self, run_id: str) -> dict:
        row = await self._row(run_id)
        if row["status"] not in ("running", "paused"):
            raise Conflict(f"A {row['status']} run cannot be suspended", "not_running")
        await self._halt(run_id, row, "suspended")
        return await self.snapshot(run_id)

    async def cancel(self, run_id: str) -> dict:
        row = await self._row(run_id)
        if row["status"] in store.FINISHED:
            raise Conflict(f"The run is {row['status']} already", "run_finished")
        await self._halt(run_id, row, "cancelled")
        return await self.snapshot(run_id)

    async def resume(self, run_id: str) -> dict:
        row = await self._row(run_id)
        if row["status"] not in ("suspended", "interrupted"):
            raise Conflict(f"A {row['status']} run cannot be resumed", "not_resumable")
        steps = await store.steps_of(self.app, run_id)
        current = steps[row["step"]] if row["step"] < len(steps) else None
        if current is not None and current["status"] in ("interrupted", "waiting"):
            await store.set_step(self.app, run_id, current["idx"], status="pending", error=None)
        await store.set_run(self.app, run_id, status="running", error=None)
        self.go(run_id)
        return await self.announce(run_id)

    async def _row(self, run_id: str) -> dict:
        row = await store.run_row(self.app, run_id)
        if row is None:
            raise NotFound("Workflow run not found", "run_not_found")
        return row

    async def _halt(self, run_id: str, row: dict, status: str) -> None:
        task = self.tasks.get(run_id)
        if task is not None and not task.done():
            self.intent[run_id] = status
            task.cancel()
            await asyncio.wait([task])  # its clean-up records the status
            return
        steps = await store.steps_of(self.app, run_id)
        if row["step"] < len(steps) and steps[row["step"]]["status"] in ("waiting", "interrupted", "running"):
            await store.set_step(self.app, run_id, row["step"], status="cancelled" if status == "cancelled" else "pending")
        await store.set_run(self.app, run_id, status=status)
        await self.announce(run_id)


async def authorized_run(app: Any, actor: Any, run_id: str, action: str = "channel.read") -> dict:
    """The run's row if ``actor`` may read it (``chain.decide``: decide it); a run in a channel the
    caller cannot see is not found."""
    row = await store.run_row(app, run_id) if isinstance(run_id, str) and run_id else None
    if row is None:
        raise NotFound("Workflow run not found", "run_not_found")
    try:
        await authorized_channel(app, actor, row["channel_id"], action,
                                 chain={"id": run_id, "startedBy": row["started_by"]} if action == "chain.decide" else None)
    except NotFound:
        raise NotFound("Workflow run not found", "run_not_found") from None
    return row


ACTIONS = ("approve", "reject", "suspend", "resume", "cancel")


async def act(app: Any, actor: Any, run_id: str, action: str) -> dict:
    """A person's decision on a run (REST and WebSocket alike): the run as it is afterwards."""
    if action not in ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(ACTIONS)}", "invalid_action")
    await authorized_run(app, actor, run_id, "chain.decide")
    r = runner(app)
    if action in ("approve", "reject"):
        return await r.decide(run_id, {"approve": "approved", "reject": "rejected"}[action], actor)
    return await {"suspend": r.suspend, "resume": r.resume, "cancel": r.cancel}[action](run_id)


async def ws_decision(app: Any, actor: Any, data: dict) -> None:
    """``workflow_decision {"runId", "action"}``: everyone subscribed gets the ``workflow_run``
    update; a refusal answers the sender alone with its code and the ``runId``."""
    run_id = data.get("runId")
    try:
        await act(app, actor, run_id if isinstance(run_id, str) else "", str(data.get("action") or ""))
    except XiajiaoError as exc:
        exc.extra = {**exc.extra, "runId": run_id}
        raise


def runner(app: Any) -> Runner:
    found = app.state.get("workflows")
    if found is None:
        found = app.state["workflows"] = Runner(app)
    return found


@hookimpl
async def startup(app):
    cut = await store.mark_interrupted(app)
    if cut:
        log.warning("workflow runs interrupted by the last stop", extra={"count": cut})
    runner(app)


@hookimpl
def register_routes(register):
    from .api import bp

    register(bp)


async def find_trigger(app: Any, workflow_id: str) -> dict | None:
    row = await store.get(app, workflow_id)
    return {"hash": row["trigger_hash"], "enabled": True} if row else None


async def fire_trigger(app: Any, workflow_id: str, text: str) -> dict:
    """An incoming webhook starts the workflow as its creator, the caller's text as the input."""
    row = await store.get(app, workflow_id)
    actor = await get_person(app, row["created_by"]) if row else None
    if row is None or actor is None:
        raise NotFound("No such trigger", "trigger_not_found")
    run = await runner(app).start(row, actor=actor, text=text.strip() or row["name"], reason="trigger")
    return {"started": workflow_id, "runId": run["id"]}


@hookimpl
def register_frames(register):
    register(Frame("workflow_decision", ws_decision))


@hookimpl
def register_triggers(register):
    register(Trigger("workflow", "wf_", find_trigger, fire_trigger))
