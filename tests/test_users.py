"""Users API: the owner and admins manage accounts; admins never touch the owner or make admins."""
from __future__ import annotations

import pytest

from chat_helpers import PASSWORD, make_user, user_client
from conftest import login
from xiajiao import auth


async def owner_id(app) -> str:
    return (await auth.owner(app.xj.db))["id"]


async def test_owner_creates_lists_and_deletes_users(app, owner):
    resp = await owner.post("/api/users", json={"username": "alice", "password": PASSWORD, "role": "member",
                                                "displayName": "爱丽丝"})
    assert resp.status_code == 201
    user = (await resp.get_json())["user"]
    assert (user["username"], user["displayName"], user["role"], user["disabled"]) == \
        ("alice", "爱丽丝", "member", False)
    listed = (await (await owner.get("/api/users")).get_json())["users"]
    assert [u["username"] for u in listed] == ["owner", "alice"]
    assert "password" not in str(listed).lower()
    assert (await owner.delete(f"/api/users/{user['id']}")).status_code == 200
    assert [u["username"] for u in (await (await owner.get("/api/users")).get_json())["users"]] == ["owner"]


async def test_duplicate_username_is_409(app, owner):
    await make_user(app, "alice")
    resp = await owner.post("/api/users", json={"username": "ALICE", "password": PASSWORD})
    assert (resp.status_code, (await resp.get_json())["code"]) == (409, "username_taken")


@pytest.mark.parametrize("body,code", [
    ({"username": "bob", "password": "short"}, "weak_password"),
    ({"username": "b o b", "password": PASSWORD}, "invalid_username"),
    ({"username": "bob", "password": PASSWORD, "role": "king"}, "invalid_role"),
    ({"username": "bob", "password": PASSWORD, "role": "owner"}, "invalid_role"),
    ({"username": "bob"}, "validation_error"),
    ({"username": 5, "password": PASSWORD}, "validation_error"),
])
async def test_bad_new_user_is_400_and_nothing_written(app, owner, body, code):
    resp = await owner.post("/api/users", json=body)
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)
    assert await app.xj.db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize("action", ["role", "disable", "password", "delete"])
async def test_admin_cannot_touch_the_owner(app, action):
    admin, _ = await user_client(app, "ada", "admin")
    oid = await owner_id(app)
    if action == "delete":
        resp = await admin.delete(f"/api/users/{oid}")
    else:
        body = {"role": {"role": "member"}, "disable": {"disabled": True},
                "password": {"password": "new-password-1"}}[action]
        resp = await admin.put(f"/api/users/{oid}", json=body)
    assert resp.status_code in (400, 403)
    row = await auth.get_user(app.xj.db, oid)
    assert (row["role"], row["disabled"]) == ("owner", 0)
    assert await auth.verify_password(row["password_hash"], "owner-password-1")


async def test_admin_cannot_create_or_promote_admins_but_owner_can(app, owner):
    admin, _ = await user_client(app, "ada", "admin")
    resp = await admin.post("/api/users", json={"username": "bob", "password": PASSWORD, "role": "admin"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "role_too_high")
    member = await make_user(app, "carl")
    resp = await admin.put(f"/api/users/{member['id']}", json={"role": "admin"})
    assert resp.status_code == 403
    resp = await owner.put(f"/api/users/{member['id']}", json={"role": "admin"})
    assert (resp.status_code, (await resp.get_json())["user"]["role"]) == (200, "admin")


async def test_admin_manages_members_and_guests(app):
    admin, _ = await user_client(app, "ada", "admin")
    guest, g = await user_client(app, "gus", "guest")
    resp = await admin.put(f"/api/users/{g['id']}", json={"role": "member", "displayName": "Gus"})
    assert (await resp.get_json())["user"] | {"createdAt": None, "id": None} == {
        "id": None, "username": "gus", "displayName": "Gus", "avatar": "", "role": "member", "createdAt": None,
        "disabled": False}
    # a role change ends the old sessions: the new role applies from the next login
    assert (await guest.get("/api/me")).status_code == 401


async def test_admin_cannot_touch_another_admin(app):
    admin, _ = await user_client(app, "ada", "admin")
    other = await make_user(app, "adb", "admin")
    resp = await admin.put(f"/api/users/{other['id']}", json={"disabled": True})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "role_too_high")


async def test_password_reset_takes_effect(app, owner):
    c, user = await user_client(app, "alice")
    resp = await owner.put(f"/api/users/{user['id']}", json={"password": "brand-new-pw"})
    assert resp.status_code == 200
    assert (await c.get("/api/me")).status_code == 401
    fresh = app.test_client()
    await login(fresh, "brand-new-pw", "alice")


@pytest.mark.parametrize("body,code", [
    ({"role": "member"}, "owner_fixed"),
    ({"disabled": True}, "owner_fixed"),
])
async def test_owner_cannot_demote_or_disable_himself(app, owner, body, code):
    resp = await owner.put(f"/api/users/{await owner_id(app)}", json=body)
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)


async def test_unknown_user_is_404(owner):
    resp = await owner.put("/api/users/user_nope", json={"disabled": True})
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "user_not_found")
