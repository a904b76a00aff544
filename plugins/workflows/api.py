"""``/api/channels/<id>/workflows``, ``/api/workflows/<id>`` (…``/runs``, ``/token``) and
``/api/workflow-runs/<id>`` (…``/approve``, ``/reject``, ``/suspend``, ``/resume``, ``/cancel``)."""
from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, current_app, g, jsonify, request

from xiajiao import (Actor, BadRequest, NotFound, authorized_channel, channel_has_agent, charge_limit, get_channel,
                     list_agents, new_trigger_token, requires)

from . import act, authorized_run, runner, store

bp = Blueprint("workflows", __name__)
FIELDS = {"name", "steps", "stopWhen"}


async def _body() -> dict:
    body = await request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object", "invalid_json")
    return body


async def _channel_agents(app: Any, channel_id: str) -> set[str]:
    return {a["id"] for a in list_agents(app) if await channel_has_agent(app, channel_id, a["id"])}


async def _checked(app: Any, channel_id: str, body: dict, partial: dict | None = None) -> dict:
    unknown = set(body) - FIELDS
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", "unknown_field")
    out: dict = {}
    if partial is None or "name" in body:
        out["name"] = store.check_name(body.get("name"))
    if partial is None or "steps" in body:
        out["steps"] = store.check_steps(app, body.get("steps"), await _channel_agents(app, channel_id))
    if partial is None or "stopWhen" in body:
        out["stop_when"] = store.check_stop_when(body.get("stopWhen"))
    return out


async def _workflow(app: Any, actor: Actor, workflow_id: str, action: str = "channel.read") -> dict:
    row = await store.get(app, workflow_id)
    if row is None:
        raise NotFound("Workflow not found", "workflow_not_found")
    try:
        await authorized_channel(app, actor, row["channel_id"], action)
    except NotFound:
        raise NotFound("Workflow not found", "workflow_not_found") from None
    return row


async def _last_run(app: Any, workflow_id: str) -> dict | None:
    rows = await store.runs_of(app, workflow_id, 1)
    return await runner(app).snapshot(rows[0]["id"]) if rows else None


@bp.get("/api/channels/<channel_id>/workflows")
@requires("guest")
async def list_route(channel_id: str):
    """The channel's workflows (each with its last run) and the runs going on in it."""
    app = current_app.xj
    channel = await authorized_channel(app, g.actor, channel_id)
    rows = await store.of_channel(app, channel["id"])
    active = [await runner(app).snapshot(r["id"]) for r in await store.active_runs(app, channel["id"])]
    return jsonify({"workflows": [store.workflow_json(r, await _last_run(app, r["id"])) for r in rows],
                    "activeRuns": active})


@bp.post("/api/channels/<channel_id>/workflows")
@requires("member")
async def create_route(channel_id: str):
    app = current_app.xj
    channel = await authorized_channel(app, g.actor, channel_id, "channel.manage")
    if channel["type"] != "group":
        raise BadRequest("Only a group channel can have workflows", "not_a_group")
    fields = await _checked(app, channel["id"], await _body())
    row, token = await store.create(app, channel_id=channel["id"], name=fields["name"], steps=fields["steps"],
                                    stop_when=fields["stop_when"], creator=g.actor.id)
    return jsonify({"workflow": store.workflow_json(row), "triggerToken": token,
                    "triggerUrl": f"/api/triggers/{row['id']}"}), 201


@bp.get("/api/workflows/<workflow_id>")
@requires("guest")
async def get_route(workflow_id: str):
    app = current_app.xj
    row = await _workflow(app, g.actor, workflow_id)
    return jsonify({"workflow": store.workflow_json(row, await _last_run(app, workflow_id))})


@bp.put("/api/workflows/<workflow_id>")
@requires("member")
async def update_route(workflow_id: str):
    """Change the name, the steps or the stop condition; runs going on keep the steps they started with."""
    app = current_app.xj
    row = await _workflow(app, g.actor, workflow_id, "channel.manage")
    fields = await _checked(app, row["channel_id"], await _body(), partial=row)
    changes = {k: (json.dumps(v, ensure_ascii=False) if k in ("steps", "stop_when") and v is not None else v)
               for k, v in fields.items()}
    row = await store.update(app, workflow_id, changes)
    return jsonify({"workflow": store.workflow_json(row, await _last_run(app, workflow_id))})


