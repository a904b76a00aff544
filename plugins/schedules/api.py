"""``/api/schedules``: list, create, change, delete, run now, the run log (webhooks: ``find_trigger``, ``fire_trigger``)."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, g, jsonify, request

from xiajiao import Actor, BadRequest, NotFound, authorized_channel, channel_has_agent, get_agent, list_agents, requires

from . import scheduler, store

bp = Blueprint("schedules", __name__)


def _locate(app: Any, schedule_id: str) -> str:
    agent_id = scheduler(app).where.get(schedule_id) if isinstance(schedule_id, str) else None
    if agent_id is None:
        raise NotFound("Schedule not found", "schedule_not_found")
    return agent_id


async def _visible(app: Any, actor: Actor, schedule_id: str) -> tuple[str, dict]:
    """The schedule if the caller may manage it: its creator or an admin (else 404: not revealed)."""
    agent_id = _locate(app, schedule_id)
    row = await store.get(app, agent_id, schedule_id)
    if row is None or not (actor.at_least("admin") or row["created_by"] == actor.id):
        raise NotFound("Schedule not found", "schedule_not_found")
    return agent_id, row


async def _last(app: Any, agent_id: str, schedule_id: str) -> dict | None:
    rows = await store.runs(app, agent_id, schedule_id, 1)
    return rows[0] if rows else None


async def list_schedules(app: Any, actor: Actor, agent_id: str | None = None) -> list[dict]:
    out = []
    agents = [agent_id] if agent_id else [a["id"] for a in list_agents(app)]
    for aid in agents:
        for row in await store.all_rows(app, aid):
            if actor.at_least("admin") or row["created_by"] == actor.id:
                out.append(store.schedule_json(row, aid, await _last(app, aid, row["id"])))
    return out


async def create_schedule(app: Any, actor: Actor, body: dict) -> tuple[dict, str]:
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object", "invalid_json")
    agent_id, channel_id = body.get("agentId"), body.get("channelId")
    for key, value in (("agentId", agent_id), ("channelId", channel_id), ("prompt", body.get("prompt"))):
        if not isinstance(value, str) or not value:
            raise BadRequest(f"'{key}' is required", f"missing_{key.lower()}")
    for key in ("cron", "at", "timezone"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadRequest(f"'{key}' must be a string", f"invalid_{key}")
    if get_agent(app, agent_id) is None:
        raise NotFound(f"Agent {agent_id!r} not found", "agent_not_found")
    await authorized_channel(app, actor, channel_id, "channel.write")
    if not await channel_has_agent(app, channel_id, agent_id):
        raise BadRequest("The agent is not a member of that channel", "agent_not_in_channel")
    sched = scheduler(app)
    row, token = await store.create(app, agent_id, channel_id=channel_id, prompt=body["prompt"], cron=body.get("cron"),
                                    at=body.get("at"), timezone=body.get("timezone") or "UTC",
                                    catch_up=bool(body.get("catchUp", True)), creator=actor, now=sched.now())
    sched.track(agent_id, row)
    return store.schedule_json(row, agent_id), token


async def delete_schedule(app: Any, actor: Actor, schedule_id: str, agent_id: str | None = None) -> None:
    found, _row = await _visible(app, actor, schedule_id)
    if agent_id is not None and found != agent_id:
        raise NotFound("Schedule not found", "schedule_not_found")
    await store.delete(app, found, schedule_id)
    scheduler(app).forget(schedule_id)


@bp.get("/api/schedules")
@requires("member")
async def list_route():
    agent_id = request.args.get("agentId") or None
    return jsonify({"schedules": await list_schedules(current_app.xj, g.actor, agent_id)})


@bp.post("/api/schedules")
@requires("member")
async def create_route():
    app = current_app.xj
    made, token = await create_schedule(app, g.actor, await request.get_json(silent=True))
    return jsonify({"schedule": made, "triggerToken": token,
                    "triggerUrl": f"/api/triggers/{made['id']}"}), 201


@bp.get("/api/schedules/<schedule_id>")
@requires("member")
async def get_route(schedule_id: str):
    app = current_app.xj
    agent_id, row = await _visible(app, g.actor, schedule_id)
    return jsonify({"schedule": store.schedule_json(row, agent_id, await _last(app, agent_id, schedule_id))})


@bp.put("/api/schedules/<schedule_id>")
@requires("member")
async def update_route(schedule_id: str):
    app = current_app.xj
    agent_id, row = await _visible(app, g.actor, schedule_id)
    body = await request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object", "invalid_json")
    unknown = set(body) - {"prompt", "cron", "at", "timezone", "catchUp", "enabled"}
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", "unknown_field")
    sched = scheduler(app)
    changes: dict = {}
    if "prompt" in body:
        if not isinstance(body["prompt"], str) or not body["prompt"].strip() or len(body["prompt"]) > store.MAX_PROMPT:
            raise BadRequest(f"'prompt' must be 1 to {store.MAX_PROMPT} characters", "invalid_prompt")
        changes["prompt"] = body["prompt"].strip()
    if "enabled" in body:
        changes["enabled"] = int(bool(body["enabled"]))
    if "catchUp" in body:
        changes["catch_up"] = int(bool(body["catchUp"]))
    zone = store.parse_zone(body.get("timezone") or row["timezone"])
    cron, run_at = row["cron"], row["run_at"]
    if "cron" in body or "at" in body:
        if bool(body.get("cron")) == bool(body.get("at")):
            raise BadRequest("Give exactly one of 'cron' or 'at'", "invalid_schedule")
        cron = store.check_cron(body["cron"]) if body.get("cron") else None
        run_at = store.parse_at(body["at"], zone).isoformat() if body.get("at") else None
    changes.update(cron=cron, run_at=run_at, timezone=zone.key,
                   next_run_at=store.iso(store.next_run(cron, run_at, zone.key, sched.now())))
    row = await store.update(app, agent_id, schedule_id, changes)
    sched.track(agent_id, row)
    return jsonify({"schedule": store.schedule_json(row, agent_id, await _last(app, agent_id, schedule_id))})


@bp.delete("/api/schedules/<schedule_id>")
@requires("member")
async def delete_route(schedule_id: str):
    await delete_schedule(current_app.xj, g.actor, schedule_id)
    return jsonify({"ok": True, "deleted": schedule_id})


@bp.get("/api/schedules/<schedule_id>/runs")
@requires("member")
async def runs_route(schedule_id: str):
    app = current_app.xj
    agent_id, _row = await _visible(app, g.actor, schedule_id)
    return jsonify({"runs": [store.run_json(r) for r in await store.runs(app, agent_id, schedule_id)]})


@bp.post("/api/schedules/<schedule_id>/run")
@requires("member")
async def run_now_route(schedule_id: str):
    app = current_app.xj
    agent_id, row = await _visible(app, g.actor, schedule_id)
    scheduler(app).spawn(agent_id, row, "manual")
    return jsonify({"ok": True, "started": schedule_id}), 202


async def find_trigger(app: Any, schedule_id: str) -> dict | None:
    agent_id = scheduler(app).where.get(schedule_id)
    row = await store.get(app, agent_id, schedule_id) if agent_id else None
    return {"hash": row["trigger_hash"], "enabled": bool(row["enabled"])} if row else None


async def fire_trigger(app: Any, schedule_id: str, text: str) -> dict:
    """An incoming webhook runs the schedule now; the caller's text is added to the prompt."""
    agent_id = _locate(app, schedule_id)
    row = await store.get(app, agent_id, schedule_id)
    if row is None:
        raise NotFound("No such trigger", "trigger_not_found")
    scheduler(app).spawn(agent_id, row, "trigger", text[:store.MAX_PROMPT])
    return {"started": schedule_id}
