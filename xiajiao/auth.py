"""Accounts, roles, sessions, API keys, invites, and the one authorization check.

Roles rank owner > admin > member > guest. Every route declares the least role it
needs with :func:`requires`; resource visibility (channels) is decided by
:func:`authorized_channel`, and plugins may take part
through the ``authorize`` hook, which every route, frame and channel action asks.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
import weakref
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import chat
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .ids import new_id, now_iso
from .models import ROLES, Actor, role_rank

# Argon2id with the OWASP minimum (19 MiB, 2 passes): memory-hard, ~20 ms a check.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist (same time as a real check); made on first use."""
    return _hasher.hash("timing-equaliser")


SESSION_COOKIE = "session"


async def hash_password(password: str) -> str:
    """Argon2id runs in a worker thread (~20 ms of CPU): the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored, password)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("Password must have at least 8 characters", "weak_password")
    from zxcvbn import zxcvbn  # common passwords, keyboard walks, dates, repeats (Dropbox's estimator)

    if zxcvbn(password[:100])["score"] < 1:
        raise BadRequest("This password is too common or too easy to guess; choose another", "weak_password")


def check_display_name(display_name: str | None) -> str:
    name = (display_name or "").strip()
    if len(name) > 64:
        raise BadRequest("displayName must be 1-64 characters", "invalid_display_name")
    return name


def public_user(row: dict) -> dict:
    return {"id": row["id"], "username": row["username"], "displayName": row["display_name"] or row["username"],
            "avatar": row.get("avatar") or "", "role": row["role"], "createdAt": row["created_at"],
            "disabled": bool(row.get("disabled"))}


def person_json(row: dict) -> dict:
    """What every signed-in person may know about another: name, avatar, role."""
    return {"id": row["id"], "username": row["username"], "displayName": row["display_name"] or row["username"],
            "avatar": row.get("avatar") or "", "role": row["role"]}


AVATAR_MAX = 300


def check_avatar(avatar: str) -> str:
    """An avatar is a short text (an emoji, initials) or the URL of an uploaded image (``/uploads/...``)."""
    avatar = (avatar or "").strip()
    if len(avatar) > AVATAR_MAX or ("/" in avatar and not re.fullmatch(r"/uploads/[\w.-]+/[\w.-]+", avatar)):
        raise BadRequest("avatar must be a short text or an uploaded image's /uploads/ URL", "invalid_avatar")
    if "/" not in avatar and len(avatar) > 8:
        raise BadRequest("A text avatar has at most 8 characters", "invalid_avatar")
    return avatar


# ------------------------------------------------------------------ users


async def create_user(db, *, username: str, password: str | None, role: str, display_name: str = "",
                      user_id: str | None = None) -> dict:
    if role not in ROLES:
        raise BadRequest(f"Unknown role {role!r}", "invalid_role")
    username = (username or "").strip()
    if not (1 <= len(username) <= 64) or any(c.isspace() for c in username):
        raise BadRequest("Username must be 1-64 characters without spaces", "invalid_username")
    display_name = check_display_name(display_name)
    if password is not None:
        check_password_strength(password)
    pw_hash = await hash_password(password) if password is not None else None
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
    pw_hash = await hash_password(password)

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
    ok = await verify_password(user["password_hash"] if user else None, password)
    if not ok or user is None or user["disabled"]:
        return None
    return user


def check_can_manage(actor: Actor, target: dict) -> None:
    """Owner manages everyone; an admin manages members and guests (and himself)."""
    if actor.role == "owner" or target["id"] == actor.id:
        return
    if role_rank(target["role"]) >= role_rank(actor.role):
        raise Forbidden("You cannot change a user ranked at or above you", "role_too_high")


def check_can_grant(actor: Actor, role: str) -> None:
    if role not in ROLES:
        raise BadRequest(f"Unknown role {role!r}", "invalid_role")
    if role == "owner":
        raise BadRequest("There is only one owner", "invalid_role")
    if actor.role != "owner" and role_rank(role) >= role_rank(actor.role):
        raise Forbidden("You cannot grant a role at or above your own", "role_too_high")


async def list_users(db) -> list[dict]:
    rows = await db.fetchall("SELECT * FROM users ORDER BY created_at, username")
    return [public_user(r) for r in rows]


async def list_people(db, actor: Actor) -> list[dict]:
    """Active people the actor may see: everyone for members and above; a guest sees himself and the
    people of the channels he belongs to."""
    if actor.at_least("member"):
        rows = await db.fetchall("SELECT * FROM users WHERE disabled = 0 ORDER BY created_at, username")
    else:
        rows = await db.fetchall(
            "SELECT * FROM users WHERE disabled = 0 AND (id = ? OR id IN (SELECT o.member_id FROM channel_members o "
            "JOIN channel_members me ON me.channel_id = o.channel_id WHERE me.member_type = 'user' "
            "AND me.member_id = ? AND o.member_type = 'user')) ORDER BY created_at, username", (actor.id, actor.id))
    return [person_json(r) for r in rows]


async def update_profile(db, user_id: str, *, display_name: str | None = None, avatar: str | None = None) -> dict:
    """A person changes his own display name or avatar."""
    sets, params = [], []
    if display_name is not None:
        if not (1 <= len(display_name.strip()) <= 64):
            raise BadRequest("displayName must be 1-64 characters", "invalid_display_name")
        sets.append("display_name = ?")
        params.append(display_name.strip())
    if avatar is not None:
        sets.append("avatar = ?")
        params.append(check_avatar(avatar))
    if sets:
        await db.execute(f"UPDATE users SET {', '.join(sets)} WHERE id = ?", (*params, user_id))
    forget_user(db, user_id)
    row = await get_user(db, user_id)
    if row is None:
        raise NotFound("User not found", "user_not_found")
    return public_user(row)


async def change_own_password(db, user_id: str, current: str, new: str, keep_token: str | None) -> None:
    """Check the current password, store the new one, end every other session of the user."""
    row = await get_user(db, user_id)
    if row is None or not await verify_password(row["password_hash"], current or ""):
        raise BadRequest("The current password is wrong", "wrong_password")
    check_password_strength(new)
    pw_hash = await hash_password(new)
    keep = token_hash(keep_token) if keep_token else ""

    def work(conn):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (pw_hash, user_id))
        conn.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash != ?", (user_id, keep))

    await db.run_write(work)
    forget_user(db, user_id)


async def update_user(db, actor: Actor, user_id: str, *, role: str | None = None, disabled: bool | None = None,
                      password: str | None = None, display_name: str | None = None) -> tuple[dict, bool]:
    """Change a user; returns (the user, whether his sessions were ended)."""
    target = await get_user(db, user_id)
    if target is None:
        raise NotFound("User not found", "user_not_found")
    check_can_manage(actor, target)
    if target["role"] == "owner" and (role not in (None, "owner") or disabled):
        raise BadRequest("The owner cannot be demoted or disabled", "owner_fixed")
    if role is not None and role != target["role"]:
        check_can_grant(actor, role)
    if target["id"] == actor.id and role not in (None, target["role"]):
        raise BadRequest("You cannot change your own role", "own_role")
    if target["id"] == actor.id and disabled:
        raise BadRequest("You cannot disable yourself", "own_account")
    if display_name is not None and not (1 <= len(display_name.strip()) <= 64):
        raise BadRequest("displayName must be 1-64 characters", "invalid_display_name")
    if password is not None:
        check_password_strength(password)
    sets, params = [], []
    changes = {"role": role, "disabled": None if disabled is None else int(disabled),
               "password_hash": None if password is None else await hash_password(password),
               "display_name": None if display_name is None else display_name.strip()}
    for column, value in changes.items():
        if value is not None:
            sets.append(f"{column} = ?")
            params.append(value)
    ended = bool(disabled) or password is not None or (role is not None and role != target["role"])

    def work(conn):
        if sets:
            conn.execute(f"UPDATE users SET {', '.join(sets)} WHERE id = ?", (*params, user_id))
        if ended:
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
        return conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()

    row = await db.run_write(work)
    forget_user(db, user_id)
    return public_user(row), ended


async def delete_user(db, actor: Actor, user_id: str) -> None:
    target = await get_user(db, user_id)
    if target is None:
        raise NotFound("User not found", "user_not_found")
    if target["role"] == "owner":
        raise BadRequest("The owner cannot be deleted", "owner_fixed")
    if target["id"] == actor.id:
        raise BadRequest("You cannot delete yourself", "own_account")
    check_can_manage(actor, target)

    def work(conn):
        conn.execute("DELETE FROM channel_members WHERE member_type = 'user' AND member_id = ?", (user_id,))
        conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    await db.run_write(work)
    forget_user(db, user_id)


# ------------------------------------------------------------------ sessions


async def create_session(db, user_id: str, *, days: int, user_agent: str = "", address: str = "") -> str:
    token = secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, user_agent, address) VALUES (?,?,?,?,?,?)",
        (token_hash(token), user_id, now_iso(), time.time() + days * 86400, user_agent[:200], address[:64]),
    )
    return token


async def end_session(db, token: str) -> None:
    h = token_hash(token)
    _session_cache(db).pop(h, None)
    await db.execute("DELETE FROM sessions WHERE token_hash = ?", (h,))


async def end_user_sessions(db, user_id: str) -> None:
    forget_user(db, user_id)
    await db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))


# Session lookups run on every request; a few seconds of caching takes them off the
# hot path. Logout, disabling a user and role changes drop the entries at once.
SESSION_CACHE_SECONDS = 5.0
_caches: "weakref.WeakKeyDictionary[Any, dict[str, tuple[Actor, float, float]]]" = weakref.WeakKeyDictionary()


def _session_cache(db) -> dict[str, tuple[Actor, float, float]]:
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = {}
    return cache


def forget_user(db, user_id: str) -> None:
    """Drop cached sessions of a user (after a change to the account)."""
    cache = _session_cache(db)
    for h in [h for h, (a, _, _) in cache.items() if a.id == user_id]:
        cache.pop(h, None)


async def actor_from_session(db, token: str) -> Actor | None:
    if not token:
        return None
    h = token_hash(token)
    cache = _session_cache(db)
    now = time.time()
    hit = cache.get(h)
    if hit is not None:
        actor, cached_until, expires_at = hit
        if now < cached_until and now < expires_at:
            return actor
        cache.pop(h, None)
    row = await db.fetchone(
        "SELECT u.id, u.role, u.display_name, u.username, u.disabled, s.expires_at FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (h,),
    )
    if row is None or row["disabled"] or row["expires_at"] < now:
        return None
    actor = Actor(row["id"], row["role"], row["display_name"] or row["username"])
    if len(cache) > 10_000:
        cache.clear()
    cache[h] = (actor, now + SESSION_CACHE_SECONDS, row["expires_at"])
    return actor


# ------------------------------------------------------------------ API keys

API_KEY_PREFIX = "xj_"


WEBHOOK_SECRET_PREFIX = "whsec_"


async def create_api_key(db, user_id: str, name: str = "") -> tuple[dict, str]:
    """A new key: (its public row, the secret shown once). Its webhook signing secret is in
    the row as ``webhookSecret`` (the key's owner can read it again: :func:`webhook_secret`)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    row = {"id": key_id, "name": (name or "")[:100], "prefix": secret[:7], "createdAt": now_iso(),
           "lastUsedAt": None}
    signing = WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at, webhook_secret) VALUES (?,?,?,?,?,?,?)",
        (key_id, user_id, row["name"], row["prefix"], token_hash(secret), row["createdAt"], signing),
    )
    return {**row, "webhookSecret": signing}, secret


