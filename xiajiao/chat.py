"""Channels and messages: the storage-level operations every part shares.

Routes (``xiajiao.api``) and the conversation engine both call these; each
operation is one transaction and pushes its frame on the hub after commit.
"""
from __future__ import annotations

import json

from . import jsonio
from . import text as textmod
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ids import new_id, now_iso

MESSAGE_TYPES = ("text", "image", "file", "tool_call", "tool_result")


def message_json(row: dict) -> dict:
    meta = row.get("metadata") or "{}"
    if meta == "{}":
        meta = {}
    elif isinstance(meta, str):
        try:
            meta = jsonio.loads(meta)
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
    if row.get("version_group"):
        out["versionGroup"] = row["version_group"]
    if row.get("superseded"):
        out["superseded"] = True
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
        "parentId": row.get("parent_id"), "depth": row.get("depth") or 0,
        "forkMessageId": row.get("fork_message_id"), "archived": bool(row.get("archived_at")),
    }
    if members is not None:
        out["agentIds"] = [m["member_id"] for m in members if m["member_type"] == "agent"]
        out["userIds"] = [m["member_id"] for m in members if m["member_type"] == "user"]
        out["readOnlyUserIds"] = [m["member_id"] for m in members
                                  if m["member_type"] == "user" and not m.get("can_write", 1)]
    return out


async def get_channel(db, channel_id: str) -> dict | None:
    return await db.fetchone("SELECT * FROM channels WHERE id = ?", (channel_id,))


async def require_channel(db, channel_id: str) -> dict:
    """The channel's row; NotFound (404) when there is none."""
    row = await get_channel(db, channel_id)
    if row is None:
        raise NotFound("Channel not found", "channel_not_found")
    return row


_MEMBERS = ("SELECT member_type, member_id, joined_at, last_read_seq, can_write FROM channel_members "
            "WHERE channel_id = ? ORDER BY joined_at, rowid")


async def channel_members(db, channel_id: str) -> list[dict]:
    return await db.fetchall(_MEMBERS, (channel_id,))


def member_ids_sync(conn, channel_id: str, member_type: str) -> list[str]:
    """The ids of the channel's members of one type (``user``: its people; ``agent``), in the order
    they joined (sync, in a worker)."""
    return [r["member_id"] for r in conn.execute(
        "SELECT member_id FROM channel_members WHERE channel_id = ? AND member_type = ? ORDER BY joined_at, rowid",
        (channel_id, member_type))]


async def channel_agent_ids(db, channel_id: str) -> list[str]:
    return await db.run_read(lambda conn: member_ids_sync(conn, channel_id, "agent"))


