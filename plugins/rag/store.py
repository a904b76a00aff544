"""rag.db: documents, parent passages, small chunks, full text and vectors of one agent.

Ingestion runs in the background, a batch of chunks per transaction; a document's
chunks are visible to queries only once it is ``ready``, and a failed ingestion
removes what it wrote, so no half-indexed document remains. The uploaded file waits
in the agent's ``rag-sources/`` folder until its document is indexed: an ingestion
interrupted by a restart resumes after the last batch it wrote (the server looks for
such documents when it starts), and only one whose file is gone is marked failed.
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

from xiajiao import (BadRequest, check_text, NotFound, UnsupportedMediaType, VectorIndex, within_budget, active_embedder, embed,
                     complete, fts_any_parts, get_agent, index_text, letter_counts, list_agents, migrations_from_dir, notify_user,
                     new_id, now_iso,
                     parse_document)

log = logging.getLogger("xiajiao.rag")

MIGRATIONS = migrations_from_dir(Path(__file__).parent / "migrations")
INDEX = VectorIndex("chunk_vec", rows="chunks", text="text", passage=lambda t: vector_text(t))
RUNNING: set[tuple[str, int]] = set()  # (agent id, document id) ingested by this process right now
# agent id -> its rag.db handle, known to hold a ready document
_READY: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
_checked: "weakref.WeakSet[Any]" = weakref.WeakSet()  # rag.db handles already cleaned of interrupted work
# rag.db handles -> chunks they held at their last query: a base up to ONE_HOP_CHUNKS is searched in one
# hand-off to a read thread; a larger one runs its vector and keyword scans on two read threads at once
_SIZES: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
ONE_HOP_CHUNKS = 2000
MAX_QUERY_CHARS = 2000
KEYWORD_BUDGET = 10_000  # chunks the keyword half may score with bm25 for one query
INTERRUPTED = "interrupted: the server stopped during ingestion; upload the document again"
SOURCES = "rag-sources"  # per agent folder: uploaded files waiting to be (fully) indexed
ETA: dict[tuple[str, int], float] = {}  # (agent id, document id) -> seconds left, while it indexes


async def agent_row(app: Any, agent_id: str) -> dict:
    if not isinstance(agent_id, str) or not agent_id:
        raise BadRequest("agentId is required", "missing_agent_id")
    row = get_agent(app, agent_id)
    if row is None:
        raise NotFound("Agent not found", "agent_not_found")
    return row


def has_knowledge_base(app: Any, agent_id: str) -> bool:
    return (app.workspace(agent_id) / "rag.db").is_file()


async def open_db(app: Any, agent_id: str):
    db = await app.workspace_db(agent_id, "rag.db", MIGRATIONS)
    if db not in _checked:
        _checked.add(db)
        await _clean_interrupted(db, agent_id, app)
    return db


def source_path(app: Any, agent_id: str, uid: str) -> Path:
    """Where an uploaded file waits until its document is indexed."""
    return app.workspace(agent_id) / SOURCES / uid


async def _clean_interrupted(db, agent_id: str, app: Any = None) -> None:
    """Documents left queued or processing by a stopped process: resume their ingestion when the
    uploaded file is still there, else remove their rows and mark them failed."""
    stale = await db.fetchall("SELECT * FROM documents WHERE status IN ('queued', 'processing')")
    for row in stale:
        if (agent_id, row["id"]) in RUNNING:
            continue
        parser = next((p for p in app.parsers if p.name == row["parser"]), None) if app is not None else None
        path = source_path(app, agent_id, row["uid"]) if app is not None else None
        if parser is not None and path is not None and await asyncio.to_thread(path.is_file):
            RUNNING.add((agent_id, row["id"]))
            log.info("resuming an interrupted ingestion", extra={"agent": agent_id, "document": row["uid"]})
            app.spawn(ingest(app, agent_id, row, None, parser, row["uploaded_by"]),
                      name=f"ingest:{agent_id}:{row['uid']}")
            continue
        await db.run_write(lambda conn, d=row["id"]: _purge(conn, d, INTERRUPTED))
        log.warning("removed an interrupted ingestion", extra={"agent": agent_id, "document": row["id"]})


async def resume_all(app: Any) -> None:
    """At start: resume the ingestions a stopped server left (agents with files waiting in rag-sources/)."""
    for row in list_agents(app):
        folder = app.workspace(row["id"]) / SOURCES
        if await asyncio.to_thread(lambda f=folder: f.is_dir() and any(f.iterdir())) and has_knowledge_base(app, row["id"]):
            await open_db(app, row["id"])


def _purge(conn, document_id: int, error: str | None, *, keep_document: bool = False) -> None:
    """Remove a document's chunks (full text, vectors, rows); mark it failed, or delete it when ``error`` is
    None (``keep_document``: leave its row as it is)."""
    ids = [r["id"] for r in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
    conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in ids])
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vec'").fetchone():
        INDEX.delete(conn, ids)
    conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
    conn.execute("DELETE FROM parents WHERE document_id = ?", (document_id,))
    if keep_document:
        return
    if error is None:
        conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))
    else:
        conn.execute("UPDATE documents SET status = 'failed', error = ?, chunks = 0, progress = 0, updated_at = ? "
                     "WHERE id = ?", (error[:500], now_iso(), document_id))


def document_json(row: dict, agent_id: str) -> dict:
    out = {"id": row["uid"], "agentId": agent_id, "name": row["name"], "parser": row["parser"],
           "size": row["size"], "status": row["status"], "progress": round(row["progress"], 4),
           "chunks": row["chunks"], "chars": row["chars"], "error": row["error"],
           "createdAt": row["created_at"], "updatedAt": row["updated_at"]}
    if row["status"] == "processing":  # the time left, once the pace is known
        out["etaSeconds"] = ETA.get((agent_id, row["id"]))
    return out


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


PATH_SEPARATOR = " › "
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def title_of(text: str, name: str) -> str:
    """A document's title: its first level-1 Markdown heading, else its file name without the extension."""
    m = re.search(r"^#[ \t]+(.+?)[ \t#]*$", text, re.MULTILINE)
    return m.group(1).strip() if m else Path(name or "").stem or name


