"""memory.db: write (with near-duplicate merging), hybrid search, edit, delete, consolidate.

Everything of an agent's memory lives in its own ``memory.db`` (rows, versions,
full text, vectors), so copying the agent's folder moves its memory.
"""
from __future__ import annotations

import json
import math
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xiajiao import (BadRequest, check_text, NotFound, VectorIndex, within_budget, active_embedder, channel_people,
                     complete, embed, fts_any, get_agent, index_text, migrations_from_dir, new_id, now_iso)
from xiajiao import transcript as channel_transcript

CLASSES = ("semantic", "episodic", "procedural")
SCOPES = ("private", "shared")
MIGRATIONS = migrations_from_dir(Path(__file__).parent / "migrations")
INDEX = VectorIndex("memory_vec", rows="memories", text="content")
MAX_CHARS = 4000

# weights of the hybrid score (vector, full text, recency, importance); docs/memory-and-knowledge.md
W_VECTOR, W_TEXT, W_RECENCY, W_IMPORTANCE = 0.55, 0.25, 0.1, 0.1
RECENCY_DAYS = 30.0


async def agent_row(app: Any, agent_id: str) -> dict:
    row = get_agent(app, agent_id)
    if row is None:
        raise NotFound("Agent not found", "agent_not_found")
    return row


async def open_db(app: Any, agent_id: str):
    return await app.workspace_db(agent_id, "memory.db", MIGRATIONS)


# agent id -> its memory.db handle, known to hold memories
_REMEMBERS: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()


async def has_memories(app: Any, agent_id: str) -> bool:
    """Whether the agent remembers anything (without creating its memory.db).

    Once seen, it is not asked again (a turn spares the read, and while the database is open the
    file check too; after the last memory is deleted, a recall merely finds nothing)."""
    known = _REMEMBERS.get(agent_id)
    if known is not None and known.is_open:
        return True
    if not (app.workspace(agent_id) / "memory.db").exists():
        return False
    db = await open_db(app, agent_id)
    if known is db:
        return True
    found = bool(await db.fetchval("SELECT 1 FROM memories LIMIT 1"))
    if found:
        _REMEMBERS[agent_id] = db
    return found


@dataclass(frozen=True)
class Audience:
    """Who takes part in a turn, for recall: its channel and, when one person alone is in it, that person."""

    channel_id: str | None
    sole_user: str | None

    def sql(self) -> tuple[str, list]:
        """A WHERE condition on memories: shared ones, the channel's own, and the sole person's own."""
        return ("(scope = 'shared' OR channel_id = ? OR (user_id IS NOT NULL AND user_id = ?))",
                [self.channel_id, self.sole_user])


async def audience(app: Any, channel: dict | None, actor: Any) -> Audience:
    """The people of ``channel`` (its human members, as a turn's prompt hooks get them in ``_people``,
    else read; without any, the acting user)."""
    humans: set[str] = set()
    channel_id = (channel or {}).get("id")
    if channel_id:
        people = channel.get("_people") if channel else None
        humans = set(people if isinstance(people, list) else await channel_people(app, channel_id))
    if not humans and actor is not None and getattr(actor, "kind", "user") == "user" and actor.id:
        humans = {actor.id}
    return Audience(channel_id, next(iter(humans)) if len(humans) == 1 else None)


def writer_id(actor: Any) -> str | None:
    return actor.id if actor is not None and getattr(actor, "kind", "user") == "user" else None


async def ready_index(app: Any, db) -> Any:
    """The active embedder, with this database's vectors rebuilt for it if needed."""
    embedder = await active_embedder(app)
    await INDEX.ensure(db, embedder, batch=app.settings.embed_batch)
    return embedder


def memory_json(row: dict) -> dict:
    out = {
        "id": row["uid"], "class": row["class"], "content": row["content"],
        "importance": row["importance"], "tags": json.loads(row["tags"] or "[]"),
        "origin": row["origin"],
        "source": {"channelId": row["channel_id"], "messageId": row["message_id"]},
        "scope": row["scope"], "userId": row["user_id"],
        "version": row["version"], "merges": row["merges"],
        "createdAt": row["created_at"], "updatedAt": row["updated_at"],
        "supersededBy": row["superseded_by"], "supersededAt": row["superseded_at"],
    }
    if row["range_start"] is not None:
        out["range"] = {"fromSeq": row["range_start"], "toSeq": row["range_end"]}
    if "score" in row:
        out["score"] = round(row["score"], 6)
    return out


