"""The one module that talks to SQLite.

It picks a sqlite3 module that can load sqlite-vec (stdlib ``sqlite3`` where the
Python build allows extensions, else the drop-in ``sqlean``), opens connections
with WAL and the vector extension, and wraps them in :class:`Database`: one
writer connection (writes are serialized), a few reader connections (reads run
concurrently), numbered append-only migrations, rows as plain dicts.
Everything else in Xiajiao uses this module and never imports a sqlite module.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import queue
import re
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from ..errors import StartupError

log = logging.getLogger("xiajiao.db")
T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def _vec_extension() -> str:
    """The sqlite-vec loadable extension's path, found without importing the ``sqlite_vec`` package
    (which imports numpy: ~0.1 s and ~15 MB at start for a helper we do not use)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.origin:
        raise StartupError("sqlite-vec is not installed; run: pip install sqlite-vec")
    return os.path.join(os.path.dirname(spec.origin), "vec0")


def _load_vec(conn) -> None:
    conn.load_extension(_vec_extension())


@functools.lru_cache(maxsize=1)
def sqlite_module():
    """The sqlite3-compatible module used everywhere: stdlib if it can load extensions."""
    import sqlite3

    try:
        conn = sqlite3.connect(":memory:")
        conn.enable_load_extension(True)
        _load_vec(conn)
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        conn.close()
        return sqlite3
    except Exception:  # any failure means this build cannot serve us; try the drop-in
        import sqlean

        return sqlean


def _mod():
    return sqlite_module()


# Exception classes of whichever module is in use; catch these, never sqlite3's.
class _ErrorProxy:
    def __getattr__(self, name: str):
        return getattr(_mod(), name)


errors = _ErrorProxy()


def dict_row(cursor, row):
    return {d[0]: v for d, v in zip(cursor.description, row)}


def connect_sync(path: str | Path, *, readonly: bool = False, on_connect: Callable | None = None,
                 label: str = ""):
    """Open one configured connection (extension loaded, WAL, foreign keys)."""
    mod = _mod()
    conn = mod.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = dict_row
    conn.enable_load_extension(True)
    _load_vec(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-16000")
    conn.execute("PRAGMA temp_store=MEMORY")
    # Read large files (vector tables: a nearest-neighbour search reads every vector) through the
    # page cache mapping instead of a read() per page: ~30% faster scans.
    conn.execute("PRAGMA mmap_size=268435456")
    if on_connect is not None:
        on_connect(conn, label or Path(str(path)).name)
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def versions() -> dict[str, str]:
    conn = connect_sync(":memory:")
    try:
        row = conn.execute("SELECT sqlite_version() AS sqlite, vec_version() AS vec").fetchone()
    finally:
        conn.close()
    return {"driver": _mod().__name__, "sqlite": row["sqlite"], "sqlite_vec": row["vec"]}


def vec_blob(vector: Sequence[float]) -> bytes:
    """A vector as a little-endian float32 blob, the form sqlite-vec stores."""
    return struct.pack(f"<{len(vector)}f", *vector)


def vec_unblob(blob: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


# ---------------------------------------------------------------- migrations

Migration = tuple[int, str, str | Callable[[Any], None]]


class DatabaseClosed(RuntimeError):
    """Work arrived for a database after it was closed (the app is stopping)."""


class MigrationError(StartupError):
    """A migration failed and was rolled back."""


_MIGRATION_FILE = re.compile(r"^(\d{4})_([\w-]+)\.sql$")


def migrations_from_dir(folder: str | Path) -> list[Migration]:
    """Numbered ``NNNN_name.sql`` files of a folder, in order."""
    found: list[Migration] = []
    for p in sorted(Path(folder).iterdir()):
        m = _MIGRATION_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), m.group(2), p.read_text(encoding="utf-8")))
    return found


