"""One agent turn: context within a token budget, the streamed reply, the tool loop.

Per turn the database sees one read of the history, one write when the reply starts,
partial saves at most every PARTIAL_SAVE_SECONDS while it streams, one write per tool
round and one when it ends. Chunks go straight to the hub.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import chat
from ..errors import ProviderError, XiajiaoError
from ..gateway import Call
from ..ids import new_id, now_iso
from ..models import (Actor, ChatMessage, ChatRequest, Prompt, TextDelta, Tool, ToolCall, ToolCallsDone, ToolContext,
                      Usage)
from ..text import estimate_tokens
from .approvals import PauseClock, approval_json, needs_approval
from .attachments import with_attachments

log = logging.getLogger("xiajiao.engine")

PARTIAL_SAVE_SECONDS = 0.75
HISTORY_ROWS = 60
MIN_HISTORY_TOKENS = 256
MAX_RESULT_CHARS = 20_000


@functools.lru_cache(maxsize=8192)
def tokens(text: str) -> int:
    return estimate_tokens(text) + 4  # + the message's framing


@dataclass
class Turn:
    """The state of one running turn (or one nested call_agent ask when ``publish`` is off)."""

    agent: dict
    channel: dict | None
    message: dict | None  # the message that started it
    actor: Actor
    model: str
    depth: int = 0
    publish: bool = True
    reply_id: str | None = None
    chain_id: str | None = None  # the chain run this turn is a step of
    reply: dict | None = None  # the stored reply row (API shape), once the turn streams
    sent: int = 0  # characters of the text published on the hub so far (resume after reload)
    parts: list[str] = field(default_factory=list)
    call: Call = field(default_factory=Call)
    stopped: bool = False
    task: asyncio.Task | None = None  # the task awaiting the turn
    loop: asyncio.Future | None = None  # the model-tool loop (cancelled to stop the turn)
    # the first partial save comes PARTIAL_SAVE_SECONDS into the turn: a reply done sooner costs no extra write
    last_save: float = field(default_factory=time.monotonic)
    tool_rounds: int = 0
    pending: list[str] = field(default_factory=list)  # text not yet published (coalescing)
    last_flush: float = 0.0
    flush_handle: asyncio.TimerHandle | None = None
    length: int = 0  # characters in parts
    # a listener of the turn's events besides the hub: ("text", {"delta"}), ("tool", {"name", "arguments",
    # "callId"}), ("tool_end", {"name", "callId", "result", "error"}); the machine API streams them
    on_event: Callable[[str, dict], None] | None = None
    usage: Usage = field(default_factory=Usage)  # summed over every model call of the turn
    rounds: int = 0  # model calls made
    clock: PauseClock = field(default_factory=PauseClock)  # time spent waiting for tool approvals
    # the decided approvals of this round's calls (API shape), by the call object (model call ids may repeat)
    approvals: dict[int, dict] = field(default_factory=dict)

    def event(self, kind: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def channel_id(self) -> str:
        """The channel's id: a turn that publishes or stores has one (only a bare ask has none)."""
        if self.channel is None:
            raise RuntimeError("this turn has no channel")
        return self.channel["id"]

    @property
    def reply_key(self) -> str:
        """The stored reply's id, once the turn has one."""
        if self.reply_id is None:
            raise RuntimeError("this turn has no stored reply")
        return self.reply_id

    @property
    def published(self) -> str:
        """The text subscribers have been sent (without what waits in the coalescing window)."""
        return self.text[:self.sent]


def channel_type(channel: dict) -> str:
    return channel.get("type", "dm")


async def build_system(app, agents, agent: dict, channel: dict | None, message: dict | None, actor: Actor) -> str:
    prompt = Prompt(soul=agents.soul(agent["id"]) or f"You are {agent['name']}.")
    if channel:  # the channel's standing instructions, set by whoever manages it, for every agent in it
        config = channel.get("config") or {}
        config = json.loads(config) if isinstance(config, str) else config
        if isinstance(config.get("systemPrompt"), str):
            prompt.add("Instructions for this conversation", config["systemPrompt"], priority=90)
    await app.hook("prepare_prompt", prompt=prompt, agent=agent, channel=channel, message=message, actor=actor)
    return prompt.render()


IMAGE_ROWS = 4  # images of this many newest messages go to the model; older ones are only named


