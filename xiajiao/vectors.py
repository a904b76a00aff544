"""Vector indexes in SQLite (sqlite-vec ``vec0`` tables) tied to the embedder that built them.

Each database records, per vector table, the embedder name and dimension it was
built with (table ``vector_meta``). When the active embedder differs, the table is
dropped and rebuilt from its source rows, batch by batch with progress, so vectors
of two embedders never mix. Vectors stay on disk; a query reads only its nearest
neighbours.
"""
from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Sequence

from .db import vec_blob
from .errors import ProviderError
from .ids import now_iso

log = logging.getLogger("xiajiao.vectors")

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_locks: dict[tuple[str, str], asyncio.Lock] = {}

Progress = Callable[[int, int], Awaitable[None] | None]


async def active_embedder(app: Any) -> Any:
    """The embedder memory and knowledge use: the ``embedder`` setting, else the best usable one.

    "Best" is the highest ``priority`` among registered embedders; one that has
    ``configured(settings)`` returning False (e.g. a remote endpoint without a key)
    is skipped. The chosen embedder is made ready (``await ready(app)``, which loads
    a model on first use) before it is returned.
    """
    name = app.settings.embedder
    if name:
        embedder = app.embedders.get(name)
        if embedder is None:
            raise ProviderError(f"unknown embedder {name!r}; installed: {', '.join(app.embedders.names())}",
                                "unknown_embedder")
    else:
        usable = [e for e in app.embedders
                  if not hasattr(e, "configured") or e.configured(app.settings)]
        if not usable:
            raise ProviderError("no embedder is installed", "no_embedder")
        embedder = max(usable, key=lambda e: getattr(e, "priority", 0))
    ready = getattr(embedder, "ready", None)
    if ready is not None:
        await ready(app)
    return embedder


def identity(embedder: Any) -> str:
    """What a vector table records of the embedder that filled it: its name, and its ``version``
    when it has one (``e5-small@2``). A new version (the same model, vectors computed otherwise)
    rebuilds every table as a new embedder would."""
    version = getattr(embedder, "version", None)
    return f"{embedder.name}@{version}" if version else embedder.name


class _Lane:
    """What one embedder is doing: interactive calls in flight, the bulk turn, recent query vectors."""

    CACHE = 512  # texts whose vectors are kept (a turn's question is embedded once for memory and knowledge)

    def __init__(self) -> None:
        self.interactive = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.bulk = asyncio.Lock()
        self.cache: "OrderedDict[tuple[str, str], Any]" = OrderedDict()  # (kind, text) -> vector or future


_lanes: "weakref.WeakKeyDictionary[Any, _Lane]" = weakref.WeakKeyDictionary()


def _lane(embedder: Any) -> _Lane:
    lane = _lanes.get(embedder)
    if lane is None:
        lane = _lanes[embedder] = _Lane()
    return lane


async def embed(embedder: Any, texts: Sequence[str], *, kind: str = "passage", bulk: bool = False) -> list:
    """Vectors of ``texts`` by ``embedder``, interactive work first.

    Interactive calls (the default: a question, a memory being written) run at once; a single
    text's vector is cached per (kind, text), and equal texts asked at the same time share one
    call, so a turn's question is embedded once for memory and knowledge together. Bulk calls
    (``bulk=True``: indexing, rebuilding) run one at a time per embedder, and each waits until no
    interactive call is in flight, so a large document never delays a query or a turn. A bulk call
    is cut into the embedder's own ``batch`` (when it has one) and waits again before each part: a
    local model that takes seconds per indexing batch shares the cores with a question for one
    small part at most, never for the whole batch.
    """
    lane = _lane(embedder)
    if bulk:
        texts = list(texts)
        size = max(1, int(getattr(embedder, "batch", 0) or len(texts) or 1))
        out: list = []
        async with lane.bulk:
            for i in range(0, len(texts), size):
                while not lane.idle.is_set():
                    await lane.idle.wait()
                out.extend(await embedder.embed(texts[i:i + size], kind=kind))
        return out
    key = (kind, texts[0]) if len(texts) == 1 else None
    if key is not None:
        hit = lane.cache.get(key)
        if isinstance(hit, asyncio.Future):  # the same text is being embedded right now: share that call
            try:
                return [await asyncio.shield(hit)]
            except asyncio.CancelledError:
                if not hit.cancelled():
                    raise  # we were cancelled ourselves
                return await embed(embedder, texts, kind=kind)  # the first asker gave up: ask again
        if hit is not None:
            lane.cache.move_to_end(key)
            return [hit]
    lane.interactive += 1
    lane.idle.clear()
    future: asyncio.Future | None = None
    if key is not None:
        future = lane.cache[key] = asyncio.get_running_loop().create_future()
    try:
        vectors = await embedder.embed(list(texts), kind=kind)
    except BaseException as exc:
        if future is not None and key is not None:
            lane.cache.pop(key, None)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # marked retrieved: sharers re-raise it, nobody else needs to
        raise
    finally:
        lane.interactive -= 1
        if lane.interactive == 0:
            lane.idle.set()
    if future is not None and key is not None:
        future.set_result(vectors[0])
        lane.cache[key] = vectors[0]
        while len(lane.cache) > lane.CACHE:
            lane.cache.popitem(last=False)
    return vectors


