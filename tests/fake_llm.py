"""A fake model server on loopback that speaks the real wire protocols.

It is a small ASGI app served by Hypercorn, either in the running event loop
(``async with FakeLLM() as fake``) or in a thread of its own (``FakeLLM().start_in_thread()``,
for benchmarks). Endpoints:

- ``POST /v1/chat/completions``: OpenAI chat completions, JSON or ``stream: true`` SSE
  (``data: {...}`` chunks, usage in the last chunk, ``data: [DONE]``), streamed tool calls;
- ``POST /v1/embeddings``: deterministic normalized vectors (``dim`` floats, or ``dimensions``), as JSON
  floats or, with ``encoding_format: "base64"``, little-endian float32 bytes in base64;
- ``GET /v1/models``: the served model names;
- ``POST /v1/messages``: Anthropic Messages, JSON or SSE (message_start,
  content_block_start/delta/stop, message_delta, message_stop; tool_use blocks
  streamed as input_json_delta).

Tests script what comes back: ``fake.script(text="hi", chunks=3)`` queues one reply,
consumed in order by the next chat request (of any protocol, or only of ``model=``).
A reply may carry tool calls, per-chunk delays, a delay before the first byte, an HTTP
error (429 with ``Retry-After``), a connection cut after N chunks, garbage lines, or a
hang. With nothing scripted, ``responder(request)`` is asked, then the default
deterministic reply ``"Echo: <last user message>"`` in ``default_chunks`` chunks.
Every request is recorded in ``fake.requests`` (method, path, headers, json).
"""
from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["FakeLLM", "Reply", "Call", "Recorded"]


