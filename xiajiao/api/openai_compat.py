"""The OpenAI-compatible endpoint: every agent is a model (``agent/<id>``); admins also reach the
provider models through the gateway. Chat completions in OpenAI's wire format, JSON or SSE.

An agent model runs a full agent turn (SOUL.md, memory and knowledge sections, its own tools run
server-side). Only the reply's text is returned: tool activity is left out of the completion (the
calling program asked for an answer; ``/v1/stream`` and recorded conversations show the tools).
Client-supplied ``tools`` go to provider models, whose tool calls come back to the client.
Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from quart import Blueprint, g, jsonify, request
from quart_schema import RequestSchemaValidationError, validate_request
from werkzeug.exceptions import HTTPException

from .. import auth
from ..errors import HTTP_CODES, BadRequest, NotFound, XiajiaoError
from ..ids import parse_iso
from ..ratelimit import charge
from ..models import ChatMessage, ChatRequest, TextDelta, ToolCall, ToolCallsDone
from ..gateway import Call
from ._machine import api_channel, sse, sse_response, started, turn_events
from ..quart_app import current_app

bp = Blueprint("chat_completions", __name__)

AGENT_PREFIX = "agent/"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}
RECORD_HEADER = "X-Xiajiao-Record"


def compat_error(status: int, message: str, code: str, param: str | None = None, headers: dict | None = None):
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": param, "code": code}}
    return jsonify(body), status, headers or {}


@bp.errorhandler(XiajiaoError)
async def _error(err: XiajiaoError):
    return compat_error(err.status, err.message, err.code, err.extra.get("param"), err.headers)


@bp.errorhandler(HTTPException)
async def _http_error(err: HTTPException):
    status = err.code or 500
    return compat_error(status, "Not found" if status == 404 else err.description or "Bad request",
                        HTTP_CODES.get(status, "http_error"))


@bp.errorhandler(UnicodeDecodeError)
async def _not_utf8(err: UnicodeDecodeError):
    return compat_error(400, "The request body is not valid UTF-8", "invalid_encoding")


@bp.errorhandler(RequestSchemaValidationError)
async def _schema_error(err: RequestSchemaValidationError):
    detail = err.validation_error
    problems = detail.errors() if hasattr(detail, "errors") else []
    first = problems[0] if problems else {}
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    return compat_error(400, f"Invalid request: {param}: {first.get('msg', 'invalid body')}" if param
                        else "Invalid request body", "validation_error", param)


class CompletionBody(BaseModel):
    """OpenAI's chat completion request; fields Xiajiao does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Any]
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = None
    tools: list[dict] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


def agent_model(agent: dict) -> dict:
    try:
        created = int(parse_iso(agent["created_at"]).timestamp())
    except (KeyError, ValueError):
        created = 0
    return {"id": AGENT_PREFIX + agent["id"], "object": "model", "created": created, "owned_by": "xiajiao",
            "name": agent["name"], "description": agent.get("description") or ""}


@bp.get("/v1/models")
@auth.requires("member")
async def models():
    engine = current_app.xj.engine
    data = [agent_model(a) for a in engine.agents.all()]
    if g.actor.at_least("admin"):
        data += [{"id": m, "object": "model", "created": 0, "owned_by": m.split("/", 1)[0]}
                 for m in engine.gateway.models()]
    return jsonify({"object": "list", "data": data})


async def resolve_model(name: str) -> tuple[dict | None, str | None]:
    """(agent, None) for an agent model, (None, "provider/model") for a provider model (admins)."""
    engine = current_app.xj.engine
    agent_id = name.removeprefix(AGENT_PREFIX)
    agent = engine.agents.get(agent_id)
    if agent is None and (name.startswith(AGENT_PREFIX) or not g.actor.at_least("admin")):
        agent = await engine.agents.lookup(agent_id)
    if agent is not None and agent["id"] == agent_id:
        return agent, None
    if g.actor.at_least("admin") and not name.startswith(AGENT_PREFIX):
        try:
            cfg, model = engine.gateway.resolve(name)
            return None, f"{cfg.id}/{model}"
        except BadRequest:
            pass
    raise NotFound(f"The model {name!r} does not exist or you do not have access to it", "model_not_found",
                   extra={"param": "model"})


def _content(value: Any, where: str, *, optional: bool) -> str:
    if value is None:
        if optional:
            return ""
        raise BadRequest(f"{where}.content is required", "invalid_messages", extra={"param": where})
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{where}.content must be a string or a list of parts", "invalid_messages",
                         extra={"param": where})
    texts = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(kind, str):
            raise BadRequest(f"{where}.content[{j}]: content parts of type {kind!r} are not supported (only text)",
                             "unsupported_content", extra={"param": f"{where}.content[{j}]"})
        else:
            raise BadRequest(f"{where}.content[{j}] must be an object with a type", "invalid_messages",
                             extra={"param": f"{where}.content[{j}]"})
    return "\n".join(texts)


