"""Model provider: any OpenAI-compatible chat completions API (OpenAI, DeepSeek, Qwen, GLM,
Kimi, MiniMax, Ollama, vLLM, OpenRouter …), through the vendor's ``openai`` client."""
from __future__ import annotations

import json

import httpx
import openai

from xiajiao import (ChatRequest, ProviderConfig, ProviderError, ProviderKind, TextDelta, Timeouts, ToolCall,
                     ToolCallsDone, Usage, hookimpl)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def provider_error(exc: Exception, model: str) -> ProviderError:
    """Map the client's exceptions to ProviderError (retryable: 429, 5xx, connection, timeout)."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status == 429 or status >= 500
        code = "rate_limited" if status == 429 else "provider_http_error"
        return ProviderError(f"Model {model!r}: HTTP {status} from the provider", code, retryable=retryable,
                             retry_after=_retry_after(exc) if retryable else None)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"Model {model!r}: the provider timed out", "timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"Model {model!r}: cannot reach the provider", "connection_error", retryable=True)
    return ProviderError(f"Model {model!r}: unreadable reply ({type(exc).__name__})", "bad_stream", retryable=True)


def wire_messages(request: ChatRequest) -> list[dict]:
    out = []
    for m in request.messages:
        d: dict = {"role": m.role, "content": m.content}
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
        # one client (and connection pool) per configuration; retries are the gateway's job
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key or "not-needed", base_url=config.base_url or None, max_retries=0,
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)))

    async def stream(self, request: ChatRequest, *, timeouts: Timeouts):
        kwargs: dict = {"model": request.model, "messages": wire_messages(request), "stream": True,
                        "timeout": httpx.Timeout(timeouts.idle, connect=timeouts.connect)}
        if self.config.options.get("stream_usage", True):
            kwargs["stream_options"] = {"include_usage": True}
        if request.tools:
            kwargs["tools"] = request.tools
        if request.max_tokens:
            kwargs["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        calls: dict[int, dict] = {}
        try:
            stream = await self.client.chat.completions.create(**kwargs)
            async for chunk in stream:
                if chunk.usage is not None:
                    yield Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield TextDelta(delta.content)
                for tc in delta.tool_calls or ():
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
        except (openai.OpenAIError, httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            raise provider_error(exc, request.model) from exc
        if calls:
            yield ToolCallsDone([ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"])
                                 for i, c in sorted(calls.items())])

    async def aclose(self) -> None:
        await self.client.close()


@hookimpl
def register_providers(register):
    register(ProviderKind(name="openai", factory=OpenAIProvider, default_base_url="https://api.openai.com/v1",
                          description="Any OpenAI-compatible chat completions API"))