def _insert_message(conn, m: dict, index: bool) -> dict:
    cur = conn.execute(
        "INSERT INTO messages (id, channel_id, user_id, agent_id, content, type, metadata, status, created_at, "
        "version_group) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (m["id"], m["channel_id"], m["user_id"], m["agent_id"], m["content"], m["type"], m["metadata"],
         m["status"], m["created_at"], m.get("version_group")))
    if m.get("version_group"):  # a new version: the older ones leave the model's history
        conn.execute("UPDATE messages SET superseded = 1, version_group = ? WHERE (version_group = ? OR id = ?) "
                     "AND id != ?", (m["version_group"], m["version_group"], m["version_group"], m["id"]))
    m["seq"] = cur.lastrowid
    if index and m["content"]:
        conn.execute("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                     (m["seq"], textmod.index_text(m["content"])))
    conn.execute("UPDATE channels SET last_message_at = ? WHERE id = ?", (m["created_at"], m["channel_id"]))
    return m


async def create_message(app, *, channel_id: str, content: str, type: str = "text", user_id: str | None = None,
                         agent_id: str | None = None, metadata: dict | None = None, status: str = "done",
                         publish: bool = True, message_id: str | None = None,
                         version_group: str | None = None) -> dict:
    """Store a message (and index it) in one transaction, then push ``message`` to subscribers.

    ``version_group``: the message is a new version of the reply of that group (regenerate, retry).
    """
    if type not in MESSAGE_TYPES:
        raise BadRequest(f"type must be one of {', '.join(MESSAGE_TYPES)}", "invalid_type")
    row = {"id": message_id or new_id("msg"), "channel_id": channel_id, "user_id": user_id, "agent_id": agent_id,
           "content": content, "type": type, "metadata": json.dumps(metadata or {}, ensure_ascii=False),
           "status": status, "created_at": now_iso(), "updated_at": None, "deleted_at": None,
           "version_group": version_group}
    await app.db.run_write(lambda conn: _insert_message(conn, row, index=status == "done"))
    msg = message_json(row)
    if publish:
        app.hub.publish(channel_id, "message", msg)
    return msg


def move_to_end(conn, message_id: str) -> None:
    """Give a message the next sequence number (in a write transaction): a streamed reply whose tool
    calls were stored meanwhile comes after them, as it happened."""
    row = conn.execute("SELECT seq FROM messages WHERE id = ?", (message_id,)).fetchone()
    top = conn.execute("SELECT MAX(seq) AS s FROM messages").fetchone()["s"]
    if row is None or row["seq"] == top:
        return
    conn.execute("UPDATE messages SET seq = ? WHERE id = ?", (top + 1, message_id))
    indexed = conn.execute("SELECT body FROM messages_fts WHERE rowid = ?", (row["seq"],)).fetchone()
    if indexed is not None:  # the search index follows it
        conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (row["seq"],))
        conn.execute("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)", (top + 1, indexed["body"]))


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


def lineage(conn, channel_id: str) -> list[tuple[str, int | None]]:
    """The channels whose messages a conversation shows: itself (all of them), then for a branch
    its parent up to the fork point, and so on up the tree (sync, inside a transaction)."""
    out: list[tuple[str, int | None]] = [(channel_id, None)]
    row = conn.execute("SELECT parent_id, fork_seq FROM channels WHERE id = ?", (channel_id,)).fetchone()
    while row and row["parent_id"] and row["fork_seq"] is not None and len(out) < 64:
        limit = row["fork_seq"] if out[-1][1] is None else min(row["fork_seq"], out[-1][1])
        out.append((row["parent_id"], limit))
        row = conn.execute("SELECT parent_id, fork_seq FROM channels WHERE id = ?", (row["parent_id"],)).fetchone()
    return out


def lineage_where(chain: list[tuple[str, int | None]], alias: str = "") -> tuple[str, list]:
    """SQL (and its parameters) matching the messages of a lineage."""
    col = f"{alias}." if alias else ""
    parts, params = [], []
    for cid, upto in chain:
        if upto is None:
            parts.append(f"{col}channel_id = ?")
            params.append(cid)
        else:
            parts.append(f"({col}channel_id = ? AND {col}seq <= ?)")
            params += [cid, upto]  # type: ignore[list-item]  # SQL parameters of both types
    return "(" + " OR ".join(parts) + ")", params


async def list_messages(db, channel_id: str, *, limit: int = 50, before: str | None = None,
                        after: str | None = None) -> list[dict]:
    """A page of a channel's messages, oldest first; keyset pagination on the sequence.

    A branch's page includes the history it inherits (marked ``inherited``)."""
    limit = max(1, min(int(limit), 200))

    def work(conn):
        chain = lineage(conn, channel_id)
        where, params = lineage_where(chain)
        mine = {cid for cid, _ in chain}
        for ref_id, name in ((before, "before"), (after, "after")):
            if ref_id:
                ref = conn.execute("SELECT seq, channel_id FROM messages WHERE id = ?", (ref_id,)).fetchone()
                if ref is None or ref["channel_id"] not in mine:
                    raise NotFound(f"Message in '{name}' not found in this channel", "message_not_found")
                if name == "before":
                    rows = conn.execute(f"SELECT * FROM messages WHERE {where} AND seq < ? ORDER BY seq DESC LIMIT ?",
                                        (*params, ref["seq"], limit)).fetchall()
                    rows.reverse()
                else:
                    rows = conn.execute(f"SELECT * FROM messages WHERE {where} AND seq > ? ORDER BY seq LIMIT ?",
                                        (*params, ref["seq"], limit)).fetchall()
                return rows
        rows = conn.execute(f"SELECT * FROM messages WHERE {where} ORDER BY seq DESC LIMIT ?",
                            (*params, limit)).fetchall()
        rows.reverse()
        return rows

    out = []
    for r in await db.run_read(work):
        msg = message_json(r)
        if r["channel_id"] != channel_id:
            msg["inherited"] = True
        out.append(msg)
    return out