def _apply_migrations(conn, migrations: Sequence[Migration], label: str) -> list[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {r["id"] for r in conn.execute("SELECT id FROM _migrations")}
    known = {m[0] for m in migrations}
    newer = sorted(done - known)
    if newer and max(newer) > max(known, default=0):
        raise StartupError(
            f"{label} was written by a newer Xiajiao (migration {max(newer)} is unknown here); "
            "upgrade Xiajiao or restore a backup of the database."
        )
    applied = []
    for number, name, body in sorted(migrations, key=lambda m: m[0]):
        if number in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if callable(body):
                body(conn)
            else:
                for statement in _split_sql(body):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)",
                (number, name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise MigrationError(f"{label}: migration {number:04d}_{name} failed ({exc}); nothing of it was applied.") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(number)
    return applied


def _split_sql(script: str) -> Iterable[str]:
    """Split a migration script into statements (uses SQLite's own completeness test)."""
    mod = _mod()
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if mod.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip():
        yield buf


def pending_migrations(conn, migrations: Sequence[Migration]) -> list[int]:
    try:
        done = {r["id"] for r in conn.execute("SELECT id FROM _migrations")}
    except _mod().OperationalError:
        done = set()
    return [m[0] for m in migrations if m[0] not in done]


# ---------------------------------------------------------------- database


_workers: "weakref.WeakSet[_Worker]" = weakref.WeakSet()


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Worker:
    """One thread running submitted functions in order; results come back through
    ``call_soon_threadsafe``. A hop costs about half of ``run_in_executor``'s (no concurrent
    future, no lock per item, no chained futures): ~40 against ~85 µs of CPU here, and a turn
    makes about twenty (docs/benchmarks.md)."""

    def __init__(self, name: str):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()
        _workers.add(self)

    def _loop(self) -> None:
        get = self.queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, future, fn, arg = item
            if future.cancelled():  # as an executor does: work not started when its caller gave up is skipped
                continue
            result, error = None, None
            try:
                result = fn(arg)
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def submit(self, fn: Callable[[Any], T], arg: Any) -> "asyncio.Future[T]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put((loop, future, fn, arg))
        return future

    def shutdown(self) -> None:
        self.queue.put(None)


@atexit.register
def _finish_workers() -> None:
    """At exit, queued work still runs (as an executor's threads are joined), then the threads end."""
    workers = list(_workers)
    for w in workers:
        w.shutdown()
    for w in workers:
        if w.thread is not threading.current_thread():
            w.thread.join(timeout=30)


class Connection:
    """One SQLite connection and the one thread that runs all its work, in submission order.

    Work is a plain function of the sync connection, so a whole transaction costs one
    thread hop. (A thread of our own instead of aiosqlite's: no private attributes.)
    """

    def __init__(self, connector: Callable[[], Any]):
        self._connector = connector
        self._worker = _Worker("xiajiao-db")
        self._conn: Any = None

    async def open(self) -> "Connection":
        try:
            self._conn = await self.run(lambda _: self._connector())
        except BaseException:
            self._worker.shutdown()
            raise
        return self

    async def run(self, fn: Callable[[Any], T]) -> T:
        return await self._worker.submit(fn, self._conn)

    async def close(self) -> None:
        try:
            if self._conn is not None:
                await self.run(lambda conn: conn.close())
        finally:
            self._conn = None
            self._worker.shutdown()


@dataclass
class WriteResult:
    lastrowid: int | None
    rowcount: int


class Database:
    """One SQLite file: a serialized writer and concurrent readers, in threads.

    Work is handed to the connection threads as plain functions of a sync
    connection (``run_write`` / ``run_read``), so a whole transaction costs one
    thread hop.
    """

    def __init__(self, path: str | Path, *, label: str | None = None,
                 migrations: Sequence[Migration] = (), readers: int = 2,
                 skip_migrations: bool = False, on_connect: Callable | None = None):
        self.path = Path(path)
        self.on_connect = on_connect
        self.label = label or self.path.name
        self.migrations = list(migrations)
        self.reader_count = max(1, readers)
        self.skip_migrations = skip_migrations
        self._writer: Connection | None = None
        self._readers: list[Connection] = []
        self._next_reader = itertools.count()
        self.last_used = time.monotonic()
        self._open_lock = asyncio.Lock()
        self._shut = False  # closed on purpose: late work must not quietly reopen it
        self._in_use = 0  # operations running now: an idle close waits for none

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> "Database":
        async with self._open_lock:
            self._shut = False
            if self._writer is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = Connection(functools.partial(
                connect_sync, self.path, on_connect=self.on_connect, label=self.label))
            try:
                await writer.open()
            except Exception as exc:
                raise StartupError(f"cannot open {self.path}: {exc}") from exc
            try:
                await writer.run(self._prepare_writer)
            except BaseException as exc:
                await writer.close()
                if isinstance(exc, _mod().DatabaseError) and not isinstance(exc, MigrationError):
                    raise StartupError(
                        f"{self.path} cannot be used ({exc}); it may be corrupt. "
                        "Move it aside or restore a backup; it was left untouched."
                    ) from exc
                raise
            readers = []
            for _ in range(self.reader_count):
                r = Connection(functools.partial(
                    connect_sync, self.path, readonly=True, on_connect=self.on_connect, label=self.label))
                await r.open()
                readers.append(r)
            self._writer, self._readers = writer, readers
            self.last_used = time.monotonic()
            return self

    def _prepare_writer(self, conn) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(next(iter(mode.values()))).lower() != "wal":
            raise StartupError(f"{self.path}: cannot switch to WAL mode")
        if self.skip_migrations:
            missing = pending_migrations(conn, self.migrations)
            if missing:
                raise StartupError(
                    f"{self.label} lacks migrations {missing} and XIAJIAO_SKIP_MIGRATIONS is on; "
                    "start once without it."
                )
        else:
            applied = _apply_migrations(conn, self.migrations, str(self.path))
            if applied:
                log.info("migrated", extra={"db": self.label, "applied": applied})

    async def close(self, *, final: bool = True) -> bool:
        """Close every connection. ``final=False`` (an idle close) lets the next use reopen it,
        and does nothing while an operation runs (returns whether it closed)."""
        async with self._open_lock:
            if not final and self._in_use:
                return False
            self._shut = final
            conns = ([self._writer] if self._writer else []) + self._readers
            self._writer, self._readers = None, []
            for c in conns:
                try:
                    await c.close()
                except Exception:  # closing must go on for the other connections
                    log.exception("closing %s", self.label)
            return True

    @contextlib.asynccontextmanager
    async def _use(self):
        """Open (again, after an idle close) and keep open while the operation runs."""
        if self._writer is None:
            if self._shut:
                raise DatabaseClosed(f"{self.label} is closed")
            await self.open()
        writer = self._writer
        if writer is None:  # closed for good while it opened
            raise DatabaseClosed(f"{self.label} is closed")
        self._in_use += 1  # no await since the check above: an idle close cannot slip in between
        try:
            yield writer
        finally:
            self._in_use -= 1
            self.last_used = time.monotonic()

    # -- running work in the connection threads

    async def run_write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on the writer inside one transaction (committed, or rolled back on error)."""

        def tx(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._use() as writer:
            # the function runs in the writer's own thread, in queue order
            return await writer.run(tx)

    async def run_read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on one of the read connections."""
        async with self._use():
            reader = self._readers[next(self._next_reader) % len(self._readers)]
            return await reader.run(fn)

    # -- conveniences

    async def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> WriteResult:
        def work(conn):
            cur = conn.execute(sql, params)
            return WriteResult(cur.lastrowid, cur.rowcount)

        return await self.run_write(work)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        return await self.run_write(lambda conn: conn.executemany(sql, rows).rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] | dict = ()) -> list[dict]:
        return await self.run_read(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict = ()) -> dict | None:
        return await self.run_read(lambda conn: conn.execute(sql, params).fetchone())

    async def fetchval(self, sql: str, params: Sequence[Any] | dict = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))

    async def check_writable(self, busy_ms: int = 500) -> None:
        """Take the write lock and write (a no-op update); raises when the file cannot be written."""

        def probe(conn):
            conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE _migrations SET name = name WHERE id = (SELECT MAX(id) FROM _migrations)")
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("PRAGMA busy_timeout=30000")

        async with self._use() as writer:
            await writer.run(probe)


