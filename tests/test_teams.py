"""Teams over the API: people in groups and DMs, profiles, passwords, deactivation, invites with
channels, the team overview, and the bad input around them."""
from __future__ import annotations

import time

from chat_helpers import PASSWORD, make_user, user_client
from conftest import login
from xiajiao import auth


async def _json(resp, status):
    body = await resp.get_json()
    assert resp.status_code == status, body
    return body


async def test_a_group_of_people_only_and_a_dm_between_two_people(app, owner):
    member, alice = await user_client(app, "alice")
    bob = await make_user(app, "bob")
    room = await _json(await owner.post("/api/channels", json={
        "name": "People", "type": "group", "agentIds": [], "userIds": [alice["id"], bob["id"]]}), 201)
    assert set(room["channel"]["userIds"]) == {alice["id"], bob["id"], (await auth.owner(app.xj.db))["id"]}
    assert room["channel"]["agentIds"] == []
    dm = await _json(await member.post("/api/channels", json={"name": "bob", "type": "dm", "userIds": [bob["id"]]}), 201)
    assert dm["channel"]["type"] == "dm" and set(dm["channel"]["userIds"]) == {alice["id"], bob["id"]}
    sent = await _json(await member.post("/api/messages", json={"channelId": dm["id"], "content": "hi bob"}), 200)
    assert sent["id"]
    bob_client = app.test_client()
    await login(bob_client, PASSWORD, "bob")
    page = await _json(await bob_client.get(f"/api/messages?channelId={dm['id']}"), 200)
    assert [m["content"] for m in page["messages"]] == ["hi bob"]  # no agent answered: a DM of two people


async def test_bad_members_get_a_code(app, owner):
    guest = await make_user(app, "visitor", "guest")
    member, alice = await user_client(app, "alice")
    gone = await make_user(app, "gone")
    await auth.update_user(app.xj.db, auth.Actor((await auth.owner(app.xj.db))["id"], "owner"), gone["id"], disabled=True)
    room = (await _json(await owner.post("/api/channels", json={"name": "r", "agentIds": []}), 201))["id"]
    cases = [
        (owner.post("/api/channels", json={"name": "x", "userIds": ["user_nobody"]}), 404, "user_not_found"),
        (owner.post(f"/api/channels/{room}/members", json={"userIds": ["user_nobody"]}), 404, "user_not_found"),
        (owner.post(f"/api/channels/{room}/members", json={"userIds": [gone["id"]]}), 409, "user_disabled"),
        (owner.post("/api/channels", json={"name": "x", "userIds": [gone["id"]]}), 409, "user_disabled"),
        (owner.get("/api/channels/ch_nope"), 404, "channel_not_found"),
        (owner.post("/api/channels/ch_nope/members", json={"userIds": [alice["id"]]}), 404, "channel_not_found"),
        (owner.put("/api/users/user_nobody", json={"role": "member"}), 404, "user_not_found"),
        (member.post("/api/channels", json={"name": "v", "type": "dm", "userIds": [guest["id"]]}), 403, "guest_dm"),
        (member.post("/api/channels", json={"name": "v", "type": "dm", "userIds": [alice["id"]]}), 400, "invalid_dm"),
        (owner.post("/api/channels", json={"name": "v", "type": "dm", "userIds": [alice["id"]],
                                           "agentIds": ["butler"]}), 400, "invalid_dm"),
    ]
    for request, status, code in cases:
        body = await _json(await request, status)
        assert body["code"] == code, (status, code, body)
    await _json(await owner.post(f"/api/channels/{room}/members", json={"userIds": [alice["id"]]}), 200)
    again = await _json(await owner.post(f"/api/channels/{room}/members", json={"userIds": [alice["id"]]}), 409)
    assert again["code"] == "already_member"
    twice = await _json(await owner.post(f"/api/channels/{room}/members", json={"agentIds": ["butler"]}), 200)
    assert twice["channel"]["agentIds"] == ["butler"]
    assert (await _json(await owner.post(f"/api/channels/{room}/members", json={"agentIds": ["butler"]}), 409))[
        "code"] == "already_member"
    # an admin may open a DM with a guest
    dm = await _json(await owner.post("/api/channels", json={"name": "v", "type": "dm", "userIds": [guest["id"]]}), 201)
    assert guest["id"] in dm["channel"]["userIds"]