async def webhook_secret(db, user_id: str, key_id: str) -> str:
    """The secret that signs the webhooks of tasks created with this key of ``user_id``
    (made on first use for keys older than webhooks)."""
    row = await db.fetchone("SELECT webhook_secret FROM api_keys WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
                            (key_id, user_id))
    if row is None:
        raise NotFound("API key not found", "api_key_not_found")
    if row["webhook_secret"]:
        return row["webhook_secret"]
    signing = WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
    await db.execute("UPDATE api_keys SET webhook_secret = coalesce(webhook_secret, ?) WHERE id = ?", (signing, key_id))
    return await db.fetchval("SELECT webhook_secret FROM api_keys WHERE id = ?", (key_id,))


async def list_api_keys(db, user_id: str) -> list[dict]:
    rows = await db.fetchall(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys WHERE user_id = ? AND revoked_at IS NULL "
        "ORDER BY created_at", (user_id,))
    return [{"id": r["id"], "name": r["name"], "prefix": r["prefix"], "createdAt": r["created_at"],
             "lastUsedAt": r["last_used_at"]} for r in rows]


async def revoke_api_key(db, user_id: str, key_id: str) -> str:
    """Revoke one of the user's keys; returns its hash (the credential to disconnect)."""
    def work(conn):
        row = conn.execute("SELECT key_hash FROM api_keys WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
                           (key_id, user_id)).fetchone()
        if row is None:
            raise NotFound("API key not found", "api_key_not_found")
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now_iso(), key_id))
        return row["key_hash"]

    return await db.run_write(work)


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
    return Actor(row["id"], row["role"], row["display_name"] or row["username"], key_id=row["key_id"])


