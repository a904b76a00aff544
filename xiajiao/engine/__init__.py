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
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import chat
from ..agents import Agents
from ..errors import BadRequest, ProviderError, XiajiaoError
from ..gateway import Gateway
from ..models import Actor, ChatMessage, ChatRequest, Usage
from .approvals import Approvals
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
class Routing:
    """Who answers a user message: the channel's agents, the chain that runs instead (or None), the targets."""

    agents: list[dict]
    chain: list[str] | None
    targets: list[str]


@dataclass
class Lane:
    """The turns of one agent in one channel: run in order; forgotten when nobody waits."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # turns running or waiting


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


# Why a turn failed, in a small vocabulary the UI puts in plain words (both languages).
REASONS = ("provider_unreachable", "key_rejected", "provider_rate_limited", "timeout", "context_too_long",
           "model_unavailable", "provider_error", "turn_failed")
_CONTEXT_WORDS = ("context", "too long", "maximum", "token")


def failure_reason(exc: XiajiaoError) -> str:
    """The reason code of a failed turn, from the error the gateway (or the engine) raised."""
    code = exc.code
    status = exc.extra.get("httpStatus")
    detail = f"{exc.extra.get('detail') or ''} {exc.message}".lower()
    if code in ("connection_error", "circuit_open"):
        return "provider_unreachable"
    if code == "rate_limited" or status == 429:
        return "provider_rate_limited"
    if code == "timeout":
        return "timeout"
    if status in (401, 403):
        return "key_rejected"
    if status == 413 or (status == 400 and any(w in detail for w in _CONTEXT_WORDS)) or code == "context_too_long":
        return "context_too_long"
    if code in ("unknown_model", "no_model", "unknown_provider") or status == 404:
        return "model_unavailable"
    if code == "turn_failed":
        return "turn_failed"
    return "provider_error"


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
        self.approvals = Approvals(self)
        self.running: dict[str, Turn] = {}  # reply message id -> turn
        self._lanes: dict[tuple[str, str], Lane] = {}

    async def start(self) -> None:
        await self.gateway.load()
        await self.agents.load()
        await self.agents.seed_defaults()
        handlers = getattr(self.app, "ws_handlers", None)
        if handlers is None:
            handlers = self.app.ws_handlers = {}
        handlers["stop"] = self._ws_stop
        handlers["chain_decision"] = self.chains.ws_decision
        handlers["approval_decision"] = self.approvals.ws_decision
        await self.approvals.restore()
        await self.chains.restore()

    async def stop(self) -> None:
        await self.approvals.expire_all("shutdown")  # nobody is left to decide them
        for turn in list(self.running.values()):
            if turn.task is not None:
                turn.task.cancel()
        waiting = [t.task for t in self.running.values() if t.task is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=self.app.settings.shutdown_timeout)
        await self.gateway.close()

    # ------------------------------------------------------------------ routing

    async def channel_agents(self, channel_id: str, ids: list[str] | None = None) -> list[dict]:
        """The channel's agents (``ids``: its agent ids when the caller has just read them)."""
        if ids is None:
            ids = await chat.channel_agent_ids(self.app.db, channel_id)
        if any(self.agents.get(i) is None for i in ids):
            await self.agents.load()  # an agent written to the database by other code
        return [a for a in (self.agents.get(i) for i in ids) if a is not None]

    async def route(self, message: dict, channel: dict, agent_ids: list[str] | None = None) -> Routing:
        """Who answers a user message: the channel's chain, or the agents the ``route_message`` hook picks."""
        channel = channel_row(channel)
        agents = await self.channel_agents(channel["id"], agent_ids)
        if not agents:
            return Routing(agents, None, [])
        chain = channel_chain(channel)
        if channel["type"] == "group" and chain and not self._mentions_anyone(message, agents):
            return Routing(agents, list(chain), list(chain))
        targets = await self.app.hook("route_message", message=message, channel=channel, agents=agents) or []
        return Routing(agents, None, list(targets))

    async def who_answers(self, message: dict, channel: dict, routing: Routing | None = None) -> dict:
        """Who will answer a user message: ``{"answeredBy": [agent ids]}``, and when nobody will,
        ``reason`` (``no_agents``, ``no_default_agent``) so the composer can say why."""
        if routing is None:
            routing = await self.route(message, channel)
        if not routing.agents:
            return {"answeredBy": [], "reason": "no_agents"}
        if routing.chain is not None:
            return {"answeredBy": list(routing.chain), "chain": True}
        out: dict = {"answeredBy": list(routing.targets)}
        if not routing.targets:
            out["reason"] = "no_default_agent" if channel_row(channel)["type"] == "group" else "no_agents"
        return out

    async def handle_user_message(self, message: dict, channel: dict, actor: Actor,
                                  routing: Routing | None = None) -> list[str]:
        """Route a stored user message and start the chosen agents' turns; returns their ids."""
        channel = channel_row(channel)
        if routing is None:
            routing = await self.route(message, channel)
        if routing.chain is not None:
            await self.chains.start(channel, routing.chain, message, actor)
            return list(routing.chain)
        origin = Origin(message["id"], max(0, self.app.settings.hop_limit))
        for agent_id in routing.targets:
            agent = self.agents.get(agent_id)
            if agent is not None:
                self.enqueue(agent, channel, message, actor, origin=origin, hop=0)
        return list(routing.targets)

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
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane()
        lane.users += 1  # counted here, not read from the lock's private waiters
        try:
            async with lane.lock:
                return await self.run_turn(agent, channel, message, actor, **kw)
        finally:
            lane.users -= 1
            if lane.users == 0 and self._lanes.get(key) is lane:
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
            found = self.agents.get(target)
            if found is not None:
                self.enqueue(found, channel, reply, actor, origin=origin, hop=hop + 1)

    # ------------------------------------------------------------------ one turn

    def error_frame(self, channel_id: str, agent: dict, exc: XiajiaoError, message_id: str | None = None) -> None:
        self.app.hub.publish(channel_id, "error", {"channelId": channel_id, "agentId": agent["id"],
                                                   "messageId": message_id, "error": exc.message, "code": exc.code,
                                                   "reason": failure_reason(exc)})

    @staticmethod
    def error_meta(exc: XiajiaoError) -> dict:
        return {"error": exc.message, "code": exc.code, "reason": failure_reason(exc)}

    async def _failed_before_start(self, agent: dict, channel: dict, message: dict, exc: XiajiaoError,
                                   meta: dict, version_group: str | None) -> dict:
        """A turn that could not start (no model, no context) is still the agent's message, with the reason."""
        reply = await self.app_message(channel["id"], agent["id"], status="error", version_group=version_group,
                                       metadata={**meta, "error": self.error_meta(exc)})
        self.error_frame(channel["id"], agent, exc, reply["id"])
        return reply

    async def app_message(self, channel_id: str, agent_id: str, **kw) -> dict:
        return await chat.create_message(self.app, channel_id=channel_id, content="", agent_id=agent_id, **kw)

    @staticmethod
    async def _wait_turn(turn: Turn, loop: asyncio.Future, limit: float) -> bool:
        """Wait for the model-tool loop; True when it ran longer than ``limit`` seconds, not counting
        the time it waited for people to approve tool calls."""
        if limit <= 0:
            await asyncio.wait([loop])
            return False
        started = time.monotonic()
        while not loop.done():
            if turn.clock.waiting:
                resumed = asyncio.ensure_future(turn.clock.resumed.wait())
                try:
                    await asyncio.wait([loop, resumed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    resumed.cancel()
                continue
            remaining = limit - (time.monotonic() - started - turn.clock.paused)
            if remaining <= 0:
                return True
            await asyncio.wait([loop], timeout=remaining)
        return False

    async def run_turn(self, agent: dict, channel: dict, message: dict, actor: Actor, *,
                       handoff: str | None = None, metadata: dict | None = None, version_group: str | None = None,
                       upto_seq: int | None = None, context: list[ChatMessage] | None = None,
                       on_event: Callable[[str, dict], None] | None = None) -> dict | None:
        """Run one streamed turn of ``agent`` in ``channel``; returns the stored reply (API shape).

        A failure is stored as the agent's reply with status ``error`` and ``metadata.error``
        (``error``, ``code``, ``reason``). ``version_group``: the reply is a new version of that
        reply (regenerate, retry); ``upto_seq``: the history ends at that message.
        ``context``: the conversation to answer instead of the channel's history (the caller's own);
        ``on_event``: also told of the turn's start, text and tool events (see ``Turn.on_event``).
        """
        app = self.app
        cid = channel["id"]
        meta = {"replyTo": message.get("id"), **(metadata or {})}
        try:
            cfg, name = self.gateway.resolve(agent.get("model"))
        except XiajiaoError as exc:
            return await self._failed_before_start(agent, channel, message, exc, meta, version_group)
        turn = Turn(agent=agent, channel=channel, message=message, actor=actor, model=f"{cfg.id}/{name}",
                    on_event=on_event, chain_id=(metadata or {}).get("chainId"))
        meta["model"] = turn.model
        try:
            messages = await self.runner.context(turn, handoff, context, upto_seq=upto_seq)
        except XiajiaoError as exc:
            return await self._failed_before_start(agent, channel, message, exc, meta, version_group)
        reply = await chat.create_message(app, channel_id=cid, content="", agent_id=agent["id"], status="streaming",
                                          publish=False, metadata=meta, version_group=version_group)
        turn.reply_id = reply["id"]
        turn.reply = reply
        turn.event("start", {"messageId": reply["id"], "channelId": cid})
        start = {"messageId": reply["id"], "channelId": cid, "agentId": agent["id"], "replyTo": message.get("id"),
                 "createdAt": reply["createdAt"]}
        if version_group:
            start["versionGroup"] = version_group
        app.hub.publish(cid, "stream_start", start)
        self.running[reply["id"]] = turn
        loop = asyncio.ensure_future(self.runner.model_loop(turn, messages))
        turn.task = asyncio.current_task()
        turn.loop = loop
        status = "done"
        error: XiajiaoError | None = None
        try:
            try:
                limit = app.settings.max_reply_seconds
                timed_out = await self._wait_turn(turn, loop, limit)
                if timed_out:
                    loop.cancel()
                    await asyncio.wait([loop])
            except asyncio.CancelledError:  # the app is stopping: keep what was said, marked interrupted
                loop.cancel()
                await asyncio.shield(chat.finish_message(app, reply["id"], content=turn.text, status="interrupted"))
                raise
            if timed_out:
                status = "error"
                error = ProviderError(f"The reply took longer than {limit:g} s (max_reply_seconds) and was cut",
                                      "reply_timeout")
            elif loop.cancelled():
                status = "stopped"
            elif loop.exception() is not None:
                failure = loop.exception()
                status = "error"
                if isinstance(failure, XiajiaoError):
                    error = failure
                else:
                    log.error("turn of %s failed", agent["id"], exc_info=failure)
                    error = ProviderError(f"The turn failed: {type(failure).__name__}", "turn_failed")
        finally:
            self.running.pop(reply["id"], None)
            self.runner.flush(turn)
        extra = {"usage": {"promptTokens": turn.usage.prompt_tokens,
                           "completionTokens": turn.usage.completion_tokens}, "rounds": turn.rounds}
        if turn.call.provider and turn.call.model:  # after a failover: the model that answered
            extra["model"] = f"{turn.call.provider}/{turn.call.model}"
        if error is not None:
            extra["error"] = self.error_meta(error)
        await chat.finish_message(app, reply["id"], content=turn.text, status=status, metadata=extra)
        if error is not None:
            self.error_frame(cid, agent, error, reply["id"])
        app.hub.publish(cid, "stream_end", {"messageId": reply["id"], "status": status,
                                            **({"error": extra["error"]} if error is not None else {})})
        reply.update(content=turn.text, status=status)
        reply["metadata"] = {**(reply.get("metadata") or {}), **extra}
        app.hook_soon("on_message", message=reply, channel=channel, actor=actor)
        if status == "done":
            app.hook_soon("on_turn_end", agent=agent, channel=channel, message=message, reply=reply, actor=actor)
        return reply

    # ------------------------------------------------------------------ versions: regenerate, retry, resend

    async def regenerate(self, reply_row: dict, channel: dict, actor: Actor, *, wait: bool = False) -> dict | None:
        """A new version of an agent's reply (the older ones are kept as siblings, out of the history).

        The turn answers the message the reply answered, seeing the history up to it. With
        ``wait`` the finished reply is returned, else the turn runs in the background."""
        from ..errors import BadRequest, NotFound

        if not reply_row.get("agent_id") or reply_row["type"] != "text":
            raise BadRequest("Only an agent's reply can be regenerated", "not_a_reply")
        meta = json.loads(reply_row.get("metadata") or "{}") if isinstance(reply_row.get("metadata"), str) \
            else dict(reply_row.get("metadata") or {})
        if meta.get("chainId"):
            raise BadRequest("A step of a chain cannot be regenerated on its own", "chain_step")
        asked = await chat.get_message(self.app.db, meta.get("replyTo") or "") if meta.get("replyTo") else None
        if asked is None or asked["deleted_at"]:
            raise NotFound("The message this reply answered is gone", "message_not_found")
        agent = self.agents.get(reply_row["agent_id"])
        if agent is None:
            raise NotFound("The agent of this reply is gone", "agent_not_found")
        group = reply_row.get("version_group") or reply_row["id"]
        message = chat.message_json(asked)
        work = self.lane_turn(agent, channel_row(channel), message, actor, version_group=group,
                              upto_seq=asked["seq"])
        if wait:
            return await work
        self.app.spawn(work, name=f"regenerate-{group}")
        return None

    async def resend(self, message_row: dict, channel: dict, actor: Actor, content: str) -> dict:
        """Edit one's own message and have the agents that answered it answer again (new versions)."""
        msg = await chat.edit_message(self.app, message_row["id"], content, actor_id=actor.id)
        replies = await self.app.db.fetchall(
            "SELECT * FROM messages WHERE channel_id = ? AND agent_id IS NOT NULL AND type = 'text' "
            "AND superseded = 0 AND deleted_at IS NULL AND json_extract(metadata, '$.replyTo') = ? ORDER BY seq",
            (message_row["channel_id"], message_row["id"]))
        if not replies:  # nobody answered it yet: route it as if new (cut at its place in the history)
            routed = await self.app.hook("route_message", message=msg, channel=channel_row(channel),
                                         agents=await self.channel_agents(channel["id"])) or []
            for agent_id in routed:
                agent = self.agents.get(agent_id)
                if agent is not None:
                    self.app.spawn(self.lane_turn(agent, channel_row(channel), msg, actor,
                                                  upto_seq=message_row["seq"]), name="resend")
            return msg
        for row in replies:
            await self.regenerate(row, channel, actor)
        return msg

    # ------------------------------------------------------------------ a whole turn as one call (scripts)

    async def reply_to(self, message: dict, channel: dict, actor: Actor) -> list[dict]:
        """Route a stored user message and wait for the chosen agents' finished replies (API shape).

        The non-streaming counterpart of ``handle_user_message`` (chains are not run here)."""
        channel = channel_row(channel)
        agents = await self.channel_agents(channel["id"])
        targets = await self.app.hook("route_message", message=message, channel=channel, agents=agents) or []
        found = [a for a in (self.agents.get(t) for t in targets) if a is not None]
        runs = [self.lane_turn(agent, channel, message, actor) for agent in found]
        return [r for r in await asyncio.gather(*runs) if r is not None]

    # ------------------------------------------------------------------ stopping

    def stop_turn(self, message_id: str) -> bool:
        """Stop a running reply; its partial text is kept (status ``stopped``)."""
        turn = self.running.get(message_id)
        if turn is None or turn.loop is None:
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

    def live_view(self, channel_id: str, messages: list[dict]) -> list[dict]:
        """Overlay the replies streaming in this channel on a page of messages: their text as published
        so far (the frames after the hub's current ``seq`` carry the rest), appending those that
        started after the page was read. Call it and read the hub's seq without awaiting in between."""
        live = {mid: t for mid, t in self.running.items() if t.channel and t.channel["id"] == channel_id}
        if not live:
            return messages
        seen = set()
        out = []
        for m in messages:
            turn = live.get(m["id"])
            if turn is not None:
                m = {**m, "content": turn.published, "status": "streaming"}
                seen.add(m["id"])
            out.append(m)
        for mid, turn in live.items():
            if mid not in seen and turn.reply is not None:
                out.append({**turn.reply, "content": turn.published, "status": "streaming"})
        return out

    async def authorize_stop(self, actor: Actor, turn: Turn) -> None:
        """Stopping a reply needs ``channel.write``; a chain's step needs ``chain.decide`` too (else 404/403)."""
        from .. import auth

        chain = self.chains.runs.get(turn.chain_id) if turn.chain_id else None
        if chain is None:
            await auth.authorized_channel(self.app, actor, turn.channel_id, "channel.write")
        else:
            await self.chains.authorize(actor, chain, "chain.decide")

    async def stop_channel_for(self, actor: Actor, channel_id: str) -> list[str]:
        """Stop the running replies of a channel that ``actor`` may stop."""
        stopped = []
        for mid, turn in list(self.running.items()):
            if not turn.channel or turn.channel["id"] != channel_id:
                continue
            try:
                await self.authorize_stop(actor, turn)
            except XiajiaoError:
                continue
            if self.stop_turn(mid):
                stopped.append(mid)
        return stopped

    async def _ws_stop(self, conn, data: dict) -> None:
        from .. import auth

        data = data or {}
        for key in ("messageId", "channelId"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise BadRequest(f"{key} must be a string", "invalid_frame")
        actor = conn.actor
        stopped: list[str] = []
        message_id, channel_id = data.get("messageId"), data.get("channelId")
        if isinstance(message_id, str) and message_id:
            turn = self.running.get(message_id)
            if turn is not None:
                await self.authorize_stop(actor, turn)
                stopped = [message_id] if self.stop_turn(message_id) else []
        elif isinstance(channel_id, str) and channel_id:
            await auth.authorized_channel(self.app, actor, channel_id, "channel.write")
            stopped = await self.stop_channel_for(actor, channel_id)
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

