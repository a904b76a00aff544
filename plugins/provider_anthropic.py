"""Model provider: Anthropic's Messages API, through the vendor's ``anthropic`` client."""
from __future__ import annotations

import json

from xiajiao import (ChatRequest, ProviderConfig, ProviderError, ProviderKind, TextDelta, Timeouts, ToolCall,
                     ToolCallsDone, Usage, env_provider_configs, env_provider_settings, hookimpl)

DEFAULT_MAX_TOKENS = 4096


def _sdk():
    """The ``anthropic`` package, imported on first use: it costs ~2 s and ~40 MB, so a server
    that never talks to Anthropic never pays for it."""
    import anthropic

    return anthropic


def provider_error(exc: Exception, model: str) -> ProviderError:
    anthropic = _sdk()
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retryable = status in (429, 529) or status >= 500
        value = exc.response.headers.get("retry-after") if exc.response is not None else None
        try:
            retry_after = float(value) if value is not None and retryable else None
        except ValueError:
            retry_after = None
        return ProviderError(f"Model {model!r}: HTTP {status} from the provider",
                             "rate_limited" if status == 429 else "provider_http_error",
                             retryable=retryable, retry_after=retry_after,
                             extra={"httpStatus": status, "detail": str(getattr(exc, "message", ""))[:300]})
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(f"Model {model!r}: the provider timed out", "timeout", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(f"Model {model!r}: cannot reach the provider", "connection_error", retryable=True)
    if type(exc).__module__.partition(".")[0].startswith("httpx"):  # the transport broke mid-stream
        return ProviderError(f"Model {model!r}: the connection broke", "connection_error", retryable=True)
    return ProviderError(f"Model {model!r}: unreadable reply ({type(exc).__name__})", "bad_stream", retryable=True)


def wire(request: ChatRequest) -> tuple[str, list[dict], list[dict]]:
    """(system, messages, tools) in the Messages API's shape; tool results become user turns."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    messages: list[dict] = []

    def push(role: str, blocks: list[dict]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            push("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}])
        elif m.role == "assistant":
            blocks: list[dict] = [{"type": "text", "text": m.content}] if m.content else []
            for c in m.tool_calls or ():
                try:
                    args = json.loads(c.arguments or "{}")
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name,
                               "input": args if isinstance(args, dict) else {}})
            if blocks:
                push("assistant", blocks)
        elif m.images:  # Anthropic's image blocks come before the text that asks about them
            push("user", [{"type": "image", "source": {"type": "base64", "media_type": i.mime_type, "data": i.data}}
                          for i in m.images] + [{"type": "text", "text": m.content or " "}])
        elif m.content:
            push("user", [{"type": "text", "text": m.content}])
    tools = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
              "input_schema": t["function"].get("parameters") or {"type": "object"}} for t in request.tools]
    return system, messages, tools


class AnthropicProvider:
    def __init__(self, config: ProviderConfig):
        self.config = config
        self._client = None

    @property
    def client(self):
        # one client (and its connection pool) per configuration; retries are the gateway's job
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self):
        config = self.config
        return _sdk().AsyncAnthropic(api_key=config.api_key or "not-needed",
                                               base_url=config.base_url or None, max_retries=0)

    async def stream(self, request: ChatRequest, *, timeouts: Timeouts):
        system, messages, tools = wire(request)
        kwargs: dict = {"model": request.model, "messages": messages, "stream": True,
                        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
                        "timeout": _sdk().Timeout(timeouts.idle, connect=timeouts.connect)}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = tools
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        blocks: dict[int, dict] = {}
        usage = Usage()
        try:
            stream = await self.client.messages.create(**kwargs)
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    usage.prompt_tokens = event.message.usage.input_tokens or 0
                elif kind == "content_block_start" and event.content_block.type == "tool_use":
                    blocks[event.index] = {"id": event.content_block.id, "name": event.content_block.name, "json": ""}
                elif kind == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(event.delta.text)
                    elif event.delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index]["json"] += event.delta.partial_json
                elif kind == "message_delta" and event.usage is not None:
                    usage.completion_tokens = event.usage.output_tokens or 0
                elif kind == "error":
                    raise ProviderError(f"Model {request.model!r}: the provider reported an error", "provider_error",
                                        retryable=True)
        except ProviderError:
            raise
        except Exception as exc:  # the client's own errors and its HTTP library's (a cut stream) alike
            raise provider_error(exc, request.model) from exc
        yield usage
        if blocks:
            yield ToolCallsDone([ToolCall(b["id"], b["name"], b["json"] or "{}") for _, b in sorted(blocks.items())])

    async def list_models(self) -> list[str]:
        """The model ids the Models API (``GET /v1/models``) lists."""
        try:
            page = await self.client.models.list(limit=100)
            return sorted({m.id for m in page.data})
        except Exception as exc:  # the client's errors, mapped like a chat call's
            raise provider_error(exc, "(model list)") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


@hookimpl
def register_settings(register):
    for setting in env_provider_settings("anthropic", "an Anthropic provider", "the vendor's"):
        register(setting)


@hookimpl
def register_providers(register):
    register(ProviderKind(name="anthropic", factory=AnthropicProvider, default_base_url="https://api.anthropic.com",
                          description="Anthropic Messages API",
                          env_configs=lambda app: env_provider_configs(app, "anthropic")))