def sections(text: str, title: str = "") -> list[tuple[int, int, str]]:
    """``(start, end, heading path)`` of each Markdown section; the path joins the title and the
    headings above the section with " › ". Text without headings is one section."""
    marks = list(_HEADING.finditer(text))
    out: list[tuple[int, int, str]] = []
    if not marks or marks[0].start() > 0:
        out.append((0, marks[0].start() if marks else len(text), title))
    stack: list[tuple[int, str]] = []
    for n, m in enumerate(marks):
        level, heading = len(m.group(1)), m.group(2).strip()
        stack = [(lv, h) for lv, h in stack if lv < level] + [(level, heading)]
        names = [h for _, h in stack]
        if title and names and names[0] == title:
            names = names[1:]
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        out.append((m.start(), end, PATH_SEPARATOR.join([title, *names]) if title else PATH_SEPARATOR.join(names)))
    return [s for s in out if text[s[0]:s[1]].strip()]


def plan(text: str, parent_size: int, chunk_size: int, *, title: str = "", by_heading: bool = True,
         context: bool = True) -> tuple[list[tuple[int, str, str]], list[tuple[int, int, str]]]:
    """Parents ``(start, text, heading path)`` and chunks ``(parent index, start, text)`` of a document.

    With ``by_heading`` a parent never spans two Markdown sections; with ``context`` every chunk's
    text (what is embedded and indexed for words) starts with the heading path, so a chunk of a
    section about billing is found by "billing" even when its sentences never say it.
    """
    spans = sections(text, title) if by_heading else [(0, len(text), title)]
    parents = [(a + p_start, p, path) for a, b, path in spans for p_start, p in split(text[a:b], parent_size)]
    chunks = [(i, p_start + c_start, f"{path}\n{c}" if context and path else c)
              for i, (p_start, p, path) in enumerate(parents) for c_start, c in split(p, chunk_size)]
    return parents, chunks


