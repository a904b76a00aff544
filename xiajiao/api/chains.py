"""Collaboration chains: define a group's chain, start a run, approve / edit / stop between steps."""
from __future__ import annotations

import json

from pydantic import BaseModel, Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import auth, chat
from ._channels import writable_channel
from ..errors import BadRequest
from ..ids import now_iso
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
    return jsonify(_chain_json(await writable_channel(channel_id)))


@bp.put("/api/channels/<channel_id>/chain")
@auth.requires("member")
@validate_request(ChainBody)
async def put_chain(channel_id: str, data: ChainBody):
    core = current_app.xj
    channel = await writable_channel(channel_id)
    if channel["type"] != "group":
        raise BadRequest("Only a group can have a chain", "not_a_group")
    members = set(await chat.channel_agent_ids(core.db, channel_id))
    strangers = [a for a in data.agentIds if a not in members]
    if strangers:
        raise BadRequest(f"Not agents of this group: {', '.join(strangers)}", "invalid_chain")

    def work(conn):
        row = conn.execute("SELECT config FROM channels WHERE id = ?", (channel_id,)).fetchone()
        config = json.loads(row["config"] or "{}")
        config["chainApproval"] = data.approval
        conn.execute("UPDATE channels SET chain = ?, config = ?, updated_at = ? WHERE id = ?",
                     (json.dumps(data.agentIds), json.dumps(config, ensure_ascii=False), now_iso(), channel_id))

    await core.db.run_write(work)
    return jsonify(_chain_json(await chat.get_channel(core.db, channel_id)))


@bp.post("/api/chains")
@auth.requires("guest")
@validate_request(StartBody)
async def start_chain(data: StartBody):
    from ..engine import channel_chain

    core = current_app.xj
    channel = await writable_channel(data.channelId)
    chain = channel_chain(channel)
    if not chain:
        raise BadRequest("This channel has no chain", "no_chain")
    message = await chat.create_message(core, channel_id=channel["id"], content=data.input, user_id=g.actor.id)
    run = await core.engine.chains.start(channel, chain, message, g.actor)
    return jsonify(run.json()), 201


async def _run(chain_id: str):
    run = current_app.xj.engine.chains.get(chain_id)
    await writable_channel(run.channel["id"])
    return run


@bp.get("/api/chains/<chain_id>")
@auth.requires("guest")
async def get_run(chain_id: str):
    return jsonify((await _run(chain_id)).json())


@bp.post("/api/chains/<chain_id>/decision")
@auth.requires("guest")
@validate_request(DecisionBody)
async def decide(chain_id: str, data: DecisionBody):
    run = await _run(chain_id)
    current_app.xj.engine.chains.decide(run.id, data.action, data.text)
    return jsonify(run.json())
