"""The WebSocket endpoint ``/ws``: the seed's protocol, extended in the same style.

Frames are JSON ``{"type", "data"}``; a client may also put the fields at the top
level (``{"type": "auth", "token": …}``, as the seed shows). The connection is
authenticated by an ``auth`` frame (session token or API key) or by the session
cookie / API key headers of the upgrade request.

Frame handlers live in ``core.ws_handlers``: a dict of frame type -> ``async
fn(conn, data)``, where ``conn`` is the :class:`xiajiao.realtime.Connection`
(``conn.actor`` the caller, ``conn.app`` the core, ``conn.send_frame(type, data)``
to answer) and ``data`` the frame's fields. Other parts of the core register
their own types there (e.g. the engine's ``stop``); a handler raising a
:class:`xiajiao.errors.XiajiaoError` answers with an ``error`` frame carrying its
code. Before ``auth`` only ``auth`` and ``ping`` are served; other frames get an
``error`` (code ``unauthenticated``) and the socket is closed after a few.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from quart import Blueprint, g, websocket

from .. import auth, chat, safejson
from ..errors import BadRequest, RateLimited, Unauthorized, XiajiaoError
from ..realtime import Connection
from ..quart_app import current_app

log = logging.getLogger("xiajiao.ws")

bp = Blueprint("ws", __name__)

PRE_AUTH = {"auth", "ping"}
MAX_STRIKES = 3  # unauthenticated frames tolerated before the socket is closed
CLOSE_POLICY = 1008


def frame_fields(frame: dict) -> dict:
    """The frame's data: top-level fields (flat form) overlaid by ``data`` (nested form)."""
    fields = {k: v for k, v in frame.items() if k not in ("type", "data")}
    if isinstance(frame.get("data"), dict):
        fields.update(frame["data"])
    return fields


def send_error(conn: Connection, code: str, message: str, **extra: Any) -> None:
    conn.send_frame("error", {"code": code, "message": message, **extra})


async def _presence(core, user_id: str, status: str) -> None:
    for channel_id in await chat.user_channel_ids(core.db, user_id):
        core.hub.publish(channel_id, "presence", {"userId": user_id, "status": status})


async def _become(conn: Connection, actor) -> None:
    """Attach an authenticated user to the connection (announcing him online if new)."""
    core = conn.app
    if conn.actor is not None and conn.actor.id != actor.id:
        for channel_id in list(conn.channels):
            core.hub.unsubscribe(conn, channel_id)
        await _went_away(core, conn.actor.id, conn)
    was_online = any(c.actor is not None and c.actor.id == actor.id and c is not conn for c in core.hub.connections)
    conn.actor = actor
    if not was_online:
        await _presence(core, actor.id, "online")


async def _went_away(core, user_id: str, conn: Connection) -> None:
    if not any(c.actor is not None and c.actor.id == user_id and c is not conn for c in core.hub.connections):
        await _presence(core, user_id, "offline")


# ------------------------------------------------------------------ built-in frame handlers


async def on_auth(conn: Connection, data: dict) -> None:
    token = data.get("token") or data.get("apiKey") or ""
    if not isinstance(token, str):
        raise BadRequest("token must be a string", "invalid_frame")
    actor = None
    if token:
        actor = await auth.actor_from_api_key(conn.app.db, token) if token.startswith(auth.API_KEY_PREFIX) \
            else await auth.actor_from_session(conn.app.db, token)
        if actor is None:
            raise Unauthorized("Invalid or expired token", "invalid_token")
        await _become(conn, actor)
        conn.credential = auth.token_hash(token)
    elif conn.actor is None:
        raise Unauthorized("Send a session token or API key", "invalid_token")
    conn.send_frame("auth_ok", {"userId": conn.caller.id}, userId=conn.caller.id)


async def on_ping(conn: Connection, data: dict) -> None:
    conn.send_frame("pong")


def _channel_id(data: dict) -> str:
    cid = data.get("channelId")
    if not isinstance(cid, str) or not cid:
        raise BadRequest("channelId is required", "invalid_frame")
    return cid


async def on_subscribe(conn: Connection, data: dict) -> None:
    cid = _channel_id(data)
    since, epoch = data.get("since"), data.get("epoch")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise BadRequest("since must be a sequence number (0 or more)", "invalid_frame")
    if epoch is not None and not isinstance(epoch, str):
        raise BadRequest("epoch must be a string", "invalid_frame")
    await auth.authorized_channel(conn.app, conn.caller, cid)
    conn.app.hub.subscribe(conn, cid, since=since, epoch=epoch)