def vector_text(text: str) -> str:
    """What of a chunk's indexed text is embedded: a heading path first line (``Title › Section …``)
    shortened to the document title. The keyword half keeps the whole path; the vector half gets
    the title alone, which costs the local embedder a sixth fewer tokens and finds as much
    (docs/benchmarks.md, "Indexing speed with the local embedder")."""
    first, sep, body = text.partition("\n")
    if not sep or not body or PATH_SEPARATOR not in first:
        return text
    return f"{first.split(PATH_SEPARATOR, 1)[0]}\n{body}"


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


def _keep_source(path: Path, data: bytes) -> str:
    """Write the uploaded file where a restarted server finds it (a worker thread: file I/O); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


async def create_document(app: Any, agent_id: str, name: str, data: bytes, parser: Any, user_id: str | None) -> dict:
    db = await open_db(app, agent_id)
    now = now_iso()
    uid = new_id("doc")
    digest = await asyncio.to_thread(_keep_source, source_path(app, agent_id, uid), data)

    def work(conn):
        cur = conn.execute(
            "INSERT INTO documents (uid, name, parser, size, sha256, status, uploaded_by, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (uid, name[:255], parser.name, len(data), digest, "queued", user_id, now, now))
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
    await asyncio.to_thread(source_path(app, agent_id, uid).unlink, missing_ok=True)


class Progress:
    """Pushes ``rag_progress`` frames to the uploader, at most every 0.2 s (and always the last one),
    with the time left estimated from the pace since this ingestion started (``etaSeconds``)."""

    def __init__(self, app: Any, agent_id: str, doc: dict, user_id: str | None):
        self.app, self.agent_id, self.doc, self.user_id = app, agent_id, doc, user_id
        self.last = 0.0
        self.started = time.monotonic()
        self.first = 0.0  # the fraction already done when this ingestion started (a resumed one)

    def eta(self, progress: float) -> float | None:
        done = progress - self.first
        if done <= 0 or progress >= 1:
            return None if progress < 1 else 0.0
        return round((time.monotonic() - self.started) * (1 - progress) / done, 1)

    def push(self, status: str, progress: float, chunks: int, error: str | None = None, force: bool = False) -> None:
        now = time.monotonic()
        key = (self.agent_id, self.doc["id"])
        eta = self.eta(progress) if status == "processing" else None
        if eta is None:
            ETA.pop(key, None)
        else:
            ETA[key] = eta
        if not self.user_id or (not force and now - self.last < 0.2):
            return
        self.last = now
        data = {"documentId": self.doc["uid"], "agentId": self.agent_id, "name": self.doc["name"],
                "status": status, "progress": round(progress, 4), "chunks": chunks}
        if eta is not None:
            data["etaSeconds"] = eta
        if error:
            data["error"] = error
        notify_user(self.app, self.user_id, "rag_progress", data)


async def ingest(app: Any, agent_id: str, doc: dict, data: bytes | None, parser: Any, user_id: str | None) -> None:
    """Parse, chunk, embed and index one document (the background half of an upload).

    ``data`` None reads the uploaded file kept in rag-sources/ (a resumed ingestion); the chunks
    an interrupted run already wrote are kept and it goes on after them.
    """
    db = await open_db(app, agent_id)
    doc_id = doc["id"]
    progress = Progress(app, agent_id, doc, user_id)
    settings = app.settings
    source = source_path(app, agent_id, doc["uid"])
    written = 0
    try:
        if data is None:
            data = await asyncio.to_thread(source.read_bytes)
        await db.execute("UPDATE documents SET status = 'processing', updated_at = ? WHERE id = ?", (now_iso(), doc_id))
        progress.push("processing", 0.0, 0, force=True)
        try:  # within the parse limits; PDF and DOCX in a worker process
            text = await parse_document(app, parser, data, doc["name"])
        except ValueError as exc:
            raise _Failed(str(exc)) from None
        if not isinstance(text, str) or not text.strip():
            raise _Failed("the document contains no text")
        parents, chunks = await asyncio.to_thread(
            lambda: plan(text, settings.parent_chunk_size, settings.chunk_size, title=title_of(text, doc["name"]),
                         by_heading=settings.rag_heading_sections, context=settings.rag_contextual_chunks))
        embedder = await active_embedder(app)
        await INDEX.ensure(db, embedder, batch=settings.embed_batch)
        parent_ids, first = await db.run_read(lambda conn: _written(conn, doc_id, chunks))
        if first:
            log.info("resuming ingestion", extra={"agent": agent_id, "document": doc["uid"], "chunks": first})
            progress.first = first / len(chunks)
        batch = max(1, settings.embed_batch)
        for i in range(first, len(chunks), batch):
            part = chunks[i:i + batch]
            vectors = await embed(embedder, [vector_text(c[2]) for c in part], kind="passage", bulk=True)
            rows = [(c, v) for c, v in zip(part, vectors)]
            done = min(len(chunks), i + batch)
            await db.run_write(lambda conn, rows=rows, done=done, i=i: _write_batch(
                conn, doc_id, rows, parents, parent_ids, i, done / len(chunks)))
            written = done
            progress.push("processing", done / len(chunks), written)
        await db.execute("UPDATE documents SET status = 'ready', progress = 1, chunks = ?, chars = ?, updated_at = ? "
                         "WHERE id = ?", (len(chunks), len(text), now_iso(), doc_id))
        progress.push("ready", 1.0, len(chunks), force=True)
        await asyncio.to_thread(source.unlink, missing_ok=True)
    except asyncio.CancelledError:
        # the server is stopping: what was written stays, and the next start resumes after it
        ETA.pop((agent_id, doc_id), None)
        raise
    except _Failed as exc:
        await _fail(app, agent_id, db, doc_id, str(exc))
        progress.push("failed", 0.0, 0, error=str(exc), force=True)
    except Exception as exc:  # any other failure fails this document only, with its reason kept
        log.exception("ingestion failed", extra={"agent": agent_id, "document": doc["uid"]})
        reason = f"indexing failed: {exc}"
        await _fail(app, agent_id, db, doc_id, reason)
        progress.push("failed", 0.0, 0, error=reason, force=True)
    finally:
        RUNNING.discard((agent_id, doc_id))


def _written(conn, doc_id: int, chunks: list[tuple[int, int, str]]) -> tuple[dict[int, int], int]:
    """What an earlier, interrupted run indexed of this document: its parents (position -> id) and how
    many chunks, in order. A mismatch with today's plan (other chunk settings) starts over."""
    count = conn.execute("SELECT COUNT(*) AS n, MAX(position) AS last FROM chunks WHERE document_id = ?",
                         (doc_id,)).fetchone()
    n = count["n"]
    if not n:
        return {}, 0
    last = conn.execute("SELECT text FROM chunks WHERE document_id = ? AND position = ?", (doc_id, n - 1)).fetchone()
    if count["last"] != n - 1 or n > len(chunks) or last is None or last["text"] != chunks[n - 1][2]:
        _purge(conn, doc_id, None, keep_document=True)
        return {}, 0
    parents = {r["position"]: r["id"] for r in conn.execute(
        "SELECT id, position FROM parents WHERE document_id = ?", (doc_id,))}
    return parents, n


