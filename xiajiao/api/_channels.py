"""Helpers the engine's routes share."""
from __future__ import annotations

from quart import g

from .. import auth, chat
from ..errors import NotFound
from ..quart_app import current_app


async def writable_channel(channel_id: str) -> dict:
    """The channel, if the caller may post in it (else 404: its existence is not revealed)."""
    core = current_app.xj
    channel = await chat.get_channel(core.db, channel_id)
    if channel is None or not await auth.can_write_channel(core.db, g.actor, channel):
        raise NotFound("Channel not found", "channel_not_found")
    return channel
