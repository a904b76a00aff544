"""Channels: DMs and groups, members, who sees what."""
from __future__ import annotations

import pytest

from chat_helpers import make_agent, make_channel, post, user_client


@pytest.fixture
async def agents(app):
    return [await make_agent(app, "agent_poet", "诗人"), await make_agent(app, "agent_coder", "程序员")]


async def test_create_group_as_in_the_seed(app, owner, agents):
    resp = await owner.post("/api/channels", json={"name": "写作工作室", "type": "group",
                                                   "agentIds": ["agent_poet", "agent_coder"]})
    assert resp.status_code == 201
    body = await resp.get_json()
    ch = body["channel"]
    assert body["ok"] is True and ch["id"] == body["id"] and ch["id"].startswith("ch_")
    assert (ch["name"], ch["type"], ch["agentIds"], ch["defaultAgentId"]) == \
        ("写作工作室", "group", ["agent_poet", "agent_coder"], None)
    listed = (await (await owner.get("/api/channels")).get_json())["channels"]
    assert [c["id"] for c in listed] == [ch["id"]]


async def test_dm_is_one_user_and_one_agent(app, agents):
    alice, user = await user_client(app, "alice")
    cid = await make_channel(alice, name="DM", type="dm", agentIds=["agent_poet"])
    ch = (await (await alice.get(f"/api/channels/{cid}")).get_json())["channel"]
    assert (ch["type"], ch["agentIds"], ch["userIds"], ch["defaultAgentId"]) == \
        ("dm", ["agent_poet"], [user["id"]], "agent_poet")


@pytest.mark.parametrize("body,status,code", [
    ({"name": "x", "type": "dm", "agentIds": ["agent_poet", "agent_coder"]}, 400, "invalid_dm"),
    ({"name": "x", "type": "dm", "agentIds": []}, 400, "invalid_dm"),
    ({"name": "x", "type": "group", "agentIds": ["agent_nope"]}, 404, "agent_not_found"),
    ({"name": "x", "type": "group", "agentIds": ["agent_poet"], "userIds": ["user_nope"]}, 404, "user_not_found"),
    ({"name": "x", "type": "group", "agentIds": ["agent_poet"], "defaultAgentId": "agent_coder"}, 400,
     "invalid_default_agent"),
    ({"name": "x", "type": "room", "agentIds": []}, 400, "validation_error"),
    ({"name": "", "type": "group"}, 400, "validation_error"),
    ({"name": "x", "agentIds": "agent_poet"}, 400, "validation_error"),
])
async def test_bad_channel_is_refused_and_nothing_written(app, owner, agents, body, status, code):
    resp = await owner.post("/api/channels", json=body)
    assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)
    assert await app.xj.db.fetchval("SELECT count(*) FROM channels") == 0
    assert await app.xj.db.fetchval("SELECT count(*) FROM channel_members") == 0


async def test_group_default_agent_can_be_named_changed_and_cleared(app, owner, agents):
    cid = await make_channel(owner, agentIds=agents, defaultAgentId="agent_coder")
    resp = await owner.put(f"/api/channels/{cid}", json={"defaultAgentId": "agent_poet", "name": "新名字"})
    ch = (await resp.get_json())["channel"]
    assert (ch["defaultAgentId"], ch["name"]) == ("agent_poet", "新名字")
    ch = (await (await owner.put(f"/api/channels/{cid}", json={"name": "again"})).get_json())["channel"]
    assert ch["defaultAgentId"] == "agent_poet"
    ch = (await (await owner.put(f"/api/channels/{cid}", json={"defaultAgentId": None})).get_json())["channel"]
    assert ch["defaultAgentId"] is None
    resp = await owner.put(f"/api/channels/{cid}", json={"defaultAgentId": "agent_nope"})
    assert (await resp.get_json())["code"] == "invalid_default_agent"


async def test_members_see_only_their_channels(app, owner, agents):
    alice, a = await user_client(app, "alice")
    bob, b = await user_client(app, "bob")
    mine = await make_channel(alice, name="alice's")
    await make_channel(bob, name="bob's")
    assert [c["name"] for c in (await (await alice.get("/api/channels")).get_json())["channels"]] == ["alice's"]
    assert sorted(c["name"] for c in (await (await owner.get("/api/channels")).get_json())["channels"]) == \
        ["alice's", "bob's"]
    resp = await bob.get(f"/api/channels/{mine}")
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "channel_not_found")


async def test_adding_and_removing_members(app, owner, agents):
    alice, a = await user_client(app, "alice")
    guest, g = await user_client(app, "gus", "guest")
    cid = await make_channel(alice, agentIds=["agent_poet"])
    assert (await guest.get(f"/api/channels/{cid}")).status_code == 404
    resp = await alice.post(f"/api/channels/{cid}/members", json={"userIds": [g["id"]], "agentIds": ["agent_coder"]})
    ch = (await resp.get_json())["channel"]
    assert (ch["userIds"], ch["agentIds"]) == ([a["id"], g["id"]], ["agent_poet", "agent_coder"])
    assert (await guest.get(f"/api/channels/{cid}")).status_code == 200
    # a guest is no manager of the channel
    resp = await guest.post(f"/api/channels/{cid}/members", json={"agentIds": ["agent_poet"]})
    assert resp.status_code == 403
    resp = await alice.delete(f"/api/channels/{cid}/members/{g['id']}")
    assert (await resp.get_json())["channel"]["userIds"] == [a["id"]]
    assert (await guest.get(f"/api/channels/{cid}")).status_code == 404
    resp = await alice.delete(f"/api/channels/{cid}/members/agent_coder")
    assert (await resp.get_json())["channel"]["agentIds"] == ["agent_poet"]
    resp = await alice.delete(f"/api/channels/{cid}/members/agent_coder")
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "member_not_found")