class _Failed(Exception):
    """The document cannot be indexed, for a reason its uploader can read."""


async def _fail(app: Any, agent_id: str, db, doc_id: int, reason: str) -> None:
    await db.run_write(lambda conn: _purge(conn, doc_id, reason))
    row = await db.fetchone("SELECT uid FROM documents WHERE id = ?", (doc_id,))
    if row is not None:
        await asyncio.to_thread(source_path(app, agent_id, row["uid"]).unlink, missing_ok=True)


def _write_batch(conn, doc_id: int, rows, parents, parent_ids: dict[int, int], first: int, fraction: float) -> None:
    new_parents = sorted({c[0] for c, _ in rows if c[0] not in parent_ids})
    for p in new_parents:
        start, text, heading = parents[p]
        parent_ids[p] = conn.execute("INSERT INTO parents (document_id, position, start, text, heading) "
                                     "VALUES (?,?,?,?,?)", (doc_id, p, start, text, heading)).lastrowid
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


def script(text: str) -> str:
    """``"cjk"`` when at least a fifth of the letters (ASCII letters and CJK characters) are CJK, else
    ``"latin"``."""
    cjk, latin = letter_counts(text)
    return "cjk" if cjk and cjk * 4 >= latin else "latin"


async def query(app: Any, agent: dict, text: Any, top_k: int = 5, *, user_id: str | None = None) -> list[dict]:
    """The results of :func:`search` (the passages only)."""
    return (await search(app, agent, text, top_k, user_id=user_id))["results"]


