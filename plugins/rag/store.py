"""rag.db: documents, parent passages, small chunks, full text and vectors of one agent.

Ingestion runs in the background, a batch of chunks per transaction; a document's
chunks are visible to queries only once it is ``ready``, and a failed or
interrupted ingestion removes what it wrote, so no half-indexed document remains.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import weakref
from pathlib import Path
from typing import Any, Iterator

from xiajiao import (BadRequest, NotFound, UnsupportedMediaType, VectorIndex, within_budget, active_embedder, fts_any_parts, index_text,
                     migrations_from_dir, new_id, now_iso, parse_document)

log = logging.getLogger("xiajiao.rag")

MIGRATIONS = migrations_from_dir(Path(__file__).parent / "migrations")
INDEX = VectorIndex("chunk_vec", rows="chunks", text="text")
RUNNING: set[tuple[str, int]] = set()  # (agent id, document id) ingested by this process right now
_checked: "weakref.WeakSet[Any]" = weakref.WeakSet()  # rag.db handles already cleaned of interrupted work
MAX_QUERY_CHARS = 2000
KEYWORD_BUDGET = 10_000  # chunks the keyword half may score with bm25 for one query
INTERRUPTED = "interrupted: the server stopped during ingestion; upload the document again"


async def agent_row(app: Any, agent_id: str) -> dict:
    if not isinstance(agent_id, str) or not agent_id:
        raise BadRequest("agentId is required", "missing_agent_id")
    row = await app.db.fetchone("SELECT * FROM agents WHERE id = ?", (agent_id,))
    if row is None:
        raise NotFound("Agent not found", "agent_not_found")
    return row


def has_knowledge_base(app: Any, agent_id: str) -> bool:
    return (app.workspace(agent_id) / "rag.db").is_file()


async def open_db(app: Any, agent_id: str):
    db = await app.workspace_db(agent_id, "rag.db", MIGRATIONS)
    if db not in _checked:
        _checked.add(db)
        await _clean_interrupted(db, agent_id)
    return db


async def _clean_interrupted(db, agent_id: str) -> None:
    """Documents left queued or processing by a stopped process: remove their rows, mark them failed."""
    stale = await db.fetchall("SELECT id FROM documents WHERE status IN ('queued', 'processing')")
    for row in stale:
        if (agent_id, row["id"]) not in RUNNING:
            await db.run_write(lambda conn, d=row["id"]: _purge(conn, d, INTERRUPTED))
            log.warning("removed an interrupted ingestion", extra={"agent": agent_id, "document": row["id"]})


def _purge(conn, document_id: int, error: str | None) -> None:
    """Remove a document's chunks (full text, vectors, rows); mark it failed, or delete it when ``error`` is None."""
    ids = [r["id"] for r in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
    conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in ids])
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vec'").fetchone():
        INDEX.delete(conn, ids)
    conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
    conn.execute("DELETE FROM parents WHERE document_id = ?", (document_id,))
    if error is None:
        conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))
    else:
        conn.execute("UPDATE documents SET status = 'failed', error = ?, chunks = 0, progress = 0, updated_at = ? "
                     "WHERE id = ?", (error[:500], now_iso(), document_id))


def document_json(row: dict, agent_id: str) -> dict:
    return {"id": row["uid"], "agentId": agent_id, "name": row["name"], "parser": row["parser"],
            "size": row["size"], "status": row["status"], "progress": round(row["progress"], 4),
            "chunks": row["chunks"], "chars": row["chars"], "error": row["error"],
            "createdAt": row["created_at"], "updatedAt": row["updated_at"]}


# ------------------------------------------------------------------ chunking

_BOUNDARY = re.compile(r"\n+|[。！？!?；;]+[”」』\"']?|\.(?=\s)")


