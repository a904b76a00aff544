"""Accounts, roles, sessions, API keys, invites, and the one authorization check.

Roles rank owner > admin > member > guest. Every route declares the least role it
needs with :func:`requires`; resource visibility (channels) is decided by
:func:`can_read_channel` / :func:`can_write_channel`, and plugins may take part
through the ``authorize`` hook.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from typing import Any, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .ids import new_id, now_iso
from .models import ROLES, Actor, role_rank

# Argon2id with the OWASP minimum (19 MiB, 2 passes): memory-hard, ~20 ms a check.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY_HASH = _hasher.hash("timing-equaliser")

SESSION_COOKIE = "session"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("Password must have at least 8 characters", "weak_password")


def public_user(row: dict) -> dict:
    return {"id": row["id"], "username": row["username"], "displayName": row["display_name"] or row["username"],
            "role": row["role"], "createdAt": row["created_at"], "disabled": bool(row.get("disabled"))}


# ------------------------------------------------------------------ users


async def create_user(db, *, username: str, password: str | None, role: str, display_name: str = "",
                      user_id: str | None = None) -> dict:
    if role not in ROLES:
        raise BadRequest(f"Unknown role {role!r}", "invalid_role")
    username = (username or "").strip()
    if not (1 <= len(username) <= 64) or any(c.isspace() for c in username):
        raise BadRequest("Username must be 1-64 characters without spaces", "invalid_username")
    if password is not None:
        check_password_strength(password)
    pw_hash = hash_password(password) if password is not None else None
    uid = user_id or new_id("user")

    def work(conn):
        if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
            raise Conflict(f"Username {username!r} is taken", "username_taken")
        conn.execute(
            "INSERT INTO users (id, username, display_name, role, password_hash, created_at) VALUES (?,?,?,?,?,?)",
            (uid, username, display_name or username, role, pw_hash, now_iso()),
        )
        return conn.execute("SELECT * FROM users WHERE id = ?", (uid,)).fetchone()

    return await db.run_write(work)


async def get_user(db, user_id: str) -> dict | None:
    return await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))


async def owner(db) -> dict | None:
    return await db.fetchone("SELECT * FROM users WHERE role = 'owner' ORDER BY created_at LIMIT 1")


async def ensure_owner(db, password: str | None) -> str | None:
    """Create the owner on first start. Returns the generated password when one was made."""
    if await owner(db):
        return None
    generated = None
    if not password:
        password = generated = generate_password()
    pw_hash = hash_password(password)

    def work(conn):
        if conn.execute("SELECT 1 FROM users WHERE role = 'owner'").fetchone():
            return False
        conn.execute(
            "INSERT INTO users (id, username, display_name, role, password_hash, created_at) VALUES (?,?,?,?,?,?)",
            (new_id("user"), "owner", "Owner", "owner", pw_hash, now_iso()),
        )
        return True

    created = await db.run_write(work)
    return generated if created else None


async def login(db, *, username: str | None, password: str) -> dict | None:
    """The user these credentials belong to, or None. Without a username, the owner."""
    if username:
        user = await db.fetchone("SELECT * FROM users WHERE username = ?", (username,))
    else:
        user = await owner(db)
    ok = verify_password(user["password_hash"] if user else None, password)
    if not ok or user is None or user["disabled"]:
        return None
    return user


# ------------------------------------------------------------------ sessions


async def create_session(db, user_id: str, *, days: int, user_agent: str = "", address: str = "") -> str:
    token = secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, user_agent, address) VALUES (?,?,?,?,?,?)",
        (token_hash(token), user_id, now_iso(), time.time() + days * 86400, user_agent[:200], address[:64]),
    )
    return token


async def end_session(db, token: str) -> None:
    await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))


async def end_user_sessions(db, user_id: str) -> None:
    await db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))


async def actor_from_session(db, token: str) -> Actor | None:
    if not token:
        return None
    row = await db.fetchone(
        "SELECT u.id, u.role, u.display_name, u.username, u.disabled, s.expires_at FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (token_hash(token),),
    )
    if row is None or row["disabled"] or row["expires_at"] < time.time():
        return None
    return Actor(row["id"], row["role"], row["display_name"] or row["username"])


# ------------------------------------------------------------------ API keys

API_KEY_PREFIX = "xj_"


async def create_api_key(db, user_id: str, name: str = "") -> tuple[dict, str]:
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    row = {"id": key_id, "name": (name or "")[:100], "prefix": secret[:7], "createdAt": now_iso(),
           "lastUsedAt": None}
    await db.execute(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) VALUES (?,?,?,?,?,?)",
        (key_id, user_id, row["name"], row["prefix"], token_hash(secret), row["createdAt"]),
    )
    return row, secret


async def list_api_keys(db, user_id: str) -> list[dict]:
    rows = await db.fetchall(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys WHERE user_id = ? AND revoked_at IS NULL "
        "ORDER BY created_at", (user_id,))
    return [{"id": r["id"], "name": r["name"], "prefix": r["prefix"], "createdAt": r["created_at"],
             "lastUsedAt": r["last_used_at"]} for r in rows]


async def revoke_api_key(db, user_id: str, key_id: str) -> None:
    res = await db.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        (now_iso(), key_id, user_id))
    if res.rowcount == 0:
        raise NotFound("API key not found", "api_key_not_found")


async def actor_from_api_key(db, secret: str) -> Actor | None:
    if not secret or not secret.startswith(API_KEY_PREFIX):
        return None
    row = await db.fetchone(
        "SELECT k.id AS key_id, u.id, u.role, u.display_name, u.username, u.disabled FROM api_keys k "
        "JOIN users u ON u.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        (token_hash(secret),),
    )
    if row is None or row["disabled"]:
        return None
    return Actor(row["id"], row["role"], row["display_name"] or row["username"])


# ------------------------------------------------------------------ invites


async def create_invite(db, *, created_by: Actor, role: str, hours: float = 72, max_uses: int = 1) -> tuple[dict, str]:
    if role not in ("admin", "member", "guest"):
        raise BadRequest("Invites grant admin, member or guest", "invalid_role")
    if role_rank(role) >= role_rank(created_by.role):
        raise Forbidden("You cannot invite to a role at or above your own", "role_too_high")
    if not (1 <= max_uses <= 1000) or not (0 < hours <= 24 * 365):
        raise BadRequest("maxUses must be 1-1000 and hours 0-8760", "invalid_invite")
    token = secrets.token_urlsafe(24)
    invite = {"id": new_id("inv"), "role": role, "createdAt": now_iso(), "expiresAt": time.time() + hours * 3600,
              "maxUses": max_uses, "uses": 0}
    await db.execute(
        "INSERT INTO invites (id, token_hash, role, created_by, created_at, expires_at, max_uses) VALUES (?,?,?,?,?,?,?)",
        (invite["id"], token_hash(token), role, created_by.id, invite["createdAt"], invite["expiresAt"], max_uses))
    return invite, token


async def accept_invite(db, token: str, *, username: str, password: str, display_name: str = "") -> dict:
    check_password_strength(password)
    pw_hash = hash_password(password)
    h = token_hash(token or "")

    def work(conn):
        inv = conn.execute("SELECT * FROM invites WHERE token_hash = ?", (h,)).fetchone()
        if inv is None or inv["revoked_at"] or inv["expires_at"] < time.time() or inv["uses"] >= inv["max_uses"]:
            raise NotFound("This invite link is invalid or has expired", "invite_invalid")
        if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
            raise Conflict(f"Username {username!r} is taken", "username_taken")
        uid = new_id("user")
        conn.execute(
            "INSERT INTO users (id, username, display_name, role, password_hash, created_at) VALUES (?,?,?,?,?,?)",
            (uid, username, display_name or username, inv["role"], pw_hash, now_iso()))
        conn.execute("UPDATE invites SET uses = uses + 1 WHERE id = ?", (inv["id"],))
        return conn.execute("SELECT * FROM users WHERE id = ?", (uid,)).fetchone()

    username = (username or "").strip()
    if not (1 <= len(username) <= 64) or any(c.isspace() for c in username):
        raise BadRequest("Username must be 1-64 characters without spaces", "invalid_username")
    return await db.run_write(work)


# ------------------------------------------------------------------ authorization


def has_role(actor: Actor | None, role: str) -> bool:
    return actor is not None and actor.at_least(role)


async def can_read_channel(db, actor: Actor, channel: dict) -> bool:
    if actor.at_least("admin") or actor.kind == "system":
        return True
    if actor.kind == "agent":
        return await is_member(db, channel["id"], "agent", actor.id)
    return await is_member(db, channel["id"], "user", actor.id)


async def can_write_channel(db, actor: Actor, channel: dict) -> bool:
    # Members of a channel may post in it, guests included: a guest is invited to talk.
    return await can_read_channel(db, actor, channel)


async def is_member(db, channel_id: str, member_type: str, member_id: str) -> bool:
    return bool(await db.fetchval(
        "SELECT 1 FROM channel_members WHERE channel_id = ? AND member_type = ? AND member_id = ?",
        (channel_id, member_type, member_id)))


def requires(role: str | None) -> Callable:
    """Declare who may call a route: ``None`` (anyone), or the least role.

    Resolves the caller (session cookie, ``X-API-Key`` or ``Authorization: Bearer``)
    into ``g.actor``: 401 when nobody is logged in, 403 when the role is too low.
    """

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any):
            from quart import g

            actor = g.get("actor")
            if role is not None:
                if actor is None:
                    raise Unauthorized("Login required", "unauthenticated")
                if not actor.at_least(role):
                    raise Forbidden("You do not have permission to do this", "forbidden")
            return await fn(*args, **kwargs)

        wrapper.required_role = role  # read by the test that every route declares its caller
        return wrapper

    return decorator


async def resolve_actor(db, *, cookie: str | None, headers) -> Actor | None:
    key = headers.get("X-API-Key") or ""
    auth = headers.get("Authorization") or ""
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if key:
        actor = await actor_from_api_key(db, key)
        if actor is None and not key.startswith(API_KEY_PREFIX):
            actor = await actor_from_session(db, key)  # a session token as a bearer works too
        return actor
    if cookie:
        return await actor_from_session(db, cookie)
    return None


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