async def search(app: Any, agent: dict, text: Any, top_k: int = 5, *, user_id: str | None = None) -> dict:
    """Hybrid retrieval: BM25 and nearest neighbours fused by weighted RRF (optionally reranked by the model).

    Returns ``{"results", "relevant", "queries"}``. Each result is a parent passage with the best
    small chunk that matched in it and its ``relevance`` (the cosine similarity of its best chunk,
    raised by rag_cross_language_boost when the chunk is in the other script than the question);
    ``relevant`` says whether the best one reaches rag_min_relevance. ``queries`` are the texts
    searched: the question and its rewrites (rag_query_rewrite).
    """
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("query must be a non-empty text", "invalid_query")
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"query is longer than {MAX_QUERY_CHARS} characters", "query_too_long")
    check_text(text, "query")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise BadRequest("topK must be a whole number from 1 to 50", "invalid_top_k")
    agent_id = agent["id"]
    empty = {"results": [], "relevant": False, "queries": [text], "minRelevance": 0.0}
    known = _READY.get(agent_id)
    if known is not None and known.is_open:
        db = known  # open and known to hold a ready document: no file check, no read
    else:
        if not has_knowledge_base(app, agent_id):
            return empty
        db = await open_db(app, agent_id)
        if known is not db:  # once a base has a ready document, turns spare this read
            if not await db.fetchval("SELECT 1 FROM documents WHERE status = 'ready' LIMIT 1"):
                return empty
            _READY[agent_id] = db
    embedder = await active_embedder(app)

    async def reindex_progress(done: int, total: int) -> None:
        if user_id:
            notify_user(app, user_id, "rag_reindex", {"agentId": agent_id, "embedder": embedder.name,
                                                      "done": done, "total": total})

    await INDEX.ensure(db, embedder, progress=reindex_progress, batch=app.settings.embed_batch)
    s = app.settings
    extra = await rewrites(app, agent, text) if s.rag_query_rewrite else []
    # the question itself through the shared per-text cache (memory recall embedded it this turn already)
    vectors = (await embed(embedder, [text], kind="query")) + (
        await embed(embedder, extra, kind="query") if extra else [])
    texts = [text] + extra
    pool = max(top_k * 8, 40)
    # the nearest neighbours of a question are mostly in its own language: a wider vector pool
    # lets the other language's best chunks in, to be judged with the cross-language boost
    near_pool = max(pool, s.rag_vector_pool)

    def keyword(conn, q: str):
        expression = keyword_expression(conn, fts_any_parts(q))
        if not expression:
            return []
        return [(r["id"], -r["rank"]) for r in conn.execute(
            "SELECT rowid AS id, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
            (expression, pool)).fetchall()]

    linear = s.rag_fusion == "linear"

    def rest(conn, near: list, hits: list) -> tuple[dict | None, list]:
        """The candidates' rows and (linear fusion) every question's similarity to each of them
        (None: nothing was found)."""
        ids = {cid for lst in near for cid, _ in lst} | {cid for lst in hits for cid, _ in lst}
        if not ids:
            return None, []
        rows = {r["id"]: r for r in _candidates(conn, ids)}
        return rows, [INDEX.similarities_sync(conn, list(rows), v) for v in vectors] if linear else []

    def whole(conn):
        near = [INDEX.nearest_sync(conn, v, near_pool) for v in vectors]
        hits = [keyword(conn, q) for q in texts]
        return near, hits, _size(conn), *rest(conn, near, hits)

    if _SIZES.get(db, 0) <= ONE_HOP_CHUNKS:
        # a small base (what most agents have): the whole retrieval is one hand-off to a read thread
        near, hits, _SIZES[db], rows, sims = await db.run_read(whole)
    else:
        # a large one: the halves are independent scans, run on the read connections at once
        found = await asyncio.gather(
            *(db.run_read(lambda conn, v=v: INDEX.nearest_sync(conn, v, near_pool)) for v in vectors),
            *(db.run_read(lambda conn, q=q: keyword(conn, q)) for q in texts),
            db.run_read(_size))
        near, hits = found[:len(texts)], found[len(texts):-1]
        _SIZES[db] = found[-1]
        rows, sims = await db.run_read(lambda conn: rest(conn, near, hits))
    if rows is None:
        return {**empty, "queries": texts}
    if linear:
        fused, relevance = _linear(s, texts, sims, hits, rows)
    else:
        fused, relevance = _rrf(s, texts, near, hits, rows)
    best: dict[int, dict] = {}
    for cid in sorted(fused, key=lambda c: (-fused[c], c)):
        row = rows[cid]
        passage = best.get(row["parent_id"])
        if passage is None:  # the parent's best chunk: copied once (not for every chunk, as setdefault would)
            passage = best[row["parent_id"]] = {**row, "score": fused[cid], "relevance": -1.0}
        passage["relevance"] = max(passage["relevance"], relevance.get(cid, -1.0))
    candidates = list(best.values())
    if s.rerank and len(candidates) > 1:
        candidates = await rerank(app, agent, text, candidates[:top_k * 3])
    results = [result_json(r) for r in candidates[:top_k]]
    return {"results": results, "queries": texts,
            "relevant": bool(results) and max(r["relevance"] for r in results) >= min_relevance(s, embedder),
            "minRelevance": min_relevance(s, embedder)}


