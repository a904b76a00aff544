"""A pooled ``httpx`` client for model providers, on a plain-asyncio network backend.

httpcore's default (anyio) backend answers "is this idle connection still usable?" by
building a dict of socket attributes and polling the socket, for every idle connection,
several times per request: ~1 ms of CPU per streamed reply at 10 concurrent streams. The
asyncio stream already knows (buffered data or EOF), so this backend answers for free.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Iterable

import httpcore
import httpx

from .net import default_ssl_context


class _Reader(asyncio.StreamReader):
    """A StreamReader that counts the bytes waiting unread (asyncio offers no public probe)."""

    pending = 0

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]
        self.pending += len(data)
        super().feed_data(data)

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        self.pending -= len(data)
        return data


async def _open(connect, limit: int = 2 ** 20) -> tuple[_Reader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with a :class:`_Reader` (``connect(factory)`` makes the transport)."""
    loop = asyncio.get_running_loop()
    reader = _Reader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await connect(lambda: protocol)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> "_Stream":
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection with data or EOF waiting is not reusable
            return self._reader.pending > 0 or self._reader.at_eof()
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable | None = None) -> _Stream:
        try:
            async with asyncio.timeout(timeout):
                loop = asyncio.get_running_loop()
                reader, writer = await _open(lambda factory: loop.create_connection(
                    factory, host, port, local_addr=(local_address, 0) if local_address else None))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> _Stream:
        try:
            async with asyncio.timeout(timeout):
                loop = asyncio.get_running_loop()
                reader, writer = await _open(lambda factory: loop.create_unix_connection(factory, path))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def pooled_client(base_url: str, *, headers: dict[str, str] | None = None, max_connections: int = 200,
                  max_keepalive: int = 50) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connection pool runs on :class:`AsyncioBackend`."""
    transport = httpx.AsyncHTTPTransport(verify=default_ssl_context(),
                                         limits=httpx.Limits(max_connections=max_connections,
                                                             max_keepalive_connections=max_keepalive))
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.AsyncConnectionPool):  # no public hook for the backend; keep httpx's default otherwise
        transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
            ssl_context=pool._ssl_context, max_connections=max_connections,  # noqa: SLF001
            max_keepalive_connections=max_keepalive, keepalive_expiry=5.0, network_backend=AsyncioBackend())
    return httpx.AsyncClient(base_url=base_url, headers=headers or {}, transport=transport)