@dataclass
class Call:
    """One tool call the fake model makes. ``arguments`` may be a dict or raw (even malformed) JSON text."""

    name: str
    arguments: Any = field(default_factory=dict)
    id: str = ""
    fragments: int = 3  # the arguments text is streamed in this many pieces

    @property
    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class Reply:
    """One scripted reply of the fake model."""

    text: str = ""
    chunks: int = 1               # the text is streamed in this many pieces (at most one per character)
    tool_calls: list[Call] = field(default_factory=list)
    delay: float = 0.0            # seconds between streamed pieces
    first_byte_delay: float = 0.0  # seconds before the response starts
    status: int = 200             # an HTTP error status (429, 500 …) sends an error body instead
    retry_after: float | None = None  # Retry-After header of an error
    error_message: str = "scripted error"
    cut_after: int | None = None  # close the connection after this many pieces (mid-stream)
    hang_after: int | None = None  # stop sending (never finish) after this many pieces
    garbage: str | None = None    # a malformed line sent after the first piece
    model: str | None = None      # serve only requests for this model
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def pieces(self) -> list[str]:
        return split_text(self.text, self.chunks)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float

    @property
    def messages(self) -> list[dict]:
        return (self.json or {}).get("messages", [])

    @property
    def system(self) -> str:
        """The system prompt (OpenAI: the system messages; Anthropic: ``system``)."""
        body = self.json or {}
        if "system" in body:
            sys_ = body["system"]
            return sys_ if isinstance(sys_, str) else "".join(b.get("text", "") for b in sys_)
        return "\n".join(_text_of(m.get("content")) for m in self.messages if m.get("role") == "system")

    @property
    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return _text_of(m.get("content"))
        return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def split_text(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` contiguous non-empty pieces (fewer when it is shorter)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    bounds = [len(text) * i // n for i in range(n + 1)]
    return [text[bounds[i]:bounds[i + 1]] for i in range(n)]


def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``: equal texts give equal vectors."""
    vals: list[float] = []
    counter = 0
    while len(vals) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        vals.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vals = vals[:dim]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]


def _base64_floats(vector: list[float]) -> str:
    """The OpenAI ``encoding_format: "base64"`` form: little-endian float32 bytes, base64-encoded."""
    values = array.array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


class _Cut(Exception):
    """Raised inside the app to drop the connection mid-response."""


class FakeLLM:
    def __init__(self, *, models: list[str] | None = None, default_chunks: int = 4, dim: int = 16,
                 api_key: str | None = None):
        self.models = models or ["fake-model", "fake-model-2", "fake-claude"]
        self.default_chunks = default_chunks
        self.default_delay = 0.0
        self.dim = dim
        self.api_key = api_key  # when set, requests without it get 401
        self.responder: Callable[[Recorded], Reply | None] | None = None
        self.requests: list[Recorded] = []
        self.queue: list[Reply] = []
        self.port = 0
        self.host = "127.0.0.1"
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self.cuts = 0  # connections dropped on purpose

    # ------------------------------------------------------------------ scripting

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends with ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic-style base URL (the client adds ``/v1/messages``)."""
        return f"http://{self.host}:{self.port}"

    def script(self, *replies: Reply | str, **kw: Any) -> "FakeLLM":
        """Queue replies: ``script(Reply(...), "plain text")`` or one reply as keywords ``script(text=..., chunks=...)``."""
        if kw:
            if "tool_calls" in kw:
                kw["tool_calls"] = [c if isinstance(c, Call) else Call(**c) for c in kw["tool_calls"]]
            replies = (*replies, Reply(**kw))
        for r in replies:
            self.queue.append(Reply(text=r, chunks=self.default_chunks) if isinstance(r, str) else r)
        return self

    def reset(self) -> None:
        self.queue.clear()
        self.requests.clear()
        self.responder = None

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path in ("/v1/chat/completions", "/v1/messages")]

    @property
    def last(self) -> Recorded:
        return self.chat_requests()[-1]

    def release(self) -> None:
        """Let every hanging response finish."""
        if self._release is not None:
            if self._loop is not None and self._thread is not None:
                self._loop.call_soon_threadsafe(self._release.set)
            else:
                self._release.set()

    def _next_reply(self, req: Recorded) -> Reply:
        model = (req.json or {}).get("model")
        for i, r in enumerate(self.queue):
            if r.model is None or r.model == model:
                return self.queue.pop(i)
        if self.responder is not None:
            r = self.responder(req)
            if r is not None:
                return r
        text = "Echo: " + (req.last_user or "…")
        n = 0
        while len(text) < self.default_chunks:
            text += f" {n}"
            n += 1
        return Reply(text=text, chunks=self.default_chunks, delay=self.default_delay)

    # ------------------------------------------------------------------ serving

    async def start(self) -> "FakeLLM":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(512)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        config = Config()
        # Hypercorn takes ownership of (and closes) the descriptor it is given: hand it a duplicate
        config.bind = [f"fd://{os.dup(self._sock.fileno())}"]
        self._sock.close()
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        config.keep_alive_timeout = 30
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(serve(self, config, shutdown_trigger=self._stop.wait))
        for _ in range(200):  # wait until it accepts connections
            if self._task.done():
                self._task.result()
            try:
                _, w = await asyncio.open_connection(self.host, self.port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._release:
            self._release.set()
        if self._stop:
            self._stop.set()
        if self._task:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)

    async def __aenter__(self) -> "FakeLLM":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def start_in_thread(self) -> "FakeLLM":
        """Serve from a thread with its own event loop (benchmarks: keeps the fake off the app's loop)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_until_complete(self._task)
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop_thread(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._release.set)
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope["headers"]}
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        req = Recorded(scope["method"], scope["path"], headers, data, time.monotonic())
        self.requests.append(req)
        path, method = scope["path"], scope["method"]
        if self.api_key is not None and not self._authorized(headers):
            return await self._json(send, 401, self._error_body(path, 401, "invalid api key"))
        if method == "GET" and path == "/v1/models":
            return await self._json(send, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})
        if method == "POST" and path == "/v1/embeddings":
            return await self._embeddings(send, data)
        if method == "POST" and path in ("/v1/chat/completions", "/v1/messages"):
            if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                return await self._json(send, 400, self._error_body(path, 400, "messages is required"))
            reply = self._next_reply(req)
            try:
                await self._chat(send, receive, path, data, reply)
            except _Cut:
                self.cuts += 1
                raise
            return
        await self._json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    def _authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}" or headers.get("x-api-key") == self.api_key

    @staticmethod
    def _error_body(path: str, status: int, message: str) -> dict:
        if path == "/v1/messages":
            kind = {429: "rate_limit_error", 401: "authentication_error", 400: "invalid_request_error",
                    529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": message}}
        kind = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "code": kind}}

    async def _json(self, send: Callable, status: int, payload: Any, headers: list | None = None) -> None:
        raw = json.dumps(payload, ensure_ascii=False).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *(headers or [])]})
        await send({"type": "http.response.body", "body": raw})

    async def _embeddings(self, send: Callable, data: Any) -> None:
        inputs = (data or {}).get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return await self._json(send, 400, self._error_body("/v1/embeddings", 400, "input must be text"))
        dim = int((data or {}).get("dimensions") or self.dim)
        encode = _base64_floats if (data or {}).get("encoding_format") == "base64" else (lambda v: v)
        await self._json(send, 200, {
            "object": "list", "model": (data or {}).get("model", "fake-embed"),
            "data": [{"object": "embedding", "index": i, "embedding": encode(fake_vector(t, dim))}
                     for i, t in enumerate(inputs)],
            "usage": {"prompt_tokens": sum(_tokens(t) for t in inputs), "total_tokens": sum(_tokens(t) for t in inputs)},
        })

    async def _wait_released(self, receive: Callable) -> None:
        """Hang until the client goes away or the test releases it."""
        disconnect = asyncio.ensure_future(self._until_disconnect(receive))
        released = asyncio.ensure_future(self._release.wait())
        try:
            await asyncio.wait([disconnect, released], return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
            released.cancel()

    @staticmethod
    async def _until_disconnect(receive: Callable) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _chat(self, send: Callable, receive: Callable, path: str, data: dict, reply: Reply) -> None:
        anthropic = path == "/v1/messages"
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.status != 200:
            extra = [(b"retry-after", str(reply.retry_after).encode())] if reply.retry_after is not None else []
            return await self._json(send, reply.status, self._error_body(path, reply.status, reply.error_message), extra)
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else \
            sum(_tokens(_text_of(m.get("content"))) for m in data["messages"]) + _tokens(str(data.get("system", "")))
        completion = reply.completion_tokens if reply.completion_tokens is not None else \
            _tokens(reply.text) + sum(_tokens(c.arguments_text) for c in reply.tool_calls)
        model = data.get("model", "fake-model")
        if not data.get("stream"):
            if reply.hang_after is not None:
                await self._wait_released(receive)
                return
            if reply.cut_after is not None:
                raise _Cut()
            body = (self._anthropic_message(reply, model, prompt, completion) if anthropic
                    else self._openai_completion(reply, model, prompt, completion))
            return await self._json(send, 200, body)
        events = (self._anthropic_events(reply, model, prompt, completion) if anthropic
                  else self._openai_events(reply, model, prompt, completion))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        # events: list of (is_piece, bytes); pieces count for cut_after / hang_after / garbage
        paced = reply.delay > 0 or reply.cut_after is not None or reply.hang_after is not None or reply.garbage
        if not paced:  # at 0 ms: one write, so benchmarks measure the app and not this fake
            await send({"type": "http.response.body", "body": b"".join(e for _, e in events), "more_body": False})
            return
        sent = 0
        for is_piece, raw in events:
            if is_piece:
                if reply.cut_after is not None and sent >= reply.cut_after:
                    raise _Cut()
                if reply.hang_after is not None and sent >= reply.hang_after:
                    await self._wait_released(receive)
                    return
                if sent and reply.delay:
                    await asyncio.sleep(reply.delay)
            await send({"type": "http.response.body", "body": raw, "more_body": True})
            if is_piece:
                sent += 1
                if sent == 1 and reply.garbage is not None:
                    await send({"type": "http.response.body", "body": reply.garbage.encode() + b"\n\n",
                                "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- OpenAI

    @staticmethod
    def _sse(payload: Any) -> bytes:
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    def _openai_events(self, reply: Reply, model: str, prompt: int, completion: int) -> list[tuple[bool, bytes]]:
        cid = "chatcmpl-" + hashlib.md5(str(time.monotonic_ns()).encode()).hexdigest()[:12]
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return self._sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                              "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        out: list[tuple[bool, bytes]] = [(False, chunk({"role": "assistant", "content": ""}))]
        for piece in reply.pieces():
            out.append((True, chunk({"content": piece})))
        for i, call in enumerate(reply.tool_calls):
            call_id = call.id or f"call_{i}_{call.name}"
            out.append((True, chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                                     "function": {"name": call.name, "arguments": ""}}]})))
            for frag in split_text(call.arguments_text, call.fragments):
                out.append((True, chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})))
        out.append((False, chunk({}, "tool_calls" if reply.tool_calls else "stop")))
        out.append((False, self._sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                      "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                               "total_tokens": prompt + completion}})))
        out.append((False, b"data: [DONE]\n\n"))
        return out

    @staticmethod
    def _openai_completion(reply: Reply, model: str, prompt: int, completion: int) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [{"id": c.id or f"call_{i}_{c.name}", "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments_text}}
                                     for i, c in enumerate(reply.tool_calls)]
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}

    # -- Anthropic

    @staticmethod
    def _event(name: str, payload: dict) -> bytes:
        return f"event: {name}\ndata: ".encode() + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    def _anthropic_events(self, reply: Reply, model: str, prompt: int, completion: int) -> list[tuple[bool, bytes]]:
        ev = self._event
        out: list[tuple[bool, bytes]] = [(False, ev("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}}))]
        index = 0
        pieces = reply.pieces()
        if pieces:
            out.append((False, ev("content_block_start", {"type": "content_block_start", "index": index,
                                                          "content_block": {"type": "text", "text": ""}})))
            for piece in pieces:
                out.append((True, ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "text_delta", "text": piece}})))
            out.append((False, ev("content_block_stop", {"type": "content_block_stop", "index": index})))
            index += 1
        for i, call in enumerate(reply.tool_calls):
            out.append((True, ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call.id or f"toolu_{i}_{call.name}", "name": call.name, "input": {}}})))
            for frag in split_text(call.arguments_text, call.fragments):
                out.append((True, ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "input_json_delta", "partial_json": frag}})))
            out.append((False, ev("content_block_stop", {"type": "content_block_stop", "index": index})))
            index += 1
        out.append((False, ev("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": completion}})))
        out.append((False, ev("message_stop", {"type": "message_stop"})))
        return out

    @staticmethod
    def _anthropic_message(reply: Reply, model: str, prompt: int, completion: int) -> dict:
        content: list[dict] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for i, c in enumerate(reply.tool_calls):
            try:
                args = json.loads(c.arguments_text)
            except ValueError:
                args = {}
            content.append({"type": "tool_use", "id": c.id or f"toolu_{i}_{c.name}", "name": c.name, "input": args})
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion}}