async def on_unsubscribe(conn: Connection, data: dict) -> None:
    cid = _channel_id(data)
    conn.app.hub.unsubscribe(conn, cid)
    conn.send_frame("unsubscribed", {"channelId": cid, "reason": "requested"})


async def on_typing(conn: Connection, data: dict) -> None:
    cid = _channel_id(data)
    await auth.authorized_channel(conn.app, conn.caller, cid, "channel.write")
    conn.app.hub.publish(cid, "typing", {"channelId": cid, "userId": conn.caller.id, "name": conn.caller.name})


BUILTIN = {"auth": on_auth, "ping": on_ping, "subscribe": on_subscribe, "unsubscribe": on_unsubscribe,
           "typing": on_typing}


@bp.record_once
def _install_handlers(state) -> None:
    state.app.xj.ws_handlers.update(BUILTIN)


# ------------------------------------------------------------------ the socket


async def handle_frame(core, conn: Connection, raw: str | bytes) -> None:
    """Parse, check and dispatch one client frame; every refusal is an ``error`` frame."""
    limit = core.settings.max_message_chars * 4 + 4096
    if not raw:  # an empty frame (Quart hands an empty binary one over as None)
        send_error(conn, "invalid_json", "Frames are JSON objects")
        return
    if len(raw) > limit:
        send_error(conn, "frame_too_large", f"A frame may have at most {limit} bytes")
        return
    try:
        frame = safejson.loads(raw)
    except BadRequest as err:
        send_error(conn, err.code, err.message)
        return
    except ValueError:
        send_error(conn, "invalid_json", "Frames are JSON objects")
        return
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        send_error(conn, "invalid_frame", 'A frame is {"type": ..., "data": {...}}')
        return
    type_ = frame["type"]
    if conn.actor is None and type_ not in PRE_AUTH:
        conn.strikes += 1
        send_error(conn, "unauthenticated", "Send an auth frame first", type=type_)
        if conn.strikes >= MAX_STRIKES:
            await conn.shutdown(CLOSE_POLICY)
        return
    wait = core.limiter.hit(auth.client_key(conn.actor, conn.address))
    if wait > 0:
        limited = RateLimited("Too many frames, slow down", retry_after=wait)
        send_error(conn, limited.code, limited.message, type=type_, **limited.extra)
        return
    handler = core.ws_handlers.get(type_)
    if handler is None:
        send_error(conn, "unknown_type", f"Unknown frame type {type_!r}", type=type_)
        return
    try:
        await auth.authorize_frame(core, conn.actor, type_)
        await handler(conn, frame_fields(frame))
    except asyncio.CancelledError:
        raise
    except XiajiaoError as err:
        if type_ == "auth" and conn.actor is None:
            conn.strikes += 1
        send_error(conn, err.code, err.message, type=type_, **err.extra)
        if conn.actor is None and conn.strikes >= MAX_STRIKES:
            await conn.shutdown(CLOSE_POLICY)
    except Exception:  # a handler's bug must not kill the socket; it is logged
        log.exception("websocket handler failed", extra={"type": type_})
        send_error(conn, "internal_error", "The server failed to handle this frame", type=type_)


@bp.websocket("/ws")
@auth.requires(None)
async def ws():
    core = current_app.xj
    # A page of another site must not ride on the user's cookie (cross-site WebSocket hijacking);
    # it can still authenticate with a token it knows, like any script.
    host = g.get("client_host") or websocket.headers.get("Host", "")
    cookie = websocket.cookies.get(auth.SESSION_COOKIE) if auth.same_origin(websocket.headers, host=host) else None
    actor = await auth.resolve_actor(core.db, cookie=cookie, headers=websocket.headers)
    await websocket.accept()

    async def close(code: int) -> None:
        await websocket.close(code)

    conn = core.hub.connect(websocket.send, close)
    conn.app, conn.address = core, g.get("client_address") or websocket.remote_addr or "unknown"
    try:
        if actor is not None:
            await _become(conn, actor)
            conn.credential = auth.token_hash(auth.presented_key(websocket.headers) or cookie or "")
        while not conn.closed:
            await handle_frame(core, conn, await websocket.receive())
    finally:
        user = conn.actor
        if conn.sender and not conn.sender.done() and conn.close_code is not None:
            await asyncio.wait([conn.sender], timeout=2)  # let the last word (resync, close) go out
        await core.hub.disconnect(conn)
        if user is not None and not core.stopping:  # at shutdown nobody is left to tell
            await _went_away(core, user.id, conn)