# ------------------------------------------------------------------ invites


async def create_invite(db, *, created_by: Actor, role: str, hours: float = 72, max_uses: int = 1,
                        channel_ids: Sequence[str] = ()) -> tuple[dict, str]:
    if role not in ("admin", "member", "guest"):
        raise BadRequest("Invites grant admin, member or guest", "invalid_role")
    if role_rank(role) >= role_rank(created_by.role):
        raise Forbidden("You cannot invite to a role at or above your own", "role_too_high")
    if not (1 <= max_uses <= 1000) or not (0 < hours <= 24 * 365):
        raise BadRequest("maxUses must be 1-1000 and hours 0-8760", "invalid_invite")
    channel_ids = list(dict.fromkeys(channel_ids))
    for cid in channel_ids:
        ch = await db.fetchone("SELECT type FROM channels WHERE id = ?", (cid,))
        if ch is None:
            raise NotFound(f"Channel {cid!r} not found", "channel_not_found")
        if ch["type"] != "group":
            raise BadRequest("An invite joins groups only, not DMs", "invalid_invite_channel")
    token = secrets.token_urlsafe(24)
    row = {"id": new_id("inv"), "role": role, "created_by": created_by.id, "created_at": now_iso(),
           "expires_at": time.time() + hours * 3600, "max_uses": max_uses, "uses": 0, "revoked_at": None,
           "channel_ids": json.dumps(channel_ids)}
    await db.execute(
        "INSERT INTO invites (id, token_hash, role, created_by, created_at, expires_at, max_uses, channel_ids) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (row["id"], token_hash(token), role, created_by.id, row["created_at"], row["expires_at"], max_uses,
         row["channel_ids"]))
    return invite_json(row), token


