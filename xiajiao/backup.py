"""Backups of a data dir: one archive with a manifest, made while the server serves.

Every SQLite file is copied through SQLite's online backup API (a consistent snapshot even while
another connection writes); every other file (SOUL.md, agent.json, uploads) is copied as it is.
The archive is a gzip-compressed tar whose first member is ``manifest.json``:

    {"format": "xiajiao-backup", "formatVersion": 1, "version": "0.1.0", "createdAt": "...",
     "databases": {"xiajiao.db": {"migrations": [1, 10]}, ...},
     "files": [{"path": "xiajiao.db", "size": 123, "sha256": "..."}, ...]}

A restore verifies every checksum and the schema before anything is moved into place, and only
restores into an empty (or absent) data dir.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from . import __version__
from .db.driver import connect_sync, migrations_from_dir
from .errors import XiajiaoError

FORMAT = "xiajiao-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAIN_DB = "xiajiao.db"
BACKUPS_DIR = "backups"  # inside the data dir: never part of a backup itself
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal")
MAIN_MIGRATIONS = Path(__file__).parent / "db" / "migrations"


class BackupError(XiajiaoError):
    status = 400
    code = "backup_failed"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _walk(data_dir: Path):
    """Every file of the data dir worth keeping, as (absolute path, archive name)."""
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d != BACKUPS_DIR]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_SKIP_SUFFIXES) or name.startswith(".xiajiao-"):
                continue
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path, (rel_root / name).as_posix()


def _db_migrations(path: Path) -> list[int]:
    conn = connect_sync(path, readonly=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='_migrations'").fetchone()
        return [r["id"] for r in conn.execute("SELECT id FROM _migrations ORDER BY id")] if has else []
    finally:
        conn.close()


def _snapshot(src: Path, dst: Path) -> None:
    """A consistent copy of one SQLite file, taken while others may be writing to it."""
    source = connect_sync(src, readonly=True)
    target = connect_sync(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def backup_name(when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.UTC)
    return when.strftime("xiajiao-backup-%Y%m%d-%H%M%S.tar.gz")


def create_backup(data_dir: str | Path, dest: str | Path) -> dict:
    """Write a backup of ``data_dir`` to ``dest`` (a file, or a folder to put a dated file in).

    Returns the manifest plus ``path`` and ``bytes``. Runs in the calling thread: the server
    calls it through ``asyncio.to_thread``. On any failure no partial archive is left behind.
    """
    data_dir = Path(data_dir)
    if not (data_dir / MAIN_DB).is_file():
        raise BackupError(f"No Xiajiao database in {data_dir} (expected {MAIN_DB})", code="backup_no_data")
    dest = Path(dest)
    if dest.is_dir() or str(dest).endswith(os.sep):
        dest = dest / backup_name()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where the folder should be, no permission
        raise BackupError(f"The backup folder {dest.parent} cannot be used: {exc.strerror or exc}",
                          code="backup_folder") from None
    partial = dest.with_name(dest.name + ".partial")
    manifest: dict = {"format": FORMAT, "formatVersion": FORMAT_VERSION, "version": __version__,
                      "createdAt": _now(), "databases": {}, "files": []}
    try:
        with tempfile.TemporaryDirectory(prefix=".xiajiao-backup-", dir=dest.parent) as stage_dir:
            stage = Path(stage_dir)
            entries: list[tuple[Path, str]] = []
            for path, name in _walk(data_dir):
                if _is_sqlite(path):
                    copy = stage / f"{len(entries)}.db"
                    _snapshot(path, copy)
                    manifest["databases"][name] = {"migrations": _db_migrations(copy)}
                    path = copy
                entries.append((path, name))
                manifest["files"].append({"path": name, "size": path.stat().st_size, "sha256": _sha256(path)})
            body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
            with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(body), int(_dt.datetime.now().timestamp())
                tar.addfile(info, io.BytesIO(body))
                for path, name in entries:
                    tar.add(path, arcname=name, recursive=False)
        os.replace(partial, dest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise BackupError(f"No space left for the backup at {dest.parent}", code="backup_no_space") from None
        raise BackupError(f"The backup could not be written to {dest}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    manifest["path"] = str(dest)
    manifest["bytes"] = dest.stat().st_size
    return manifest


def read_manifest(archive: str | Path) -> dict:
    """The manifest of an archive, checked for its format; raises BackupError on anything else."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST or not member.isfile():
                raise BackupError("Not a Xiajiao backup (manifest.json missing)", code="backup_invalid")
            f = tar.extractfile(member)
            manifest = json.loads(f.read()) if f else None
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"The archive is corrupt or truncated: {exc}", code="backup_corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("Not a Xiajiao backup (unknown manifest)", code="backup_invalid")
    if manifest.get("formatVersion", 0) > FORMAT_VERSION:
        raise BackupError("The archive was made by a newer Xiajiao (backup format "
                          f"{manifest.get('formatVersion')})", code="backup_newer")
    return manifest


