"""The conversation engine: routing, agent turns, the tool loop, chains.

``handle_user_message`` routes a stored user message and runs the chosen agents' turns
in the background: one agent's turns in one channel run in order (a lane per
agent and channel), different agents run in parallel. An agent's reply that
mentions other agents of a group triggers them, up to ``hop_limit`` hops.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Callable

from .. import chat
from ..agents import Agents
from ..errors import ProviderError, XiajiaoError
from ..gateway import Gateway
from ..models import Actor, ChatMessage, ChatRequest, Usage
from .chains import Chains
from .mentions import find_mentions
from .turn import Turn, TurnRunner, build_system

log = logging.getLogger("xiajiao.engine")

__all__ = ["Engine", "TurnResult", "find_mentions"]


@dataclass
class Origin:
    """The user message a cascade of turns started from (hop counting)."""

    message_id: str
    limit: int
    limited: bool = False


@dataclass
class TurnResult:
    """The outcome of one turn run for a caller (the machine API, background tasks)."""

    text: str
    status: str  # done | stopped | error | interrupted
    usage: Usage = field(default_factory=Usage)
    rounds: int = 0
    error: dict | None = None  # {"error", "code"} of a failed turn
    channel_id: str | None = None  # where it was recorded (None: nowhere)
    message_id: str | None = None  # the stored reply

    @property
    def done(self) -> bool:
        return self.status == "done"


def channel_chain(channel: dict) -> list[str]:
    chain = channel.get("chain") or []
    if isinstance(chain, str):
        chain = json.loads(chain or "[]")
    return [c["agentId"] if isinstance(c, dict) else c for c in chain]


def channel_config(channel: dict) -> dict:
    config = channel.get("config") or {}
    return json.loads(config) if isinstance(config, str) else dict(config)


def channel_row(channel: dict) -> dict:
    """The channel in its database shape, whichever shape the caller had."""
    if "default_agent_id" in channel or "defaultAgentId" not in channel:
        return channel
    return {**channel, "default_agent_id": channel.get("defaultAgentId")}


class Engine:
    def __init__(self, app):
        self.app = app
        self.gateway = Gateway(app)
        self.agents = Agents(app)
        self.runner = TurnRunner(self)
        self.chains = Chains(self)
        self.running: dict[str, Turn] = {}  # reply message id -> turn
        self._lanes: dict[tuple[str, str], asyncio.Lock] = {}

    async def start(self) -> None:
        await self.gateway.load()
        await self.agents.load()
        await self.agents.seed_defaults()
        handlers = getattr(self.app, "ws_handlers", None)
        if handlers is None:
            handlers = self.app.ws_handlers = {}
        handlers["stop"] = self._ws_stop
        handlers["chain_decision"] = self.chains.ws_decision

    async def stop(self) -> None:
        for turn in list(self.running.values()):
            if turn.task is not None:
                turn.task.cancel()
        waiting = [t.task for t in self.running.values() if t.task is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=self.app.settings.shutdown_timeout)
        await self.gateway.close()

    # ------------------------------------------------------------------ routing

    async def channel_agents(self, channel_id: str) -> list[dict]:
        ids = await chat.channel_agent_ids(self.app.db, channel_id)
        if any(self.agents.get(i) is None for i in ids):
            await self.agents.load()  # an agent written to the database by other code
        return [a for a in (self.agents.get(i) for i in ids) if a is not None]

    async def handle_user_message(self, message: dict, channel: dict, actor: Actor) -> list[str]:
        """Route a stored user message and start the chosen agents' turns; returns their ids."""
        channel = channel_row(channel)
        agents = await self.channel_agents(channel["id"])
        if not agents:
            return []
        chain = channel_chain(channel)
        if channel["type"] == "group" and chain and not self._mentions_anyone(message, agents):
            await self.chains.start(channel, chain, message, actor)
            return list(chain)
        targets = await self.app.hook("route_message", message=message, channel=channel, agents=agents) or []
        origin = Origin(message["id"], max(0, self.app.settings.hop_limit))
        for agent_id in targets:
            agent = self.agents.get(agent_id)
            if agent is not None:
                self.enqueue(agent, channel, message, actor, origin=origin, hop=0)
        return list(targets)

    @staticmethod
    def _mentions_anyone(message: dict, agents: list[dict]) -> bool:
        found, everyone = find_mentions(message.get("content") or "", agents)
        return bool(found) or everyone

    def enqueue(self, agent: dict, channel: dict, message: dict, actor: Actor, *, origin: Origin | None = None,
                hop: int = 0) -> asyncio.Task:
        """Run a turn of ``agent`` after the ones already queued for it in this channel."""
        return self.app.spawn(self._in_lane(agent, channel, message, actor, origin, hop),
                              name=f"turn-{agent['id']}")

    async def lane_turn(self, agent: dict, channel: dict, message: dict, actor: Actor, **kw) -> dict | None:
        """``run_turn`` after the turns already queued for this agent in this channel."""
        key = (agent["id"], channel["id"])
        lock = self._lanes.get(key)
        if lock is None:
            lock = self._lanes[key] = asyncio.Lock()
        try:
            async with lock:
                return await self.run_turn(agent, channel, message, actor, **kw)
        finally:
            if not lock.locked() and self._lanes.get(key) is lock and not getattr(lock, "_waiters", None):
                del self._lanes[key]

    async def _in_lane(self, agent: dict, channel: dict, message: dict, actor: Actor, origin: Origin | None,
                       hop: int) -> None:
        reply = await self.lane_turn(agent, channel, message, actor)
        if reply and reply.get("status") == "done" and origin is not None and channel["type"] == "group":
            await self._follow_mentions(agent, channel, reply, actor, origin, hop)

    async def _follow_mentions(self, agent: dict, channel: dict, reply: dict, actor: Actor, origin: Origin,
                               hop: int) -> None:
        agents = await self.channel_agents(channel["id"])
        targets = await self.app.hook("route_message", message=reply, channel=channel, agents=agents) or []
        targets = [t for t in targets if t != agent["id"] and self.agents.get(t)]
        if not targets:
            return
        if hop + 1 > origin.limit:
            if not origin.limited:
                origin.limited = True
                self.app.hub.publish(channel["id"], "collab_status", {
                    "chainId": origin.message_id, "currentAgent": agent["id"], "step": hop, "totalSteps": origin.limit,
                    "status": "error", "reason": "hop_limit",
                    "message": f"Stopped: agents handed the conversation on {origin.limit} times "
                               f"(hop limit {origin.limit}) for one user message"})
            return
        for target in targets:
            self.enqueue(self.agents.get(target), channel, reply, actor, origin=origin, hop=hop + 1)

    # ------------------------------------------------------------------ one turn

    def error_frame(self, channel_id: str, agent: dict, exc: XiajiaoError, message_id: str | None = None) -> None:
        self.app.hub.publish(channel_id, "error", {"channelId": channel_id, "agentId": agent["id"],
                                                   "messageId": message_id, "error": exc.message, "code": exc.code})

    async def run_turn(self, agent: dict, channel: dict, message: dict, actor: Actor, *,
                       handoff: str | None = None, metadata: dict | None = None,
                       context: list[ChatMessage] | None = None,
                       on_event: Callable[[str, dict], None] | None = None) -> dict | None:
        """Run one streamed turn of ``agent`` in ``channel``; returns the stored reply (API shape) or None.

        ``context``: the conversation to answer instead of the channel's history (the caller's own);
        ``on_event``: also told of the turn's start, text and tool events (see ``Turn.on_event``).
        """
        app = self.app
        cid = channel["id"]
        try:
            cfg, name = self.gateway.resolve(agent.get("model"))
        except XiajiaoError as exc:
            self.error_frame(cid, agent, exc, message.get("id"))
            return None
        turn = Turn(agent=agent, channel=channel, message=message, actor=actor, model=f"{cfg.id}/{name}",
                    on_event=on_event)
        try:
            messages = await self.runner.context(turn, handoff, context)
        except XiajiaoError as exc:
            self.error_frame(cid, agent, exc, message.get("id"))
            return None
        meta = {"replyTo": message.get("id"), "model": turn.model, **(metadata or {})}
        reply = await chat.create_message(app, channel_id=cid, content="", agent_id=agent["id"], status="streaming",
                                          publish=False, metadata=meta)
        turn.reply_id = reply["id"]
        turn.event("start", {"messageId": reply["id"], "channelId": cid})
        app.hub.publish(cid, "stream_start", {"messageId": reply["id"], "channelId": cid, "agentId": agent["id"]})
        self.running[reply["id"]] = turn
        loop = asyncio.ensure_future(self.runner.model_loop(turn, messages))
        turn.task = asyncio.current_task()
        turn.loop = loop
        status, error = "done", None
        try:
            try:
                await asyncio.wait([loop])
            except asyncio.CancelledError:  # the app is stopping: keep what was said, marked interrupted
                loop.cancel()
                await asyncio.shield(chat.finish_message(app, reply["id"], content=turn.text, status="interrupted"))
                raise
            if loop.cancelled():
                status = "stopped"
            elif loop.exception() is not None:
                failure = loop.exception()
                status = "error"
                if not isinstance(failure, XiajiaoError):
                    log.error("turn of %s failed", agent["id"], exc_info=failure)
                    failure = ProviderError(f"The turn failed: {type(failure).__name__}", "turn_failed")
                error = failure
        finally:
            self.running.pop(reply["id"], None)
            self.runner.flush(turn)
        extra = {"usage": {"promptTokens": turn.usage.prompt_tokens,
                           "completionTokens": turn.usage.completion_tokens}, "rounds": turn.rounds}
        if error is not None:
            extra["error"] = {"error": error.message, "code": error.code}
        await chat.finish_message(app, reply["id"], content=turn.text, status=status, metadata=extra)
        if error is not None:
            self.error_frame(cid, agent, error, reply["id"])
        app.hub.publish(cid, "stream_end", {"messageId": reply["id"], "status": status})
        reply.update(content=turn.text, status=status)
        reply["metadata"] = {**(reply.get("metadata") or {}), **extra}
        if status == "done":
            app.spawn(app.hook("on_turn_end", agent=agent, channel=channel, message=message, reply=reply,
                               actor=actor), name="on-turn-end")
        return reply

    # ------------------------------------------------------------------ stopping

    def stop_turn(self, message_id: str) -> bool:
        """Stop a running reply; its partial text is kept (status ``stopped``)."""
        turn = self.running.get(message_id)
        if turn is None or getattr(turn, "loop", None) is None:
            return False
        turn.stopped = True
        turn.loop.cancel()
        return True

    def stop_channel(self, channel_id: str) -> list[str]:
        ids = [mid for mid, t in self.running.items() if t.channel and t.channel["id"] == channel_id]
        return [mid for mid in ids if self.stop_turn(mid)]

    def running_in(self, channel_id: str) -> list[dict]:
        return [{"messageId": mid, "agentId": t.agent["id"], "channelId": channel_id}
                for mid, t in self.running.items() if t.channel and t.channel["id"] == channel_id]

    async def _ws_stop(self, conn, data: dict) -> None:
        from ..auth import can_write_channel

        data = data or {}
        actor = getattr(conn, "actor", None)
        stopped: list[str] = []
        if data.get("messageId"):
            turn = self.running.get(data["messageId"])
            if turn is not None and actor and await can_write_channel(self.app.db, actor, turn.channel):
                stopped = [data["messageId"]] if self.stop_turn(data["messageId"]) else []
        elif data.get("channelId"):
            channel = await chat.get_channel(self.app.db, data["channelId"])
            if channel is not None and actor and await can_write_channel(self.app.db, actor, channel):
                stopped = self.stop_channel(channel["id"])
        conn.send_frame("stopped", {"messageIds": stopped})

    # ------------------------------------------------------------------ helpers for other parts

    async def complete(self, agent: dict, messages: list[ChatMessage], *, max_tokens: int | None = None) -> str:
        """A non-streaming answer of ``agent``'s model (summaries, reranking …)."""
        cfg, name = self.gateway.resolve(agent.get("model"))
        text, _ = await self.gateway.complete(ChatRequest(model=f"{cfg.id}/{name}", messages=messages,
                                                          max_tokens=max_tokens), agent_id=agent["id"])
        return text

    async def ask(self, agent: dict, text: str, *, actor: Actor, channel: dict | None = None, depth: int = 1) -> str:
        """Ask an agent something outside the channel stream (call_agent): its full answer, tools included."""
        turn = await self.detached_turn(agent, [ChatMessage("user", text)], actor=actor, channel=channel, depth=depth)
        return turn.text

    # ------------------------------------------------------------------ turns for callers other than the web chat

    async def detached_turn(self, agent: dict, messages: list[ChatMessage], *, actor: Actor,
                            channel: dict | None = None, depth: int = 0,
                            on_event: Callable[[str, dict], None] | None = None) -> Turn:
        """A full turn of ``agent`` (SOUL.md, prompt sections, its tools) answering ``messages``, with
        nothing published or stored. Provider failures raise; cancelling the caller stops it."""
        cfg, name = self.gateway.resolve(agent.get("model"))
        asked = next((m.content for m in reversed(messages) if m.role == "user"), "")
        message = {"id": None, "content": asked, "agentId": None, "userId": actor.id}
        turn = Turn(agent=agent, channel=channel, message=message, actor=actor, model=f"{cfg.id}/{name}",
                    depth=depth, publish=False, on_event=on_event)
        system = await build_system(self.app, self.agents, agent, channel, message, actor)
        await self.runner.model_loop(turn, [ChatMessage("system", system), *messages])
        return turn

    async def converse(self, agent: dict, channel: dict, text: str, actor: Actor, *,
                       context: list[ChatMessage] | None = None,
                       on_event: Callable[[str, dict], None] | None = None) -> TurnResult:
        """Post ``text`` as ``actor`` in ``channel`` and run ``agent``'s turn on it, exactly as the web
        chat does (after the turns queued there; streamed to the channel; stored). ``context``: answer
        this conversation instead of the channel's history."""
        self.gateway.resolve(agent.get("model"))  # an unusable model fails before anything is stored
        channel = channel_row(channel)
        msg = await chat.create_message(self.app, channel_id=channel["id"], content=text, user_id=actor.id)
        await self.app.hook("on_message", message=msg, channel=channel, actor=actor)
        reply = await self.lane_turn(agent, channel, msg, actor, context=context, on_event=on_event)
        if reply is None:
            raise ProviderError("The turn could not start", "turn_failed")
        meta = reply.get("metadata") or {}
        usage = meta.get("usage") or {}
        return TurnResult(text=reply["content"], status=reply["status"],
                          usage=Usage(usage.get("promptTokens", 0), usage.get("completionTokens", 0)),
                          rounds=meta.get("rounds", 0), error=meta.get("error"), channel_id=channel["id"],
                          message_id=reply["id"])

    def require_agent(self, agent_id: str) -> dict:
        return self.agents.require(agent_id)