async def test_profile_name_and_avatar(app):
    c, alice = await user_client(app, "alice")
    me = await _json(await c.put("/api/me", json={"displayName": "  Alice Wong ", "avatar": "AW"}), 200)
    assert (me["user"]["displayName"], me["user"]["avatar"]) == ("Alice Wong", "AW")
    assert (await _json(await c.get("/api/me"), 200))["user"]["avatar"] == "AW"
    for bad in ({"avatar": "javascript:alert(1)/x"}, {"avatar": "https://evil.example/a.png"}, {"avatar": "x" * 9}):
        assert (await _json(await c.put("/api/me", json=bad), 400))["code"] == "invalid_avatar"
    assert (await _json(await c.put("/api/me", json={"displayName": ""}), 400))["code"] == "invalid_display_name"
    img = await _json(await c.put("/api/me", json={"avatar": "/uploads/2026-12/abc_def.png"}), 200)
    assert img["user"]["avatar"] == "/uploads/2026-12/abc_def.png"
    team = await _json(await c.get("/api/team"), 200)
    assert {"id": alice["id"], "username": "alice", "displayName": "Alice Wong",
            "avatar": "/uploads/2026-12/abc_def.png", "role": "member"} in team["people"]


async def test_change_own_password_ends_the_other_sessions(app):
    c, alice = await user_client(app, "alice")
    other = app.test_client()
    await login(other, PASSWORD, "alice")
    wrong = await _json(await c.post("/api/me/password", json={"currentPassword": "nope-nope",
                                                                "newPassword": "new-password-1"}), 400)
    assert wrong["code"] == "wrong_password"
    weak = await _json(await c.post("/api/me/password", json={"currentPassword": PASSWORD, "newPassword": "short"}), 400)
    assert weak["code"] == "weak_password"
    await _json(await c.post("/api/me/password", json={"currentPassword": PASSWORD, "newPassword": "new-password-1"}), 200)
    assert (await c.get("/api/me")).status_code == 200  # this session stays
    assert (await other.get("/api/me")).status_code == 401  # the other one ended
    fresh = app.test_client()
    assert (await fresh.post("/api/login", json={"username": "alice", "password": PASSWORD})).status_code == 401
    await login(fresh, "new-password-1", "alice")


async def test_deactivating_a_user_ends_sessions_and_keys_at_once(app, owner):
    c, alice = await user_client(app, "alice")
    _, secret = await auth.create_api_key(app.xj.db, alice["id"], "script")
    assert (await c.get("/api/me")).status_code == 200
    assert (await app.test_client().get("/api/me", headers={"X-API-Key": secret})).status_code == 200
    await _json(await owner.put(f"/api/users/{alice['id']}", json={"disabled": True}), 200)
    assert (await c.get("/api/me")).status_code == 401
    assert (await app.test_client().get("/api/me", headers={"X-API-Key": secret})).status_code == 401
    team = await _json(await owner.get("/api/team"), 200)
    assert alice["id"] not in [p["id"] for p in team["people"]]
    # the owner resets a password; the user logs in with the new one once reactivated
    await _json(await owner.put(f"/api/users/{alice['id']}", json={"disabled": False, "password": "reset-pass-12"}), 200)
    await login(app.test_client(), "reset-pass-12", "alice")