def check_fields(content: Any = None, klass: Any = None, importance: Any = None, tags: Any = None,
                 scope: Any = None) -> None:
    if scope is not None and scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", "invalid_scope")
    if content is not None and (not isinstance(content, str) or not content.strip()):
        raise BadRequest("content must be a non-empty text", "invalid_content")
    if isinstance(content, str):
        check_text(content, "content")
    if isinstance(content, str) and len(content) > MAX_CHARS:
        raise BadRequest(f"content is longer than {MAX_CHARS} characters", "content_too_long")
    if klass is not None and klass not in CLASSES:
        raise BadRequest(f"class must be one of {', '.join(CLASSES)}", "invalid_class")
    if importance is not None and (isinstance(importance, bool) or not isinstance(importance, (int, float))
                                   or not 0 <= importance <= 1):
        raise BadRequest("importance must be a number from 0 to 1", "invalid_importance")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise BadRequest("tags must be a list of texts", "invalid_tags")


def _save_version(conn, row: dict) -> None:
    conn.execute(
        "INSERT INTO memory_versions (memory_id, version, content, channel_id, message_id, range_start, range_end, "
        "replaced_at) VALUES (?,?,?,?,?,?,?,?)",
        (row["id"], row["version"], row["content"], row["channel_id"], row["message_id"], row["range_start"],
         row["range_end"], now_iso()))


def _index_row(conn, memory_id: int, content: str, vector) -> None:
    conn.execute("DELETE FROM memories_fts WHERE rowid = ?", (memory_id,))
    conn.execute("INSERT INTO memories_fts (rowid, body) VALUES (?, ?)", (memory_id, index_text(content)))
    INDEX.write(conn, [(memory_id, vector)])


def _merge_text(old: str, new: str) -> str:
    """A near-duplicate restates a memory: keep the newer wording unless it says less."""
    o, n = old.strip(), new.strip()
    if n in o:
        return o
    return n


async def write(app: Any, agent_id: str, content: str, *, klass: str = "semantic", importance: float = 0.5,
                tags: list[str] | None = None, origin: str = "tool", channel_id: str | None = None,
                message_id: str | None = None, dedup: bool = True, user_id: str | None = None,
                scope: str = "private", supersedes: str | None = None) -> tuple[dict, str]:
    """Store a memory; a near-duplicate of the same class and owner (cosine ≥ memory_dedup_threshold) is
    merged into the existing entry instead. Returns (row, "created" | "merged").

    ``supersedes`` names (by id) an older memory this one updates ("moved to Munich" after "lives in
    Berlin"): the old one is kept, marked ``superseded_by`` the new one."""
    check_fields(content, klass, importance, tags, scope)
    if supersedes is not None and (not isinstance(supersedes, str) or not supersedes):
        raise BadRequest("supersedes must be the id of a memory", "invalid_supersedes")
    content = content.strip()
    db = await open_db(app, agent_id)
    if supersedes is not None:
        await get(app, agent_id, supersedes)  # 404 memory_not_found before anything is written
    embedder = await ready_index(app, db)
    vector = (await embed(embedder, [content], kind="passage"))[0]
    threshold = dedup_threshold(app.settings, embedder)
    now, ts = now_iso(), time.time()

    def work(conn):
        if dedup:
            for mid, sim in INDEX.nearest_sync(conn, vector, 8):
                if sim < threshold:
                    break
                old = conn.execute("SELECT * FROM memories WHERE id = ?", (mid,)).fetchone()
                if old is None or old["class"] != klass or not _same_owner(old, scope, user_id, channel_id):
                    continue
                merged = _merge_text(old["content"], content)
                _save_version(conn, old)
                all_tags = sorted(set(json.loads(old["tags"])) | set(tags or []))
                conn.execute(
                    "UPDATE memories SET content = ?, importance = ?, tags = ?, channel_id = ?, message_id = ?, "
                    "version = version + 1, merges = merges + 1, updated_at = ?, updated_ts = ? WHERE id = ?",
                    (merged, max(old["importance"], importance), json.dumps(all_tags, ensure_ascii=False),
                     channel_id or old["channel_id"], message_id or old["message_id"], now, ts, mid))
                if merged != old["content"]:
                    _index_row(conn, mid, merged, vector)
                _supersede(conn, supersedes, old["uid"], now)
                return conn.execute("SELECT * FROM memories WHERE id = ?", (mid,)).fetchone(), "merged"
        cur = conn.execute(
            "INSERT INTO memories (uid, class, content, importance, tags, origin, channel_id, message_id, "
            "user_id, scope, created_at, updated_at, created_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (new_id("mem"), klass, content, importance, json.dumps(tags or [], ensure_ascii=False), origin,
             channel_id, message_id, user_id, scope, now, now, ts, ts))
        _index_row(conn, cur.lastrowid, content, vector)
        row = conn.execute("SELECT * FROM memories WHERE id = ?", (cur.lastrowid,)).fetchone()
        _supersede(conn, supersedes, row["uid"], now)
        return row, "created"

    return await db.run_write(work)


