"""What plugins may ask of the core about agents, people, channels and turns (part of the facade).

Plugins call these instead of reading the core's tables or the engine's internals: the tables may
change between releases, these keep their meaning. Each takes the app's core (``ctx.app`` in a tool,
``app`` in a hook).
"""
from __future__ import annotations

import json
import os
from typing import Any

from . import chat
from .errors import NotFound
from .models import Actor, ChatMessage


def get_agent(app: Any, agent_id: str) -> dict | None:
    """The agent with this id (its record: ``id``, ``name``, ``model``, ``tools``, ``config`` …), or None."""
    return app.engine.agents.get(agent_id) if isinstance(agent_id, str) else None


def find_agent(app: Any, name_or_id: str) -> dict | None:
    """The agent with this id or name (case-insensitive, a leading ``@`` ignored), or None."""
    return app.engine.agents.find(name_or_id)


def list_agents(app: Any) -> list[dict]:
    """Every agent, ordered by id."""
    return sorted(app.engine.agents.all(), key=lambda a: a["id"])


async def get_channel(app: Any, channel_id: str) -> dict | None:
    """The channel's row (``id``, ``name``, ``type``, ``config`` …), or None."""
    return await chat.get_channel(app.db, channel_id) if isinstance(channel_id, str) else None


async def channel_people(app: Any, channel_id: str) -> list[str]:
    """The ids of the people (not agents) in a channel."""
    return await app.db.run_read(lambda conn: chat.member_ids_sync(conn, channel_id, "user"))


async def channel_has_agent(app: Any, channel_id: str, agent_id: str) -> bool:
    return agent_id in await chat.channel_agent_ids(app.db, channel_id)


async def get_message(app: Any, message_id: str) -> dict | None:
    """A stored message in the API's shape (``id``, ``channelId``, ``agentId``, ``userId``, ``content``,
    ``type``, ``metadata`` …), or None. Check the caller may read its channel (``authorized_channel``)
    before showing anything of it."""
    row = await chat.get_message(app.db, message_id) if isinstance(message_id, str) and message_id else None
    return chat.message_json(row) if row is not None else None


async def get_person(app: Any, user_id: str) -> Actor | None:
    """The person with this id as an ``Actor`` (role and display name), or None when there is none or
    the account is disabled."""
    row = await app.db.fetchone("SELECT id, role, display_name, username, disabled FROM users WHERE id = ?",
                                (user_id,))
    if row is None or row["disabled"]:
        return None
    return Actor(row["id"], row["role"], row["display_name"] or row["username"])


def notify_user(app: Any, user_id: str, type_: str, data: dict) -> int:
    """Push a frame of ``type_`` to every open connection of one person (a personal notice, such as
    a progress report; not stored). Returns how many connections got it."""
    return app.hub.send_to_user(user_id, type_, data)


async def transcript(app: Any, channel_id: str, *, after_seq: int = 0, upto_seq: int | None = None) -> list[dict]:
    """The text messages of a channel in order (``seq``, ``author`` — a display name —, ``agentId``,
    ``userId``, ``content``), after ``after_seq`` and up to ``upto_seq``; deleted ones left out."""
    rows = await app.db.fetchall(
        "SELECT m.seq, m.content, m.user_id, m.agent_id, u.display_name AS user_name, u.username, a.name AS agent_name "
        "FROM messages m LEFT JOIN users u ON u.id = m.user_id LEFT JOIN agents a ON a.id = m.agent_id "
        "WHERE m.channel_id = ? AND m.seq > ? AND m.seq <= ? AND m.deleted_at IS NULL AND m.type = 'text' "
        "ORDER BY m.seq", (channel_id, after_seq, upto_seq if upto_seq is not None else 2 ** 62))
    return [{"seq": r["seq"], "content": r["content"], "agentId": r["agent_id"], "userId": r["user_id"],
             "author": r["agent_name"] or r["user_name"] or r["username"] or "user"} for r in rows]


async def complete(app: Any, agent: dict, messages: list[ChatMessage], *, max_tokens: int | None = None) -> str:
    """A non-streaming answer of the agent's model to ``messages`` (no persona, no tools): for
    summaries, query rewriting, reranking."""
    return await app.engine.complete(agent, messages, max_tokens=max_tokens)


async def ask_agent(app: Any, agent: dict, text: str, *, actor: Actor, channel: dict | None = None,
                    depth: int = 1) -> str:
    """The agent's full answer to ``text`` (its persona and tools, as ``actor``), nothing posted."""
    return await app.engine.ask(agent, text, actor=actor, channel=channel, depth=depth)


async def run_turn(app: Any, agent: dict, channel: dict, message: dict, actor: Actor, *,
                   instruction: str | None = None, metadata: dict | None = None) -> dict | None:
    """The agent answers a stored ``message`` in ``channel`` as in the chat (after the turns already
    queued for it there, streamed, stored); returns the stored reply, or None when the turn did not start.
    ``instruction``: a text the agent answers after the channel's history (a step's task, not posted);
    ``metadata``: added to the reply's metadata."""
    if get_agent(app, agent.get("id", "")) is None:
        raise NotFound("Agent not found", "agent_not_found")
    return await app.engine.lane_turn(agent, channel, message, actor, handoff=instruction, metadata=metadata)


def read_plugin_data(app: Any, name: str, default: Any = None) -> Any:
    """The JSON value a plugin keeps in ``data/plugins/<name>.json`` (``default`` when there is none)."""
    path = app.data_dir / "plugins" / f"{name}.json"
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def write_plugin_data(app: Any, name: str, value: Any) -> None:
    """Keep ``value`` as JSON in ``data/plugins/<name>.json``, written all or nothing (Chinese kept readable)."""
    path = app.data_dir / "plugins" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def publish_frame(app: Any, channel_id: str, type_: str, data: dict) -> None:
    """Push a frame of ``type_`` to everyone subscribed to a channel (progress of work done there;
    not stored, replayed to sockets that resume)."""
    app.hub.publish(channel_id, type_, data)


async def plugin_db(app: Any, name: str, migrations: Any = ()) -> Any:
    """The plugin's own database, ``data/plugins/<name>.db`` (for what belongs to no one agent:
    channels' workflows, …), migrated with ``migrations`` (``migrations_from_dir(folder)``)."""
    return await app.plugin_db(name, migrations)
