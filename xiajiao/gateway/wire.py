"""A lean HTTP/1.1 client for streamed model replies: keep-alive connections per host, SSE ``data:``.

Why not the pooled ``httpx`` client for the chat stream: measured with py-spy on the bench's
realistic profile, a streamed reply spent ~18 % of the server's Python CPU in
httpx/httpcore/h11/httpx-sse/anyio (request model, cookie jar, header validation, the pool's
idle checks, one ``ServerSentEvent`` object per line). A model stream needs far less: one
request written in one piece, the status and headers parsed once, a chunked or sized body, and
the ``data:`` lines of the event stream. This module does that on an :class:`asyncio.Protocol`.

What it does: HTTP/1.1 keep-alive with an idle pool per client (expired, closed or dirty
connections are dropped), ``chunked``, ``Content-Length`` and read-to-close bodies, gzip/deflate
if a server compresses anyway (none is asked for), TLS with the shared verifying context
(:func:`default_ssl_context`), a connect timeout and a read timeout per wait, one retry on a fresh
connection when a reused one turns out closed before any byte of the answer. What it does not do:
proxies (the ``httpx`` client it replaces was built with its own transport and so ignored the
``*_PROXY`` variables too), HTTP/2, redirects, cookies. Errors are one type,
:class:`StreamClientError`, whose ``kind`` says ``timeout``, ``connect``, ``protocol`` or ``body``.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import zlib
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from .net import default_ssl_context

_MAX_HEAD = 64 * 1024
_PAUSE_AT = 4 * 2 ** 20  # unread bytes at which reading pauses until the consumer catches up


class StreamClientError(Exception):
    """A transport failure: ``kind`` is ``"timeout"``, ``"connect"`` (cannot reach, cut off),
    ``"protocol"`` (not HTTP as expected) or ``"body"`` (a compressed body that does not decompress)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection; bytes pile up in ``data`` until the response reads them."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.idle_since = 0.0

    # protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # used by the response
    def take(self, n: int | None = None) -> bytes:
        """The first ``n`` buffered bytes (all when ``None``), removed from the buffer."""
        if n is None or n >= len(self.data):
            out = bytes(self.data)
            self.data.clear()
        else:
            out = bytes(self.data[:n])
            del self.data[:n]
        if self.paused and len(self.data) < _PAUSE_AT // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return out

    async def more(self, timeout: float | None) -> None:
        """Wait until more bytes arrive; at the end of the connection raise ``connect``."""
        if self.closed:
            raise StreamClientError(f"the server closed the connection ({self.error or 'end of stream'})", "connect")
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
        if waiter.result() is _TIMED_OUT:
            self.waiter = None
            raise StreamClientError(f"no data for {timeout:g} s", "timeout")

    def usable(self, now: float, expiry: float) -> bool:
        return (not self.closed and not self.data and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < expiry)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            try:
                self.transport.abort()
            except RuntimeError:  # its event loop is already closed (a pool outliving a loop): nothing to tell
                pass


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class StreamResponse:
    """The status and headers of an answer; its body through :meth:`read` or :meth:`sse_data`."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str], keepalive: bool, read_timeout: float | None):
        self.status = status
        self.headers = headers  # names in lower case; repeated headers joined with ", "
        self.conn = conn
        self.keepalive = keepalive
        self.read_timeout = read_timeout
        self.complete = False
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = te.rsplit(",", 1)[-1].strip() == "chunked"
        length = "0" if status in (204, 304) else headers.get("content-length")  # answers without a body
        self.remaining: int | None = None
        if status in (204, 304):
            self.chunked = False
        if not self.chunked and length is not None:
            try:
                self.remaining = int(length)
            except ValueError:
                raise StreamClientError(f"bad Content-Length {length!r}", "protocol") from None
            if self.remaining < 0:
                raise StreamClientError(f"bad Content-Length {length!r}", "protocol")
            self.complete = self.remaining == 0
        elif not self.chunked:
            self.keepalive = False  # the body ends when the server closes
        self.chunk_left = 0  # bytes of the current chunk still to come (chunked bodies)
        self.chunk_state = "size"  # size | data | crlf | trailer
        coding = headers.get("content-encoding", "").strip().lower()
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS) \
            if coding in ("gzip", "x-gzip", "deflate") else None

    async def _parts(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in (all that is buffered at once)."""
        conn = self.conn
        while not self.complete:
            piece, progressed = b"", False
            if conn.data:
                size = len(conn.data)
                if self.chunked:
                    piece = self._dechunk()
                elif self.remaining is not None:
                    piece = conn.take(self.remaining)
                    self.remaining -= len(piece)
                    self.complete = self.remaining == 0
                else:
                    piece = conn.take()
                progressed = bool(piece) or len(conn.data) != size or self.complete
            if piece:
                if self.inflate is None:
                    yield piece
                    continue
                try:
                    yield self.inflate.decompress(piece)
                except zlib.error as exc:
                    self.keepalive = False
                    raise StreamClientError(f"the body does not decompress ({exc})", "body") from None
            elif self.complete:
                break
            elif not progressed:
                if conn.closed and self.remaining is None and not self.chunked:
                    self.complete = True  # a body delimited by the end of the connection
                    break
                await conn.more(self.read_timeout)

    def _dechunk(self) -> bytes:
        """Every complete piece of chunk data now buffered; advances the chunked state machine."""
        data = self.conn.data
        out = []
        pos = 0
        while True:
            if self.chunk_state == "data":
                n = min(self.chunk_left, len(data) - pos)
                if n == 0:
                    break
                out.append(bytes(data[pos:pos + n]))
                pos += n
                self.chunk_left -= n
                if self.chunk_left == 0:
                    self.chunk_state = "crlf"
                continue
            end = data.find(b"\r\n", pos)
            if end < 0:
                if len(data) - pos > _MAX_HEAD:
                    raise StreamClientError("a chunk header is too long", "protocol")
                break
            line = bytes(data[pos:end])
            pos = end + 2
            if self.chunk_state == "crlf":
                if line:
                    raise StreamClientError("chunk data longer than its size", "protocol")
                self.chunk_state = "size"
            elif self.chunk_state == "size":
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise StreamClientError(f"bad chunk size {line[:40]!r}", "protocol") from None
                if size:
                    self.chunk_left, self.chunk_state = size, "data"
                else:
                    self.chunk_state = "trailer"
            elif not line:  # the blank line after the (usually absent) trailers
                self.complete = True
                break
        del data[:pos]
        if self.complete and data:
            self.keepalive = False  # bytes after the answer: do not reuse
        return b"".join(out)

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([part async for part in self._parts()])

    async def json(self) -> Any:
        return json.loads(await self.read())

    async def sse_data(self) -> AsyncIterator[str]:
        """The ``data`` of each server-sent event (its ``data:`` lines joined by ``\\n``), as the
        ``text/event-stream`` format defines it; comments, ``event:``, ``id:`` and ``retry:`` are read
        and skipped. An event with fields but no ``data:`` yields ``""``."""
        pending = b""
        lines: list[str] = []
        fields = False
        async for part in self._parts():
            pending += part
            if b"\r" in pending:  # CRLF or CR line ends; a lone CR at the end may be the first half of a CRLF
                keep_cr = pending.endswith(b"\r")
                pending = pending[:-1] if keep_cr else pending
                pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep_cr else b"")
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            block, pending = pending[:cut], pending[cut + 1:]
            for raw in block.split(b"\n"):
                if not raw:
                    if fields:
                        yield "\n".join(lines)
                        lines, fields = [], False
                    continue
                if raw.startswith(b"data:"):
                    value = raw[5:]
                    lines.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))
                    fields = True
                elif raw.startswith(b":"):
                    continue
                else:
                    name = raw.split(b":", 1)[0]
                    if name in (b"event", b"id", b"retry"):
                        fields = True