class WorkspaceDatabases:
    """The per-agent databases under ``data/workspaces/<agent_id>/``: opened on first use,
    closed after ``idle_seconds`` without use."""

    def __init__(self, root: Path, *, idle_seconds: float, readers: int = 1, skip_migrations: bool = False,
                 on_connect: Callable | None = None):
        self.root = Path(root)
        self.on_connect = on_connect
        self.idle_seconds = idle_seconds
        self.readers = readers
        self.skip_migrations = skip_migrations
        self._open: dict[tuple[str, str], Database] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None

    def folder(self, agent_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", agent_id or ""):
            raise ValueError(f"invalid agent id {agent_id!r}")
        return self.root / agent_id

    async def get(self, agent_id: str, filename: str, migrations: Sequence[Migration] = ()) -> Database:
        # One Database object per file for good: an idle close only closes its connections, and
        # the object reopens on its next use, so two writers never hold one file.
        key = (agent_id, filename)
        db = self._open.get(key)
        if db is None or not db.is_open:
            async with self._lock:
                db = self._open.get(key)
                if db is not None and not db.is_open:
                    await db.open()
                elif db is None:
                    db = Database(self.folder(agent_id) / filename, label=f"{agent_id}/{filename}",
                                  migrations=migrations, readers=self.readers,
                                  skip_migrations=self.skip_migrations, on_connect=self.on_connect)
                    await db.open()
                    self._open[key] = db
        db.last_used = time.monotonic()
        return db

    def open_count(self) -> int:
        return sum(1 for db in self._open.values() if db.is_open)

    async def close_idle(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        closed = 0
        async with self._lock:
            for db in self._open.values():
                if db.is_open and now - db.last_used >= self.idle_seconds and await db.close(final=False):
                    closed += 1
        return closed

    async def close_agent(self, agent_id: str) -> None:
        async with self._lock:
            for key in [k for k in self._open if k[0] == agent_id]:
                await self._open.pop(key).close()

    def start(self) -> None:
        async def reap():
            while True:
                await asyncio.sleep(max(0.05, min(self.idle_seconds / 2, 30)))
                await self.close_idle()

        self._reaper = asyncio.get_running_loop().create_task(reap())

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        async with self._lock:
            for db in self._open.values():
                await db.close()
            self._open.clear()
