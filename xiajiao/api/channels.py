"""Channels: DMs (one user, one agent) and groups, and their members."""
from __future__ import annotations

from dataclasses import field

from pydantic.dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_request
from typing import Annotated

from .. import auth, channels, chat
from ..quart_app import current_app

bp = Blueprint("channels", __name__)

Name = Annotated[str, Field(min_length=1, max_length=100)]


@dataclass
class NewChannel:
    name: Name
    type: Literal["dm", "group"] = "group"
    agentIds: list[str] = field(default_factory=list)
    userIds: list[str] = field(default_factory=list)
    defaultAgentId: str | None = None


class ChannelChange(BaseModel):
    """A key left out keeps its value; ``"defaultAgentId": null`` clears the default agent.

    ``agentIds`` replaces the channel's agents; ``systemPrompt`` (standing instructions for every
    agent here) and ``consolidatePrompt`` (how its conversations are summarized into memory) are
    cleared with ``""``. Unknown keys are refused rather than silently dropped.
    """

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    defaultAgentId: str | None = None
    agentIds: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(default=None, max_length=50)
    systemPrompt: str | None = Field(default=None, max_length=8000)
    consolidatePrompt: str | None = Field(default=None, max_length=4000)


@dataclass
class NewMembers:
    userIds: list[str] = field(default_factory=list)
    agentIds: list[str] = field(default_factory=list)
    readOnly: bool = False


def _reader_id() -> str | None:
    return None if g.actor.at_least("admin") else g.actor.id


@bp.get("/api/channels")
@auth.requires("guest")
async def list_channels():
    core = current_app.xj
    channels = await chat.list_channels(core.db, _reader_id(), g.actor.id)
    return jsonify({"channels": await auth.readable(core, g.actor, channels, key="id")})


@bp.post("/api/channels")
@auth.requires("member")
@validate_request(NewChannel)
async def create_channel(data: NewChannel):
    channel = await channels.open_channel(current_app.xj, g.actor, name=data.name, type=data.type,
                                          agent_ids=data.agentIds, user_ids=data.userIds,
                                          default_agent_id=data.defaultAgentId)
    return jsonify({"id": channel["id"], "ok": True, "channel": channel}), 201


@bp.get("/api/channels/<channel_id>")
@auth.requires("guest")
async def get_channel(channel_id: str):
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id)
    return jsonify({"channel": await chat.channel_view(core.db, channel_id)})


@bp.put("/api/channels/<channel_id>")
@auth.requires("guest")
@validate_request(ChannelChange)
async def update_channel(channel_id: str, data: ChannelChange):
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id, "channel.manage")
    if data.agentIds is not None:
        await chat.set_channel_agents(core.db, channel_id, data.agentIds)
    prompts = {k: getattr(data, k).strip() for k in ("systemPrompt", "consolidatePrompt")
               if getattr(data, k) is not None}
    if prompts:
        await chat.update_channel_config(core.db, channel_id, prompts)
    channel = await chat.update_channel(core.db, channel_id, name=data.name.strip() if data.name else None,
                                        default_agent_id=data.defaultAgentId,
                                        set_default="defaultAgentId" in data.model_fields_set)
    core.hub.publish(channel_id, "channel_updated", channel)
    return jsonify({"ok": True, "channel": channel})


@bp.delete("/api/channels/<channel_id>")
@auth.requires("guest")
async def delete_channel(channel_id: str):
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id, "channel.manage")
    for cid in await chat.delete_channel(core.db, channel_id):  # with its topics and branches
        core.hub.publish(cid, "channel_deleted", {"channelId": cid})
        core.hub.drop_channel(cid)
    return jsonify({"ok": True})


@bp.post("/api/channels/<channel_id>/members")
@auth.requires("guest")
@validate_request(NewMembers)
async def add_members(channel_id: str, data: NewMembers):
    view = await channels.add_members(current_app.xj, g.actor, channel_id, user_ids=data.userIds,
                                      agent_ids=data.agentIds, read_only=data.readOnly)
    return jsonify({"ok": True, "channel": view})


@bp.delete("/api/channels/<channel_id>/members/<member_id>")
@auth.requires("guest")
async def remove_member(channel_id: str, member_id: str):
    core = current_app.xj
    leaving = member_id == g.actor.id  # anyone may leave a channel he can see
    channel = await auth.authorized_channel(core, g.actor, channel_id,
                                            "channel.read" if leaving else "channel.manage")
    member_type = await chat.remove_member(core.db, channel, member_id)
    if member_type == "user":
        core.hub.kick(channel_id, member_id)
    view = await chat.channel_view(core.db, channel_id)
    core.hub.publish(channel_id, "channel_updated", view)
    return jsonify({"ok": True, "channel": view})


class ReadMark(BaseModel):
    seq: int | None = Field(default=None, ge=0)


@bp.post("/api/channels/<channel_id>/read")
@auth.requires("guest")
@validate_request(ReadMark)
async def mark_read(channel_id: str, data: ReadMark):
    """Move the caller's read marker (to ``seq``, or to the last message); unread counts follow it."""
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id)
    seq = await chat.mark_read(core.db, channel_id, g.actor.id, data.seq)
    return jsonify({"ok": True, "lastReadSeq": seq})


# ------------------------------------------------------------------ topics and branches


class NewTopic(BaseModel):
    name: Name


class Fork(BaseModel):
    messageId: str = Field(min_length=1, max_length=100)
    name: Name | None = None


class Archive(BaseModel):
    archived: bool = True


@bp.get("/api/channels/<channel_id>/tree")
@auth.requires("guest")
async def channel_tree(channel_id: str):
    """The conversation tree the channel is part of (root, topics, branches), parents first."""
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id)
    return jsonify(await chat.channel_tree(core.db, channel_id))


async def _child_created(core, parent_id: str, child: dict):
    core.hub.publish(parent_id, "channel_created", child)
    return jsonify({"id": child["id"], "ok": True, "channel": child}), 201


@bp.post("/api/channels/<channel_id>/topics")
@auth.requires("guest")
@validate_request(NewTopic)
async def new_topic(channel_id: str, data: NewTopic):
    """A new topic under a conversation: same members, empty history."""
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id, "channel.write")
    child = await chat.create_child(core.db, channel_id, name=data.name.strip() or data.name, creator_id=g.actor.id)
    return await _child_created(core, channel_id, child)


@bp.post("/api/channels/<channel_id>/fork")
@auth.requires("guest")
@validate_request(Fork)
async def fork(channel_id: str, data: Fork):
    """A branch from one of the conversation's messages: it inherits the history up to it."""
    core = current_app.xj
    parent = await auth.authorized_channel(core, g.actor, channel_id, "channel.write")
    name = (data.name or "").strip() or f"{parent['name']} (branch)"
    child = await chat.create_child(core.db, channel_id, name=name[:100], creator_id=g.actor.id,
                                    message_id=data.messageId)
    return await _child_created(core, channel_id, child)


@bp.post("/api/channels/<channel_id>/archive")
@auth.requires("guest")
@validate_request(Archive)
async def archive(channel_id: str, data: Archive):
    """Archive a conversation with its topics and branches (``archived: false`` brings it back)."""
    core = current_app.xj
    await auth.authorized_channel(core, g.actor, channel_id, "channel.manage")
    channel = await chat.set_archived(core.db, channel_id, data.archived)
    core.hub.publish(channel_id, "channel_updated", channel)
    return jsonify({"ok": True, "channel": channel})