def invite_json(row: dict) -> dict:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["expires_at"]))
    return {"id": row["id"], "role": row["role"], "createdBy": row["created_by"], "createdAt": row["created_at"],
            "expiresAt": expires, "maxUses": row["max_uses"], "uses": row["uses"],
            "channelIds": json.loads(row.get("channel_ids") or "[]"),
            "active": row["revoked_at"] is None and row["expires_at"] > time.time() and row["uses"] < row["max_uses"]}


async def invite_state(db, token: str) -> str:
    """``valid``, ``expired``, ``used`` (every use taken), ``revoked`` or ``unknown``: what the invite page says."""
    inv = await db.fetchone("SELECT * FROM invites WHERE token_hash = ?", (token_hash(token or ""),))
    if inv is None:
        return "unknown"
    if inv["revoked_at"]:
        return "revoked"
    if inv["expires_at"] < time.time():
        return "expired"
    if inv["uses"] >= inv["max_uses"]:
        return "used"
    return "valid"


async def list_invites(db) -> list[dict]:
    rows = await db.fetchall("SELECT * FROM invites WHERE revoked_at IS NULL ORDER BY created_at DESC")
    return [invite_json(r) for r in rows]


async def revoke_invite(db, actor: Actor, invite_id: str) -> None:
    row = await db.fetchone("SELECT * FROM invites WHERE id = ? AND revoked_at IS NULL", (invite_id,))
    if row is None:
        raise NotFound("Invite not found", "invite_not_found")
    if actor.role != "owner" and role_rank(row["role"]) >= role_rank(actor.role):
        raise Forbidden("You cannot revoke an invite to a role at or above your own", "role_too_high")
    await db.execute("UPDATE invites SET revoked_at = ? WHERE id = ?", (now_iso(), invite_id))


