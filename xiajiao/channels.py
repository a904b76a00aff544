"""Channel actions on behalf of a person, shared by the routes and the plugins (the ``manage_channel``
tool): each checks the actor's rights through the one authorization path, stores, and tells the
people concerned over the hub."""
from __future__ import annotations

from typing import Any

from . import auth, chat
from .errors import Forbidden
from .models import Actor


def tell_added(core: Any, actor: Actor, channel_id: str, user_ids: list[str]) -> None:
    """People put in a channel by someone else learn it at once (their app loads and follows it)."""
    for uid in set(user_ids) - {actor.id}:
        core.hub.send_to_user(uid, "channel_added", {"channelId": channel_id})


async def open_channel(core: Any, actor: Actor, *, name: str, type: str = "group", agent_ids: list[str] | tuple[()] = (),
                       user_ids: list[str] | tuple[()] = (), default_agent_id: str | None = None) -> dict:
    if not actor.at_least("member"):
        raise Forbidden("Guests may not create channels", "forbidden")
    channel = await chat.create_channel(core.db, name=name.strip() or name, type=type, creator_id=actor.id,
                                        agent_ids=list(agent_ids), user_ids=list(user_ids),
                                        default_agent_id=default_agent_id, creator_role=actor.role)
    tell_added(core, actor, channel["id"], channel["userIds"])
    return channel


async def add_members(core: Any, actor: Actor, channel_id: str, *, user_ids: list[str] | tuple[()] = (),
                      agent_ids: list[str] | tuple[()] = (), read_only: bool = False) -> dict:
    channel = await auth.authorized_channel(core, actor, channel_id, "channel.manage")
    view = await chat.add_members(core.db, channel, user_ids=list(user_ids), agent_ids=list(agent_ids),
                                  read_only=read_only)
    tell_added(core, actor, channel_id, list(user_ids))
    core.hub.publish(channel_id, "channel_updated", view)
    return view


async def rename(core: Any, actor: Actor, channel_id: str, name: str) -> dict:
    await auth.authorized_channel(core, actor, channel_id, "channel.manage")
    view = await chat.update_channel(core.db, channel_id, name=name.strip() or name)
    core.hub.publish(channel_id, "channel_updated", view)
    return view
