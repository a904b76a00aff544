"""Model provider: any OpenAI-compatible chat completions API (OpenAI, DeepSeek, Qwen, GLM,
Kimi, MiniMax, Ollama, vLLM, OpenRouter …).

It speaks the protocol with a pooled ``httpx`` client (``xiajiao.pooled_client``) and
``httpx-sse`` for the event stream.
The vendor's ``openai`` client was measured first: it builds a pydantic model per streamed
chunk (~0.4 ms each) and re-validates the whole history on every request, which alone
exceeds the engine's per-reply budget; the wire format it would parse is four fields.
"""
from __future__ import annotations

import json

import httpx
from httpx_sse import SSEError, aconnect_sse

from xiajiao import (ChatRequest, ProviderConfig, ProviderError, ProviderKind, TextDelta, Timeouts, ToolCall,
                     ToolCallsDone, Usage, env_provider_configs, env_provider_settings, hookimpl, pooled_client)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def status_error(response: httpx.Response, model: str) -> ProviderError:
    status = response.status_code
    retryable = status == 429 or status >= 500
    detail = ""
    try:
        body = response.json()
        detail = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
    except ValueError:
        pass
    message = f"Model {model!r}: HTTP {status} from the provider" + (f" ({detail[:200]})" if detail and status < 500
                                                                       and status not in (401, 403) else "")
    return ProviderError(message, "rate_limited" if status == 429 else "provider_http_error", retryable=retryable,
                         retry_after=_retry_after(response) if retryable else None,
                         extra={"httpStatus": status, "detail": detail[:300]})


def transport_error(exc: Exception, model: str) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"Model {model!r}: the provider timed out", "timeout", retryable=True)
    if isinstance(exc, httpx.TransportError):
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
        self.http = pooled_client((config.base_url or DEFAULT_BASE_URL).rstrip("/"), headers=headers)

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
        calls: dict[int, dict] = {}
        timeout = httpx.Timeout(timeouts.idle, connect=timeouts.connect)
        try:
            async with aconnect_sse(self.http, "POST", "/chat/completions", json=body, timeout=timeout) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise status_error(source.response, request.model)
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        continue  # read to the end, so the connection goes back to the pool
                    chunk = json.loads(event.data)
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
        except (httpx.HTTPError, SSEError, ValueError) as exc:
            raise transport_error(exc, request.model) from exc
        if calls:
            yield ToolCallsDone([ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"])
                                 for i, c in sorted(calls.items())])

    async def list_models(self) -> list[str]:
        """The model ids the provider's ``GET /models`` lists."""
        try:
            resp = await self.http.get("/models", timeout=15.0)
        except httpx.HTTPError as exc:
            raise transport_error(exc, "(model list)") from exc
        if resp.status_code >= 400:
            raise status_error(resp, "(model list)")
        try:
            data = resp.json().get("data") or []
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
