"""A minimal keep-alive HTTP/1.1 GET client on asyncio streams.

Latency figures should be the server's, not the client library's: httpx spends about a
millisecond of Python per request on this machine, this client a few tens of microseconds.
Only what the benchmarks need: GET, ``Content-Length`` or chunked bodies, JSON.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode


class RawClient:
    def __init__(self, host: str, port: int, cookies: dict[str, str]):
        self.host, self.port = host, port
        self.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str, params: dict | None = None) -> tuple[int, object]:
        if self.writer is None:
            await self._connect()
        target = path + ("?" + urlencode(params) if params else "")
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nCookie: {self.cookie}\r\n"
                          f"Accept: application/json\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            self.writer = None
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, (json.loads(body) if body else None)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