def split(text: str, size: int) -> Iterator[tuple[int, str]]:
    """``(start, piece)`` of at most ``size`` characters, cut at paragraph and sentence ends when possible."""
    size = max(20, size)
    units: list[tuple[int, int]] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        units.append((pos, m.end()))
        pos = m.end()
    if pos < len(text):
        units.append((pos, len(text)))
    start = end = None
    for a, b in units:
        if start is not None and b - start <= size:
            end = b
            continue
        if start is not None:
            yield from _emit(text, start, end)
        while b - a > size:  # a sentence longer than a chunk: cut it
            yield from _emit(text, a, a + size)
            a += size
        start, end = a, b
    if start is not None:
        yield from _emit(text, start, end)


def _emit(text: str, a: int, b: int) -> Iterator[tuple[int, str]]:
    piece = text[a:b]
    stripped = piece.strip()
    if stripped:
        yield a + (len(piece) - len(piece.lstrip())), stripped


def plan(text: str, parent_size: int, chunk_size: int) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
    """Parents ``(start, text)`` and chunks ``(parent index, start, text)`` of a document."""
    parents = list(split(text, parent_size))
    chunks = [(i, p_start + c_start, c) for i, (p_start, p) in enumerate(parents) for c_start, c in split(p, chunk_size)]
    return parents, chunks


# ------------------------------------------------------------------ documents


def pick_parser(app: Any, filename: str, content_type: str | None) -> Any:
    ext = Path(filename or "").suffix.lower()
    for parser in app.parsers:
        if ext and ext in parser.extensions:
            return parser
    mime = (content_type or "").split(";")[0].strip().lower()
    if not ext:
        for parser in app.parsers:
            if mime and mime in parser.mime_types:
                return parser
    supported = sorted({e for p in app.parsers for e in p.extensions})
    raise UnsupportedMediaType(f"Unsupported file type {ext or mime or 'unknown'!r}; supported: {', '.join(supported)}",
                               "unsupported_file_type")


async def create_document(app: Any, agent_id: str, name: str, data: bytes, parser: Any, user_id: str | None) -> dict:
    db = await open_db(app, agent_id)
    now = now_iso()

    def work(conn):
        cur = conn.execute(
            "INSERT INTO documents (uid, name, parser, size, sha256, status, uploaded_by, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (new_id("doc"), name[:255], parser.name, len(data), hashlib.sha256(data).hexdigest(), "queued",
             user_id, now, now))
        RUNNING.add((agent_id, cur.lastrowid))
        return conn.execute("SELECT * FROM documents WHERE id = ?", (cur.lastrowid,)).fetchone()

    return await db.run_write(work)


async def stored_bytes(app: Any, agent_id: str) -> int:
    """Bytes of the documents an agent keeps (failed ones hold nothing)."""
    if not has_knowledge_base(app, agent_id):
        return 0
    db = await open_db(app, agent_id)
    return await db.fetchval("SELECT COALESCE(SUM(size), 0) FROM documents WHERE status != 'failed'")


async def get_document(app: Any, agent_id: str, uid: str) -> dict:
    if not has_knowledge_base(app, agent_id):
        raise NotFound("Document not found", "document_not_found")
    db = await open_db(app, agent_id)
    row = await db.fetchone("SELECT * FROM documents WHERE uid = ?", (uid,))
    if row is None:
        raise NotFound("Document not found", "document_not_found")
    return row


async def list_documents(app: Any, agent_id: str) -> list[dict]:
    if not has_knowledge_base(app, agent_id):
        return []
    db = await open_db(app, agent_id)
    return await db.fetchall("SELECT * FROM documents ORDER BY created_at DESC, id DESC")


async def delete_document(app: Any, agent_id: str, uid: str) -> None:
    row = await get_document(app, agent_id, uid)
    if (agent_id, row["id"]) in RUNNING:
        from xiajiao import Conflict

        raise Conflict("The document is still being indexed; delete it when it is ready or failed",
                       "document_busy")
    db = await open_db(app, agent_id)
    await db.run_write(lambda conn: _purge(conn, row["id"], None))