async def mark_interrupted(db) -> int:
    """After a crash or restart: streamed replies that never finished are kept, marked interrupted."""
    res = await db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
    if res.rowcount:
        rows = await db.fetchall("SELECT seq, content FROM messages WHERE status = 'interrupted' AND content != '' "
                                 "AND seq NOT IN (SELECT rowid FROM messages_fts)")
        await db.executemany("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                             [(r["seq"], textmod.index_text(r["content"])) for r in rows])
    return res.rowcount


# ------------------------------------------------------------------ edits and tombstones


async def edit_message(app, message_id: str, content: str, *, actor_id: str) -> dict:
    """Change the text of one's own message (re-indexed), then push ``message_updated``."""

    def work(conn):
        row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None or row["deleted_at"]:
            raise NotFound("Message not found", "message_not_found")
        if row["user_id"] != actor_id:
            raise Forbidden("You can only edit your own messages", "not_your_message")
        row["content"], row["updated_at"] = content, now_iso()
        conn.execute("UPDATE messages SET content = ?, updated_at = ? WHERE seq = ?",
                     (content, row["updated_at"], row["seq"]))
        conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (row["seq"],))
        if content:
            conn.execute("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                         (row["seq"], textmod.index_text(content)))
        return row

    msg = message_json(await app.db.run_write(work))
    app.hub.publish(msg["channelId"], "message_updated", msg)
    return msg


async def delete_message(app, message_id: str, *, actor_id: str, moderator: bool = False) -> dict:
    """Delete a message, keeping a tombstone (id, author, time; no text), then push ``message_deleted``."""

    def work(conn):
        row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None or row["deleted_at"]:
            raise NotFound("Message not found", "message_not_found")
        if row["user_id"] != actor_id and not moderator:
            raise Forbidden("You can only delete your own messages", "not_your_message")
        row["content"], row["deleted_at"] = "", now_iso()
        conn.execute("UPDATE messages SET content = '', metadata = '{}', deleted_at = ? WHERE seq = ?",
                     (row["deleted_at"], row["seq"]))
        conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (row["seq"],))
        return row

    row = await app.db.run_write(work)
    app.hub.publish(row["channel_id"], "message_deleted",
                    {"id": row["id"], "channelId": row["channel_id"], "deletedAt": row["deleted_at"]})
    return message_json(row)


# ------------------------------------------------------------------ search


async def search_messages(db, query: str, *, reader_id: str | None, channel_id: str | None = None,
                          limit: int = 20) -> list[dict]:
    """Ranked full-text hits (bm25) with highlighted snippets.

    ``reader_id``: only channels this user belongs to (None: every channel, for
    owner/admin). Deleted messages are not indexed.
    """
    match = textmod.fts_query(query)
    if match is None:
        return []
    where: list[str] = ["messages_fts MATCH ?"]
    params: list[object] = [match]
    if channel_id is not None:
        where.append("m.channel_id = ?")
        params.append(channel_id)
    if reader_id is not None:
        where.append("m.channel_id IN (SELECT channel_id FROM channel_members "
                     "WHERE member_type = 'user' AND member_id = ?)")
        params.append(reader_id)
    params.append(max(1, min(int(limit), 100)))
    rows = await db.fetchall(
        "SELECT m.*, bm25(messages_fts) AS rank FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid "
        f"WHERE {' AND '.join(where)} ORDER BY rank, m.seq DESC LIMIT ?", params)
    out = []
    for r in rows:
        item = message_json(r)
        item["snippet"] = textmod.snippet(r["content"], query)
        out.append(item)
    return out


