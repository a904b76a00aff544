"""Collaboration chains: a group's ordered agents, each one's output the next one's input,
with optional human approval (approve, edit the hand-off, or stop) between steps."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from ..errors import BadRequest, Conflict, NotFound, XiajiaoError
from ..ids import new_id, now_iso
from ..models import Actor

ACTIONS = ("approve", "edit", "stop")


@dataclass
class ChainRun:
    id: str
    channel: dict
    agent_ids: list[str]
    message: dict
    actor: Actor
    approval: bool
    step: int = 0
    status: str = "running"  # running | paused | completed | stopped | error | interrupted
    current: str | None = None
    handoff: str = ""
    reason: str | None = None
    decision: asyncio.Future | None = None
    outputs: list[dict] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""

    def json(self) -> dict:
        out = {"chainId": self.id, "channelId": self.channel["id"], "agentIds": list(self.agent_ids),
               "currentAgent": self.current, "step": self.step, "totalSteps": len(self.agent_ids),
               "status": self.status, "approval": self.approval, "outputs": list(self.outputs),
               "startedBy": self.actor.id, "startedByName": self.actor.name, "messageId": self.message.get("id"),
               "createdAt": self.created_at, "updatedAt": self.updated_at}
        if self.status == "paused":
            out["handoff"] = self.handoff
            if self.step < len(self.agent_ids):
                out["nextAgent"] = self.agent_ids[self.step]
        if self.reason:
            out["reason"] = self.reason
        return out


def run_from_row(row: dict, channel: dict, message: dict, actor: Actor) -> ChainRun:
    return ChainRun(id=row["id"], channel=channel, agent_ids=json.loads(row["agent_ids"]), message=message,
                    actor=actor, approval=bool(row["approval"]), step=row["step"], status=row["status"],
                    current=row["current_agent"], handoff=row["handoff"], reason=row["reason"],
                    outputs=json.loads(row["outputs"]), created_at=row["created_at"], updated_at=row["updated_at"])


class Chains:
    """Chain runs, stored in ``chain_runs`` at every change: a run waiting for approval is
    still waiting after a restart; one cut off mid-step reads ``interrupted``."""

    def __init__(self, engine):
        self.engine = engine
        self.app = engine.app
        self.runs: dict[str, ChainRun] = {}  # runs alive in this process (running or paused)

    def _publish(self, run: ChainRun, **extra) -> None:
        data = {"chainId": run.id, "currentAgent": run.current, "step": run.step, "totalSteps": len(run.agent_ids),
                "status": run.status, "startedBy": run.actor.id, **extra}
        if run.reason:
            data["reason"] = run.reason
        self.app.hub.publish(run.channel["id"], "collab_status", data)

    async def _save(self, run: ChainRun) -> None:
        run.updated_at = now_iso()
        await self.app.db.execute(
            "INSERT INTO chain_runs (id, channel_id, message_id, started_by, agent_ids, approval, step, status, "
            "current_agent, handoff, reason, outputs, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET step = excluded.step, status = excluded.status, "
            "current_agent = excluded.current_agent, handoff = excluded.handoff, reason = excluded.reason, "
            "outputs = excluded.outputs, updated_at = excluded.updated_at",
            (run.id, run.channel["id"], run.message.get("id") or "", run.actor.id, json.dumps(run.agent_ids),
             int(run.approval), run.step, run.status, run.current, run.handoff, run.reason,
             json.dumps(run.outputs), run.created_at, run.updated_at))

    async def _update(self, run: ChainRun, **extra) -> None:
        await self._save(run)
        self._publish(run, **extra)

    async def start(self, channel: dict, agent_ids: list[str], message: dict, actor: Actor) -> ChainRun:
        from . import channel_config

        missing = [a for a in agent_ids if self.engine.agents.get(a) is None]
        if missing or not agent_ids:
            raise BadRequest(f"The chain names unknown agents: {', '.join(missing) or '(none)'}", "invalid_chain")
        run = ChainRun(id=new_id("chain"), channel=channel, agent_ids=list(agent_ids), message=message, actor=actor,
                       approval=bool(channel_config(channel).get("chainApproval")), created_at=now_iso())
        self.runs[run.id] = run
        await self._save(run)
        self.app.spawn(self._run(run), name=f"chain-{run.id}")
        return run

    async def restore(self) -> None:
        """At start: runs cut off mid-step become ``interrupted``; paused runs wait for their decision again."""
        from .. import chat

        await self.app.db.execute("UPDATE chain_runs SET status = 'interrupted', reason = 'restart', updated_at = ? "
                                  "WHERE status = 'running'", (now_iso(),))
        for row in await self.app.db.fetchall("SELECT * FROM chain_runs WHERE status = 'paused'"):
            channel = await chat.get_channel(self.app.db, row["channel_id"])
            message = await chat.get_message(self.app.db, row["message_id"])
            user = await self.app.db.fetchone("SELECT id, role, username, display_name FROM users WHERE id = ?",
                                              (row["started_by"],))
            if channel is None or message is None or user is None:
                await self.app.db.execute("UPDATE chain_runs SET status = 'error', reason = 'gone' WHERE id = ?",
                                          (row["id"],))
                continue
            actor = Actor(user["id"], user["role"], user["display_name"] or user["username"])
            run = run_from_row(row, channel, chat.message_json(message), actor)
            self.runs[run.id] = run
            run.decision = asyncio.get_running_loop().create_future()
            self.app.spawn(self._run(run), name=f"chain-{run.id}")

    async def _decision(self, run: ChainRun, text: str) -> str | None:
        """Wait for approve / edit / stop; the hand-off to go on with, or None when stopped."""
        if run.decision is None or run.decision.done():
            run.decision = asyncio.get_running_loop().create_future()
        action, edited = await run.decision
        run.decision = None
        if action == "stop":
            run.status, run.reason = "stopped", None
            await self._update(run)
            return None
        run.status = "running"
        return edited if action == "edit" else text

    async def _run(self, run: ChainRun) -> None:
        text: str | None = None
        previous: dict | None = None
        first = 0
        try:
            if run.status == "paused":  # restored after a restart: the decision comes first
                text, first = run.handoff, run.step
                previous = self.engine.agents.get(run.agent_ids[run.step - 1]) if run.step else None
                text = await self._decision(run, text)
                if text is None:
                    return
            for index in range(first, len(run.agent_ids)):
                agent_id = run.agent_ids[index]
                agent = self.engine.agents.get(agent_id)
                run.step, run.current = index + 1, agent_id
                if agent is None:
                    run.status, run.reason = "error", "agent_missing"
                    await self._update(run)
                    return
                run.status = "running"
                await self._update(run)
                handoff = None
                if previous is not None:
                    handoff = f"[{previous['name']} → {agent['name']}]\n{text}"
                reply = await self.engine.lane_turn(agent, run.channel, run.message, run.actor, handoff=handoff,
                                                    metadata={"chainId": run.id, "step": run.step})
                if reply is None or reply["status"] != "done":
                    run.status = "stopped" if reply is not None and reply["status"] == "stopped" else "error"
                    run.reason = "step_failed" if reply is None else f"step_{reply['status']}"
                    await self._update(run)
                    return
                text, previous = reply["content"], agent
                run.outputs.append({"step": run.step, "agentId": agent_id, "messageId": reply["id"]})
                if run.approval and index + 1 < len(run.agent_ids):
                    run.status, run.handoff = "paused", text
                    run.decision = asyncio.get_running_loop().create_future()  # before anyone hears of the pause
                    await self._update(run, handoff=text, nextAgent=run.agent_ids[index + 1])
                    text = await self._decision(run, text)
                    if text is None:
                        return
            run.status = "completed"
            await self._update(run)
        except asyncio.CancelledError:
            if run.status != "paused":  # a paused run waits on in the database; others were cut off
                run.status, run.reason = "interrupted", "interrupted"
                await asyncio.shield(self._save(run))
            raise
        finally:
            if run.status not in ("running", "paused"):
                self.runs.pop(run.id, None)

    async def get(self, chain_id: str) -> ChainRun:
        run = self.runs.get(chain_id)
        if run is not None:
            return run
        row = await self.app.db.fetchone("SELECT * FROM chain_runs WHERE id = ?", (chain_id,))
        if row is None:
            raise NotFound("Chain run not found", "chain_not_found")
        from .. import chat

        channel = await chat.get_channel(self.app.db, row["channel_id"]) or {"id": row["channel_id"]}
        user = await self.app.db.fetchone("SELECT username, display_name FROM users WHERE id = ?",
                                          (row["started_by"],))
        name = (user["display_name"] or user["username"]) if user else ""
        return run_from_row(row, channel, {"id": row["message_id"]}, Actor(row["started_by"] or "", "guest", name))

    async def list(self, channel_id: str, limit: int = 20) -> list[dict]:
        """A channel's runs, newest first (when, who started it, steps, status)."""
        rows = await self.app.db.fetchall(
            "SELECT id FROM chain_runs WHERE channel_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (channel_id, max(1, min(limit, 100))))
        return [(await self.get(r["id"])).json() for r in rows]

    async def decide(self, chain_id: str, action: str, text: str | None = None) -> ChainRun:
        run = await self.get(chain_id)
        if action not in ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(ACTIONS)}", "invalid_action")
        if action == "edit" and not (text or "").strip():
            raise BadRequest("edit needs the new hand-off text", "invalid_text")
        if run.status != "paused" or run.decision is None or run.decision.done():
            raise Conflict("This chain is not waiting for approval", "chain_not_paused")
        run.decision.set_result((action, text))
        return run

    async def authorize(self, actor: Actor, run: ChainRun, action: str = "channel.read") -> None:
        """May ``actor`` see (``channel.read``) or decide (``chain.decide``) this run? A run in a
        channel the caller may not see is not found."""
        from .. import auth

        try:
            await auth.authorized_channel(self.app, actor, run.channel["id"], action,
                                          chain={"id": run.id, "startedBy": run.actor.id})
        except NotFound:
            raise NotFound("Chain run not found", "chain_not_found") from None

    async def ws_decision(self, conn, data: dict) -> None:
        try:
            run = await self.get(str(data.get("chainId") or ""))
            await self.authorize(conn.actor, run, "chain.decide")
            text = data.get("text")
            if text is not None and not isinstance(text, str):
                raise BadRequest("text must be a string", "invalid_text")
            await self.decide(run.id, str(data.get("action") or ""), text)
        except XiajiaoError as exc:
            conn.send_frame("error", {"error": exc.message, "code": exc.code, "chainId": data.get("chainId")})
