"""Model provider: any OpenAI-compatible chat completions API (OpenAI, DeepSeek, Qwen, GLM,
Kimi, MiniMax, Ollama, vLLM, OpenRouter …).

It speaks the protocol with the core's lean streaming HTTP/1.1 client (``xiajiao.stream_client``:
keep-alive connections per base URL, the event stream's ``data:`` lines).
The vendor's ``openai`` client was measured first: it builds a pydantic model per streamed
chunk (~0.4 ms each) and re-validates the whole history on every request, which alone
exceeds the engine's per-reply budget; the wire format it would parse is four fields. The
pooled ``httpx`` client with ``httpx-sse`` came next: ~3 ms of CPU per reply in request building,
the pool and per-line event objects (docs/benchmarks.md).
"""
from __future__ import annotations

import json

from xiajiao import (ChatRequest, ProviderConfig, ProviderError, ProviderKind, StreamClientError, TextDelta, Timeouts,
                     ToolCall, ToolCallsDone, Usage, env_provider_configs, env_provider_settings, hookimpl,
                     stream_client)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store", "Content-Type": "application/json"}


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def status_error(status: int, headers: dict[str, str], body: bytes, model: str) -> ProviderError:
    retryable = status == 429 or status >= 500
    detail = ""
    try:
        parsed = json.loads(body)
        detail = (parsed.get("error") or {}).get("message", "") if isinstance(parsed, dict) else ""
        detail = detail if isinstance(detail, str) else str(detail)
    except (ValueError, AttributeError):
        pass
    message = f"Model {model!r}: HTTP {status} from the provider" + (f" ({detail[:200]})" if detail and status < 500
                                                                       and status not in (401, 403) else "")
    return ProviderError(message, "rate_limited" if status == 429 else "provider_http_error", retryable=retryable,
                         retry_after=_retry_after(headers) if retryable else None,
                         extra={"httpStatus": status, "detail": detail[:300]})


def transport_error(exc: Exception, model: str) -> ProviderError:
    kind = getattr(exc, "kind", "")
    if kind == "timeout":
        return ProviderError(f"Model {model!r}: the provider timed out", "timeout", retryable=True)
    if isinstance(exc, StreamClientError) and kind != "body":  # cannot connect, cut off, or not HTTP
        return ProviderError(f"Model {model!r}: cannot reach the provider", "connection_error", retryable=True)
    return ProviderError(f"Model {model!r}: unreadable reply ({type(exc).__name__})", "bad_stream", retryable=True)


def wire_messages(request: ChatRequest) -> list[dict]:
    out = []
    for m in request.messages:
        d: dict = {"role": m.role, "content": m.content}
        if m.images:  # OpenAI's content parts: the text, then each image as a data URL
            d["content"] = [{"type": "text", "text": m.content or " "}] + [
                {"type": "image_url", "image_url": {"url": f"data:{i.mime_type};base64,{i.data}"}} for i in m.images]
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


class OpenAIProvider:
    def __init__(self, config: ProviderConfig):
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        # one client (and connection pool) per configuration; retries are the gateway's job
        self.http = stream_client((config.base_url or DEFAULT_BASE_URL).rstrip("/"), headers=headers)

    async def stream(self, request: ChatRequest, *, timeouts: Timeouts):
        body: dict = {"model": request.model, "messages": wire_messages(request), "stream": True}
        if self.config.options.get("stream_usage", True):
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = request.tools
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        calls: dict[int, dict] = {}
        try:
            async with self.http.open("POST", "/chat/completions", body=payload, headers=SSE_HEADERS,
                                      connect_timeout=timeouts.connect, read_timeout=timeouts.idle) as response:
                if response.status >= 400:
                    raise status_error(response.status, response.headers, await response.read(), request.model)
                kind = response.headers.get("content-type", "").split(";")[0].strip()
                if kind != "text/event-stream":
                    raise ProviderError(f"Model {request.model!r}: the provider answered HTTP "
                                        f"{response.status} with {kind or 'no content type'}, not an event "
                                        "stream (is the base URL right?)", "not_a_stream")
                async for data in response.sse_data():
                    if data == "[DONE]":
                        continue  # read to the end, so the connection goes back to the pool
                    chunk = json.loads(data)
                    if not isinstance(chunk, dict):
                        raise ValueError("a chunk is not an object")
                    if chunk.get("error"):
                        raise ProviderError(f"Model {request.model!r}: the provider reported an error mid-stream",
                                            "provider_error", retryable=True)
                    usage = chunk.get("usage")
                    if usage:
                        yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                    choices = chunk.get("choices")
                    if not choices:
                        continue
                    delta = choices[0].get("delta") or {}
                    text = delta.get("content")
                    if text:
                        yield TextDelta(text)
                    for tc in delta.get("tool_calls") or ():
                        slot = calls.setdefault(tc.get("index", 0), {"id": "", "name": "", "arguments": ""})
                        if tc.get("id"):
                            slot["id"] = tc["id"]
                        fn = tc.get("function") or {}
                        slot["name"] += fn.get("name") or ""
                        slot["arguments"] += fn.get("arguments") or ""
        except ProviderError:
            raise
        except (StreamClientError, ValueError) as exc:
            raise transport_error(exc, request.model) from exc
        if calls:
            yield ToolCallsDone([ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"])
                                 for i, c in sorted(calls.items())])

    async def list_models(self) -> list[str]:
        """The model ids the provider's ``GET /models`` lists."""
        try:
            async with self.http.open("GET", "/models", headers={"Accept": "application/json"}, connect_timeout=15.0,
                                      read_timeout=15.0) as response:
                body = await response.read()
        except StreamClientError as exc:
            raise transport_error(exc, "(model list)") from exc
        if response.status >= 400:
            raise status_error(response.status, response.headers, body, "(model list)")
        try:
            data = json.loads(body).get("data") or []
        except (ValueError, AttributeError) as exc:
            raise transport_error(exc, "(model list)") from exc
        return sorted({str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")})

    async def aclose(self) -> None:
        await self.http.aclose()


@hookimpl
def register_settings(register):
    for setting in env_provider_settings("openai", "an OpenAI-compatible provider", "api.openai.com"):
        register(setting)


@hookimpl
def register_providers(register):
    register(ProviderKind(name="openai", factory=OpenAIProvider, default_base_url=DEFAULT_BASE_URL,
                          description="Any OpenAI-compatible chat completions API",
                          env_configs=lambda app: env_provider_configs(app, "openai")))