# ------------------------------------------------------------------ channels


def existing_agents(conn, agent_ids: list[str]) -> None:
    """Raise 404 naming the first id in ``agent_ids`` that is no agent (sync, inside a transaction)."""
    for aid in agent_ids:
        if not conn.execute("SELECT 1 FROM agents WHERE id = ?", (aid,)).fetchone():
            raise NotFound(f"Agent {aid!r} not found", "agent_not_found")


def existing_users(conn, user_ids: list[str]) -> list[dict]:
    """The users of ``user_ids``: 404 for an unknown id, 409 for a deactivated account."""
    rows = []
    for uid in user_ids:
        row = conn.execute("SELECT id, role, disabled FROM users WHERE id = ?", (uid,)).fetchone()
        if row is None:
            raise NotFound(f"User {uid!r} not found", "user_not_found")
        if row["disabled"]:
            raise Conflict(f"User {uid!r} is deactivated", "user_disabled")
        rows.append(row)
    return rows


def _add_members(conn, channel_id: str, member_type: str, ids: list[str], *, can_write: bool = True) -> None:
    now = now_iso()
    conn.executemany(
        "INSERT INTO channel_members (channel_id, member_type, member_id, joined_at, can_write) VALUES (?,?,?,?,?) "
        "ON CONFLICT (channel_id, member_type, member_id) DO UPDATE SET can_write = excluded.can_write",
        [(channel_id, member_type, i, now, int(can_write)) for i in ids])


async def create_channel(db, *, name: str, type: str, creator_id: str, agent_ids: list[str],
                         user_ids: list[str] | tuple[()] = (), default_agent_id: str | None = None,
                         creator_role: str | None = None) -> dict:
    """A DM is the creator and exactly one agent or one other person; a group has any members and may
    name a default agent. Only admins and the owner open a DM with a guest (``creator_role``)."""
    agent_ids = list(dict.fromkeys(agent_ids))
    user_ids = [u for u in dict.fromkeys(user_ids) if u != creator_id]
    if type == "dm":
        if len(agent_ids) + len(user_ids) != 1:
            raise BadRequest("A DM has its creator and exactly one agent or one other person", "invalid_dm")
        default_agent_id = agent_ids[0] if agent_ids else None
    if default_agent_id is not None and default_agent_id not in agent_ids:
        raise BadRequest("defaultAgentId must be one of agentIds", "invalid_default_agent")
    cid, now = new_id("ch"), now_iso()

    def work(conn):
        existing_agents(conn, agent_ids)
        people = existing_users(conn, user_ids)
        if type == "dm" and people and people[0]["role"] == "guest" and creator_role in ("member", "guest"):
            raise Forbidden("Only admins open a direct message with a guest", "guest_dm")
        conn.execute(
            "INSERT INTO channels (id, name, type, created_by, default_agent_id, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?)", (cid, name, type, creator_id, default_agent_id, now, now))
        _add_members(conn, cid, "user", [creator_id, *user_ids])
        _add_members(conn, cid, "agent", agent_ids)
        return view_sync(conn, cid)  # read back in the same transaction: one hand-off for the whole call

    return await db.run_write(work)


