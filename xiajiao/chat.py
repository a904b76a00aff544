"""Channels and messages: the storage-level operations every part shares.

Routes (``xiajiao.api``) and the conversation engine both call these; each
operation is one transaction and pushes its frame on the hub after commit.
"""
from __future__ import annotations

import json
from typing import Any

from . import text as textmod
from .errors import BadRequest, NotFound
from .ids import new_id, now_iso

MESSAGE_TYPES = ("text", "image", "file", "tool_call", "tool_result")


def message_json(row: dict) -> dict:
    meta = row.get("metadata") or "{}"
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {}
    out = {
        "id": row["id"],
        "channelId": row["channel_id"],
        "agentId": row["agent_id"],
        "userId": row["user_id"],
        "content": row["content"] if not row.get("deleted_at") else "",
        "type": row["type"],
        "metadata": meta,
        "createdAt": row["created_at"],
        "seq": row["seq"],
        "status": row.get("status", "done"),
    }
    if row.get("updated_at"):
        out["updatedAt"] = row["updated_at"]
    if row.get("deleted_at"):
        out["deleted"] = True
    return out


def channel_json(row: dict, members: list[dict] | None = None) -> dict:
    out = {
        "id": row["id"], "name": row["name"], "type": row["type"],
        "defaultAgentId": row.get("default_agent_id"),
        "chain": json.loads(row.get("chain") or "[]"),
        "config": json.loads(row.get("config") or "{}"),
        "createdBy": row.get("created_by"),
        "createdAt": row["created_at"], "updatedAt": row.get("updated_at"),
        "lastMessageAt": row.get("last_message_at"),
    }
    if members is not None:
        out["agentIds"] = [m["member_id"] for m in members if m["member_type"] == "agent"]
        out["userIds"] = [m["member_id"] for m in members if m["member_type"] == "user"]
    return out


async def get_channel(db, channel_id: str) -> dict | None:
    return await db.fetchone("SELECT * FROM channels WHERE id = ?", (channel_id,))


async def channel_members(db, channel_id: str) -> list[dict]:
    return await db.fetchall(
        "SELECT member_type, member_id, joined_at, last_read_seq FROM channel_members WHERE channel_id = ? "
        "ORDER BY joined_at", (channel_id,))


async def channel_agent_ids(db, channel_id: str) -> list[str]:
    rows = await db.fetchall(
        "SELECT member_id FROM channel_members WHERE channel_id = ? AND member_type = 'agent' ORDER BY joined_at",
        (channel_id,))
    return [r["member_id"] for r in rows]


def _insert_message(conn, m: dict, index: bool) -> dict:
    cur = conn.execute(
        "INSERT INTO messages (id, channel_id, user_id, agent_id, content, type, metadata, status, created_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (m["id"], m["channel_id"], m["user_id"], m["agent_id"], m["content"], m["type"], m["metadata"],
         m["status"], m["created_at"]))
    m["seq"] = cur.lastrowid
    if index and m["content"]:
        conn.execute("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                     (m["seq"], textmod.index_text(m["content"])))
    conn.execute("UPDATE channels SET last_message_at = ? WHERE id = ?", (m["created_at"], m["channel_id"]))
    return m


async def create_message(app, *, channel_id: str, content: str, type: str = "text", user_id: str | None = None,
                         agent_id: str | None = None, metadata: dict | None = None, status: str = "done",
                         publish: bool = True, message_id: str | None = None) -> dict:
    """Store a message (and index it) in one transaction, then push ``message`` to subscribers."""
    if type not in MESSAGE_TYPES:
        raise BadRequest(f"type must be one of {', '.join(MESSAGE_TYPES)}", "invalid_type")
    row = {"id": message_id or new_id("msg"), "channel_id": channel_id, "user_id": user_id, "agent_id": agent_id,
           "content": content, "type": type, "metadata": json.dumps(metadata or {}, ensure_ascii=False),
           "status": status, "created_at": now_iso(), "updated_at": None, "deleted_at": None}
    await app.db.run_write(lambda conn: _insert_message(conn, row, index=status == "done"))
    msg = message_json(row)
    if publish:
        app.hub.publish(channel_id, "message", msg)
    return msg


async def finish_message(app, message_id: str, *, content: str, status: str = "done",
                         metadata: dict | None = None) -> None:
    """Store the final (or partial) text of a streamed message and index it."""

    def work(conn):
        row = conn.execute("SELECT seq, metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFound("Message not found", "message_not_found")
        meta = json.loads(row["metadata"] or "{}")
        if metadata:
            meta.update(metadata)
        conn.execute("UPDATE messages SET content = ?, status = ?, metadata = ? WHERE id = ?",
                     (content, status, json.dumps(meta, ensure_ascii=False), message_id))
        if status in ("done", "interrupted", "stopped", "error") and content:
            conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (row["seq"],))
            conn.execute("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                         (row["seq"], textmod.index_text(content)))

    await app.db.run_write(work)


async def save_partial(app, message_id: str, content: str) -> None:
    """Persist the text streamed so far (so a crash leaves it visible)."""
    await app.db.execute("UPDATE messages SET content = ? WHERE id = ? AND status = 'streaming'",
                         (content, message_id))


async def get_message(db, message_id: str) -> dict | None:
    return await db.fetchone("SELECT * FROM messages WHERE id = ?", (message_id,))


async def list_messages(db, channel_id: str, *, limit: int = 50, before: str | None = None,
                        after: str | None = None) -> list[dict]:
    """A page of a channel's messages, oldest first; keyset pagination on the sequence."""
    limit = max(1, min(int(limit), 200))

    def work(conn):
        if before:
            ref = conn.execute("SELECT seq, channel_id FROM messages WHERE id = ?", (before,)).fetchone()
            if ref is None or ref["channel_id"] != channel_id:
                raise NotFound("Message in 'before' not found in this channel", "message_not_found")
            rows = conn.execute(
                "SELECT * FROM messages WHERE channel_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (channel_id, ref["seq"], limit)).fetchall()
            rows.reverse()
        elif after:
            ref = conn.execute("SELECT seq, channel_id FROM messages WHERE id = ?", (after,)).fetchone()
            if ref is None or ref["channel_id"] != channel_id:
                raise NotFound("Message in 'after' not found in this channel", "message_not_found")
            rows = conn.execute(
                "SELECT * FROM messages WHERE channel_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (channel_id, ref["seq"], limit)).fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM messages WHERE channel_id = ? ORDER BY seq DESC LIMIT ?",
                (channel_id, limit)).fetchall()
            rows.reverse()
        return rows

    return [message_json(r) for r in await db.run_read(work)]


async def mark_interrupted(db) -> int:
    """After a crash or restart: streamed replies that never finished are kept, marked interrupted."""
    res = await db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
    if res.rowcount:
        rows = await db.fetchall("SELECT seq, content FROM messages WHERE status = 'interrupted' AND content != '' "
                                 "AND seq NOT IN (SELECT rowid FROM messages_fts)")
        await db.executemany("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                             [(r["seq"], textmod.index_text(r["content"])) for r in rows])
    return res.rowcount