def min_relevance(settings: Any, embedder: Any) -> float:
    """rag_min_relevance, or when it is negative (the default) the embedder's own calibrated
    ``min_relevance`` (0 for an embedder that has none: everything found counts)."""
    value = settings.rag_min_relevance
    return value if value >= 0 else float(getattr(embedder, "min_relevance", 0.0))


def _boosted(s: Any, question_script: str, row: dict, sim: float) -> float:
    return sim + (s.rag_cross_language_boost if row["script"] != question_script else 0.0)


def _rrf(s: Any, texts: list[str], near: list, hits: list, rows: dict) -> tuple[dict, dict]:
    """Reciprocal Rank Fusion of every vector list (re-sorted by boosted similarity) and keyword list."""
    k = s.rrf_k
    fused: dict[int, float] = {}
    relevance: dict[int, float] = {}
    for q, lst in zip(texts, near):
        qs = script(q)
        scored = sorted(((_boosted(s, qs, rows[cid], sim), cid) for cid, sim in lst if cid in rows), reverse=True)
        for rank, (sim, cid) in enumerate(scored):
            fused[cid] = fused.get(cid, 0.0) + s.rag_vector_weight / (k + rank + 1)
            relevance[cid] = max(relevance.get(cid, -1.0), sim)
    for lst in hits:
        for rank, cid in enumerate(c for c, _ in lst if c in rows):
            fused[cid] = fused.get(cid, 0.0) + s.rag_keyword_weight / (k + rank + 1)
    return fused, relevance


