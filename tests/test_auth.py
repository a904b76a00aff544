"""Login, logout, sessions, API keys, invites: the seed's auth contract."""
from __future__ import annotations

import pytest

from chat_helpers import PASSWORD, make_user, session_token, user_client
from conftest import OWNER_PASSWORD
from xiajiao import auth


async def test_owner_login_sets_a_strict_httponly_session_cookie(client):
    resp = await client.post("/api/login", json={"password": OWNER_PASSWORD})
    assert resp.status_code == 200
    assert await resp.get_json() == {"ok": True}
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


@pytest.mark.parametrize("body", [
    {"password": "wrong-password"},
    {"password": PASSWORD, "username": "nobody"},
    {"password": "wrong-password", "username": "alice"},
])
async def test_wrong_credentials_are_401_invalid_password(app, client, body):
    await make_user(app, "alice")
    resp = await client.post("/api/login", json=body)
    assert resp.status_code == 401
    assert await resp.get_json() == {"error": "Invalid password", "code": "invalid_credentials"}
    assert "Set-Cookie" not in resp.headers


async def test_other_users_log_in_with_username(app):
    c, user = await user_client(app, "alice", "guest")
    me = await (await c.get("/api/me")).get_json()
    assert (me["user"]["id"], me["user"]["role"]) == (user["id"], "guest")


async def test_logout_kills_the_session(app, owner):
    token = session_token(owner)
    assert (await owner.get("/api/me")).status_code == 200
    resp = await owner.post("/api/logout")
    assert (resp.status_code, await resp.get_json()) == (200, {"ok": True})
    stale = app.test_client()
    resp = await stale.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert await app.xj.db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_sessions_are_stored_hashed_with_expiry(app, owner):
    token = session_token(owner)
    row = await app.xj.db.fetchone("SELECT * FROM sessions")
    assert row["token_hash"] == auth.token_hash(token) and token not in str(row)
    assert row["expires_at"] > 0


async def test_expired_session_is_refused(app, owner):
    await app.xj.db.execute("UPDATE sessions SET expires_at = 1")
    auth.forget_user(app.xj.db, (await auth.owner(app.xj.db))["id"])
    assert (await owner.get("/api/me")).status_code == 401


async def test_passwords_are_argon2id(app):
    user = await make_user(app, "alice")
    assert user["password_hash"].startswith("$argon2id$") and PASSWORD not in user["password_hash"]


async def test_disabled_user_cannot_log_in_and_loses_sessions(app, owner):
    c, user = await user_client(app, "alice")
    resp = await owner.put(f"/api/users/{user['id']}", json={"disabled": True})
    assert resp.status_code == 200
    assert (await c.get("/api/me")).status_code == 401
    resp = await app.test_client().post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert resp.status_code == 401


# ------------------------------------------------------------------ API keys


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_api_key_is_shown_once_and_authenticates(app, header):
    c, user = await user_client(app, "alice")
    resp = await c.post("/api/keys", json={"name": "laptop"})
    assert resp.status_code == 201
    body = await resp.get_json()
    secret = body["secret"]
    assert secret.startswith("xj_") and body["key"]["name"] == "laptop"
    listed = await (await c.get("/api/keys")).get_json()
    assert [k["id"] for k in listed["keys"]] == [body["key"]["id"]]
    assert secret not in str(listed)
    stored = await app.xj.db.fetchone("SELECT key_hash FROM api_keys")
    assert stored["key_hash"] == auth.token_hash(secret)
    value = secret if header == "X-API-Key" else f"Bearer {secret}"
    me = await app.test_client().get("/api/me", headers={header: value})
    assert (await me.get_json())["user"]["id"] == user["id"]


async def test_revoked_api_key_stops_working(app):
    c, _ = await user_client(app, "alice")
    body = await (await c.post("/api/keys", json={})).get_json()
    assert (await c.delete(f"/api/keys/{body['key']['id']}")).status_code == 200
    resp = await app.test_client().get("/api/me", headers={"X-API-Key": body["secret"]})
    assert resp.status_code == 401
    assert (await (await c.get("/api/keys")).get_json()) == {"keys": []}


async def test_one_cannot_revoke_anothers_key(app, owner):
    c, _ = await user_client(app, "alice")
    body = await (await c.post("/api/keys", json={})).get_json()
    resp = await owner.delete(f"/api/keys/{body['key']['id']}")
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "api_key_not_found")


# ------------------------------------------------------------------ invites


@pytest.mark.parametrize("role", ["guest", "member", "admin"])
async def test_invite_link_grants_its_role_and_logs_in(app, owner, role):
    resp = await owner.post("/api/invites", json={"role": role})
    assert resp.status_code == 201
    body = await resp.get_json()
    assert body["url"] == f"/invite/{body['token']}" and body["invite"]["role"] == role
    newcomer = app.test_client()
    resp = await newcomer.post("/api/invites/accept",
                               json={"token": body["token"], "username": "bob", "password": "bob-password"})
    assert resp.status_code == 200
    assert "HttpOnly" in resp.headers["Set-Cookie"]
    me = await (await newcomer.get("/api/me")).get_json()
    assert (me["user"]["username"], me["user"]["role"]) == ("bob", role)
    again = await app.test_client().post("/api/invites/accept",
                                         json={"token": body["token"], "username": "carol", "password": "pw-carol-1"})
    assert (again.status_code, (await again.get_json())["code"]) == (404, "invite_invalid")


async def test_revoked_invite_cannot_be_used(app, owner):
    body = await (await owner.post("/api/invites", json={"role": "member"})).get_json()
    assert (await owner.delete(f"/api/invites/{body['invite']['id']}")).status_code == 200
    assert (await (await owner.get("/api/invites")).get_json()) == {"invites": []}
    resp = await app.test_client().post("/api/invites/accept",
                                        json={"token": body["token"], "username": "bob", "password": "bob-password"})
    assert resp.status_code == 404
    assert await app.xj.db.fetchval("SELECT count(*) FROM users WHERE username = 'bob'") == 0


async def test_admin_cannot_invite_admins(app):
    admin, _ = await user_client(app, "ada", "admin")
    resp = await admin.post("/api/invites", json={"role": "admin"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "role_too_high")
    assert (await admin.post("/api/invites", json={"role": "guest"})).status_code == 201


async def test_login_page_cookie_also_accepted_as_bearer_session(app, owner):
    token = session_token(owner)
    resp = await app.test_client().get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