def to_messages(raw: list[Any]) -> list[ChatMessage]:
    """The request's messages as the gateway's, checked: 400 ``invalid_messages`` / ``unsupported_content``."""
    if not raw:
        raise BadRequest("messages must not be empty", "invalid_messages", extra={"param": "messages"})
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"{where} must be an object", "invalid_messages", extra={"param": where})
        role = {"developer": "system"}.get(str(m.get("role")), m.get("role"))
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"{where}.role must be system, developer, user, assistant or tool", "invalid_messages",
                             extra={"param": f"{where}.role"})
        calls = None
        if role == "assistant" and m.get("tool_calls"):
            try:
                calls = [ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                         for c in m["tool_calls"]]
            except (KeyError, TypeError):
                raise BadRequest(f"{where}.tool_calls must be a list of {{id, function: {{name, arguments}}}}",
                                 "invalid_messages", extra={"param": f"{where}.tool_calls"}) from None
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise BadRequest(f"{where}.tool_call_id is required", "invalid_messages", extra={"param": where})
        text = _content(m.get("content"), where, optional=role == "assistant" and bool(calls))
        out.append(ChatMessage(role, text, tool_calls=calls, tool_call_id=m.get("tool_call_id") if role == "tool"  # type: ignore[arg-type]  # role checked above
                               else None))
    if not any(m.role == "user" for m in out):
        raise BadRequest("messages needs at least one user message", "invalid_messages", extra={"param": "messages"})
    return out


def _record_wanted() -> bool:
    value = request.headers.get(RECORD_HEADER)
    if value is None:
        return bool(current_app.xj.settings.api_record_chats)
    return value.strip().lower() in ("1", "true", "yes", "on")


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls(calls: list[ToolCall]) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


@bp.post("/v1/chat/completions")
@auth.requires("member")
@validate_request(CompletionBody)
async def chat_completions(data: CompletionBody):
    if data.n not in (None, 1):
        raise BadRequest("Only n = 1 is supported", "unsupported_n", extra={"param": "n"})
    charge("turns")
    agent, provider_model = await resolve_model(data.model)
    messages = to_messages(data.messages)
    core = current_app.xj
    engine = core.engine
    actor = g.actor
    headers: dict[str, str] = {}

    if agent is not None:
        channel = await api_channel(agent, source="chat_completions", reuse=True) if _record_wanted() else None
        if channel is not None:
            headers["X-Xiajiao-Session"] = channel["id"]
        asked = next(m.content for m in reversed(messages) if m.role == "user")

        async def work(emit):
            if channel is not None:
                result = await engine.converse(agent, channel, asked, actor, context=messages, on_event=emit)
                if result.error:
                    raise XiajiaoError(result.error["error"], result.error["code"], status=502)
                return result.text, [], result.usage
            turn = await engine.detached_turn(agent, messages, actor=actor, on_event=emit)
            return turn.text, [], turn.usage
    else:
        assert provider_model is not None  # resolve_model gives an agent or a provider model
        chat_request = ChatRequest(model=provider_model, messages=messages, tools=list(data.tools or []),
                                   max_tokens=data.max_completion_tokens or data.max_tokens,
                                   temperature=data.temperature)

        async def work(emit):
            call, calls, parts = Call(), [], []
            async for event in engine.gateway.stream(chat_request, fallback=[], call=call):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    emit("text", {"delta": event.text})
                elif isinstance(event, ToolCallsDone):
                    calls.extend(event.calls)
            return "".join(parts), calls, call.usage

    completion_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    events = await started(turn_events(work))
    if not data.stream:
        text, calls = "", []
        async for kind, value in events:
            if kind == "error":
                raise value
            if kind == "result":
                text, calls, usage = value
        message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = _tool_calls(calls)
        return jsonify({"id": completion_id, "object": "chat.completion", "created": created, "model": data.model,
                        "system_fingerprint": None,
                        "choices": [{"index": 0, "message": message, "logprobs": None,
                                     "finish_reason": "tool_calls" if calls else "stop"}],
                        "usage": _usage(usage.prompt_tokens, usage.completion_tokens)}), 200, headers

    include_usage = bool((data.stream_options or {}).get("include_usage"))

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": data.model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    async def body():
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        async for kind, value in events:
            if kind == "text":
                yield chunk({"content": value["delta"]})
            elif kind == "error":
                err = value if isinstance(value, XiajiaoError) else XiajiaoError("The turn failed", "turn_failed")
                yield sse({"error": {"message": err.message, "type": ERROR_TYPES.get(err.status, "api_error"),
                                     "param": None, "code": err.code}})
                return
            elif kind == "result":
                _, calls, usage = value
                if calls:
                    yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(_tool_calls(calls))]})
                yield chunk({}, "tool_calls" if calls else "stop")
                if include_usage:
                    yield sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": data.model, "system_fingerprint": None, "choices": [],
                               "usage": _usage(usage.prompt_tokens, usage.completion_tokens)})
                yield sse("[DONE]")

    return sse_response(body(), headers)