class _Exchange:
    """``async with client.open(...) as response``: the connection goes back to the pool when the
    body was read to its end, and is closed otherwise (a stop, an error, a cancelled task)."""

    def __init__(self, client: "StreamClient", method: str, path: str, body: bytes | None,
                 headers: dict[str, str] | None, connect_timeout: float | None, read_timeout: float | None):
        self.client, self.method, self.path, self.body = client, method, path, body
        self.headers, self.connect_timeout, self.read_timeout = headers, connect_timeout, read_timeout
        self.response: StreamResponse | None = None
        self.conn: _Conn | None = None

    async def __aenter__(self) -> StreamResponse:
        client = self.client
        head = client.request_head(self.method, self.path, self.body, self.headers)
        for attempt in (0, 1):
            conn, reused = await client.acquire(self.connect_timeout)
            self.conn = conn
            try:
                assert conn.transport is not None
                conn.transport.write(head + self.body if self.body else head)
                self.response = await _read_head(conn, self.read_timeout)
                return self.response
            except StreamClientError as exc:
                conn.close()
                if not (reused and attempt == 0 and exc.kind == "connect" and not conn.data):
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def __aexit__(self, *exc: Any) -> None:
        response, conn = self.response, self.conn
        if conn is None:
            return
        if response is not None and response.complete and response.keepalive and exc[0] is None:
            self.client.release(conn)
        else:
            conn.close()


