"""Running agent turns: list them, stop one (or every one of a channel). The partial reply is kept."""
from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint, jsonify
from quart_schema import validate_querystring, validate_request

from .. import auth
from ._channels import writable_channel
from ..errors import BadRequest, NotFound
from ..quart_app import current_app

bp = Blueprint("turns", __name__)


class StopBody(BaseModel):
    messageId: str | None = None
    channelId: str | None = None


class TurnsQuery(BaseModel):
    channelId: str




@bp.get("/api/turns")
@auth.requires("guest")
@validate_querystring(TurnsQuery)
async def list_turns(query_args: TurnsQuery):
    channel = await writable_channel(query_args.channelId)
    return jsonify({"turns": current_app.xj.engine.running_in(channel["id"])})


@bp.post("/api/turns/stop")
@auth.requires("guest")
@validate_request(StopBody)
async def stop(data: StopBody):
    engine = current_app.xj.engine
    if bool(data.messageId) == bool(data.channelId):
        raise BadRequest("Give exactly one of messageId or channelId", "invalid_stop")
    if data.messageId:
        turn = engine.running.get(data.messageId)
        if turn is None:
            raise NotFound("No running reply with this id", "turn_not_found")
        await writable_channel(turn.channel["id"])
        return jsonify({"stopped": [data.messageId] if engine.stop_turn(data.messageId) else []})
    channel = await writable_channel(data.channelId)
    return jsonify({"stopped": engine.stop_channel(channel["id"])})