def view_sync(conn, channel_id: str) -> dict:
    """The channel in the API's shape with its members (sync, in a worker)."""
    row = conn.execute("SELECT * FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if row is None:
        raise NotFound("Channel not found", "channel_not_found")
    return channel_json(row, conn.execute(_MEMBERS, (channel_id,)).fetchall())


async def channel_view(db, channel_id: str) -> dict:
    """:func:`view_sync` in one read."""
    return await db.run_read(lambda conn: view_sync(conn, channel_id))


UNREAD_CAP = 100  # counts stop here ("99+" in the UI); keeps the count an index range scan


async def list_channels(db, reader_id: str | None, viewer_id: str | None = None) -> list[dict]:
    """Channels with their members, most recently active first; ``reader_id`` None: all of them.

    With ``viewer_id``, each channel the viewer belongs to carries ``unread``: messages of others
    after the viewer's read marker (at most ``UNREAD_CAP``).
    """
    viewer_id = viewer_id or reader_id

    def work(conn):
        if reader_id is None:
            rows = conn.execute("SELECT * FROM channels").fetchall()
        else:
            rows = conn.execute(
                "SELECT c.* FROM channels c JOIN channel_members m ON m.channel_id = c.id "
                "WHERE m.member_type = 'user' AND m.member_id = ?", (reader_id,)).fetchall()
        members: dict[str, list[dict]] = {r["id"]: [] for r in rows}
        if rows:
            marks = ",".join("?" * len(members))
            for m in conn.execute(
                    f"SELECT channel_id, member_type, member_id, can_write FROM channel_members "
                    f"WHERE channel_id IN ({marks}) ORDER BY joined_at, rowid", list(members)):
                members[m["channel_id"]].append(m)
        rows.sort(key=lambda r: (r["last_message_at"] or r["created_at"], r["created_at"]), reverse=True)
        out = [channel_json(r, members[r["id"]]) for r in rows]
        children: dict[str, list[str]] = {}
        for r in sorted(rows, key=lambda r: r["created_at"]):
            if r["parent_id"]:
                children.setdefault(r["parent_id"], []).append(r["id"])
        for ch in out:
            ch["childIds"] = children.get(ch["id"], [])
        if viewer_id:
            read_marks = {m["channel_id"]: m["last_read_seq"] for m in conn.execute(
                "SELECT channel_id, last_read_seq FROM channel_members WHERE member_type = 'user' AND member_id = ?",
                (viewer_id,))}
            for ch in out:
                if ch["id"] in read_marks:
                    ch["unread"] = conn.execute(
                        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM messages WHERE channel_id = ? AND seq > ? "
                        "AND (user_id IS NULL OR user_id != ?) AND deleted_at IS NULL LIMIT ?)",
                        (ch["id"], read_marks[ch["id"]], viewer_id, UNREAD_CAP)).fetchone()["n"]
        return out

    return await db.run_read(work)


async def mark_read(db, channel_id: str, user_id: str, seq: int | None = None) -> int:
    """Move a member's read marker forward (to ``seq``, or to the channel's last message)."""

    def work(conn):
        top = conn.execute("SELECT MAX(seq) AS s FROM messages WHERE channel_id = ?", (channel_id,)).fetchone()["s"] or 0
        target = top if seq is None else max(0, min(int(seq), top))
        conn.execute("UPDATE channel_members SET last_read_seq = MAX(last_read_seq, ?) WHERE channel_id = ? "
                     "AND member_type = 'user' AND member_id = ?", (target, channel_id, user_id))
        row = conn.execute("SELECT last_read_seq FROM channel_members WHERE channel_id = ? AND member_type = 'user' "
                           "AND member_id = ?", (channel_id, user_id)).fetchone()
        return row["last_read_seq"] if row else 0

    return await db.run_write(work)


async def set_chain(db, channel_id: str, agent_ids: list[str], *, approval: bool) -> dict:
    """Store a group's chain (its agents in order, approval between steps); returns the channel."""

    def work(conn):
        row = conn.execute("SELECT config FROM channels WHERE id = ?", (channel_id,)).fetchone()
        config = json.loads(row["config"] or "{}")
        config["chainApproval"] = approval
        conn.execute("UPDATE channels SET chain = ?, config = ?, updated_at = ? WHERE id = ?",
                     (json.dumps(agent_ids), json.dumps(config, ensure_ascii=False), now_iso(), channel_id))
        return conn.execute("SELECT * FROM channels WHERE id = ?", (channel_id,)).fetchone()

    return await db.run_write(work)


async def user_channel_ids(db, user_id: str) -> list[str]:
    """The channels a user is a member of."""
    rows = await db.fetchall(
        "SELECT channel_id FROM channel_members WHERE member_type = 'user' AND member_id = ?", (user_id,))
    return [r["channel_id"] for r in rows]


async def update_channel(db, channel_id: str, *, name: str | None = None,
                         default_agent_id: str | None = None, set_default: bool = False) -> dict:
    def work(conn):
        ch = conn.execute("SELECT * FROM channels WHERE id = ?", (channel_id,)).fetchone()
        if ch is None:
            raise NotFound("Channel not found", "channel_not_found")
        if set_default:
            if ch["type"] == "dm":
                raise BadRequest("A DM's agent cannot change", "invalid_dm")
            if default_agent_id is not None and not conn.execute(
                    "SELECT 1 FROM channel_members WHERE channel_id = ? AND member_type = 'agent' AND member_id = ?",
                    (channel_id, default_agent_id)).fetchone():
                raise BadRequest("defaultAgentId must be an agent of this channel", "invalid_default_agent")
            conn.execute("UPDATE channels SET default_agent_id = ? WHERE id = ?", (default_agent_id, channel_id))
        if name is not None:
            conn.execute("UPDATE channels SET name = ? WHERE id = ?", (name, channel_id))
        conn.execute("UPDATE channels SET updated_at = ? WHERE id = ?", (now_iso(), channel_id))

    await db.run_write(work)
    return await channel_view(db, channel_id)


async def add_members(db, channel: dict, *, user_ids: list[str], agent_ids: list[str],
                      read_only: bool = False) -> dict:
    if channel["type"] == "dm":
        raise BadRequest("A DM has two members; create a group to add more", "invalid_dm")
    user_ids, agent_ids = list(dict.fromkeys(user_ids)), list(dict.fromkeys(agent_ids))

    def work(conn):
        existing_users(conn, user_ids)
        existing_agents(conn, agent_ids)
        for member_type, ids in (("user", user_ids), ("agent", agent_ids)):
            for mid in ids:
                if conn.execute("SELECT 1 FROM channel_members WHERE channel_id = ? AND member_type = ? "
                                "AND member_id = ?", (channel["id"], member_type, mid)).fetchone():
                    raise Conflict(f"{mid!r} is already a member of this channel", "already_member")
        _add_members(conn, channel["id"], "user", user_ids, can_write=not read_only)
        _add_members(conn, channel["id"], "agent", agent_ids)
        conn.execute("UPDATE channels SET updated_at = ? WHERE id = ?", (now_iso(), channel["id"]))

    await db.run_write(work)
    return await channel_view(db, channel["id"])


async def remove_member(db, channel: dict, member_id: str) -> str:
    """Remove a user or agent from a channel; returns the member's type."""

    def work(conn):
        row = conn.execute("SELECT member_type FROM channel_members WHERE channel_id = ? AND member_id = ?",
                           (channel["id"], member_id)).fetchone()
        if row is None:
            raise NotFound("Not a member of this channel", "member_not_found")
        if channel["type"] == "dm" and row["member_type"] == "agent":
            raise BadRequest("A DM's agent cannot be removed; delete the DM instead", "invalid_dm")
        conn.execute("DELETE FROM channel_members WHERE channel_id = ? AND member_id = ?", (channel["id"], member_id))
        if row["member_type"] == "agent" and channel.get("default_agent_id") == member_id:
            conn.execute("UPDATE channels SET default_agent_id = NULL WHERE id = ?", (channel["id"],))
        return row["member_type"]

    return await db.run_write(work)


async def delete_channel(db, channel_id: str) -> list[str]:
    """Delete a channel with its topics and branches (their history reads through it); returns the ids."""

    def work(conn):
        if conn.execute("SELECT 1 FROM channels WHERE id = ?", (channel_id,)).fetchone() is None:
            raise NotFound("Channel not found", "channel_not_found")
        ids = subtree_ids(conn, channel_id)
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM messages_fts WHERE rowid IN (SELECT seq FROM messages WHERE channel_id IN ({marks}))",
                     ids)
        conn.execute(f"DELETE FROM messages WHERE channel_id IN ({marks})", ids)
        conn.execute(f"DELETE FROM channel_members WHERE channel_id IN ({marks})", ids)
        conn.execute(f"DELETE FROM chain_runs WHERE channel_id IN ({marks})", ids)
        for cid in reversed(ids):  # children first
            conn.execute("DELETE FROM channels WHERE id = ?", (cid,))
        return ids

    return await db.run_write(work)


