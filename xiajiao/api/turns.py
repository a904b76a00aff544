"""Running agent turns: list them, stop one (or every one of a channel). The partial reply is kept."""
from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_querystring, validate_request

from .. import auth
from ..errors import BadRequest, NotFound
from ..quart_app import current_app

bp = Blueprint("turns", __name__)


class StopBody(BaseModel):
    messageId: str | None = None
    channelId: str | None = None


class TurnsQuery(BaseModel):
    channelId: str


class TurnBody(BaseModel):
    channelId: str
    content: str = ""
    metadata: dict = Field(default_factory=dict)


@bp.get("/api/turns")
@auth.requires("guest")
@validate_querystring(TurnsQuery)
async def list_turns(query_args: TurnsQuery):
    channel = await auth.authorized_channel(current_app.xj, g.actor, query_args.channelId)
    return jsonify({"turns": current_app.xj.engine.running_in(channel["id"])})


@bp.post("/api/turns/stop")
@auth.requires("guest")
@validate_request(StopBody)
async def stop(data: StopBody):
    core = current_app.xj
    engine = core.engine
    if bool(data.messageId) == bool(data.channelId):
        raise BadRequest("Give exactly one of messageId or channelId", "invalid_stop")
    if data.messageId:
        turn = engine.running.get(data.messageId)
        if turn is None:
            raise NotFound("No running reply with this id", "turn_not_found")
        await engine.authorize_stop(g.actor, turn)
        return jsonify({"stopped": [data.messageId] if engine.stop_turn(data.messageId) else []})
    channel = await auth.authorized_channel(core, g.actor, data.channelId or "", "channel.write")
    return jsonify({"stopped": await engine.stop_channel_for(g.actor, channel["id"])})

@bp.post("/api/turns")
@auth.requires("guest")
@validate_request(TurnBody)
async def run_turn(data: TurnBody):
    """Post a message and wait for the answers: ``{"message", "replies": [...]}`` (no streaming; for scripts).

    A failed reply is in ``replies`` with ``status: "error"`` and ``metadata.error``."""
    from .messages import store_user_message

    core = current_app.xj
    msg, channel, _ids = await store_user_message(data.channelId, data.content, "text", data.metadata)
    replies = await core.engine.reply_to(msg, channel, g.actor)
    out = {"message": msg, "replies": replies}
    if not replies:
        out.update(await core.engine.who_answers(msg, channel))
    return jsonify(out)
