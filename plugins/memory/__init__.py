"""Agent memory: facts (semantic), events (episodic) and rules (procedural) in the agent's own memory.db.

- tools ``memory_write`` (near-duplicates merge) and ``memory_search`` (hybrid search);
- the most relevant memories go into the system prompt (``prepare_prompt``, budget memory_prompt_chars);
- every consolidate_every turns of a conversation, an episodic summary of it (``on_turn_end``);
- ``/api/agents/<id>/memories`` for the UI (owner and admins).
"""
from __future__ import annotations

import json
import logging

from xiajiao import Setting, Tool, hookimpl

from . import store
from .api import bp

log = logging.getLogger("xiajiao.memory")


@hookimpl
def register_settings(register):
    register(Setting("memory_dedup_threshold", -1.0, "Cosine similarity above which a new memory merges into an "
                     "existing one; negative: the embedder's own calibrated threshold (e5-small 0.85), else 0.95.",
                     float))
    register(Setting("memory_prompt_chars", 1500, "Characters of memories injected into an agent's system prompt.",
                     int))
    register(Setting("consolidate_every", 20, "Turns of a conversation after which the agent writes an episodic "
                     "summary.", int))


def _provenance(ctx) -> dict:
    # a memory is private to the person it came from and the channel it was said in
    return {"channel_id": (ctx.channel or {}).get("id"), "message_id": (ctx.message or {}).get("id"),
            "user_id": store.writer_id(ctx.actor)}


async def memory_write(args: dict, ctx) -> dict:
    row, status = await store.write(
        ctx.app, ctx.agent["id"], args.get("content"), klass=args.get("class", "semantic"),
        importance=args.get("importance", 0.5), tags=args.get("tags"), origin="tool",
        supersedes=args.get("supersedes") or None, **_provenance(ctx))
    return {"status": status, "memory": store.memory_json(row)}


async def memory_search(args: dict, ctx) -> dict:
    limit = args.get("limit", 5)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        limit = 5
    audience = await store.audience(ctx.app, ctx.channel, ctx.actor)
    rows = await store.search(ctx.app, ctx.agent["id"], args.get("query"), klass=args.get("class"), limit=limit,
                              audience=audience)
    return {"memories": [store.memory_json(r) for r in rows]}


_CLASS = {"type": "string", "enum": list(store.CLASSES),
          "description": "semantic: a fact; episodic: an event; procedural: how to behave"}


@hookimpl
def register_tools(register):
    register(Tool(
        name="memory_write",
        description="Remember something for later conversations: a fact about the user or the world, an event, "
                    "or a rule of how to behave. Restating a known memory updates it; when a fact changed "
                    "(a new address, a new deadline), pass the id of the memory it replaces as supersedes.",
        parameters={"type": "object", "properties": {
            "content": {"type": "string", "description": "What to remember, as one self-contained sentence"},
            "class": _CLASS,
            "importance": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "supersedes": {"type": "string", "description": "Id of an older memory (mem_…) this one replaces"},
        }, "required": ["content"]},
        fn=memory_write, read_only=False, mutating=True, min_role="member"))
    register(Tool(
        name="memory_search",
        description="Search your long-term memory (facts, events, rules) by meaning and words.",
        parameters={"type": "object", "properties": {
            "query": {"type": "string"}, "class": _CLASS,
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        }, "required": ["query"]},
        fn=memory_search))


@hookimpl
def register_routes(register):
    register(bp)


@hookimpl
async def prepare_prompt(app, prompt, agent, channel, message, actor):
    query = (message or {}).get("content") or ""
    budget = app.settings.memory_prompt_chars
    if not query.strip() or budget <= 0 or not await store.has_memories(app, agent["id"]):
        return  # nothing to recall: spare the turn an embedding of its question
    rows = await store.search(app, agent["id"], query, limit=20, audience=await store.audience(app, channel, actor))
    text = store.prompt_text(rows, budget)
    if text:
        prompt.add("Memories", "What you remember (most relevant first):\n" + text, priority=60)


def _consolidate_prompt(channel: dict) -> str:
    """The channel's own summary instructions (``consolidatePrompt`` in its config), if any."""
    config = channel.get("config") or {}
    if isinstance(config, str):
        config = json.loads(config or "{}")
    value = config.get("consolidatePrompt")
    return value if isinstance(value, str) else ""


@hookimpl
async def on_turn_end(app, agent, channel, reply):
    if not channel or not reply or reply.get("seq") is None:
        return
    claim = await store.count_turn(app, agent["id"], channel["id"], reply["seq"])
    if claim is None:
        return

    async def run() -> None:
        try:
            audience = await store.audience(app, channel, None)
            await store.consolidate(app, agent, channel["id"], *claim, message_id=reply.get("id"),
                                    instructions=_consolidate_prompt(channel), user_id=audience.sole_user)
        except Exception:  # a failed summary is retried after the next turn; the turn itself is done
            log.exception("memory consolidation failed", extra={"agent": agent["id"], "channel": channel["id"]})

    app.spawn(run(), name=f"consolidate:{agent['id']}:{channel['id']}")
