"""Collaboration chains: define a group's chain, start a run, approve / edit / stop between steps."""
from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import auth, chat
from ..errors import BadRequest
from ..ratelimit import charge
from ..quart_app import current_app

bp = Blueprint("chains", __name__)


class ChainBody(BaseModel):
    agentIds: list[str] = Field(max_length=20)
    approval: bool = False


class StartBody(BaseModel):
    channelId: str
    input: str = Field(min_length=1, max_length=32000)


class DecisionBody(BaseModel):
    action: str
    text: str | None = Field(default=None, max_length=32000)


def _chain_json(channel: dict) -> dict:
    from ..engine import channel_chain, channel_config

    return {"channelId": channel["id"], "agentIds": channel_chain(channel),
            "approval": bool(channel_config(channel).get("chainApproval"))}


@bp.get("/api/channels/<channel_id>/chain")
@auth.requires("guest")
async def get_chain(channel_id: str):
    return jsonify(_chain_json(await auth.authorized_channel(current_app.xj, g.actor, channel_id)))


@bp.put("/api/channels/<channel_id>/chain")
@auth.requires("member")
@validate_request(ChainBody)
async def put_chain(channel_id: str, data: ChainBody):
    core = current_app.xj
    channel = await auth.authorized_channel(core, g.actor, channel_id, "channel.manage")
    if channel["type"] != "group":
        raise BadRequest("Only a group can have a chain", "not_a_group")
    members = set(await chat.channel_agent_ids(core.db, channel_id))
    strangers = [a for a in data.agentIds if a not in members]
    if strangers:
        raise BadRequest(f"Not agents of this group: {', '.join(strangers)}", "invalid_chain")

    return jsonify(_chain_json(await chat.set_chain(core.db, channel_id, data.agentIds, approval=data.approval)))


@bp.post("/api/chains")
@auth.requires("guest")
@validate_request(StartBody)
async def start_chain(data: StartBody):
    from ..engine import channel_chain

    core = current_app.xj
    channel = await auth.authorized_channel(core, g.actor, data.channelId, "channel.write")
    chain = channel_chain(channel)
    if not chain:
        raise BadRequest("This channel has no chain", "no_chain")
    charge("turns")
    message = await chat.create_message(core, channel_id=channel["id"], content=data.input, user_id=g.actor.id)
    await core.hook("on_message", message=message, channel=channel, actor=g.actor)
    run = await core.engine.chains.start(channel, chain, message, g.actor)
    return jsonify(run.json()), 201


async def _run(chain_id: str, action: str = "channel.read"):
    run = await current_app.xj.engine.chains.get(chain_id)
    await current_app.xj.engine.chains.authorize(g.actor, run, action)
    return run


@bp.get("/api/channels/<channel_id>/chains")
@auth.requires("guest")
async def list_runs(channel_id: str):
    """The channel's chain runs, newest first: when, who started it, steps, status."""
    channel = await auth.authorized_channel(current_app.xj, g.actor, channel_id)
    return jsonify({"runs": await current_app.xj.engine.chains.list(channel["id"])})


@bp.get("/api/chains/<chain_id>")
@auth.requires("guest")
async def get_run(chain_id: str):
    return jsonify((await _run(chain_id)).json())


@bp.post("/api/chains/<chain_id>/decision")
@auth.requires("guest")
@validate_request(DecisionBody)
async def decide(chain_id: str, data: DecisionBody):
    run = await _run(chain_id, "chain.decide")
    await current_app.xj.engine.chains.decide(run.id, data.action, data.text)
    return jsonify(run.json())