@bp.delete("/api/workflows/<workflow_id>")
@requires("member")
async def delete_route(workflow_id: str):
    """Delete a workflow and its run history (runs going on are cancelled first)."""
    app = current_app.xj
    await _workflow(app, g.actor, workflow_id, "channel.manage")
    for r in await store.runs_of(app, workflow_id, 1000):
        if r["status"] in store.ACTIVE:
            await runner(app).cancel(r["id"])
    await store.delete(app, workflow_id)
    return jsonify({"ok": True, "deleted": workflow_id})


@bp.post("/api/workflows/<workflow_id>/token")
@requires("member")
async def token_route(workflow_id: str):
    """A new webhook token (the old one stops working); shown this once."""
    app = current_app.xj
    await _workflow(app, g.actor, workflow_id, "channel.manage")
    token, hashed = new_trigger_token()
    await store.update(app, workflow_id, {"trigger_hash": hashed})
    return jsonify({"triggerToken": token, "triggerUrl": f"/api/triggers/{workflow_id}"})


@bp.post("/api/workflows/<workflow_id>/runs")
@requires("guest")
async def start_route(workflow_id: str):
    """Start a run with ``{"input": text}``: the input is posted in the channel, then the steps answer."""
    app = current_app.xj
    row = await _workflow(app, g.actor, workflow_id, "channel.write")
    body = await _body()
    text = body.get("input")
    if not isinstance(text, str) or not text.strip() or len(text) > 32000:
        raise BadRequest("'input' must be 1 to 32000 characters", "invalid_input")
    if await get_channel(app, row["channel_id"]) is None:
        raise NotFound("Workflow not found", "workflow_not_found")
    charge_limit("turns")
    run = await runner(app).start(row, actor=g.actor, text=text.strip(), reason="api")
    return jsonify({"run": run}), 201


@bp.get("/api/workflows/<workflow_id>/runs")
@requires("guest")
async def runs_route(workflow_id: str):
    """The workflow's runs, newest first, with their steps (input, output, who approved, times, status)."""
    app = current_app.xj
    await _workflow(app, g.actor, workflow_id)
    try:
        limit = max(1, min(int(request.args.get("limit", 50)), 200))
    except ValueError:
        raise BadRequest("'limit' must be a number", "invalid_limit") from None
    return jsonify({"runs": [await runner(app).snapshot(r["id"]) for r in await store.runs_of(app, workflow_id, limit)]})


@bp.get("/api/workflow-runs/<run_id>")
@requires("guest")
async def run_route(run_id: str):
    app = current_app.xj
    await authorized_run(app, g.actor, run_id)
    return jsonify({"run": await runner(app).snapshot(run_id)})


async def _act(run_id: str, action: str):
    return jsonify({"run": await act(current_app.xj, g.actor, run_id, action)})


@bp.post("/api/workflow-runs/<run_id>/approve")
@requires("guest")
async def approve_route(run_id: str):
    """Approve the step the run waits for (409 when it waits for nothing: decided already)."""
    return await _act(run_id, "approve")


@bp.post("/api/workflow-runs/<run_id>/reject")
@requires("guest")
async def reject_route(run_id: str):
    """Reject the step the run waits for: the run ends ``rejected``."""
    return await _act(run_id, "reject")


@bp.post("/api/workflow-runs/<run_id>/suspend")
@requires("guest")
async def suspend_route(run_id: str):
    """Suspend a running or waiting run (a step under way is cut, and runs again on resume)."""
    return await _act(run_id, "suspend")


@bp.post("/api/workflow-runs/<run_id>/resume")
@requires("guest")
async def resume_route(run_id: str):
    """Go on with a suspended or interrupted run, from the step it stopped at."""
    return await _act(run_id, "resume")


@bp.post("/api/workflow-runs/<run_id>/cancel")
@requires("guest")
async def cancel_route(run_id: str):
    return await _act(run_id, "cancel")
