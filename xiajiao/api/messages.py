"""Messages: history pages, posting, editing, deleting, and full-text search."""
from __future__ import annotations

from dataclasses import field

from pydantic.dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_querystring, validate_request
from typing import Annotated

from .. import auth, chat
from ..errors import BadRequest, NotFound, TooLarge
from ..quart_app import current_app

bp = Blueprint("messages", __name__)


@dataclass
class HistoryQuery:
    channelId: str
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    before: str | None = None
    after: str | None = None


@dataclass
class NewMessage:
    channelId: str
    content: str
    type: Literal["text", "image", "file", "tool_call", "tool_result"] = "text"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class MessageEdit:
    content: str


@dataclass
class SearchQuery:
    q: Annotated[str, Field(min_length=1, max_length=200)]
    channelId: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


def check_content(content: str, *, allow_empty: bool = False) -> None:
    limit = current_app.xj.settings.max_message_chars
    if len(content) > limit:
        raise TooLarge(f"A message may have at most {limit} characters", "message_too_large")
    if not allow_empty and not content.strip():
        raise BadRequest("A message needs some content", "empty_message")


@bp.get("/api/messages")
@auth.requires("guest")
@validate_querystring(HistoryQuery)
async def history(query_args: HistoryQuery):
    core = current_app.xj
    if query_args.before and query_args.after:
        raise BadRequest("Use either before or after, not both", "invalid_page")
    await auth.authorized_channel(core, g.actor, query_args.channelId)
    messages = await chat.list_messages(core.db, query_args.channelId, limit=query_args.limit,
                                        before=query_args.before, after=query_args.after)
    return jsonify({"messages": messages})


@bp.post("/api/messages")
@auth.requires("guest")
@validate_request(NewMessage)
async def post_message(data: NewMessage):
    core = current_app.xj
    check_content(data.content)
    channel = await auth.authorized_channel(core, g.actor, data.channelId, "channel.write")
    msg = await chat.create_message(core, channel_id=channel["id"], content=data.content, type=data.type,
                                    user_id=g.actor.id, metadata=data.metadata)
    await core.hook("on_message", message=msg, channel=channel, actor=g.actor)
    if core.engine is not None:
        core.spawn(core.engine.handle_user_message(msg, channel, g.actor), name=f"turn:{msg['id']}")
    return jsonify({"id": msg["id"], "ok": True})


async def _message_and_channel(message_id: str, action: str) -> tuple[dict, dict]:
    core = current_app.xj
    row = await chat.get_message(core.db, message_id)
    if row is None or row["deleted_at"]:
        raise NotFound("Message not found", "message_not_found")
    try:
        channel = await auth.authorized_channel(core, g.actor, row["channel_id"], action)
    except NotFound:
        raise NotFound("Message not found", "message_not_found") from None
    return row, channel


@bp.put("/api/messages/<message_id>")
@auth.requires("guest")
@validate_request(MessageEdit)
async def edit_message(message_id: str, data: MessageEdit):
    check_content(data.content)
    await _message_and_channel(message_id, "channel.write")
    msg = await chat.edit_message(current_app.xj, message_id, data.content, actor_id=g.actor.id)
    return jsonify({"ok": True, "message": msg})


@bp.delete("/api/messages/<message_id>")
@auth.requires("guest")
async def delete_message(message_id: str):
    await _message_and_channel(message_id, "channel.read")
    msg = await chat.delete_message(current_app.xj, message_id, actor_id=g.actor.id,
                                    moderator=g.actor.at_least("admin"))
    return jsonify({"ok": True, "message": msg})


@bp.get("/api/messages/search")
@auth.requires("guest")
@validate_querystring(SearchQuery)
async def search(query_args: SearchQuery):
    core = current_app.xj
    reader_id = None if g.actor.at_least("admin") else g.actor.id
    if query_args.channelId is not None:
        await auth.authorized_channel(core, g.actor, query_args.channelId)
        reader_id = None  # the channel itself is readable
    results = await chat.search_messages(core.db, query_args.q, reader_id=reader_id,
                                         channel_id=query_args.channelId, limit=query_args.limit)
    return jsonify({"query": query_args.q, "results": results})