def dedup_threshold(settings: Any, embedder: Any) -> float:
    """memory_dedup_threshold, or when it is negative (the default) the embedder's own calibrated
    ``dedup_threshold`` (0.95 for an embedder that has none)."""
    value = settings.memory_dedup_threshold
    return value if value >= 0 else float(getattr(embedder, "dedup_threshold", 0.95))


def _supersede(conn, old_uid: str | None, new_uid: str, now: str) -> None:
    """Mark ``old_uid`` as replaced by ``new_uid`` (nothing when they are the same memory, after a merge)."""
    if old_uid and old_uid != new_uid:
        conn.execute("UPDATE memories SET superseded_by = ?, superseded_at = ? WHERE uid = ?", (new_uid, now, old_uid))


def _same_owner(old: dict, scope: str, user_id: str | None, channel_id: str | None) -> bool:
    """Whether a new memory may merge into ``old``: never across people (a merge moves its text and source)."""
    if old["scope"] != scope:
        return False
    if scope == "shared":
        return True
    if old["user_id"] or user_id:
        return old["user_id"] == user_id
    return old["channel_id"] == channel_id


async def get(app: Any, agent_id: str, uid: str) -> dict:
    db = await open_db(app, agent_id)
    row = await db.fetchone("SELECT * FROM memories WHERE uid = ?", (uid,))
    if row is None:
        raise NotFound("Memory not found", "memory_not_found")
    return row


