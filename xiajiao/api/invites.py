"""Invite links: the owner and admins invite people to a role; accepting one logs in."""
from __future__ import annotations

from dataclasses import field

from pydantic.dataclasses import dataclass

from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import auth
from ..ratelimit import charge
from .auth import session_response, start_session
from ..quart_app import current_app

bp = Blueprint("invites", __name__)


@dataclass
class NewInvite:
    role: str = "member"
    hours: float = 72
    maxUses: int = 1
    channelIds: list[str] = field(default_factory=list)


@dataclass
class Acceptance:
    token: str
    username: str
    password: str
    displayName: str = ""


@bp.get("/api/invites")
@auth.requires("admin")
async def list_invites():
    return jsonify({"invites": await auth.list_invites(current_app.xj.db)})


@bp.post("/api/invites")
@auth.requires("admin")
@validate_request(NewInvite)
async def create_invite(data: NewInvite):
    invite, token = await auth.create_invite(current_app.xj.db, created_by=g.actor, role=data.role,
                                             hours=data.hours, max_uses=data.maxUses,
                                             channel_ids=data.channelIds)
    return jsonify({"invite": invite, "token": token, "url": f"/invite/{token}"}), 201


@bp.delete("/api/invites/<invite_id>")
@auth.requires("admin")
async def revoke_invite(invite_id: str):
    await auth.revoke_invite(current_app.xj.db, g.actor, invite_id)
    return jsonify({"ok": True})


@bp.post("/api/invites/accept")
@auth.requires(None)
@validate_request(Acceptance)
async def accept_invite(data: Acceptance):
    core = current_app.xj
    charge("invites")  # their own bucket: accepting invites never locks logins out
    user = await auth.accept_invite(core.db, data.token, username=data.username, password=data.password,
                                    display_name=data.displayName)
    return session_response({"ok": True, "user": auth.public_user(user)}, await start_session(user["id"]))