class Progress:
    """Pushes ``rag_progress`` frames to the uploader, at most every 0.2 s (and always the last one)."""

    def __init__(self, app: Any, agent_id: str, doc: dict, user_id: str | None):
        self.app, self.agent_id, self.doc, self.user_id = app, agent_id, doc, user_id
        self.last = 0.0

    def push(self, status: str, progress: float, chunks: int, error: str | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not self.user_id or (not force and now - self.last < 0.2):
            return
        self.last = now
        data = {"documentId": self.doc["uid"], "agentId": self.agent_id, "name": self.doc["name"],
                "status": status, "progress": round(progress, 4), "chunks": chunks}
        if error:
            data["error"] = error
        self.app.hub.send_to_user(self.user_id, "rag_progress", data)


async def ingest(app: Any, agent_id: str, doc: dict, data: bytes, parser: Any, user_id: str | None) -> None:
    """Parse, chunk, embed and index one document (the background half of an upload)."""
    db = await open_db(app, agent_id)
    doc_id = doc["id"]
    progress = Progress(app, agent_id, doc, user_id)
    settings = app.settings
    written = 0
    try:
        await db.execute("UPDATE documents SET status = 'processing', updated_at = ? WHERE id = ?", (now_iso(), doc_id))
        progress.push("processing", 0.0, 0, force=True)
        try:  # within the parse limits; PDF and DOCX in a worker process
            text = await parse_document(app, parser, data, doc["name"])
        except ValueError as exc:
            raise _Failed(str(exc)) from None
        if not isinstance(text, str) or not text.strip():
            raise _Failed("the document contains no text")
        parents, chunks = await asyncio.to_thread(plan, text, settings.parent_chunk_size, settings.chunk_size)
        embedder = await active_embedder(app)
        await INDEX.ensure(db, embedder, batch=settings.embed_batch)
        parent_ids: dict[int, int] = {}
        batch = max(1, settings.embed_batch)
        for i in range(0, len(chunks), batch):
            part = chunks[i:i + batch]
            vectors = await embedder.embed([c[2] for c in part], kind="passage")
            rows = [(c, v) for c, v in zip(part, vectors)]
            done = min(len(chunks), i + batch)
            await db.run_write(lambda conn, rows=rows, done=done, i=i: _write_batch(
                conn, doc_id, rows, parents, parent_ids, i, done / len(chunks)))
            written = done
            progress.push("processing", done / len(chunks), written)
        await db.execute("UPDATE documents SET status = 'ready', progress = 1, chunks = ?, chars = ?, updated_at = ? "
                         "WHERE id = ?", (len(chunks), len(text), now_iso(), doc_id))
        progress.push("ready", 1.0, len(chunks), force=True)
    except asyncio.CancelledError:
        await _fail(db, doc_id, INTERRUPTED)
        raise
    except _Failed as exc:
        await _fail(db, doc_id, str(exc))
        progress.push("failed", 0.0, 0, error=str(exc), force=True)
    except Exception as exc:  # any other failure fails this document only, with its reason kept
        log.exception("ingestion failed", extra={"agent": agent_id, "document": doc["uid"]})
        reason = f"indexing failed: {exc}"
        await _fail(db, doc_id, reason)
        progress.push("failed", 0.0, 0, error=reason, force=True)
    finally:
        RUNNING.discard((agent_id, doc_id))


class _Failed(Exception):
    """The document cannot be indexed, for a reason its uploader can read."""


async def _fail(db, doc_id: int, reason: str) -> None:
    await db.run_write(lambda conn: _purge(conn, doc_id, reason))


def _write_batch(conn, doc_id: int, rows, parents, parent_ids: dict[int, int], first: int, fraction: float) -> None:
    new_parents = sorted({c[0] for c, _ in rows if c[0] not in parent_ids})
    for p in new_parents:
        start, text = parents[p]
        parent_ids[p] = conn.execute("INSERT INTO parents (document_id, position, start, text) VALUES (?,?,?,?)",
                                     (doc_id, p, start, text)).lastrowid
    base = conn.execute("SELECT COALESCE(MAX(id), 0) AS m FROM chunks").fetchone()["m"]
    ids = list(range(base + 1, base + 1 + len(rows)))
    conn.executemany("INSERT INTO chunks (id, document_id, parent_id, position, start, text) VALUES (?,?,?,?,?,?)",
                     [(cid, doc_id, parent_ids[c[0]], first + n, c[1], c[2]) for n, (cid, (c, _)) in
                      enumerate(zip(ids, rows))])
    conn.executemany("INSERT INTO chunks_fts (rowid, body) VALUES (?, ?)",
                     [(cid, index_text(c[2])) for cid, (c, _) in zip(ids, rows)])
    INDEX.write(conn, [(cid, v) for cid, (_, v) in zip(ids, rows)])
    conn.execute("UPDATE documents SET progress = ?, chunks = ? WHERE id = ?", (fraction, first + len(rows), doc_id))


# ------------------------------------------------------------------ retrieval


async def query(app: Any, agent: dict, text: Any, top_k: int = 5, *, user_id: str | None = None) -> list[dict]:
    """Hybrid retrieval: BM25 and nearest neighbours fused by RRF (optionally reranked by the model).

    Each result is a parent passage with the best small chunk that matched in it.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("query must be a non-empty text", "invalid_query")
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"query is longer than {MAX_QUERY_CHARS} characters", "query_too_long")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise BadRequest("topK must be a whole number from 1 to 50", "invalid_top_k")
    agent_id = agent["id"]
    if not has_knowledge_base(app, agent_id):
        return []
    db = await open_db(app, agent_id)
    if not await db.fetchval("SELECT 1 FROM documents WHERE status = 'ready' LIMIT 1"):
        return []
    embedder = await active_embedder(app)

    async def reindex_progress(done: int, total: int) -> None:
        if user_id:
            app.hub.send_to_user(user_id, "rag_reindex", {"agentId": agent_id, "embedder": embedder.name,
                                                          "done": done, "total": total})

    await INDEX.ensure(db, embedder, progress=reindex_progress, batch=app.settings.embed_batch)
    vector = (await embedder.embed([text], kind="query"))[0]
    pool = max(top_k * 8, 40)
    parts = fts_any_parts(text)
    k = app.settings.rrf_k

    def keyword(conn):
        expression = keyword_expression(conn, parts)
        if not expression:
            return []
        return conn.execute("SELECT rowid AS id FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
                            (expression, pool)).fetchall()

    def passages(conn, fused: dict[int, float]):
        marks = ",".join("?" * len(fused))
        rows = conn.execute(
            "SELECT c.id, c.parent_id, c.position, c.text AS chunk, p.text AS passage, p.position AS passage_position, "
            f"d.uid AS document_id, d.name AS document_name FROM chunks c JOIN parents p ON p.id = c.parent_id "
            f"JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks}) AND d.status = 'ready'",
            list(fused)).fetchall()
        best: dict[int, dict] = {}
        for row in sorted(rows, key=lambda r: (-fused[r["id"]], r["id"])):
            row["score"] = fused[row["id"]]
            best.setdefault(row["parent_id"], row)
        return list(best.values())

    # The two halves are independent SQLite scans: run them on two read connections at once.
    near, hits = await asyncio.gather(db.run_read(lambda conn: INDEX.nearest_sync(conn, vector, pool)),
                                      db.run_read(keyword))
    fused: dict[int, float] = {}
    for rank, (cid, _) in enumerate(near):
        fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank + 1)
    for rank, h in enumerate(hits):
        fused[h["id"]] = fused.get(h["id"], 0.0) + 1.0 / (k + rank + 1)
    candidates = await db.run_read(lambda conn: passages(conn, fused)) if fused else []
    if app.settings.rerank and len(candidates) > 1:
        candidates = await rerank(app, agent, text, candidates[:top_k * 3])
    return [result_json(r) for r in candidates[:top_k]]


def keyword_expression(conn, parts: list[str], budget: int = KEYWORD_BUDGET) -> str | None:
    """The FTS5 OR expression of a query's terms (``fts_any_parts``), bounded in cost.

    bm25 scores every chunk holding any of the terms, so a question with common words costs
    a scan of most of a large base. Up to ``budget`` chunks nothing changes. Above it, each
    term's document count is read from ``chunks_vocab``: a prefix (``"word"*``) whose
    expansions are too common falls back to the exact word, and the terms are kept rarest
    first while their counts add up to at most ``budget`` (the rarest always stays). The
    words left out are the most common ones, which weigh least in bm25.
    """
    if len(parts) <= 1:
        return parts[0] if parts else None
    if conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM chunks").fetchone()["n"] <= budget:
        return " OR ".join(parts)
    counted = []
    for position, part in enumerate(parts):
        count, part = _term_count(conn, part, budget)
        counted.append((count, position, part))
    kept, total = [], 0
    for count, position, part in sorted(counted):
        if kept and total + count > budget:
            break
        kept.append((position, part))
        total += count
    return " OR ".join(part for _, part in sorted(kept))


def _term_count(conn, part: str, budget: int) -> tuple[int, str]:
    """Chunks holding the term ``part`` (a prefix counts all its expansions, up to a limit), and the term to use."""
    term = part[1:part.rindex('"')].replace('""', '"')
    exact = part.endswith('"')
    if not exact:
        rows = conn.execute("SELECT doc FROM chunks_vocab WHERE term >= ? AND term < ? LIMIT 33",
                            (term, term + "\U0010ffff")).fetchall()
        count = sum(r["doc"] for r in rows)
        if len(rows) <= 32 and count <= budget:
            return count, part
        part = part[:-1]  # too many or too common expansions: the word itself
    row = conn.execute("SELECT doc FROM chunks_vocab WHERE term = ?", (term,)).fetchone()
    return (row["doc"] if row else 0), part


def result_json(row: dict) -> dict:
    return {"documentId": row["document_id"], "documentName": row["document_name"], "position": row["position"],
            "passage": row["passage_position"], "score": round(row["score"], 6), "text": row["passage"],
            "chunk": row["chunk"]}


RERANK_PROMPT = ("Rank passages by how well they answer the question. Reply with a JSON array of passage numbers, "
                 "most relevant first, and nothing else.")


async def rerank(app: Any, agent: dict, question: str, rows: list[dict]) -> list[dict]:
    """Reorder candidates by the agent's model; on any failure keep the fused order."""
    from xiajiao import ChatMessage

    listing = "\n\n".join(f"[{i + 1}] {r['passage'][:600]}" for i, r in enumerate(rows))
    try:
        answer = await app.engine.complete(agent, [ChatMessage("system", RERANK_PROMPT),
                                                   ChatMessage("user", f"Question: {question}\n\n{listing}")])
        order = json.loads(re.search(r"\[[\d,\s]*\]", getattr(answer, "content", answer) or "").group(0))
    except asyncio.CancelledError:
        raise
    except Exception:  # a reranker that fails or answers nonsense must not lose the results
        log.warning("rerank failed; keeping the fused order", exc_info=True)
        return rows
    picked = [rows[n - 1] for n in dict.fromkeys(order) if isinstance(n, int) and 1 <= n <= len(rows)]
    return picked + [r for r in rows if r not in picked]


def prompt_text(results: list[dict], budget: int) -> str:
    """Passages with citation numbers, within ``budget`` characters."""
    return within_budget((f"[{n}] {r['documentName']} (passage {r['passage'] + 1})\n{r['text']}"
                          for n, r in enumerate(results, 1)), budget, "\n\n", min_cut=40)