async def accept_invite(db, token: str, *, username: str, password: str, display_name: str = "") -> dict:
    display_name = check_display_name(display_name)
    check_password_strength(password)
    pw_hash = await hash_password(password)
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
        joined = now_iso()
        for cid in json.loads(inv.get("channel_ids") or "[]"):  # groups deleted since are skipped
            if conn.execute("SELECT 1 FROM channels WHERE id = ?", (cid,)).fetchone():
                conn.execute("INSERT OR IGNORE INTO channel_members (channel_id, member_type, member_id, joined_at) "
                             "VALUES (?, 'user', ?, ?)", (cid, uid, joined))
        return conn.execute("SELECT * FROM users WHERE id = ?", (uid,)).fetchone()

    username = (username or "").strip()
    if not (1 <= len(username) <= 64) or any(c.isspace() for c in username):
        raise BadRequest("Username must be 1-64 characters without spaces", "invalid_username")
    return await db.run_write(work)


# ------------------------------------------------------------------ authorization
#
# Every decision is made here, and only here: each route (``requires``), each
# WebSocket frame and each action on a channel or a chain asks the ``authorize``
# hook first; a plugin's True or False decides, a plugin that raises denies, and
# without an answer the built-in rules apply:
#   route        the route's declared least role (``requires``)
#   frame        any authenticated caller (``auth`` and ``ping`` also before login)
#   channel.read    owner/admin read every channel; others only channels they belong to
#   channel.write   members whose membership is not read-only (admins who did not join read only)
#   channel.manage  owner/admin, or the member who created the channel (rename, members, chain)
#   chain.decide    approve, edit or stop a chain run (or stop one of its steps): an admin/owner,
#                   or who started it while he may still write in the channel
#   tool.approve    approve, edit or reject a tool call waiting for approval: an admin/owner, who
#                   manages the channel, or whose message started the turn while he may still write

CHANNEL_ACTIONS = ("channel.read", "channel.write", "channel.manage", "chain.decide", "tool.approve")


def has_role(actor: Actor | None, role: str) -> bool:
    return actor is not None and actor.at_least(role)


_CHANNEL_FOR = ("SELECT c.*, m.member_id IS NOT NULL AS _member, coalesce(m.can_write, 0) AS _can_write, "
                "(SELECT COUNT(*) FROM channel_members a WHERE a.channel_id = c.id) AS _members "
                "FROM channels c LEFT JOIN channel_members m "
                "ON m.channel_id = c.id AND m.member_type = ? AND m.member_id = ? WHERE c.id = ?")


async def channel_for(db, actor: Actor, channel_id: str, *, agents: bool = False) -> dict | None:
    """The channel with the caller's membership (``_member``, ``_can_write``), or None.

    ``agents``: also its agent ids (``_agent_ids``, in the order they joined), read in the same hand-off."""
    params = ("agent" if actor.kind == "agent" else "user", actor.id, channel_id)
    if not agents:
        return await db.fetchone(_CHANNEL_FOR, params)

    def read(conn):
        row = conn.execute(_CHANNEL_FOR, params).fetchone()
        if row is not None:
            row["_agent_ids"] = chat.member_ids_sync(conn, channel_id, "agent")
        return row

    return await db.run_read(read)