async def test_a_member_may_leave(app, agents):
    alice, a = await user_client(app, "alice")
    bob, b = await user_client(app, "bob")
    cid = await make_channel(alice, userIds=[b["id"]])
    assert (await bob.delete(f"/api/channels/{cid}/members/{b['id']}")).status_code == 200
    assert (await bob.get(f"/api/channels/{cid}")).status_code == 404


async def test_dm_members_are_fixed(app, owner, agents):
    cid = await make_channel(owner, type="dm", agentIds=["agent_poet"])
    resp = await owner.post(f"/api/channels/{cid}/members", json={"agentIds": ["agent_coder"]})
    assert (await resp.get_json())["code"] == "invalid_dm"
    resp = await owner.delete(f"/api/channels/{cid}/members/agent_poet")
    assert (await resp.get_json())["code"] == "invalid_dm"


async def test_read_only_member_reads_but_cannot_post(app, owner, agents):
    cid = await make_channel(owner)
    guest, g = await user_client(app, "gus", "guest")
    await owner.post(f"/api/channels/{cid}/members", json={"userIds": [g["id"]], "readOnly": True})
    await post(owner, cid, "hello")
    assert len((await (await guest.get(f"/api/messages?channelId={cid}")).get_json())["messages"]) == 1
    resp = await guest.post("/api/messages", json={"channelId": cid, "content": "hi", "type": "text"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "read_only")
    ch = (await (await owner.get(f"/api/channels/{cid}")).get_json())["channel"]
    assert ch["readOnlyUserIds"] == [g["id"]]


async def test_admin_reads_every_channel_but_posts_only_after_joining(app, agents):
    alice, _ = await user_client(app, "alice")
    admin, ad = await user_client(app, "ada", "admin")
    cid = await make_channel(alice)
    assert (await admin.get(f"/api/messages?channelId={cid}")).status_code == 200
    resp = await admin.post("/api/messages", json={"channelId": cid, "content": "hi"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "read_only")
    await admin.post(f"/api/channels/{cid}/members", json={"userIds": [ad["id"]]})
    await post(admin, cid, "hi")


async def test_delete_channel_removes_its_messages(app, owner, agents):
    cid = await make_channel(owner)
    await post(owner, cid, "部署流程")
    assert (await owner.delete(f"/api/channels/{cid}")).status_code == 200
    assert (await owner.get(f"/api/channels/{cid}")).status_code == 404
    db = app.xj.db
    counts = [await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("channels", "channel_members", "messages",
                                                                        "messages_fts")]
    assert counts == [0, 0, 0, 0]


async def test_member_cannot_rename_or_delete_anothers_channel(app, agents):
    alice, a = await user_client(app, "alice")
    bob, b = await user_client(app, "bob")
    cid = await make_channel(alice, userIds=[b["id"]])
    assert (await bob.put(f"/api/channels/{cid}", json={"name": "mine"})).status_code == 403
    assert (await bob.delete(f"/api/channels/{cid}")).status_code == 403
    assert (await (await alice.get(f"/api/channels/{cid}")).get_json())["channel"]["name"] == "写作工作室"


async def test_unread_counts_follow_the_read_marker(app, owner):
    from chat_helpers import user_client

    core = app.xj
    mc, member = await user_client(app, "reader")
    ch = await (await owner.post("/api/channels", json={"name": "读书会", "type": "group", "agentIds": [],
                                                        "userIds": [member["id"]]})).get_json()
    cid = ch["id"]

    async def unread(client):
        chans = (await (await client.get("/api/channels")).get_json())["channels"]
        return next(c.get("unread") for c in chans if c["id"] == cid)

    ids = []
    for text in ("一", "二", "三"):
        ids.append((await (await owner.post("/api/messages", json={"channelId": cid, "content": text,
                                                                    "type": "text"})).get_json())["id"])
    await mc.post("/api/messages", json={"channelId": cid, "content": "mine", "type": "text"})
    assert await unread(mc) == 3  # others' messages only
    assert await unread(owner) == 1  # the member's one
    seq_two = (await core.db.fetchone("SELECT seq FROM messages WHERE id = ?", (ids[1],)))["seq"]
    resp = await mc.post(f"/api/channels/{cid}/read", json={"seq": seq_two})
    assert (await resp.get_json()) == {"ok": True, "lastReadSeq": seq_two}
    assert await unread(mc) == 1
    resp = await mc.post(f"/api/channels/{cid}/read", json={"seq": 1})  # never moves back
    assert (await resp.get_json())["lastReadSeq"] == seq_two
    assert (await (await mc.post(f"/api/channels/{cid}/read", json={})).get_json())["ok"] is True
    assert await unread(mc) == 0
    await owner.delete(f"/api/messages/{ids[2]}")
    assert await unread(owner) == 1


async def test_read_marker_bad_input(app, owner):
    from chat_helpers import user_client

    oc, _ = await user_client(app, "outsider")
    ch = await (await owner.post("/api/channels", json={"name": "x", "type": "group", "agentIds": []})).get_json()
    cases = [(oc, f"/api/channels/{ch['id']}/read", {}, 404),
             (owner, "/api/channels/ch_nope/read", {}, 404),
             (owner, f"/api/channels/{ch['id']}/read", {"seq": -1}, 400),
             (owner, f"/api/channels/{ch['id']}/read", {"seq": "x"}, 400),
             (app.test_client(), f"/api/channels/{ch['id']}/read", {}, 401)]
    for client, path, body, status in cases:
        assert (await client.post(path, json=body)).status_code == status
