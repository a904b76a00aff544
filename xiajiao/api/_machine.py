"""Helpers the machine routes share (/v1: the OpenAI-compatible endpoint, run/stream, tasks)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from quart import Response, g

from .. import auth, chat
from ..errors import BadRequest, NotFound
from ..quart_app import current_app

Emit = Callable[[str, dict], None]


def sse(data: Any, *, event: str | None = None, id: int | None = None) -> bytes:
    """One server-sent event."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    return (head + "data: " + (data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)) + "\n\n").encode()


def sse_response(body: AsyncIterator[bytes], headers: dict | None = None) -> Response:
    resp = Response(body, content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
    resp.timeout = None  # a stream lasts as long as the turn or the task
    return resp


async def turn_events(work: Callable[[Emit], Awaitable[Any]]) -> AsyncIterator[tuple[str, Any]]:
    """Run ``work(emit)`` in its own task and yield what it emits, then ``("result", value)`` or
    ``("error", exception)``. Closing the iterator (the client went away) cancels the work."""
    queue: asyncio.Queue = asyncio.Queue()

    async def run() -> None:
        try:
            queue.put_nowait(("result", await work(lambda kind, data: queue.put_nowait((kind, data)))))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, who renders it
            queue.put_nowait(("error", exc))

    task = asyncio.ensure_future(run())
    try:
        while True:
            kind, data = await queue.get()
            yield kind, data
            if kind in ("result", "error"):
                return
    finally:
        if not task.done():
            task.cancel()


async def started(events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[tuple[str, Any]]:
    """Wait for the first event: a failure before anything was produced raises here (a plain HTTP
    error); otherwise an iterator over all the events, the first included."""
    first = await events.__anext__()
    if first[0] == "error":
        await events.aclose()  # type: ignore[attr-defined]  # an async generator
        raise first[1]

    async def chained():
        try:
            yield first
            async for item in events:
                yield item
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator  # the client went away: the work is cancelled

    return chained()


async def pick_agent(agent: str | None = None, pack: str | None = None, persona: str | None = None) -> dict | None:
    """The agent named by id or name, or a domain pack's persona (its first one by default)."""
    core = current_app.xj
    agents = core.engine.agents
    if agent:
        found = await agents.lookup(agent)
        if found is None:
            raise NotFound(f"Agent {agent!r} not found", "agent_not_found")
        return found
    if pack or persona:
        chosen = core.packs.get(pack) if pack else None
        if pack and chosen is None:
            raise NotFound(f"Pack {pack!r} not found", "pack_not_found")
        packs = [chosen] if chosen else list(core.packs)
        ids = [p.id for pk in packs for p in pk.personas if persona in (None, p.id, p.name)]
        if not ids:
            raise NotFound(f"Persona {persona!r} not found", "persona_not_found")
        found = await agents.lookup(ids[0])
        if found is None:
            raise NotFound(f"Persona {ids[0]!r} is not installed as an agent", "persona_not_installed")
        return found
    return None


async def session_for(agent: dict | None, session_id: str | None, *, source: str = "api") -> tuple[dict, dict]:
    """(agent, channel): the caller's session ``session_id`` (a channel he may write in), or a new
    DM of the caller with the agent, which the web app shows like any other conversation."""
    core = current_app.xj
    actor = g.actor
    if session_id:
        try:
            channel = await auth.authorized_channel(core, actor, session_id, "channel.write")
        except NotFound:
            raise NotFound("Session not found", "session_not_found") from None
        ids = await chat.channel_agent_ids(core.db, channel["id"])
        if agent is None:
            chosen = channel.get("default_agent_id") or (ids[0] if len(ids) == 1 else None)
            agent = await core.engine.agents.lookup(chosen) if chosen else None
            if agent is None:
                raise BadRequest("Name the agent of this session (agent)", "agent_required")
        elif agent["id"] not in ids:
            raise BadRequest(f"Agent {agent['id']!r} is not in this session", "agent_not_in_session")
        return agent, channel
    if agent is None:
        raise BadRequest("Name an agent (agent), a pack's persona (pack, persona) or a session (sessionId)",
                         "agent_required")
    return agent, await api_channel(agent, source=source)


async def api_channel(agent: dict, *, source: str, reuse: bool = False) -> dict:
    """A DM of the caller with ``agent`` marked as made through the API (``reuse``: the one made before)."""
    core = current_app.xj
    if reuse:
        cid = await core.db.fetchval(
            "SELECT id FROM channels WHERE type = 'dm' AND created_by = ? AND default_agent_id = ? "
            "AND json_extract(config, '$.source') = ? ORDER BY created_at LIMIT 1", (g.actor.id, agent["id"], source))
        if cid:
            return await chat.require_channel(core.db, cid)
    made = await chat.create_channel(core.db, name=f"{agent['name']} · API", type="dm", creator_id=g.actor.id,
                                     agent_ids=[agent["id"]])
    await core.db.execute("UPDATE channels SET config = ? WHERE id = ?", (json.dumps({"source": source}), made["id"]))
    return await chat.require_channel(core.db, made["id"])