def builtin_allows(actor: Actor, action: str, channel: dict) -> bool:
    if actor.kind == "system":
        return True
    member = bool(channel.get("_member"))
    if action == "channel.read":
        return member or actor.at_least("admin")
    if action == "channel.write":
        return member and bool(channel.get("_can_write"))
    if action == "channel.manage":
        return actor.kind == "user" and (actor.at_least("admin") or (member and channel.get("created_by") == actor.id))
    if action == "chain.decide":
        chain = channel.get("_chain") or {}
        return actor.kind == "user" and (actor.at_least("admin") or (
            chain.get("startedBy") == actor.id and member and bool(channel.get("_can_write"))))
    if action == "tool.approve":
        approval = channel.get("_approval") or {}
        return actor.kind == "user" and (builtin_allows(actor, "channel.manage", channel) or (
            approval.get("requestedBy") == actor.id and member and bool(channel.get("_can_write"))))
    raise ValueError(f"unknown action {action!r}")


async def ask(core, actor: Actor | None, action: str, resource: dict) -> bool | None:
    """The ``authorize`` hook's answer (True, False or None to pass); a plugin that raises denies."""
    decision = await core.plugins.call("authorize", actor=actor, action=action, resource=resource, on_error=False)
    return None if decision is None else bool(decision)


async def allowed(core, actor: Actor, action: str, channel: dict) -> bool:
    """May ``actor`` do ``action`` on ``channel`` (a row from :func:`channel_for`)?"""
    decision = await ask(core, actor, action, channel)
    return builtin_allows(actor, action, channel) if decision is None else decision


async def authorized_channel(core, actor: Actor, channel_id: str, action: str = "channel.read", *,
                             chain: dict | None = None, approval: dict | None = None, agents: bool = False) -> dict:
    """The channel if ``actor`` may do ``action`` on it.

    404 when the channel does not exist or the caller may not see it (its existence is
    not revealed); 403 when it is visible but the action is not allowed. For
    ``chain.decide`` the resource also carries ``_chain`` (``id``, ``startedBy``), for
    ``tool.approve`` ``_approval`` (``id``, ``requestedBy``); with ``agents`` the channel
    carries its agent ids (``_agent_ids``).
    """
    channel = await channel_for(core.db, actor, channel_id, agents=agents) if isinstance(channel_id, str) else None
    if channel is None or not await allowed(core, actor, "channel.read", channel):
        raise NotFound("Channel not found", "channel_not_found")
    if action == "channel.read":
        return channel
    resource = {**channel, "_chain": chain} if action == "chain.decide" else \
        {**channel, "_approval": approval} if action == "tool.approve" else channel
    if not await allowed(core, actor, action, resource):
        if action == "channel.write":
            raise Forbidden("You may read this channel but not post in it", "read_only")
        if action == "chain.decide":
            raise Forbidden("Only who started this chain, or an admin, may decide it", "not_your_chain")
        if action == "tool.approve":
            raise Forbidden("Only whose message started this turn, who manages the channel, or an admin may "
                            "decide this tool call", "not_your_approval")
        raise Forbidden("You may not change this channel", "forbidden")
    if action == "channel.write" and channel["type"] == "dm" and channel["_members"] < 2:
        raise Conflict("This conversation is archived: the other side is gone", "channel_archived")
    return channel


async def readable(core, actor: Actor, items: list[dict], key: str = "channelId") -> list[dict]:
    """``items`` (channels or messages, already filtered by the built-in rules) without those whose
    channel a plugin hides from ``actor`` (lists can hide through the hook, never reveal)."""
    if not core.plugins.pm.hook.authorize.get_hookimpls():
        return items
    verdict: dict[str, bool] = {}
    for cid in {item[key] for item in items}:
        verdict[cid] = await may(core, actor, cid, "channel.read")
    return [item for item in items if verdict[item[key]]]


async def may(core, actor: Actor, channel_id: str, action: str, *, chain: dict | None = None) -> bool:
    """:func:`authorized_channel` as a yes/no (for frames and fan-out that answer without raising)."""
    try:
        await authorized_channel(core, actor, channel_id, action, chain=chain)
    except (NotFound, Forbidden):
        return False
    return True


async def authorize_frame(core, actor: Actor | None, frame_type: str) -> None:
    """May the caller send a WebSocket frame of this type? (403 ``forbidden`` when not)."""
    decision = await ask(core, actor, "frame", {"frame": frame_type})
    if decision is False:
        raise Forbidden(f"You may not send {frame_type!r} frames", "forbidden")