def history_rows(conn, channel_id: str, upto_seq: int | None = None) -> list[dict]:
    """The newest messages a turn may see, newest first (sync, in a read worker).

    A branch sees the history it inherits; replaced versions of a reply are left out; with
    ``upto_seq`` only messages up to that one (a regenerated or re-sent turn answers that point)."""
    where, params = chat.lineage_where(chat.lineage(conn, channel_id))
    cut = ""
    if upto_seq is not None:
        cut, params = " AND seq <= ?", [*params, upto_seq]
    return conn.execute(
        f"SELECT user_id, agent_id, content, status, type, metadata FROM messages WHERE {where}{cut} "
        "AND deleted_at IS NULL AND superseded = 0 AND type IN ('text', 'image', 'file') "
        "AND status NOT IN ('streaming', 'error') ORDER BY seq DESC LIMIT ?", (*params, HISTORY_ROWS)).fetchall()


async def history(app, agents, agent: dict, channel: dict, budget: int,
                  upto_seq: int | None = None, vision: bool = False, rows: list[dict] | None = None) -> list[ChatMessage]:
    """The conversation as the agent sees it (:func:`history_rows`, or ``rows`` read by the caller),
    newest kept, within ``budget`` tokens."""
    if rows is None:
        rows = await app.db.run_read(lambda conn: history_rows(conn, channel["id"], upto_seq))
    out: list[ChatMessage] = []
    used = 0
    group = channel_type(channel) == "group"
    for index, row in enumerate(rows):
        content = row["content"] or ""
        images = None
        attached = json.loads(row["metadata"] or "{}").get("attachments") if row["user_id"] else None
        if attached:
            content, images = await with_attachments(app, content, attached, vision=vision,
                                                     images=index < IMAGE_ROWS)
        if not content:
            continue
        if row["agent_id"] == agent["id"]:
            msg = ChatMessage("assistant", content)
        elif row["agent_id"]:
            other = agents.get(row["agent_id"])
            msg = ChatMessage("user", f"[{other['name'] if other else row['agent_id']}]: {content}")
        else:
            msg = ChatMessage("user", content, images=images or None)
        cost = tokens(msg.content)
        if used + cost > budget:
            if not out:  # the newest message always goes in, cut to fit
                keep = max(1, budget * 2)
                out.append(ChatMessage(msg.role, msg.content[-keep:], images=msg.images))
            break
        used += cost
        out.append(msg)
    out.reverse()
    if group:
        # some providers refuse two user turns in a row only in strict modes; merging keeps it valid everywhere
        merged: list[ChatMessage] = []
        for m in out:
            if merged and merged[-1].role == m.role == "user":
                merged[-1] = ChatMessage("user", merged[-1].content + "\n\n" + m.content,
                                         images=[*(merged[-1].images or ()), *(m.images or ())] or None)
            else:
                merged.append(m)
        out = merged
    return out


def allowed_tools(app, agent: dict, actor: Actor, permissions: dict[str, bool]) -> dict[str, Tool]:
    """The tools this turn may offer: the agent's allow-list, registered, permitted for the caller."""
    out = {}
    for name in agent.get("tools") or ():
        tool = app.tools.get(name)
        if tool is None:
            continue
        allowed = permissions.get(name)
        if allowed is None:
            allowed = actor.at_least(tool.min_role) or actor.kind == "system"
        if allowed:
            out[name] = tool
    return out


async def tool_permissions(app, agent: dict, actor: Actor) -> dict[str, bool]:
    """What decide_tool_permission plugins say about each tool of the agent (absent: no opinion)."""
    if not app.plugins.pm.hook.decide_tool_permission.get_hookimpls():
        return {}
    out = {}
    for name in agent.get("tools") or ():
        tool = app.tools.get(name)
        if tool is not None:
            verdict = await app.hook("decide_tool_permission", actor=actor, agent=agent, tool=tool,
                                     on_error=False)  # a plugin that raises denies
            if verdict is not None:
                out[name] = bool(verdict)
    return out


def _missing_required(tool: Tool, args: dict) -> list[str]:
    return [k for k in tool.parameters.get("required", []) if k not in args]


def _result_text(result: Any) -> str:
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


