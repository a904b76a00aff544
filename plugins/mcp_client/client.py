"""One live connection per MCP server, through the official SDK (``mcp.Client``).

- A server starts on first use (a tool call, or listing its tools) in a background task of its own that
  holds the SDK's session for as long as it lives; calls from turns go through that session.
- Its state is ``stopped``, ``starting``, ``ready`` or ``unhealthy`` (with the last error). A start
  that fails or takes longer than ``mcp_start_timeout``, a call that takes longer than
  ``mcp_call_timeout``, a connection that ends (the process exited) or a malformed answer mark it
  unhealthy; the tool call ends with the reason, and nothing else waits on it.
- A server whose connection ended restarts by itself after a backoff (``mcp_restart_backoff``
  seconds, doubling per failure up to MAX_BACKOFF), at most MAX_AUTO_RESTARTS times in a row; a use
  after that tries again once its backoff has passed.
- Everything stops at shutdown (stdio processes are ended by the SDK: stdin closed, then terminated).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import re
import tempfile
import time
from typing import Any, Callable

from xiajiao import XiajiaoError, check_public_url, parse_allowed_hosts

log = logging.getLogger("xiajiao.mcp_client")

MAX_BACKOFF = 60.0
MAX_AUTO_RESTARTS = 5
STDERR_TAIL = 600  # characters of a stdio server's error output quoted in its last error
TOOL_NAME_MAX = 64  # what every provider accepts: ^[a-zA-Z0-9_-]{1,64}$
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
SDK_MODULES = ("mcp", "mcp.client.stdio", "mcp.client.streamable_http", "httpx2")


class McpFailure(XiajiaoError):
    """A server that could not answer: the tool call ends with this message (the turn goes on)."""

    def __init__(self, message: str, code: str = "mcp_unavailable"):
        super().__init__(message, code, status=502)


def exposed_names(server_id: str, tool_names: list[str], taken: Callable[[str], bool] = lambda n: False) -> dict[str, str]:
    """``mcp_<server>_<tool>`` for each tool name (exposed name -> tool name): letters, digits, ``_``
    and ``-``, at most 64; a name cut short, or already taken, ends in a few hex digits of its hash."""
    out: dict[str, str] = {}
    for tool in tool_names:
        name = f"mcp_{server_id}_{_UNSAFE.sub('_', tool)}"
        if len(name) > TOOL_NAME_MAX or name in out or taken(name):
            tail = "_" + hashlib.sha256(f"{server_id}/{tool}".encode()).hexdigest()[:8]
            name = name[:TOOL_NAME_MAX - len(tail)] + tail
        out[name] = tool
    return out


async def load_sdk() -> None:
    """Import the SDK off the event loop (it takes a while; nothing else waits on it)."""
    await asyncio.get_running_loop().run_in_executor(None, lambda: [importlib.import_module(m) for m in SDK_MODULES])


@contextlib.asynccontextmanager
async def watched(transport: Any, on_end: Callable[[], None]):
    """The SDK transport ``transport``, its incoming stream relayed so that its end (the process
    exited, the HTTP stream closed) calls ``on_end``."""
    import anyio

    async with transport as (read, write):
        send, receive = anyio.create_memory_object_stream(0)

        async def relay() -> None:
            try:
                async with send:
                    async for item in read:
                        await send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass  # our side closed: the stop below, or the session went away
            finally:
                on_end()

        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                yield receive, write
            finally:
                tg.cancel_scope.cancel()


class Connection:
    """The live side of one MCP server definition."""

    def __init__(self, app: Any, definition: dict, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.d = definition
        self.clock = clock
        self.status = "stopped"
        self.last_error: str | None = None
        self.failures = 0  # in a row, reset by a good answer
        self.retry_at = 0.0  # no start before this (clock time)
        self.restarts = 0
        self.started_at: float | None = None
        self.client: Any = None
        self.listing: list[Any] | None = None  # the SDK's Tool objects of the last listing
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._end = asyncio.Event()
        self._stopping = False
        self._lock = asyncio.Lock()
        self._stderr: Any = None
        self._recorded: asyncio.Event | None = None  # the session whose end a failed call recorded

    # ---------------------------------------------------------------- state

    def fail(self, reason: str) -> None:
        self.status, self.last_error = "unhealthy", reason
        self.failures += 1
        backoff = min(MAX_BACKOFF, self.app.settings.mcp_restart_backoff * 2 ** (self.failures - 1))
        self.retry_at = self.clock() + backoff
        log.warning("MCP server %s unhealthy: %s", self.d["id"], reason)

    def ok(self) -> None:
        self.status, self.last_error, self.failures = "ready", None, 0

    def describe(self) -> dict:
        return {"status": self.status, "lastError": self.last_error, "restarts": self.restarts,
                "retryIn": max(0.0, round(self.retry_at - self.clock(), 1)) if self.status == "unhealthy" else 0.0}

    def _stderr_tail(self) -> str:
        f = self._stderr
        if f is None:
            return ""
        try:
            f.flush()
            f.seek(0)
            text = f.read()[-STDERR_TAIL:].strip()
        except (OSError, ValueError):
            return ""
        return f" — its error output: {text}" if text else ""

    # ---------------------------------------------------------------- start and stop

    async def ensure(self) -> Any:
        """The live SDK client, starting the server when it is not running (McpFailure when it cannot)."""
        if self.client is not None and not self._end.is_set():
            return self.client
        async with self._lock:
            if self.client is not None and not self._end.is_set():
                return self.client
            wait = self.retry_at - self.clock()
            if wait > 0:
                raise McpFailure(f"MCP server {self.d['id']!r} is unhealthy ({self.last_error}); "
                                 f"it is tried again in {wait:.0f} s")
            return await self._start()

    async def _start(self) -> Any:
        await self._stop()
        self.status = "starting"
        if self.d["transport"] == "http":
            try:
                await check_public_url(self.d["url"], parse_allowed_hosts(self.app.settings.mcp_allowed_hosts),
                                       kind="url", setting="XIAJIAO_MCP_ALLOWED_HOSTS")
            except XiajiaoError as exc:
                self.fail(exc.message)
                raise McpFailure(f"MCP server {self.d['id']!r}: {exc.message}", exc.code) from None
        await load_sdk()
        self._end = asyncio.Event()
        self._stopping = False
        self._ready = asyncio.get_running_loop().create_future()
        self._task = self.app.spawn(self._run(self._ready, self._end), name=f"mcp-client:{self.d['id']}")
        timeout = self.app.settings.mcp_start_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            reason = f"the server did not start within {timeout:g} s{self._stderr_tail()}"
            await self._stop()
            self.fail(reason)
            raise McpFailure(f"MCP server {self.d['id']!r}: {reason}") from None
        except McpFailure as exc:
            await self._stop()
            self.fail(exc.message)
            raise McpFailure(f"MCP server {self.d['id']!r}: {exc.message}") from None
        self.started_at = self.clock()
        self.ok()
        return self.client

    def _transport(self) -> tuple[Any, list]:
        """The SDK transport of this definition and what to close with it."""
        d = self.d
        if d["transport"] == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
            params = StdioServerParameters(command=d["command"], args=d["args"], env=d["env"] or None,
                                           cwd=str(self.app.data_dir))
            return stdio_client(params, errlog=self._stderr), [self._stderr]
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=d["headers"], follow_redirects=False,
                                  timeout=httpx2.Timeout(30.0, read=300.0))
        return streamable_http_client(d["url"], http_client=http), [http]

    async def _run(self, ready: asyncio.Future, end: asyncio.Event) -> None:
        """The server's whole life: connect, list its tools, hold the session until it ends or is stopped."""
        from mcp import Client, Implementation

        closers: list = []
        try:
            transport, closers = self._transport()
            client = Client(watched(transport, end.set), mode="auto", cache=None,
                            client_info=Implementation(name="xiajiao", version=self.app.version))
            async with client:
                listing = await list_all(client)
                self.client, self.listing = client, listing
                ready.set_result(None)
                await end.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a server's start or session becomes its reason, shown to the owner
            reason = describe_error(exc)
            if not ready.done():
                ready.set_exception(McpFailure(f"it could not start: {reason}{self._stderr_tail()}"))
                return
            log.info("MCP server %s session ended: %s", self.d["id"], reason)
        finally:
            self.client = None
            end.set()
            for c in closers:
                with contextlib.suppress(Exception):  # closing what is already broken must not hide the reason
                    r = c.aclose() if hasattr(c, "aclose") else c.close()
                    if asyncio.iscoroutine(r):
                        await r
            if not ready.done():
                ready.set_exception(McpFailure("it could not start: the connection closed"))
        if not self._stopping and self._task is asyncio.current_task():
            self._crashed(end)

    def _crashed(self, end: asyncio.Event) -> None:
        """The session ended without being stopped: unhealthy, and a restart after the backoff."""
        if self._recorded is not end:  # a call that saw it end has said so already
            self.fail(f"the server closed the connection (it exited or crashed){self._stderr_tail()}")
        if self.failures <= MAX_AUTO_RESTARTS and not self.app.stopping:
            self.app.spawn(self._restart_later(), name=f"mcp-restart:{self.d['id']}")

    async def _restart_later(self) -> None:
        await asyncio.sleep(max(0.0, self.retry_at - self.clock()))
        if self.client is None and not self._stopping and not self.app.stopping:
            self.restarts += 1
            with contextlib.suppress(McpFailure):  # a failed restart is recorded on the server (unhealthy)
                await self.ensure()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._end.set()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # its failure is not ours to report
                    await task
            except Exception:  # noqa: S110 - the session's own failure was already recorded by _run
                pass
        self.client = None
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()
            self._stderr = None

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()
            self.status, self.retry_at = "stopped", 0.0

    async def restart(self) -> None:
        """Stop, forget the backoff, start again (the owner's refresh)."""
        async with self._lock:
            await self._stop()
            self.retry_at = 0.0
            self.failures = 0
            await self._start()

    # ---------------------------------------------------------------- calls

    async def call(self, tool: str, args: dict) -> Any:
        """Call ``tool`` with ``args``: the SDK's CallToolResult (McpFailure when the server fails)."""
        client = await self.ensure()
        end = self._end  # this session's end
        from mcp import MCPError
        from pydantic import ValidationError

        timeout = self.d.get("timeout") or self.app.settings.mcp_call_timeout
        try:
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool, args)
        except TimeoutError:
            self.fail(f"a call of {tool!r} got no answer within {timeout:g} s")
            raise McpFailure(f"MCP server {self.d['id']!r} did not answer within {timeout:g} s") from None
        except MCPError as exc:
            if end.is_set() or exc.code == -32000:  # CONNECTION_CLOSED: the server went away mid-call
                if self._recorded is not end:
                    self._recorded = end
                    self.fail(f"the server closed the connection during a call of {tool!r} (it exited or "
                              f"crashed){self._stderr_tail()}")
                raise McpFailure(f"MCP server {self.d['id']!r} closed the connection during the call "
                                 "(it exited or crashed); it is restarted") from None
            raise McpFailure(f"MCP server {self.d['id']!r} refused the call: {exc}", "mcp_tool_error") from None
        except ValidationError as exc:
            self.fail(f"a malformed answer to a call of {tool!r}: {first_error(exc)}")
            raise McpFailure(f"MCP server {self.d['id']!r} sent a malformed answer: {first_error(exc)}",
                             "mcp_malformed") from None
        self.ok()
        return result

    async def refresh(self) -> list[Any]:
        """List the server's tools now (starting it when needed)."""
        client = await self.ensure()
        try:
            async with asyncio.timeout(self.app.settings.mcp_start_timeout):
                self.listing = await list_all(client)
        except TimeoutError:
            self.fail("listing its tools got no answer in time")
            raise McpFailure(f"MCP server {self.d['id']!r} did not list its tools in time") from None
        except Exception as exc:  # a server's bad listing is shown to the owner, never a 500
            self.fail(f"listing its tools failed: {describe_error(exc)}")
            raise McpFailure(f"MCP server {self.d['id']!r}: listing its tools failed: {describe_error(exc)}") from None
        self.ok()
        return self.listing


async def list_all(client: Any, pages: int = 20) -> list[Any]:
    tools: list[Any] = []
    cursor = None
    for _ in range(pages):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def first_error(exc: Any) -> str:
    try:
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
    except Exception:  # an error without pydantic's details: its text will do
        return str(exc)[:300]


def describe_error(exc: BaseException) -> str:
    """A short reason for an exception, looking into exception groups (anyio's task groups raise them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found ({exc.filename or exc})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