async def is_member(db, channel_id: str, member_type: str, member_id: str) -> bool:
    return bool(await db.fetchval(
        "SELECT 1 FROM channel_members WHERE channel_id = ? AND member_type = ? AND member_id = ?",
        (channel_id, member_type, member_id)))


def client_key(actor: Actor | None, address: str | None) -> str:
    """The rate-limit key: the API key, else the user, or the client address before login."""
    if actor is not None and actor.key_id:
        return f"key:{actor.key_id}"
    return f"user:{actor.id}" if actor is not None else f"addr:{address or 'unknown'}"


def requires(role: str | None, *, limit: bool = True) -> Callable:
    """Declare who may call a route: ``None`` (anyone), or the least role.

    ``g.actor`` (resolved from the session cookie, ``X-API-Key`` or ``Authorization:
    Bearer`` before the route runs) must exist and rank at least ``role``: 401 when
    nobody is logged in, 403 when the role is too low. The ``authorize`` hook is asked
    first (action ``route``, resource ``{"route", "method", "path", "role"}``): False
    refuses (401 anonymous, 403 otherwise), True waives the rank (not the login).
    Every call also takes a token from the caller's rate-limit bucket (429 with
    Retry-After when empty), unless ``limit`` is off (``/health``).
    """

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any):
            from quart import g, has_request_context, request, websocket

            from .quart_app import current_app

            core = current_app.xj
            actor = g.get("actor")
            ctx = request if has_request_context() else websocket
            limiter = getattr(core, "limiter", None)
            if limit and limiter is not None:
                limiter.check(client_key(actor, g.get("client_address") or ctx.remote_addr))
            decision = await ask(core, actor, "route", {
                "route": ctx.endpoint, "method": getattr(ctx, "method", "GET"), "path": ctx.path, "role": role})
            if role is not None and actor is None:
                raise Unauthorized("Login required", "unauthenticated")
            if decision is False:
                if actor is None:
                    raise Unauthorized("Login required", "unauthenticated")
                raise Forbidden("You do not have permission to do this", "forbidden")
            if role is not None and decision is None and not actor.at_least(role):
                raise Forbidden("You do not have permission to do this", "forbidden")
            return await fn(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]  # read by the test that every route declares its caller
        return wrapper

    return decorator


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def same_origin(headers, trusted: frozenset[str] = frozenset(), *, host: str | None = None) -> bool:
    """Whether a browser request comes from our own pages (CSRF and cross-site WebSocket check).

    ``Sec-Fetch-Site`` when the browser sends it (``same-site`` is refused too: another port of
    the same host is another origin), else ``Origin`` against ``host``: the host the client asked
    for (``X-Forwarded-Host`` counts only from a trusted proxy, see xiajiao.proxies; without it,
    ``Host``); neither header: not a browser.
    """
    site = (headers.get("Sec-Fetch-Site") or "").lower()
    origin = headers.get("Origin")
    if origin and origin.rstrip("/").lower() in trusted:
        return True  # an origin the owner listed in cors_origins
    if site:
        return site in ("same-origin", "none")
    if not origin:
        return True
    if origin == "null":
        return False
    if host is None:
        host = headers.get("Host") or ""
    return urlsplit(origin).netloc.lower() == host.strip().lower()


def check_csrf(method: str, headers, trusted: frozenset[str] = frozenset(), *, host: str | None = None) -> None:
    """Refuse a state-changing request a browser sends from another origin, unless it carries a key
    (a page of another site cannot ride on the user's cookie; a script with a key is not CSRF)."""
    if method not in UNSAFE_METHODS or same_origin(headers, trusted, host=host):
        return
    if headers.get("X-API-Key") or (headers.get("Authorization") or "").lower().startswith("bearer "):
        return
    raise Forbidden("Requests from another site's pages are refused", "cross_origin_request")


def presented_key(headers) -> str:
    """The API key (or session token) of ``X-API-Key`` or ``Authorization: Bearer``, or ''."""
    key = headers.get("X-API-Key") or ""
    auth = headers.get("Authorization") or ""
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


async def resolve_actor(db, *, cookie: str | None, headers) -> Actor | None:
    key = presented_key(headers)
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