async def _read_head(conn: _Conn, timeout: float | None) -> StreamResponse:
    while True:  # informational (1xx) answers are skipped
        while True:
            end = conn.data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(conn.data) > _MAX_HEAD:
                raise StreamClientError("the response head is too long", "protocol")
            await conn.more(timeout)
        lines = conn.take(end + 4)[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise StreamClientError(f"not an HTTP/1.1 response: {lines[0][:60]!r}", "protocol")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise StreamClientError(f"bad header line {line[:60]!r}", "protocol")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200 and status != 101:
            continue
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keepalive = "close" not in tokens if parts[0] == "HTTP/1.1" else "keep-alive" in tokens
        return StreamResponse(conn, status, headers, keepalive, timeout)


class StreamClient:
    """One base URL's connections (see the module docstring)."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, max_keepalive: int = 50,
                 keepalive_expiry: float = 5.0, ssl_context: ssl.SSLContext | None = None):
        url = urlsplit(base_url.rstrip("/"))
        # a wrong base URL fails each request as a connection error (as it did through httpx), not the start
        try:
            port = url.port
        except ValueError:
            port = None
            url = urlsplit("")
        self.invalid = "" if url.scheme in ("http", "https") and url.hostname else f"not an http(s) URL: {base_url!r}"
        self.tls = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = port or (443 if self.tls else 80)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        authority = shown if port is None or port == (443 if self.tls else 80) else f"{shown}:{port}"
        self.prefix = url.path
        base = {"Host": authority, "Accept": "*/*", "User-Agent": "xiajiao", **(headers or {})}
        self.base_headers = {k.lower(): (k, v) for k, v in base.items()}
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.idle: list[_Conn] = []
        self.closed = False
        self.ssl_context = ssl_context  # None: the shared verifying context

    def request_head(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
        fields = dict(self.base_headers)
        for k, v in (headers or {}).items():
            fields[k.lower()] = (k, v)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            fields["content-length"] = ("Content-Length", str(len(body or b"")))
        lines = [f"{method} {self.prefix}{path} HTTP/1.1"]
        for name, value in fields.values():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} has a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def acquire(self, timeout: float | None) -> tuple[_Conn, bool]:
        if self.closed or self.invalid:
            raise StreamClientError(self.invalid or "the client is closed", "connect")
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.loop is loop and conn.usable(now, self.keepalive_expiry):
                return conn, True
            conn.close()
        conn = _Conn(loop)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, self.host, self.port,
                                             ssl=(self.ssl_context or default_ssl_context()) if self.tls else None,
                                             server_hostname=self.host if self.tls else None)
        except TimeoutError:
            conn.close()
            raise StreamClientError(f"connecting to {self.host}:{self.port} timed out", "timeout") from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS verification failed
            conn.close()
            raise StreamClientError(f"cannot connect to {self.host}:{self.port}: {exc}", "connect") from exc
        return conn, False

    def release(self, conn: _Conn) -> None:
        if self.closed or len(self.idle) >= self.max_keepalive or conn.data or conn.closed:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self.idle.append(conn)

    def open(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
             connect_timeout: float | None = None, read_timeout: float | None = None) -> _Exchange:
        """``async with client.open("POST", "/x", body=...) as response``; ``read_timeout`` bounds each
        wait for the answer's bytes (the head included)."""
        return _Exchange(self, method, path, body, headers, connect_timeout, read_timeout)

    async def aclose(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.pop().close()


def stream_client(base_url: str, *, headers: dict[str, str] | None = None) -> StreamClient:
    """A :class:`StreamClient` for a provider's base URL (see the module docstring)."""
    return StreamClient(base_url, headers=headers)