def _check_schema(manifest: dict) -> None:
    known = {m[0] for m in migrations_from_dir(MAIN_MIGRATIONS)}
    have = set((manifest.get("databases") or {}).get(MAIN_DB, {}).get("migrations") or [])
    newer = sorted(have - known)
    if newer:
        raise BackupError(f"The archive's database schema is newer than this Xiajiao {__version__} "
                          f"(migrations {newer} unknown here); upgrade Xiajiao first", code="backup_newer")


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(p.name != ".gitkeep" for p in folder.iterdir())


def restore_backup(archive: str | Path, data_dir: str | Path) -> dict:
    """Restore ``archive`` into an empty ``data_dir``. Nothing is changed unless every check passes."""
    data_dir = Path(data_dir)
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"No such archive: {archive}", code="backup_not_found")
    if not _empty(data_dir):
        raise BackupError(f"The data dir {data_dir} is not empty; restore only into an empty folder",
                          code="restore_not_empty")
    manifest = read_manifest(archive)
    _check_schema(manifest)
    expected = {f["path"]: f for f in manifest.get("files", [])}
    if MAIN_DB not in expected:
        raise BackupError("The archive holds no main database", code="backup_invalid")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".xiajiao-restore-", dir=data_dir.parent))
    try:
        seen: set[str] = set()
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if member.name == MANIFEST:
                        continue
                    name = member.name
                    parts = Path(name).parts
                    if (not member.isfile() or name.startswith("/") or ".." in parts or name not in expected
                            or name in seen):
                        raise BackupError(f"Unexpected entry in the archive: {name!r}", code="backup_invalid")
                    target = stage / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None  # a regular file always has a stream
                    with open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    seen.add(name)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise BackupError(f"The archive is corrupt or truncated: {exc}", code="backup_corrupt") from None
        missing = sorted(set(expected) - seen)
        if missing:
            raise BackupError(f"The archive is truncated: {len(missing)} files missing ({missing[0]} …)",
                              code="backup_corrupt")
        for name, entry in expected.items():
            path = stage / name
            if path.stat().st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
                raise BackupError(f"Checksum mismatch for {name}: the archive is damaged",
                                  code="backup_checksum")
        if not _empty(data_dir):  # someone wrote there while we verified
            raise BackupError(f"The data dir {data_dir} is not empty", code="restore_not_empty")
        data_dir.mkdir(parents=True, exist_ok=True)
        for child in stage.iterdir():
            os.replace(child, data_dir / child.name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BackupError(f"No space left to restore into {data_dir}", code="backup_no_space") from None
        raise BackupError(f"The restore failed: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"restored": len(expected), "version": manifest.get("version"), "createdAt": manifest.get("createdAt"),
            "dataDir": str(data_dir)}


def list_backups(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("xiajiao-backup-*.tar.gz"), reverse=True):
        st = p.stat()
        out.append({"name": p.name, "bytes": st.st_size,
                    "createdAt": _dt.datetime.fromtimestamp(st.st_mtime, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return out


def prune_backups(folder: str | Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest dated archives in ``folder``; returns the names removed."""
    if keep <= 0:
        return []
    removed = []
    for entry in list_backups(folder)[keep:]:
        (Path(folder) / entry["name"]).unlink(missing_ok=True)
        removed.append(entry["name"])
    return removed


class Backups:
    """The server's backups: on demand (owner) and every ``backup_interval_hours``, with retention."""

    def __init__(self, core):
        self.core = core
        settings = core.settings
        self.folder = Path(settings.backup_dir).expanduser() if settings.backup_dir else core.data_dir / BACKUPS_DIR
        self.last: dict | None = None
        self._lock = None

    async def run(self) -> dict:
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one backup at a time; a second request waits for the first
            name = backup_name()
            n = 1
            while (self.folder / name).exists():
                name = backup_name().replace(".tar.gz", f"-{n}.tar.gz")
                n += 1
            manifest = await asyncio.to_thread(create_backup, self.core.data_dir, self.folder / name)
            await asyncio.to_thread(prune_backups, self.folder, self.core.settings.backup_keep)
        self.last = {"name": name, "createdAt": manifest["createdAt"], "bytes": manifest["bytes"], "ok": True}
        return manifest

    async def loop(self) -> None:
        """Back up every interval, starting one interval after start; failures are logged, not fatal."""
        import asyncio
        import logging

        hours = self.core.settings.backup_interval_hours
        if hours <= 0:
            return
        log = logging.getLogger("xiajiao.backup")
        while True:
            await asyncio.sleep(hours * 3600)
            try:
                manifest = await self.run()
                log.info("backup written", extra={"path": manifest["path"], "bytes": manifest["bytes"]})
            except BackupError as exc:
                self.last = {"createdAt": _now(), "ok": False, "error": exc.message}
                log.warning("backup failed: %s", exc.message)
            except Exception as exc:  # an unforeseen failure: logged with its traceback, the next one still runs
                self.last = {"createdAt": _now(), "ok": False, "error": str(exc) or type(exc).__name__}
                log.exception("backup failed")
