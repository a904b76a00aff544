"""Accounts, managed by the owner and admins."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import auth
from ..quart_app import current_app

bp = Blueprint("users", __name__)


@dataclass
class NewUser:
    username: str
    password: str
    role: str = "member"
    displayName: str = ""


@dataclass
class UserChange:
    role: str | None = None
    disabled: bool | None = None
    password: str | None = None
    displayName: str | None = None


@bp.get("/api/users")
@auth.requires("admin")
async def list_users():
    return jsonify({"users": await auth.list_users(current_app.xj.db)})


@bp.post("/api/users")
@auth.requires("admin")
@validate_request(NewUser)
async def create_user(data: NewUser):
    auth.check_can_grant(g.actor, data.role)
    row = await auth.create_user(current_app.xj.db, username=data.username, password=data.password,
                                 role=data.role, display_name=data.displayName)
    return jsonify({"user": auth.public_user(row)}), 201


@bp.put("/api/users/<user_id>")
@auth.requires("admin")
@validate_request(UserChange)
async def update_user(user_id: str, data: UserChange):
    core = current_app.xj
    user, ended = await auth.update_user(core.db, g.actor, user_id, role=data.role, disabled=data.disabled,
                                         password=data.password, display_name=data.displayName)
    if ended:
        await core.hub.disconnect_user(user_id)
    return jsonify({"user": user})


@bp.delete("/api/users/<user_id>")
@auth.requires("admin")
async def delete_user(user_id: str):
    core = current_app.xj
    await auth.delete_user(core.db, g.actor, user_id)
    await core.hub.disconnect_user(user_id)
    return jsonify({"ok": True})


@bp.get("/api/team")
@auth.requires("guest")
async def team():
    """The team at a glance, for everyone signed in: the people one may see, the agents, and whether the
    default model is a built-in one (the offline demo) or one the owner configured."""
    core = current_app.xj
    agents = [{"id": a["id"], "name": a["name"], "avatar": a.get("avatar") or "", "description": a.get("description") or ""}
              for a in core.engine.agents.all()]
    return jsonify({"people": await auth.list_people(core.db, g.actor), "agents": agents,
                    "model": core.engine.gateway.default_model_info()})
