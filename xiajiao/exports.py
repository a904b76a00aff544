"""Chat export (Markdown and JSON) of one channel, and import of the JSON export."""
from __future__ import annotations

import json
from typing import Any

from . import __version__, chat
from .errors import BadRequest
from .ids import new_id, now_iso

EXPORT_FORMAT = "xiajiao-channel"
EXPORT_VERSION = 1
MAX_IMPORT_MESSAGES = 100_000


async def _names(db) -> tuple[dict[str, str], dict[str, str]]:
    users = {r["id"]: r["display_name"] or r["username"]
             for r in await db.fetchall("SELECT id, username, display_name FROM users")}
    agents = {r["id"]: r["name"] for r in await db.fetchall("SELECT id, name FROM agents")}
    return users, agents


async def export_channel(db, channel_id: str) -> dict:
    """The whole channel as a JSON-able document: the channel, its members, every message."""
    channel = await chat.get_channel(db, channel_id)
    assert channel is not None  # the route has authorized it
    members = await chat.channel_members(db, channel_id)
    users, agents = await _names(db)
    rows = await db.fetchall("SELECT * FROM messages WHERE channel_id = ? AND deleted_at IS NULL ORDER BY seq",
                             (channel_id,))
    messages = []
    for row in rows:
        m = chat.message_json(row)
        if m["agentId"]:
            author = {"type": "agent", "id": m["agentId"], "name": agents.get(m["agentId"], m["agentId"])}
        elif m["userId"]:
            author = {"type": "user", "id": m["userId"], "name": users.get(m["userId"], m["userId"])}
        else:
            author = {"type": "system", "id": None, "name": "system"}
        messages.append({"id": m["id"], "author": author, "type": m["type"], "content": m["content"],
                         "metadata": m["metadata"], "status": m["status"], "createdAt": m["createdAt"],
                         "updatedAt": m.get("updatedAt")})
    view = chat.channel_json(channel, members)
    return {
        "format": EXPORT_FORMAT, "formatVersion": EXPORT_VERSION, "exportedAt": now_iso(), "version": __version__,
        "channel": {"id": view["id"], "name": view["name"], "type": view["type"],
                    "defaultAgentId": view["defaultAgentId"], "createdAt": view["createdAt"]},
        "members": [{"type": m["member_type"], "id": m["member_id"],
                     "name": (agents if m["member_type"] == "agent" else users).get(m["member_id"], m["member_id"])}
                    for m in members],
        "messages": messages,
    }


def to_markdown(doc: dict) -> str:
    ch = doc["channel"]
    lines = [f"# {ch['name']}", "", f"Exported {doc['exportedAt']} · {len(doc['messages'])} messages · "
             f"members: {', '.join(m['name'] for m in doc['members'])}", ""]
    for m in doc["messages"]:
        lines.append(f"### {m['author']['name']} · {m['createdAt']}")
        lines.append("")
        if m["type"] == "tool_call":
            lines.append(f"> tool call: `{m['content']}`")
        elif m["type"] == "tool_result":
            lines.append("```")
            lines.append(m["content"])
            lines.append("```")
        else:
            lines.append(m["content"] if m["status"] not in ("error", "failed") else f"*(failed)* {m['content']}")
        lines.append("")
    return "\n".join(lines)


def _check_export(doc: Any) -> None:
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise BadRequest("Not a Xiajiao channel export (format must be 'xiajiao-channel')", "invalid_export")
    if not isinstance(doc.get("formatVersion"), int) or doc["formatVersion"] > EXPORT_VERSION:
        raise BadRequest("This export was made by a newer Xiajiao", "export_newer")
    ch = doc.get("channel")
    if not isinstance(ch, dict) or not isinstance(ch.get("name"), str) or not ch["name"].strip():
        raise BadRequest("The export's channel needs a name", "invalid_export")
    if ch.get("type") not in ("dm", "group"):
        raise BadRequest("The export's channel type must be 'dm' or 'group'", "invalid_export")
    msgs = doc.get("messages")
    if not isinstance(msgs, list) or len(msgs) > MAX_IMPORT_MESSAGES:
        raise BadRequest(f"'messages' must be a list of at most {MAX_IMPORT_MESSAGES}", "invalid_export")
    for i, m in enumerate(msgs):
        if (not isinstance(m, dict) or not isinstance(m.get("content", ""), str)
                or m.get("type", "text") not in chat.MESSAGE_TYPES or not isinstance(m.get("author"), dict)
                or not isinstance(m.get("metadata", {}), dict)):
            raise BadRequest(f"messages[{i}] is not a valid message", "invalid_export")
    if not isinstance(doc.get("members", []), list):
        raise BadRequest("'members' must be a list", "invalid_export")


async def import_channel(db, doc: Any, *, creator_id: str) -> dict:
    """A new channel holding the export's messages; authors that exist here keep their identity.

    Authors unknown to this installation are kept by name in each message's metadata
    (``importedAuthor``); the importer joins the channel. Returns the new channel row.
    """
    _check_export(doc)
    ch = doc["channel"]
    users = {r["id"] for r in await db.fetchall("SELECT id FROM users WHERE disabled = 0")}
    agents = {r["id"] for r in await db.fetchall("SELECT id FROM agents")}
    cid, now = new_id("ch"), now_iso()

    def work(conn):
        conn.execute("INSERT INTO channels (id, name, type, created_by, default_agent_id, created_at, updated_at) "
                     "VALUES (?,?,?,?,?,?,?)",
                     (cid, ch["name"].strip()[:100], ch["type"], creator_id,
                      ch.get("defaultAgentId") if ch.get("defaultAgentId") in agents else None, now, now))
        joined = {("user", creator_id)}
        for m in doc.get("members", []):
            if isinstance(m, dict) and ((m.get("type") == "user" and m.get("id") in users)
                                        or (m.get("type") == "agent" and m.get("id") in agents)):
                joined.add((m["type"], m["id"]))
        for member_type, member_id in sorted(joined):
            conn.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at) "
                         "VALUES (?,?,?,?)", (cid, member_type, member_id, now))
        for m in doc["messages"]:
            author = m["author"]
            meta = dict(m.get("metadata") or {})
            user_id = author.get("id") if author.get("type") == "user" and author.get("id") in users else None
            agent_id = author.get("id") if author.get("type") == "agent" and author.get("id") in agents else None
            if user_id is None and agent_id is None:
                meta["importedAuthor"] = {"type": str(author.get("type", "")), "name": str(author.get("name", ""))}
            status = m.get("status") if m.get("status") in ("done", "error", "failed", "interrupted", "stopped") else "done"
            created = m.get("createdAt") if isinstance(m.get("createdAt"), str) else now
            chat._insert_message(conn, {
                "id": new_id("msg"), "channel_id": cid, "user_id": user_id, "agent_id": agent_id,
                "content": m.get("content", ""), "type": m.get("type", "text"),
                "metadata": json.dumps(meta, ensure_ascii=False), "status": status, "created_at": created,
            }, index=True)

    await db.run_write(work)
    return await chat.require_channel(db, cid)