# ------------------------------------------------------------------ topics and branches (the conversation tree)


def subtree_ids(conn, channel_id: str) -> list[str]:
    """The channel and all its descendants, parents before children."""
    ids, frontier = [channel_id], [channel_id]
    while frontier:
        marks = ",".join("?" * len(frontier))
        frontier = [r["id"] for r in conn.execute(
            f"SELECT id FROM channels WHERE parent_id IN ({marks}) ORDER BY created_at, rowid", frontier)]
        ids += frontier
    return ids


def root_id(conn, channel_id: str) -> str:
    row = conn.execute("SELECT id, parent_id FROM channels WHERE id = ?", (channel_id,)).fetchone()
    while row and row["parent_id"]:
        row = conn.execute("SELECT id, parent_id FROM channels WHERE id = ?", (row["parent_id"],)).fetchone()
    return row["id"] if row else channel_id


MAX_DEPTH = 32


async def create_child(db, parent_id: str, *, name: str, creator_id: str, message_id: str | None = None) -> dict:
    """A new topic of a conversation (``message_id`` None: it starts empty) or a branch from one of its
    messages (it inherits the history up to and including that message, read through the parent)."""
    cid, now = new_id("ch"), now_iso()

    def work(conn):
        parent = conn.execute("SELECT * FROM channels WHERE id = ?", (parent_id,)).fetchone()
        if parent is None:
            raise NotFound("Channel not found", "channel_not_found")
        if parent["archived_at"]:
            raise Conflict("This conversation is archived; unarchive it first", "channel_archived")
        if (parent["depth"] or 0) + 1 > MAX_DEPTH:
            raise BadRequest(f"Branches nest at most {MAX_DEPTH} deep", "too_deep")
        fork_seq = None
        if message_id is not None:
            msg = conn.execute("SELECT seq, channel_id, deleted_at FROM messages WHERE id = ?", (message_id,)).fetchone()
            if msg is None or msg["deleted_at"]:
                raise NotFound("Message not found", "message_not_found")
            if msg["channel_id"] != parent_id:
                raise BadRequest("The message is not in this conversation", "message_not_in_channel")
            fork_seq = msg["seq"]
        conn.execute(
            "INSERT INTO channels (id, name, type, created_by, default_agent_id, chain, config, created_at, updated_at, "
            "parent_id, fork_seq, fork_message_id, depth) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (cid, name, parent["type"], creator_id, parent["default_agent_id"], parent["chain"], parent["config"],
             now, now, parent_id, fork_seq, message_id, (parent["depth"] or 0) + 1))
        conn.execute(
            "INSERT INTO channel_members (channel_id, member_type, member_id, joined_at, can_write) "
            "SELECT ?, member_type, member_id, ?, can_write FROM channel_members WHERE channel_id = ?",
            (cid, now, parent_id))

    await db.run_write(work)
    return await channel_view(db, cid)