async def update(app: Any, agent_id: str, uid: str, *, content: str | None = None, klass: str | None = None,
                 importance: float | None = None, tags: list[str] | None = None, scope: str | None = None) -> dict:
    check_fields(content, klass, importance, tags, scope)
    db = await open_db(app, agent_id)
    vector = None
    if content is not None:
        content = content.strip()
        embedder = await ready_index(app, db)
        vector = (await embed(embedder, [content], kind="passage"))[0]

    def work(conn):
        row = conn.execute("SELECT * FROM memories WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise NotFound("Memory not found", "memory_not_found")
        changes = {"class": klass, "importance": importance, "scope": scope,
                   "tags": None if tags is None else json.dumps(tags, ensure_ascii=False)}
        if content is not None and content != row["content"]:
            _save_version(conn, row)
            changes["content"] = content
            changes["version"] = row["version"] + 1
            _index_row(conn, row["id"], content, vector)
        sets = {k: v for k, v in changes.items() if v is not None}
        sets.update(updated_at=now_iso(), updated_ts=time.time())
        conn.execute(f"UPDATE memories SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                     (*sets.values(), row["id"]))
        return conn.execute("SELECT * FROM memories WHERE id = ?", (row["id"],)).fetchone()

    return await db.run_write(work)


async def delete(app: Any, agent_id: str, uid: str) -> None:
    db = await open_db(app, agent_id)
    await ready_index(app, db)

    def work(conn):
        row = conn.execute("SELECT id, superseded_by FROM memories WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise NotFound("Memory not found", "memory_not_found")
        # what the deleted memory replaced is current again (or replaced by what replaced it)
        conn.execute("UPDATE memories SET superseded_by = ?, superseded_at = CASE WHEN ? IS NULL THEN NULL "
                     "ELSE superseded_at END WHERE superseded_by = ?", (row["superseded_by"], row["superseded_by"], uid))
        conn.execute("DELETE FROM memories_fts WHERE rowid = ?", (row["id"],))
        INDEX.delete(conn, [row["id"]])
        conn.execute("DELETE FROM memories WHERE id = ?", (row["id"],))

    await db.run_write(work)


async def listing(app: Any, agent_id: str, *, klass: str | None = None, limit: int = 50,
                  offset: int = 0) -> tuple[list[dict], int]:
    db = await open_db(app, agent_id)
    where, params = ("WHERE class = ?", [klass]) if klass else ("", [])
    rows = await db.fetchall(f"SELECT * FROM memories {where} ORDER BY updated_ts DESC, id DESC LIMIT ? OFFSET ?",
                             (*params, limit, offset))
    total = await db.fetchval(f"SELECT COUNT(*) FROM memories {where}", params)
    return rows, total


async def search(app: Any, agent_id: str, query: str, *, klass: str | None = None, limit: int = 10,
                 audience: Audience | None = None) -> list[dict]:
    """Hybrid search: vector similarity + full text (BM25) + recency + importance, best first.

    With ``audience``, only the memories its people may see (see :class:`Audience`)."""
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("query must be a non-empty text", "invalid_query")
    check_text(query, "query")
    db = await open_db(app, agent_id)
    embedder = await ready_index(app, db)
    vector = (await embed(embedder, [query], kind="query"))[0]
    pool = max(limit * 5, 50)
    expression = fts_any(query)
    now = time.time()

    def work(conn):
        scores: dict[int, dict[str, float]] = {}
        near = INDEX.nearest_sync(conn, vector, pool)
        # a multilingual embedder puts most texts at a cosine of 0.75–0.9 of each other: spread the
        # neighbours over 0–1 (best = 1) so that similarity weighs as much as the full-text half
        lo, hi = (near[-1][1], near[0][1]) if near else (0.0, 1.0)
        for mid, sim in near:
            scores.setdefault(mid, {})["vector"] = (sim - lo) / (hi - lo) if hi > lo else 1.0
        if expression:
            hits = conn.execute("SELECT rowid AS id, bm25(memories_fts) AS rank FROM memories_fts "
                                "WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?", (expression, pool)).fetchall()
            best = max((-h["rank"] for h in hits), default=0.0) or 1.0
            for h in hits:
                scores.setdefault(h["id"], {})["text"] = max(0.0, -h["rank"]) / best
        if not scores:
            return []
        marks = ",".join("?" * len(scores))
        sql = f"SELECT * FROM memories WHERE id IN ({marks})" + (" AND class = ?" if klass else "")
        params = [*scores, *([klass] if klass else [])]
        if audience is not None:
            condition, more = audience.sql()
            sql += " AND " + condition
            params += more
        rows = conn.execute(sql, params).fetchall()
        for row in rows:
            parts = scores[row["id"]]
            age_days = max(0.0, now - row["updated_ts"]) / 86400
            row["score"] = (W_VECTOR * parts.get("vector", 0.0) + W_TEXT * parts.get("text", 0.0)
                            + W_RECENCY * math.exp(-age_days / RECENCY_DAYS) + W_IMPORTANCE * row["importance"])
        # an outdated fact never comes before a current one, however well it matches
        rows.sort(key=lambda r: (r["superseded_by"] is not None, -r["score"], -r["id"]))
        return rows[:limit]

    return await db.run_read(work)


def prompt_text(rows: list[dict], budget: int) -> str:
    """Current memories as prompt lines with their ids (to name in memory_write's ``supersedes``),
    best first, within ``budget`` characters; superseded ones are left out."""
    return within_budget((f"- ({row['class']}) {row['content']} (id {row['uid']})" for row in rows
                          if not row.get("superseded_by")), budget, "\n")


# ------------------------------------------------------------------ consolidation

SUMMARY_PROMPT = (
    "You keep the episodic memory of an AI agent. Summarize the conversation below in at most six sentences, "
    "in the language it was held in: who asked for what, what was decided or done, facts learnt, open items. "
    "If an earlier summary is given, fold it in so the result covers the whole conversation. "
    "Answer with the summary only."
)
TRANSCRIPT_CHARS = 12000


async def count_turn(app: Any, agent_id: str, channel_id: str, upto_seq: int) -> tuple[int, int] | None:
    """Count one finished turn; every ``consolidate_every`` turns claim the message range
    (after the last summary, up to ``upto_seq``) to summarize, as (after_seq, upto_seq)."""
    every = app.settings.consolidate_every
    if every <= 0:
        return None
    db = await open_db(app, agent_id)

    def work(conn):
        conn.execute("INSERT INTO conversations (channel_id, turns) VALUES (?, 1) "
                     "ON CONFLICT(channel_id) DO UPDATE SET turns = turns + 1", (channel_id,))
        row = conn.execute("SELECT * FROM conversations WHERE channel_id = ?", (channel_id,)).fetchone()
        if row["turns"] < every or upto_seq <= row["summarized_seq"]:
            return None
        conn.execute("UPDATE conversations SET turns = 0, summarized_seq = ? WHERE channel_id = ?",
                     (upto_seq, channel_id))
        return row["summarized_seq"], upto_seq

    return await db.run_write(work)


async def transcript(app: Any, channel_id: str, after_seq: int, upto_seq: int) -> str:
    rows = await channel_transcript(app, channel_id, after_seq=after_seq, upto_seq=upto_seq)
    lines = [f"{r['author']}: {r['content']}" for r in rows if r["content"]]
    text = "\n".join(lines)
    return text[-TRANSCRIPT_CHARS:]


async def consolidate(app: Any, agent: dict, channel_id: str, after_seq: int, upto_seq: int,
                      message_id: str | None, instructions: str = "", user_id: str | None = None) -> dict | None:
    """Write (or version) the episodic summary of a conversation covering messages up to ``upto_seq``."""
    from xiajiao import ChatMessage

    db = await open_db(app, agent["id"])
    state = await db.fetchone("SELECT c.memory_id, m.content, m.range_start FROM conversations c "
                              "LEFT JOIN memories m ON m.id = c.memory_id WHERE c.channel_id = ?", (channel_id,))
    talk = await transcript(app, channel_id, after_seq, upto_seq)
    if not talk:
        return None
    earlier = state["content"] if state and state["content"] else ""
    user = (f"Earlier summary:\n{earlier}\n\n" if earlier else "") + f"Conversation:\n{talk}"
    try:
        system = SUMMARY_PROMPT + (f"\n\nInstructions for this conversation:\n{instructions}" if instructions else "")
        answer = await complete(app, agent, [ChatMessage("system", system), ChatMessage("user", user)])
    except BaseException:
        # give the range back so the next turn tries again
        await db.execute("UPDATE conversations SET summarized_seq = ? WHERE channel_id = ? AND summarized_seq = ?",
                         (after_seq, channel_id, upto_seq))
        raise
    summary = (getattr(answer, "content", answer) or "").strip()[:MAX_CHARS]
    if not summary:
        return None
    embedder = await ready_index(app, db)
    vector = (await embed(embedder, [summary], kind="passage"))[0]
    now, ts = now_iso(), time.time()

    def work(conn):
        old = None
        if state and state["memory_id"]:
            old = conn.execute("SELECT * FROM memories WHERE id = ?", (state["memory_id"],)).fetchone()
        if old is not None:
            _save_version(conn, old)
            conn.execute("UPDATE memories SET content = ?, version = version + 1, range_end = ?, message_id = ?, "
                         "updated_at = ?, updated_ts = ? WHERE id = ?",
                         (summary, upto_seq, message_id, now, ts, old["id"]))
            mid = old["id"]
        else:
            mid = conn.execute(
                "INSERT INTO memories (uid, class, content, importance, origin, channel_id, message_id, range_start, "
                "range_end, user_id, created_at, updated_at, created_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new_id("mem"), "episodic", summary, 0.5, "consolidation", channel_id, message_id, after_seq + 1,
                 upto_seq, user_id, now, now, ts, ts)).lastrowid
        _index_row(conn, mid, summary, vector)
        conn.execute("UPDATE conversations SET memory_id = ?, summaries = summaries + 1 WHERE channel_id = ?",
                     (mid, channel_id))
        return conn.execute("SELECT * FROM memories WHERE id = ?", (mid,)).fetchone()

    return await db.run_write(work)


async def versions(app: Any, agent_id: str, uid: str) -> list[dict]:
    row = await get(app, agent_id, uid)
    db = await open_db(app, agent_id)
    return await db.fetchall("SELECT version, content, channel_id, message_id, range_start, range_end, replaced_at "
                             "FROM memory_versions WHERE memory_id = ? ORDER BY version", (row["id"],))