async def test_an_invite_joins_its_channels_and_dead_invites_show_a_clear_page(app, owner):
    room = (await _json(await owner.post("/api/channels", json={"name": "Lobby", "agentIds": []}), 201))["id"]
    bad = await _json(await owner.post("/api/invites", json={"role": "guest", "channelIds": ["ch_nope"]}), 404)
    assert bad["code"] == "channel_not_found"
    made = await _json(await owner.post("/api/invites", json={"role": "guest", "channelIds": [room], "maxUses": 2,
                                                              "hours": 1}), 201)
    assert made["invite"]["channelIds"] == [room] and made["invite"]["maxUses"] == 2
    page = await app.test_client().get(made["url"])
    assert page.status_code == 200 and 'id="invite-form"' in await page.get_data(as_text=True)
    for name in ("g1", "g2"):
        c = app.test_client()
        joined = await _json(await c.post("/api/invites/accept", json={"token": made["token"], "username": name,
                                                                         "password": PASSWORD,
                                                                         "displayName": name.upper()}), 200)
        assert joined["user"]["role"] == "guest" and joined["user"]["displayName"] == name.upper()
        chans = await _json(await c.get("/api/channels"), 200)
        assert [ch["id"] for ch in chans["channels"]] == [room]
    used = await app.test_client().get(made["url"])
    assert used.status_code == 410 and 'data-state="used"' in await used.get_data(as_text=True)
    revoked = await _json(await owner.post("/api/invites", json={"role": "member"}), 201)
    await _json(await owner.delete(f"/api/invites/{revoked['invite']['id']}"), 200)
    page = await app.test_client().get(revoked["url"], headers={"Accept-Language": "en"})
    assert page.status_code == 410 and "This invite link was revoked." in await page.get_data(as_text=True)
    expired = await _json(await owner.post("/api/invites", json={"role": "member"}), 201)
    await app.xj.db.execute("UPDATE invites SET expires_at = ? WHERE id = ?", (time.time() - 1, expired["invite"]["id"]))
    page = await app.test_client().get(expired["url"], headers={"Accept-Language": "en"})
    assert page.status_code == 410 and 'data-state="expired"' in await page.get_data(as_text=True)
    accept = await _json(await app.test_client().post("/api/invites/accept", json={
        "token": expired["token"], "username": "late", "password": PASSWORD}), 404)
    assert accept["code"] == "invite_invalid"
    assert (await app.test_client().get("/invite/not-a-token")).status_code == 404


async def test_the_team_overview_for_each_role(app, owner):
    guest_c, guest = await user_client(app, "visitor", "guest")
    member_c, alice = await user_client(app, "alice")
    bob = await make_user(app, "bob")
    everyone = await _json(await member_c.get("/api/team"), 200)
    assert {p["username"] for p in everyone["people"]} == {"owner", "visitor", "alice", "bob"}
    assert {a["id"] for a in everyone["agents"]} >= {"butler", "editor"}
    assert everyone["model"]["builtin"] is True  # the tests run on the offline demo model
    alone = await _json(await guest_c.get("/api/team"), 200)
    assert [p["username"] for p in alone["people"]] == ["visitor"]  # a guest sees only the people of his rooms
    await _json(await owner.post("/api/channels", json={"name": "r", "agentIds": [], "userIds": [guest["id"], bob["id"]]}),
                201)
    shared = await _json(await guest_c.get("/api/team"), 200)
    assert {p["username"] for p in shared["people"]} == {"owner", "visitor", "bob"}
    assert alice["id"] not in {p["id"] for p in shared["people"]}


async def test_a_deleted_agents_dm_is_archived(app, owner):
    dm = (await _json(await owner.post("/api/channels", json={"name": "ed", "type": "dm", "agentIds": ["editor"]}), 201))["id"]
    await _json(await owner.delete("/api/agents/editor"), 200)
    body = await _json(await owner.post("/api/messages", json={"channelId": dm, "content": "still there?"}), 409)
    assert body["code"] == "channel_archived"
    assert (await owner.get(f"/api/messages?channelId={dm}")).status_code == 200  # history stays readable