async def set_archived(db, channel_id: str, archived: bool) -> dict:
    """Archive (or bring back) a conversation and everything under it."""

    def work(conn):
        if conn.execute("SELECT 1 FROM channels WHERE id = ?", (channel_id,)).fetchone() is None:
            raise NotFound("Channel not found", "channel_not_found")
        ids = subtree_ids(conn, channel_id)
        marks = ",".join("?" * len(ids))
        now = now_iso()
        conn.execute(f"UPDATE channels SET archived_at = ?, updated_at = ? WHERE id IN ({marks})",
                     (now if archived else None, now, *ids))

    await db.run_write(work)
    return await channel_view(db, channel_id)


async def channel_tree(db, channel_id: str) -> dict:
    """The whole tree the channel belongs to: ``{"rootId", "channels": [...]}`` with parent,
    children and depth, parents before children."""

    def work(conn):
        root = root_id(conn, channel_id)
        ids = subtree_ids(conn, root)
        marks = ",".join("?" * len(ids))
        rows = {r["id"]: r for r in conn.execute(f"SELECT * FROM channels WHERE id IN ({marks})", ids)}
        out = []
        for cid in ids:
            item = channel_json(rows[cid])
            item["childIds"] = [c for c in ids if rows[c]["parent_id"] == cid]
            out.append(item)
        return {"rootId": root, "channels": out}

    return await db.run_read(work)


