"""One agent turn for programs: ``/v1/run`` (JSON), ``/v1/stream`` (SSE), and background tasks
(``/v1/tasks``) with a replayable event stream and a signed webhook. A session is a conversation
of the caller with the agent, shown in the web app; ``sessionId`` continues it."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass
from quart import Blueprint, g, jsonify, request
from quart_schema import validate_querystring, validate_request

from .. import auth
from ..errors import BadRequest, ProviderError
from ..ratelimit import charge
from ..tasks import task_json, usage_json
from ._machine import pick_agent, session_for, sse, sse_response, started, turn_events
from .messages import check_content
from ..quart_app import current_app

bp = Blueprint("machine", __name__)
KEEPALIVE_SECONDS = 15.0


@dataclass
class RunBody:
    input: str
    agent: str | None = None
    pack: str | None = None
    persona: str | None = None
    sessionId: str | None = None


@dataclass
class TaskBody(RunBody):
    webhook: str | None = None


@dataclass
class TasksQuery:
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50


@dataclass
class EventsQuery:
    after: Annotated[int, Field(ge=0)] | None = None


async def _session(data) -> tuple[dict, dict]:
    check_content(data.input)
    return await session_for(await pick_agent(data.agent, data.pack, data.persona), data.sessionId)


def result_json(result) -> dict:
    out = {"sessionId": result.channel_id, "text": result.text,
           "usage": usage_json(result.usage.prompt_tokens, result.usage.completion_tokens),
           "rounds": result.rounds, "done": result.done, "status": result.status}
    if result.error:
        out["error"] = result.error
    return out


@bp.post("/v1/run")
@auth.requires("member")
@validate_request(RunBody)
async def run(data: RunBody):
    charge("turns")
    agent, channel = await _session(data)
    result = await current_app.xj.engine.converse(agent, channel, data.input, g.actor)
    if result.error:
        raise ProviderError(result.error["error"], result.error["code"], extra={"sessionId": channel["id"]})
    return jsonify(result_json(result))


@bp.post("/v1/stream")
@auth.requires("member")
@validate_request(RunBody)
async def stream(data: RunBody):
    charge("turns")
    agent, channel = await _session(data)
    engine, actor = current_app.xj.engine, g.actor
    events = await started(turn_events(lambda emit: engine.converse(agent, channel, data.input, actor,
                                                                     on_event=emit)))

    async def body():
        async for kind, value in events:
            if kind in ("text", "tool", "tool_end"):
                yield sse({"type": kind, **value}, event=kind)
            elif kind == "result":
                yield sse({"type": "end", **result_json(value)}, event="end")
            elif kind == "error":
                code = getattr(value, "code", "turn_failed")
                message = getattr(value, "message", "The turn failed")
                yield sse({"type": "end", "sessionId": channel["id"], "done": False, "status": "error",
                           "error": {"error": message, "code": code}}, event="end")

    return sse_response(body(), {"X-Xiajiao-Session": channel["id"]})


# ------------------------------------------------------------------ background tasks


@bp.post("/v1/tasks")
@auth.requires("member")
@validate_request(TaskBody)
async def create_task(data: TaskBody):
    charge("tasks")
    tasks = current_app.xj.tasks
    if data.webhook is not None:
        await tasks.check_webhook(g.actor, data.webhook)  # before a session is made for nothing
    agent, channel = await _session(data)
    task = await tasks.create(g.actor, agent=agent, channel_id=channel["id"], text=data.input, webhook=data.webhook)
    return jsonify({**task, **tasks.stats()}), 202


@bp.get("/v1/tasks")
@auth.requires("guest")
@validate_querystring(TasksQuery)
async def list_tasks(query_args: TasksQuery):
    tasks = current_app.xj.tasks
    return jsonify({"tasks": await tasks.list(g.actor, status=query_args.status, limit=query_args.limit),
                    **tasks.stats()})


@bp.get("/v1/tasks/<task_id>")
@auth.requires("guest")
async def get_task(task_id: str):
    return jsonify(task_json(await current_app.xj.tasks.get(g.actor, task_id)))


@bp.post("/v1/tasks/<task_id>/cancel")
@auth.requires("guest")
async def cancel_task(task_id: str):
    return jsonify(await current_app.xj.tasks.cancel(g.actor, task_id))


@bp.get("/v1/tasks/<task_id>/events")
@auth.requires("guest")
@validate_querystring(EventsQuery)
async def task_events(task_id: str, query_args: EventsQuery):
    tasks = current_app.xj.tasks
    await tasks.get(g.actor, task_id)  # 404 unless the caller's (or an admin's)
    after = query_args.after
    if after is None:
        raw = request.headers.get("Last-Event-ID", "").strip()
        if raw and not raw.isdigit():
            raise BadRequest("Last-Event-ID must be an event id (a number)", "invalid_last_event_id")
        after = int(raw or 0)

    async def body():
        async for event in tasks.events(task_id, after, idle=KEEPALIVE_SECONDS):
            if event is None:
                yield b": keep-alive\n\n"  # a comment line: proxies keep a quiet stream open
            else:
                yield sse({"type": event["type"], **event["data"]}, event=event["type"], id=event["id"])

    return sse_response(body())

