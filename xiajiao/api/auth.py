"""Login, logout and who-am-I. Also installs the rate limiters on the core."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from quart import Blueprint, g, jsonify, request
from quart_schema import validate_request

from .. import auth
from ..errors import BadRequest, Unauthorized
from ..ratelimit import Limits
from ..quart_app import current_app

bp = Blueprint("auth", __name__)


@bp.record_once
def _install_limiters(state) -> None:
    core = state.app.xj
    core.limits = Limits(core.settings)
    core.limiter = core.limits.requests


@bp.app_errorhandler(UnicodeDecodeError)
async def _not_utf8(err: UnicodeDecodeError):
    # a request body (JSON, form) that is not UTF-8 is bad input, for every route
    return jsonify({"error": "The request body is not valid UTF-8", "code": "invalid_encoding"}), 400


@dataclass
class ProfileChange:
    displayName: str | None = None
    avatar: str | None = None


@dataclass
class PasswordChange:
    currentPassword: str
    newPassword: str


@dataclass
class LoginBody:
    password: str
    username: str | None = None


def _secure() -> bool:
    return current_app.xj.settings.secure_cookies or g.get("client_scheme", request.scheme) == "https"


def client_address() -> str:
    """The client's address (from X-Forwarded-For only behind a trusted proxy)."""
    return g.get("client_address") or request.remote_addr or "unknown"


def session_response(body: dict, token: str):
    """A JSON reply that sets the session cookie (HttpOnly, SameSite=Strict, Secure behind HTTPS)."""
    days = current_app.xj.settings.session_days
    resp = jsonify(body)
    resp.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(),
                    max_age=days * 86400, path="/")
    return resp


async def start_session(user_id: str) -> str:
    core = current_app.xj
    return await auth.create_session(core.db, user_id, days=core.settings.session_days,
                                     user_agent=request.headers.get("User-Agent", ""), address=client_address())


@bp.post("/api/login")
@auth.requires(None)
@validate_request(LoginBody)
async def login(data: LoginBody):
    core = current_app.xj
    throttle, address = core.limits.logins, client_address()
    account = (data.username or "owner").lower()  # no username: the owner
    throttle.check(address, account)
    user = await auth.login(core.db, username=data.username, password=data.password)
    if user is None:
        throttle.failed(address, account)
        raise Unauthorized("Invalid password", "invalid_credentials")
    throttle.succeeded(address, account)
    return session_response({"ok": True}, await start_session(user["id"]))


@bp.post("/api/logout")
@auth.requires(None)
async def logout():
    core = current_app.xj
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        await auth.end_session(core.db, token)
        await core.hub.disconnect_credential(auth.token_hash(token))
    resp = jsonify({"ok": True})
    resp.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return resp


@bp.get("/api/me")
@auth.requires("guest")
async def me():
    actor = g.actor
    user = await auth.get_user(current_app.xj.db, actor.id)
    if user is None:  # deleted while the session lived
        raise Unauthorized("Sign in again", "unauthorized")
    return jsonify({"user": auth.public_user(user)})


@bp.put("/api/me")
@auth.requires("guest")
@validate_request(ProfileChange)
async def update_me(data: ProfileChange):
    """Change one's own display name or avatar."""
    user = await auth.update_profile(current_app.xj.db, g.actor.id, display_name=data.displayName, avatar=data.avatar)
    return jsonify({"user": user})


@bp.post("/api/me/password")
@auth.requires("guest")
@validate_request(PasswordChange)
async def change_password(data: PasswordChange):
    """Change one's own password (the current one is checked); every other session of the account ends."""
    core = current_app.xj
    throttle, address, account = core.limits.logins, client_address(), f"id:{g.actor.id}"
    throttle.check(address, account)  # the current password is guessed like a login's
    try:
        await auth.change_own_password(core.db, g.actor.id, data.currentPassword, data.newPassword,
                                       request.cookies.get(auth.SESSION_COOKIE))
    except BadRequest as exc:
        if exc.code == "wrong_password":
            throttle.failed(address, account)
        raise
    throttle.succeeded(address, account)
    return jsonify({"ok": True})
