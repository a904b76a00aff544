"""Running document parsers within limits, where a hostile file cannot take the server down.

A parser marked ``isolate=True`` (container formats: PDF, DOCX …) runs in a short-lived worker
process with a cap on its memory and time; a parser that blows either fails its document with
a reason, the server is untouched. Every parser gets the limits of :func:`parse_limits` (entries,
inflated bytes, compression ratio, pages) to check before it inflates anything, and its text is
refused beyond ``parse_max_chars`` characters. :func:`guard_zip` checks a ZIP container.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import multiprocessing
import os
import zipfile
from dataclasses import dataclass
from typing import Any

_MB = 1024 * 1024


@dataclass(frozen=True)
class ParseLimits:
    max_chars: int = 5_000_000
    max_inflated_bytes: int = 200 * _MB
    max_entries: int = 2000
    max_ratio: float = 100.0
    max_pages: int = 2000
    memory_bytes: int = 512 * _MB
    timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> "ParseLimits":
        return cls(max_chars=settings.parse_max_chars, max_inflated_bytes=settings.parse_max_inflated_bytes,
                   max_entries=settings.parse_max_entries, max_ratio=settings.parse_max_ratio,
                   max_pages=settings.parse_max_pages, memory_bytes=settings.parse_memory_mb * _MB,
                   timeout=settings.parse_timeout)


_LIMITS: contextvars.ContextVar[ParseLimits] = contextvars.ContextVar("xiajiao_parse_limits", default=ParseLimits())  # noqa: B039 (frozen)


def parse_limits() -> ParseLimits:
    """The limits of the document being parsed (for a parser to check before it inflates anything)."""
    return _LIMITS.get()


def guard_zip(data: bytes, limits: ParseLimits | None = None, kind: str = "archive") -> None:
    """Refuse a ZIP container (DOCX, XLSX …) that would inflate beyond the limits, with ValueError.

    The sizes checked are the ones declared in the central directory; Python's zipfile never
    inflates an entry past its declared size, so the check holds while reading too.
    """
    limits = limits or parse_limits()
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValueError(f"the {kind} cannot be read ({exc.__class__.__name__}: {exc})") from None
    if len(entries) > limits.max_entries:
        raise ValueError(f"the archive holds {len(entries)} entries, more than the limit of {limits.max_entries}")
    inflated = sum(e.file_size for e in entries)
    if inflated > limits.max_inflated_bytes:
        raise ValueError(f"the archive inflates to {inflated} bytes, more than the limit of "
                         f"{limits.max_inflated_bytes}")
    for e in entries:
        if e.file_size > 1024 * 1024 and e.file_size > limits.max_ratio * max(1, e.compress_size):
            raise ValueError(f"the archive entry {e.filename!r} is compressed {e.file_size // max(1, e.compress_size)}"
                             f" to 1, more than the limit of {limits.max_ratio:g} (a zip bomb?)")


def _check_text(text: Any, limits: ParseLimits) -> str:
    if isinstance(text, str):
        if len(text) > limits.max_chars:
            raise ValueError(f"the document has more than {limits.max_chars} characters of text")
        # NULs and lone surrogates cannot be indexed (nor encoded): drop them
        text = text.replace("\x00", "")
        if not text.isascii():
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _call(fn: Any, data: bytes, name: str, limits: ParseLimits) -> str:
    _LIMITS.set(limits)
    return _check_text(fn(data, name), limits)


def _worker(conn: Any, fn: Any, data: bytes, name: str, limits: ParseLimits) -> None:
    """The worker process: cap its address space, parse, send back ("ok", text) or ("error", reason)."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        current = 0
    cap = current + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        conn.send(("ok", _call(fn, data, name, limits)))
    except ValueError as exc:
        conn.send(("error", str(exc)))
    except MemoryError:
        conn.send(("error", f"parsing the document needs more than {limits.memory_bytes // _MB} MB of memory"))
    except Exception as exc:  # the parser broke on this file: that is the document's failure, not ours
        conn.send(("error", f"the document cannot be read ({exc.__class__.__name__}: {exc})"))
    finally:
        conn.close()


_context: Any = None


def _mp_context(preload: list[str]) -> Any:
    # forkserver: the worker is forked from a small clean process, never from the threaded server
    global _context
    if _context is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        _context = multiprocessing.get_context(method)
        if method == "forkserver":
            _context.set_forkserver_preload(preload)
    return _context


def _run_isolated(fn: Any, data: bytes, name: str, limits: ParseLimits) -> str:
    ctx = _mp_context([m for m in (getattr(fn, "__module__", None),) if m and m != "__main__"])
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_worker, args=(child, fn, data, name, limits), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(limits.timeout):
            raise ValueError(f"parsing the document took longer than {limits.timeout:g} s")
        try:
            status, value = parent.recv()
        except EOFError:
            process.join(5)
            raise ValueError(f"the parser stopped on this document (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()
    if status != "ok":
        raise ValueError(value)
    return value


async def parse_document(app: Any, parser: Any, data: bytes, name: str) -> str:
    """The text of a document by ``parser``, within the limits; ValueError with a reason otherwise."""
    limits = ParseLimits.from_settings(app.settings)
    if inspect.iscoroutinefunction(parser.parse):
        token = _LIMITS.set(limits)
        try:
            return _check_text(await parser.parse(data, name), limits)
        finally:
            _LIMITS.reset(token)
    if getattr(parser, "isolate", False):
        return await asyncio.to_thread(_run_isolated, parser.parse, data, name, limits)
    return await asyncio.to_thread(_call, parser.parse, data, name, limits)  # CPU work off the event loop