def _linear(s: Any, texts: list[str], sims: list[dict], hits: list, rows: dict) -> tuple[dict, dict]:
    """Scores instead of ranks: every candidate's boosted cosine similarity to the closest question
    (times rag_vector_weight) plus its BM25 relative to the best keyword hit (times rag_keyword_weight).

    A chunk found by one half only is still scored by the other (``sims``: every question's similarity
    to each candidate, read back from its vector), so a passage in the other language, which no keyword
    matches, competes on its similarity alone.
    """
    relevance: dict[int, float] = {}
    boost, vector_weight, keyword_weight = s.rag_cross_language_boost, s.rag_vector_weight, s.rag_keyword_weight
    for q, sim in zip(texts, sims):
        qs = script(q)
        for cid, value in sim.items():  # as _boosted, with the settings read once
            value += boost if rows[cid]["script"] != qs else 0.0
            relevance[cid] = max(relevance.get(cid, -1.0), value)
    fused = {cid: vector_weight * relevance.get(cid, 0.0) for cid in rows}
    for lst in hits:
        top = max((b for _, b in lst), default=0.0) or 1.0
        for cid, b in lst:
            if cid in rows:
                fused[cid] += keyword_weight * max(0.0, b) / top / len(hits)
    return fused, relevance


def _size(conn) -> int:
    return conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM chunks").fetchone()["n"]


def _candidates(conn, ids: set[int]) -> list[dict]:
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT c.id, c.parent_id, c.position, c.text AS chunk, p.text AS passage, p.position AS passage_position, "
        "p.heading, d.uid AS document_id, d.name AS document_name FROM chunks c JOIN parents p ON p.id = c.parent_id "
        f"JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks}) AND d.status = 'ready'",
        list(ids)).fetchall()
    for row in rows:  # the chunk's own words decide its script, not the heading path before them
        row["body"] = row["chunk"].split("\n", 1)[-1] if row["heading"] and row["chunk"].startswith(row["heading"]) \
            else row["chunk"]
        row["script"] = script(row["body"])  # here, in the read thread, once per candidate
    return rows


REWRITE_PROMPT = ("Rewrite the user's search question for a bilingual (Chinese and English) document search. "
                  "Reply with two lines and nothing else: the question in English, then the question in Chinese "
                  "(expand a very short question into a full one).")


async def rewrites(app: Any, agent: dict, question: str) -> list[str]:
    """The question rewritten in both languages by the agent's model; none when the model fails
    (the question itself is always searched)."""
    from xiajiao import ChatMessage

    try:
        answer = await complete(app, agent, [ChatMessage("system", REWRITE_PROMPT), ChatMessage("user", question)])
    except asyncio.CancelledError:
        raise
    except Exception:  # no model, or a failing one: search the question as asked
        log.warning("query rewrite failed; searching the question as asked", exc_info=True)
        return []
    lines = [ln.strip() for ln in (getattr(answer, "content", answer) or "").splitlines()]
    return [ln[:MAX_QUERY_CHARS] for ln in dict.fromkeys(lines) if ln and ln != question][:2]


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
            "passage": row["passage_position"], "heading": row["heading"], "score": round(row["score"], 6),
            "relevance": round(row["relevance"], 4), "text": row["passage"], "chunk": row["body"]}


RERANK_PROMPT = ("Rank passages by how well they answer the question. Reply with a JSON array of passage numbers, "
                 "most relevant first, and nothing else.")