async def set_channel_agents(db, channel_id: str, agent_ids: list[str]) -> None:
    """Make ``agent_ids`` the channel's agents (a DM keeps its one agent; a default agent that
    leaves is cleared; a chain step naming a removed agent is dropped)."""
    wanted = list(dict.fromkeys(agent_ids))

    def work(conn):
        ch = conn.execute("SELECT * FROM channels WHERE id = ?", (channel_id,)).fetchone()
        if ch is None:
            raise NotFound("Channel not found", "channel_not_found")
        have = [r["member_id"] for r in conn.execute(
            "SELECT member_id FROM channel_members WHERE channel_id = ? AND member_type = 'agent'", (channel_id,))]
        if ch["type"] == "dm":
            if set(wanted) != set(have):
                raise BadRequest("A DM's agent cannot change", "invalid_dm")
            return
        existing_agents(conn, wanted)
        now = now_iso()
        for aid in wanted:
            if aid not in have:
                conn.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at) "
                             "VALUES (?, 'agent', ?, ?)", (channel_id, aid, now))
        gone = [aid for aid in have if aid not in wanted]
        for aid in gone:
            conn.execute("DELETE FROM channel_members WHERE channel_id = ? AND member_type = 'agent' AND member_id = ?",
                         (channel_id, aid))
        if ch["default_agent_id"] in gone:
            conn.execute("UPDATE channels SET default_agent_id = NULL WHERE id = ?", (channel_id,))
        chain = json.loads(ch["chain"] or "[]")
        kept = [c for c in chain if (c.get("agentId") if isinstance(c, dict) else c) not in gone]
        if kept != chain:
            conn.execute("UPDATE channels SET chain = ? WHERE id = ?", (json.dumps(kept, ensure_ascii=False), channel_id))

    await db.run_write(work)


async def update_channel_config(db, channel_id: str, changes: dict) -> None:
    """Merge ``changes`` into the channel's config; an empty string removes a key."""
    def work(conn):
        ch = conn.execute("SELECT config FROM channels WHERE id = ?", (channel_id,)).fetchone()
        if ch is None:
            raise NotFound("Channel not found", "channel_not_found")
        config = json.loads(ch["config"] or "{}")
        for key, value in changes.items():
            if value == "":
                config.pop(key, None)
            else:
                config[key] = value
        conn.execute("UPDATE channels SET config = ? WHERE id = ?", (json.dumps(config, ensure_ascii=False), channel_id))

    await db.run_write(work)
