"""Messages: history pages, posting, editing, deleting, and full-text search."""
from __future__ import annotations

import json
from dataclasses import field

from pydantic.dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_querystring, validate_request
from typing import Annotated

from .. import auth, chat
from ..errors import BadRequest, Conflict, NotFound, TooLarge
from ..ratelimit import charge
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
    # replies streaming now carry the text sent so far; the hub's frames after ``seq`` carry the rest
    # (no await between the two, so nothing falls in between)
    if core.engine is not None and not query_args.before:
        messages = core.engine.live_view(query_args.channelId, messages)
    return jsonify({"messages": messages, "seq": core.hub.seq_of(query_args.channelId), "epoch": core.hub.epoch})


def check_metadata(metadata: dict, settings) -> None:
    """Metadata is stored and pushed to every subscriber: bounded in bytes and keys."""
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > settings.max_metadata_bytes:
        raise TooLarge(f"metadata is larger than {settings.max_metadata_bytes} bytes", "metadata_too_large")
    keys, stack = 0, [metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if keys > settings.max_metadata_keys:
        raise TooLarge(f"metadata has more than {settings.max_metadata_keys} keys", "metadata_too_large")


@bp.post("/api/messages")
@auth.requires("guest")
@validate_request(NewMessage)
async def post_message(data: NewMessage):
    core = current_app.xj
    msg, channel, agent_ids = await store_user_message(data.channelId, data.content, data.type, data.metadata)
    out = {"id": msg["id"], "ok": True}
    if core.engine is not None:
        routing = await core.engine.route(msg, channel, agent_ids)  # once, for the answer and the turns
        out.update(await core.engine.who_answers(msg, channel, routing))
        core.spawn(core.engine.handle_user_message(msg, channel, g.actor, routing), name=f"turn:{msg['id']}")
    return jsonify(out)


async def store_user_message(channel_id: str, content: str, type: str = "text",
                             metadata: dict | None = None) -> tuple[dict, dict, list[str] | None]:
    """Check and store a message of the caller (with its attachments), then tell the plugins.

    Returns the message, its channel and the channel's agent ids (None without an engine)."""
    core = current_app.xj
    metadata = dict(metadata or {})
    check_metadata(metadata, core.settings)
    attachments = check_attachments(metadata.get("attachments"))
    check_content(content, allow_empty=bool(attachments))
    # the channel and its agents in one read (the engine routes the message to them)
    channel = await auth.authorized_channel(core, g.actor, channel_id, "channel.write", agents=core.engine is not None)
    agent_ids = channel.pop("_agent_ids", None)
    if channel.get("archived_at"):
        raise Conflict("This conversation is archived; unarchive it to write in it", "channel_archived")
    if agent_ids:
        charge("turns")  # agents will answer: the expensive kind of request
    if attachments:
        metadata["attachments"] = attachments
    msg = await chat.create_message(core, channel_id=channel["id"], content=content, type=type,
                                    user_id=g.actor.id, metadata=metadata)
    await core.hook("on_message", message=msg, channel=channel, actor=g.actor)
    return msg, channel, agent_ids


MAX_ATTACHMENTS = 10


def check_attachments(items: Any) -> list[dict]:
    """Attachments are files uploaded through ``/api/upload``: ``[{"url", "name"}]``, at most 10."""
    if items in (None, []):
        return []
    if not isinstance(items, list) or len(items) > MAX_ATTACHMENTS:
        raise BadRequest(f"attachments is a list of at most {MAX_ATTACHMENTS} uploaded files", "invalid_attachment")
    from .uploads import upload_path

    out = []
    for item in items:
        url = item.get("url") if isinstance(item, dict) else None
        path = upload_path(current_app.xj, url) if isinstance(url, str) else None
        if path is None:
            raise BadRequest("An attachment must be a file uploaded with /api/upload", "invalid_attachment")
        name = str(item.get("name") or path.name)[:255]
        out.append({"url": url, "name": name, "size": path.stat().st_size,
                    "mimeType": str(item.get("mimeType") or "")[:100]})
    return out


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
    return jsonify({"query": query_args.q, "results": await auth.readable(core, g.actor, results)})


# ------------------------------------------------------------------ versions: regenerate, retry, edit-and-resend


@dataclass
class Resend:
    content: str


@bp.post("/api/messages/<message_id>/regenerate")
@auth.requires("guest")
async def regenerate(message_id: str):
    """A new version of an agent's reply; the earlier ones stay, as siblings (``versionGroup``)."""
    row, channel = await _message_and_channel(message_id, "channel.write")
    await current_app.xj.engine.regenerate(row, channel, g.actor)
    return jsonify({"ok": True, "versionGroup": row.get("version_group") or row["id"]}), 202


@bp.post("/api/messages/<message_id>/retry")
@auth.requires("guest")
async def retry(message_id: str):
    """Run a failed (or stopped, interrupted) reply again, as its new version."""
    row, channel = await _message_and_channel(message_id, "channel.write")
    if row["status"] not in ("error", "stopped", "interrupted"):
        raise Conflict("Only a failed or stopped reply can be retried", "not_failed")
    await current_app.xj.engine.regenerate(row, channel, g.actor)
    return jsonify({"ok": True, "versionGroup": row.get("version_group") or row["id"]}), 202


@bp.post("/api/messages/<message_id>/resend")
@auth.requires("guest")
@validate_request(Resend)
async def resend(message_id: str, data: Resend):
    """Edit one's own message and have it answered again (the former answers stay as versions)."""
    check_content(data.content)
    row, channel = await _message_and_channel(message_id, "channel.write")
    msg = await current_app.xj.engine.resend(row, channel, g.actor, data.content)
    return jsonify({"ok": True, "message": msg}), 202