class VectorIndex:
    """One ``vec0`` table (``table``) of a database holding a vector per row of ``rows``
    (its rowid = the row's ``id``), embedded from the column ``text`` (through ``passage`` when given)."""

    def __init__(self, table: str, rows: str, text: str, *, passage: Callable[[str], str] | None = None):
        for name in (table, rows, text):
            if not _IDENT.match(name):
                raise ValueError(f"bad identifier {name!r}")
        self.table = table
        self.passage = passage  # what of a row's text is embedded (None: all of it)
        self.source = f"SELECT id, {text} AS text FROM {rows} WHERE id > ? ORDER BY id LIMIT ?"
        self.count = f"SELECT COUNT(*) AS n FROM {rows}"
        # (embedder, dim) each open database's table is known to be ready for; only ``ensure``
        # rebuilds a table, so once checked a query skips the read of vector_meta.
        self._ready: "weakref.WeakKeyDictionary[Any, tuple[str, int]]" = weakref.WeakKeyDictionary()

    # -- building

    @staticmethod
    def _meta(conn) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS vector_meta (name TEXT PRIMARY KEY, embedder TEXT NOT NULL, "
                     "dim INTEGER NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL)")

    async def info(self, db) -> dict | None:
        """``{"embedder", "dim", "state"}`` this table was built with, or None."""
        def read(conn):
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'vector_meta'").fetchone()
            if not exists:
                return None
            return conn.execute("SELECT embedder, dim, state FROM vector_meta WHERE name = ?",
                                (self.table,)).fetchone()

        return await db.run_read(read)

    async def ensure(self, db, embedder, *, progress: Progress | None = None, batch: int = 64) -> bool:
        """Make the table match ``embedder``; rebuild it when it does not. Returns True after a rebuild."""
        wanted = (identity(embedder), embedder.dim)
        if self._ready.get(db) == wanted:
            return False
        info = await self.info(db)
        if info and (info["embedder"], info["dim"], info["state"]) == (*wanted, "ready"):
            self._ready[db] = wanted
            return False
        lock = _locks.setdefault((str(db.path), self.table), asyncio.Lock())
        async with lock:
            info = await self.info(db)
            if info and (info["embedder"], info["dim"], info["state"]) == (*wanted, "ready"):
                self._ready[db] = wanted
                return False
            await self._rebuild(db, embedder, progress, batch, previous=info)
            self._ready[db] = wanted
            return True

    async def _rebuild(self, db, embedder, progress: Progress | None, batch: int, previous: dict | None) -> None:
        log.info("building vector index", extra={"db": db.label, "table": self.table, "embedder": identity(embedder),
                                                 "previous": previous["embedder"] if previous else None})

        def reset(conn):
            self._meta(conn)
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            conn.execute(f"CREATE VIRTUAL TABLE {self.table} USING vec0("
                         f"embedding float[{int(embedder.dim)}] distance_metric=cosine)")
            conn.execute("INSERT INTO vector_meta (name, embedder, dim, state, updated_at) VALUES (?,?,?,?,?) "
                         "ON CONFLICT(name) DO UPDATE SET embedder = excluded.embedder, dim = excluded.dim, "
                         "state = excluded.state, updated_at = excluded.updated_at",
                         (self.table, identity(embedder), embedder.dim, "building", now_iso()))
            return conn.execute(self.count).fetchone()["n"]

        total = await db.run_write(reset)
        done, last = 0, -1
        await _report(progress, 0, total)
        while True:
            rows = await db.fetchall(self.source, (last, batch))
            if not rows:
                break
            texts = [r["text"] for r in rows]
            vectors = await embed(embedder, [self.passage(t) for t in texts] if self.passage else texts,
                                  kind="passage", bulk=True)
            pairs = [(r["id"], v) for r, v in zip(rows, vectors)]
            await db.run_write(lambda conn, pairs=pairs: self.write(conn, pairs))
            last = rows[-1]["id"]
            done += len(rows)
            await _report(progress, min(done, total), total)
        await db.execute("UPDATE vector_meta SET state = 'ready', updated_at = ? WHERE name = ?",
                         (now_iso(), self.table))

    # -- rows (synchronous: call inside the caller's transaction)

    def write(self, conn, pairs: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Insert or replace the vectors of these source ids."""
        ids = [(i,) for i, _ in pairs]
        conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", ids)
        conn.executemany(f"INSERT INTO {self.table} (rowid, embedding) VALUES (?, ?)",
                         [(i, vec_blob(v)) for i, v in pairs])

    def delete(self, conn, ids: Sequence[int]) -> None:
        conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", [(i,) for i in ids])

    # -- searching

    def nearest_sync(self, conn, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest row ids with their cosine similarity, best first."""
        if k <= 0:
            return []
        rows = conn.execute(
            f"SELECT rowid AS id, distance FROM {self.table} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (vec_blob(vector), int(k))).fetchall()
        return [(r["id"], 1.0 - float(r["distance"])) for r in rows]

    def similarities_sync(self, conn, ids: Sequence[int], vector: Sequence[float]) -> dict[int, float]:
        """The cosine similarity of ``vector`` to each of these rows (rows without a vector are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT rowid AS id, vec_distance_cosine(embedding, ?) AS distance FROM {self.table} "
                            f"WHERE rowid IN ({marks})", [vec_blob(vector), *ids]).fetchall()
        return {r["id"]: 1.0 - float(r["distance"]) for r in rows}

    async def nearest(self, db, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        return await db.run_read(lambda conn: self.nearest_sync(conn, vector, k))


async def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is None:
        return
    res = progress(done, total)
    if asyncio.iscoroutine(res):
        await res
