"""Collaboration chains: a group's ordered agents, each one's output the next one's input,
with optional human approval (approve, edit the hand-off, or stop) between steps."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..errors import BadRequest, Conflict, NotFound, XiajiaoError
from ..ids import new_id
from ..models import Actor

ACTIONS = ("approve", "edit", "stop")
KEEP_FINISHED = 200  # finished runs kept in memory for GET /api/chains/<id>


@dataclass
class ChainRun:
    id: str
    channel: dict
    agent_ids: list[str]
    message: dict
    actor: Actor
    approval: bool
    step: int = 0
    status: str = "running"
    current: str | None = None
    handoff: str = ""
    reason: str | None = None
    decision: asyncio.Future | None = None
    outputs: list[dict] = field(default_factory=list)

    def json(self) -> dict:
        out = {"chainId": self.id, "channelId": self.channel["id"], "agentIds": list(self.agent_ids),
               "currentAgent": self.current, "step": self.step, "totalSteps": len(self.agent_ids),
               "status": self.status, "approval": self.approval, "outputs": list(self.outputs),
               "startedBy": self.actor.id}
        if self.status == "paused":
            out["handoff"] = self.handoff
        if self.reason:
            out["reason"] = self.reason
        return out


class Chains:
    def __init__(self, engine):
        self.engine = engine
        self.app = engine.app
        self.runs: dict[str, ChainRun] = {}

    def _publish(self, run: ChainRun, **extra) -> None:
        data = {"chainId": run.id, "currentAgent": run.current, "step": run.step, "totalSteps": len(run.agent_ids),
                "status": run.status, "startedBy": run.actor.id, **extra}
        if run.reason:
            data["reason"] = run.reason
        self.app.hub.publish(run.channel["id"], "collab_status", data)

    async def start(self, channel: dict, agent_ids: list[str], message: dict, actor: Actor) -> ChainRun:
        from . import channel_config

        missing = [a for a in agent_ids if self.engine.agents.get(a) is None]
        if missing or not agent_ids:
            raise BadRequest(f"The chain names unknown agents: {', '.join(missing) or '(none)'}", "invalid_chain")
        run = ChainRun(id=new_id("chain"), channel=channel, agent_ids=list(agent_ids), message=message, actor=actor,
                       approval=bool(channel_config(channel).get("chainApproval")))
        self.runs[run.id] = run
        self._trim()
        self.app.spawn(self._run(run), name=f"chain-{run.id}")
        return run

    def _trim(self) -> None:
        finished = [k for k, r in self.runs.items() if r.status in ("completed", "error")]
        for key in finished[:-KEEP_FINISHED]:
            del self.runs[key]

    async def _run(self, run: ChainRun) -> None:
        text: str | None = None
        previous: dict | None = None
        try:
            for index, agent_id in enumerate(run.agent_ids):
                agent = self.engine.agents.get(agent_id)
                run.step, run.current = index + 1, agent_id
                if agent is None:
                    run.status, run.reason = "error", "agent_missing"
                    self._publish(run)
                    return
                run.status = "running"
                self._publish(run)
                handoff = None if previous is None else f"[{previous['name']} → {agent['name']}]\n{text}"
                reply = await self.engine.lane_turn(agent, run.channel, run.message, run.actor, handoff=handoff,
                                                    metadata={"chainId": run.id, "step": run.step})
                if reply is None or reply["status"] != "done":
                    run.status = "error"
                    run.reason = "step_failed" if reply is None else f"step_{reply['status']}"
                    self._publish(run)
                    return
                text, previous = reply["content"], agent
                run.outputs.append({"step": run.step, "agentId": agent_id, "messageId": reply["id"]})
                if run.approval and index + 1 < len(run.agent_ids):
                    run.status, run.handoff = "paused", text
                    run.decision = asyncio.get_running_loop().create_future()
                    self._publish(run, handoff=text, nextAgent=run.agent_ids[index + 1])
                    action, edited = await run.decision
                    run.decision = None
                    if action == "stop":
                        run.status, run.reason = "completed", "stopped"
                        self._publish(run)
                        return
                    if action == "edit":
                        text = edited
            run.status = "completed"
            self._publish(run)
        except asyncio.CancelledError:
            run.status, run.reason = "error", "interrupted"
            raise

    def get(self, chain_id: str) -> ChainRun:
        run = self.runs.get(chain_id)
        if run is None:
            raise NotFound("Chain run not found", "chain_not_found")
        return run

    def decide(self, chain_id: str, action: str, text: str | None = None) -> ChainRun:
        run = self.get(chain_id)
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
            run = self.get(str(data.get("chainId") or ""))
            await self.authorize(conn.actor, run, "chain.decide")
            text = data.get("text")
            if text is not None and not isinstance(text, str):
                raise BadRequest("text must be a string", "invalid_text")
            self.decide(run.id, str(data.get("action") or ""), text)
        except XiajiaoError as exc:
            conn.send_frame("error", {"error": exc.message, "code": exc.code, "chainId": data.get("chainId")})