async def rerank(app: Any, agent: dict, question: str, rows: list[dict]) -> list[dict]:
    """Reorder candidates by the agent's model; on any failure keep the fused order."""
    from xiajiao import ChatMessage

    listing = "\n\n".join(f"[{i + 1}] {r['passage'][:600]}" for i, r in enumerate(rows))
    try:
        answer = await complete(app, agent, [ChatMessage("system", RERANK_PROMPT),
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
    """Passages with citation numbers, document names and sections, within ``budget`` characters."""
    def cite(n: int, r: dict) -> str:
        section = r["heading"].split(" › ", 1)[1] if " › " in r["heading"] else ""
        return f"[{n}] {r['documentName']}" + (f" › {section}" if section else "") + \
            f" (passage {r['passage'] + 1})\n{r['text']}"

    return within_budget((cite(n, r) for n, r in enumerate(results, 1)), budget, "\n\n", min_cut=40)


# ------------------------------------------------------------------ citations

CITED_WINDOW = 40  # passages shown on either side of a cited one (a large document is not sent whole)


async def record_citations(app: Any, agent_id: str, message_id: str, results: list[dict], *,
                           append: bool = False) -> int:
    """Remember which passage each [n] of the prompt was, for the message being answered (the
    latest answer to a message replaces what an earlier one recorded). ``append``: the passages a
    ``rag_query`` call found during the answer, numbered after those already recorded. Returns the
    number the first of ``results`` got."""
    db = await open_db(app, agent_id)
    now = now_iso()
    first = 1

    def work(conn):
        nonlocal first
        if append:
            first = conn.execute("SELECT COALESCE(MAX(n), 0) + 1 AS next FROM citations WHERE message_id = ?",
                                 (message_id,)).fetchone()["next"]
        else:
            conn.execute("DELETE FROM citations WHERE message_id = ?", (message_id,))
        for n, r in enumerate(results, first):
            row = conn.execute("SELECT p.id FROM parents p JOIN documents d ON d.id = p.document_id "
                               "WHERE d.uid = ? AND p.position = ?", (r["documentId"], r["passage"])).fetchone()
            if row is not None:
                conn.execute("INSERT INTO citations (message_id, n, parent_id, chunk_position, created_at) "
                             "VALUES (?,?,?,?,?)", (message_id, n, row["id"], r["position"], now))

    await db.run_write(work)
    return first


_CITED = ("SELECT c.n, c.chunk_position, p.id AS parent_id, p.document_id, p.position, p.heading, p.text, "
          "d.uid AS document_uid, d.name AS document_name FROM citations c JOIN parents p ON p.id = c.parent_id "
          "JOIN documents d ON d.id = p.document_id WHERE c.message_id = ? AND d.status = 'ready'")


def citation_json(row: dict) -> dict:
    return {"n": row["n"], "documentId": row["document_uid"], "documentName": row["document_name"],
            "heading": row["heading"], "passage": row["position"], "position": row["chunk_position"],
            "text": row["text"]}


async def citations(app: Any, agent_id: str, message_id: str) -> list[dict]:
    """The passages cited as [1] … [n] in the answers to ``message_id`` (documents deleted since left out)."""
    if not has_knowledge_base(app, agent_id) or not message_id:
        return []
    db = await open_db(app, agent_id)
    return [citation_json(r) for r in await db.fetchall(_CITED + " ORDER BY c.n", (message_id,))]


async def cited_document(app: Any, agent_id: str, message_id: str, n: int) -> dict:
    """Citation ``n`` of the answers to ``message_id`` with its document's passages around it
    (``CITED_WINDOW`` on either side): ``{"citation", "document", "passages"}``."""
    row = None
    if has_knowledge_base(app, agent_id) and message_id:
        db = await open_db(app, agent_id)
        row = await db.fetchone(_CITED + " AND c.n = ?", (message_id, n))
    if row is None:
        raise NotFound("This reply has no such citation", "citation_not_found")
    around = await db.fetchall(
        "SELECT position, heading, text FROM parents WHERE document_id = ? AND position BETWEEN ? AND ? "
        "ORDER BY position", (row["document_id"], row["position"] - CITED_WINDOW, row["position"] + CITED_WINDOW))
    total = await db.fetchval("SELECT COUNT(*) FROM parents WHERE document_id = ?", (row["document_id"],))
    return {"citation": citation_json(row),
            "document": {"id": row["document_uid"], "name": row["document_name"], "passages": total},
            "passages": [{"passage": p["position"], "heading": p["heading"], "text": p["text"],
                          "cited": p["position"] == row["position"]} for p in around]}