class TurnRunner:
    """Runs turns for the engine (it holds the shared pieces: app, gateway, agents)."""

    def __init__(self, engine):
        self.engine = engine
        self.app = engine.app
        self.gateway = engine.gateway
        self.agents = engine.agents
        self.coalesce = max(0.0, engine.app.settings.stream_coalesce_ms / 1000)

    # ------------------------------------------------------------------ streaming helpers

    def _emit(self, turn: Turn, text: str) -> None:
        """Record a text delta and publish it; deltas closer than ``stream_coalesce_ms`` share one frame."""
        if not text:
            return
        limit = self.app.settings.max_reply_chars
        cut = turn.length + len(text) > limit
        if cut:
            text = text[:max(0, limit - turn.length)]
        turn.parts.append(text)
        turn.length += len(text)
        turn.event("text", {"delta": text})
        self._publish_text(turn, text)
        if cut:
            raise ProviderError(f"The reply was cut at {limit} characters (max_reply_chars)", "reply_too_long")

    def _publish_text(self, turn: Turn, text: str) -> None:
        if not text:
            return
        if not turn.publish:
            return
        now = time.monotonic()
        window = self.coalesce
        if turn.pending or (window and now - turn.last_flush < window):
            turn.pending.append(text)
            if turn.flush_handle is None:
                turn.flush_handle = asyncio.get_running_loop().call_later(
                    max(0.0, turn.last_flush + window - now), self.flush, turn)
        else:
            turn.last_flush = now
            turn.sent += len(text)
            self.app.hub.publish(turn.channel_id, "stream_chunk", {"messageId": turn.reply_id, "content": text})
        if now - turn.last_save >= PARTIAL_SAVE_SECONDS:
            turn.last_save = now
            self.app.spawn(chat.save_partial(self.app, turn.reply_key, turn.text), name="save-partial")

    def flush(self, turn: Turn) -> None:
        """Publish the coalesced text now (before any other frame of the turn, and at its end)."""
        if turn.flush_handle is not None:
            turn.flush_handle.cancel()
            turn.flush_handle = None
        if turn.pending:
            text = "".join(turn.pending)
            turn.pending.clear()
            turn.last_flush = time.monotonic()
            turn.sent += len(text)
            self.app.hub.publish(turn.channel_id, "stream_chunk", {"messageId": turn.reply_id, "content": text})

    def _frame(self, turn: Turn, type_: str, data: dict) -> None:
        if turn.publish:
            self.flush(turn)
            self.app.hub.publish(turn.channel_id, type_, data)

    # ------------------------------------------------------------------ the model-tool loop

    async def model_loop(self, turn: Turn, messages: list[ChatMessage]) -> None:
        app = self.app
        permissions = await tool_permissions(app, turn.agent, turn.actor)
        tools = allowed_tools(app, turn.agent, turn.actor, permissions)
        seen: set[tuple[str, str]] = set()
        max_rounds = max(0, app.settings.tool_max_rounds)
        fallback = turn.agent.get("config", {}).get("fallbackModels")
        force_answer = False
        for round_no in range(max_rounds + 1):
            offer = [] if (force_answer or round_no >= max_rounds) else list(tools.values())
            request = ChatRequest(model=turn.model, messages=messages, tools=[t.spec() for t in offer])
            calls: list[ToolCall] = []
            start_len = len(turn.parts)
            turn.call.usage = Usage()
            separator_needed = bool(turn.parts) and not turn.text.endswith(("\n", " "))
            async for event in self.gateway.stream(request, agent_id=turn.agent["id"], fallback=fallback,
                                                   call=turn.call):
                if isinstance(event, TextDelta):
                    if separator_needed and len(turn.parts) == start_len:
                        self._emit(turn, "\n\n")
                    self._emit(turn, event.text)
                elif isinstance(event, ToolCallsDone):
                    calls.extend(event.calls)
            turn.rounds += 1
            turn.usage = Usage(turn.usage.prompt_tokens + turn.call.usage.prompt_tokens,
                               turn.usage.completion_tokens + turn.call.usage.completion_tokens)
            if not calls:
                break
            round_text = "".join(turn.parts[start_len:]).strip()
            messages.append(ChatMessage("assistant", round_text, tool_calls=calls))
            turn.tool_rounds += 1
            results, repeated = await self.run_tools(turn, calls, tools if offer else {}, seen)
            for call, text in zip(calls, results):
                messages.append(ChatMessage("tool", text, tool_call_id=call.id))
            if repeated:
                force_answer = True  # the model is going round in circles: make it answer now
        if not turn.text.strip():  # an empty stream, or tool calls to the last round: no answer is a failure
            reason = "the model answered only with tool calls" if turn.tool_rounds else "the model sent nothing"
            raise ProviderError(f"The reply is empty: {reason}", "empty_reply")

    async def run_tools(self, turn: Turn, calls: list[ToolCall], tools: dict[str, Tool],
                        seen: set[tuple[str, str]]) -> tuple[list[str], bool]:
        """Run one round's calls in parallel; returns each result's text and whether a call repeated."""
        plans = []
        repeated = False
        for call in calls:
            try:
                args = json.loads(call.arguments or "{}")
                problem = None if isinstance(args, dict) else "arguments must be a JSON object"
            except json.JSONDecodeError as exc:
                args, problem = None, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
            key = (call.name, json.dumps(args, sort_keys=True) if problem is None else call.arguments)
            if problem is None and call.name in tools:
                if key in seen:
                    problem = "this exact call was already made in this turn; use its result above and answer"
                    repeated = True
                else:
                    seen.add(key)
            plans.append((call, args, problem))
        turn.approvals.clear()
        outcomes = await asyncio.gather(*(self._one_tool(turn, c, a, p, tools) for c, a, p in plans))
        if turn.publish:
            await self._store_tool_messages(turn, plans, outcomes)
        return [text for text, _ in outcomes], repeated

    async def _one_tool(self, turn: Turn, call: ToolCall, args: Any, problem: str | None,
                        tools: dict[str, Tool]) -> tuple[str, bool]:
        shown_args = args if problem is None or isinstance(args, dict) else call.arguments
        base = {"messageId": turn.reply_id, "toolName": call.name, "callId": call.id}
        tool = tools.get(call.name)
        error = problem
        result: Any = None
        if error is None and tool is None:
            error = f"tool {call.name!r} is not available to this agent"
        if error is None and tool is not None:
            missing = _missing_required(tool, args)
            if missing:
                error = f"missing required argument(s): {', '.join(missing)}"
        declined = None
        if error is None and tool is not None and needs_approval(tool, turn.agent):
            if not turn.publish or turn.channel is None:
                error = f"tool {call.name!r} needs a person's approval, which cannot be asked here"
            else:
                args, declined = await self._approval(turn, call, args, base)
                shown_args = args
        turn.event("tool", {"name": call.name, "arguments": shown_args, "callId": call.id})
        if declined is not None:  # rejected or expired: the model reads why it did not run
            self._frame(turn, "tool_call", {**base, "arguments": shown_args,
                                            "status": turn.approvals[id(call)]["status"],
                                            **self._approval_ref(turn, call)})
            self._frame(turn, "tool_result", {**base, "result": declined, "declined": True})
            turn.event("tool_end", {"name": call.name, "callId": call.id, "result": declined, "error": False})
            return declined, False
        self._frame(turn, "tool_call", {**base, "arguments": shown_args, "status": "calling",
                                        **self._approval_ref(turn, call)})
        if error is None and tool is not None:
            timeout = tool.timeout or self.app.settings.tool_timeout
            ctx = ToolContext(app=self.app, agent=turn.agent, channel=turn.channel, message=turn.message,
                              actor=turn.actor, depth=turn.depth)
            try:
                async with asyncio.timeout(timeout):
                    result = await tool.fn(args, ctx)
            except TimeoutError:
                error = f"tool {call.name!r} timed out after {timeout:g} s"
            except asyncio.CancelledError:
                raise
            except XiajiaoError as exc:
                error = exc.message
            except Exception as exc:  # a tool's bug becomes an error result the model can read
                log.warning("tool %s failed", call.name, exc_info=True)
                error = f"{type(exc).__name__}: {exc}"
        text = f"Error: {error}" if error else _result_text(result)
        self._frame(turn, "tool_call", {**base, "arguments": shown_args, "status": "error" if error else "completed",
                                        **self._approval_ref(turn, call)})
        self._frame(turn, "tool_result", {**base, "result": text, **({"error": True} if error else {})})
        turn.event("tool_end", {"name": call.name, "callId": call.id, "result": text, "error": bool(error)})
        return text, bool(error)

    @staticmethod
    def _approval_ref(turn: Turn, call: ToolCall) -> dict:
        approval = turn.approvals.get(id(call))
        return {"approvalId": approval["id"]} if approval else {}

    async def _approval(self, turn: Turn, call: ToolCall, args: dict, base: dict) -> tuple[dict, str | None]:
        """Ask for approval and wait: the arguments to run with, and the tool result to give the model
        instead of running it (None: it runs)."""
        approvals = self.engine.approvals
        row = await approvals.create(
            channel_id=turn.channel_id, message_id=turn.reply_key, reply_to=(turn.message or {}).get("id"),
            call_id=call.id, agent_id=turn.agent["id"], tool_name=call.name, arguments=args,
            requested_by=turn.actor.id if turn.actor.kind == "user" else None)
        self._frame(turn, "tool_call", {**base, "arguments": args, "status": "awaiting_approval",
                                        "approvalId": row["id"]})
        approvals.announce(row)
        turn.clock.pause()
        try:
            row = await approvals.wait(row["id"])
        finally:
            turn.clock.resume()
        decided = approval_json(row)
        turn.approvals[id(call)] = decided
        if decided["status"] == "edited":
            return decided["editedArguments"], None
        if decided["status"] == "approved":
            return args, None
        who = decided["decidedByName"] or "the person asked"
        if decided["status"] == "rejected":
            return args, (f"Declined: {who} did not approve this call of {call.name!r}, so it was not run. "
                          "Do not call it again for this request; answer without it.")
        return args, (f"Not run: nobody approved this call of {call.name!r} in time "
                      f"({self.app.settings.tool_approval_timeout:g} s), so it counts as declined. "
                      "Do not call it again for this request; answer without it.")

    async def _store_tool_messages(self, turn: Turn, plans: list, outcomes: list) -> None:
        cid, aid = turn.channel_id, turn.agent["id"]
        rows = []
        for (call, args, _problem), (text, is_error) in zip(plans, outcomes):
            shown = args if isinstance(args, dict) else call.arguments
            approval = turn.approvals.get(id(call))
            status = "error" if is_error else "completed"
            if approval is not None:
                if approval["status"] == "edited":
                    shown = approval["editedArguments"]
                if approval["status"] in ("rejected", "expired"):
                    status = approval["status"]
            meta_call = {"replyTo": turn.reply_id, "toolName": call.name, "callId": call.id, "arguments": shown,
                         "status": status}
            if approval is not None:
                meta_call["approval"] = {k: approval[k] for k in ("id", "status", "reason", "decidedBy",
                                                                  "decidedByName", "decidedAt", "arguments")}
            rows.append(("tool_call", f"{call.name}({json.dumps(shown, ensure_ascii=False)})", meta_call))
            rows.append(("tool_result", text, {"replyTo": turn.reply_id, "toolName": call.name, "callId": call.id,
                                              "isError": is_error, **({"declined": True} if status in (
                                                  "rejected", "expired") else {})}))

        def work(conn):
            for type_, content, meta in rows:
                chat._insert_message(conn, {
                    "id": new_id("msg"), "channel_id": cid, "user_id": None, "agent_id": aid, "content": content,
                    "type": type_, "metadata": json.dumps(meta, ensure_ascii=False), "status": "done",
                    "created_at": now_iso()}, index=False)
            # the reply goes on after its tools: it moves behind them in the channel's order (it is not
            # indexed for search before it ends, so nothing else refers to its old place)
            chat.move_to_end(conn, turn.reply_key)

        await self.app.db.run_write(work)

    # ------------------------------------------------------------------ a channel turn

    async def context(self, turn: Turn, handoff: str | None, given: list[ChatMessage] | None = None,
                      upto_seq: int | None = None) -> list[ChatMessage]:
        if given is not None:  # the caller brings the conversation (the OpenAI-compatible API)
            system = await build_system(self.app, self.agents, turn.agent, turn.channel, turn.message, turn.actor)
            return [ChatMessage("system", system), *given]
        if turn.channel is None:
            raise RuntimeError("a turn without a channel must be given its conversation")
        cid = turn.channel_id
        # one read for the history and the channel's people (the prompt hooks get them as ``_people``)
        rows, people = await self.app.db.run_read(lambda conn: (history_rows(conn, cid, upto_seq),
                                                                chat.member_ids_sync(conn, cid, "user")))
        system = await build_system(self.app, self.agents, turn.agent, {**turn.channel, "_people": people},
                                    turn.message, turn.actor)
        window = self.gateway.context_window(turn.model)
        budget = window - self.app.settings.reply_tokens - tokens(system) - (tokens(handoff) if handoff else 0)
        past = await history(self.app, self.agents, turn.agent, turn.channel, max(MIN_HISTORY_TOKENS, budget),
                             upto_seq=upto_seq, vision=self.gateway.sees_images(turn.model), rows=rows)
        messages = [ChatMessage("system", system), *past]
        if handoff is not None:
            messages.append(ChatMessage("user", handoff))
        return messages
