"""Messages: history pages, posting, edits and tombstones, the engine hook-in."""
from __future__ import annotations

import re

import pytest

from chat_helpers import make_agent, make_channel, post, search, user_client
from conftest import make_settings, running_app
from xiajiao import hookimpl

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


@pytest.fixture
async def channel(app, owner):
    await make_agent(app)
    return await make_channel(owner)


async def test_post_and_read_back_in_the_seed_shape(app, owner, channel):
    resp = await owner.post("/api/messages", json={"channelId": channel, "content": "@代码助手 hello", "type": "text"})
    assert resp.status_code == 200
    body = await resp.get_json()
    assert body["ok"] is True and body["id"].startswith("msg_") and isinstance(body["answeredBy"], list)
    page = await (await owner.get(f"/api/messages?channelId={channel}&limit=10")).get_json()
    [m] = page["messages"]
    owner_id = (await (await owner.get("/api/me")).get_json())["user"]["id"]
    assert {k: m[k] for k in ("id", "channelId", "agentId", "userId", "content", "type", "metadata")} == {
        "id": body["id"], "channelId": channel, "agentId": None, "userId": owner_id,
        "content": "@代码助手 hello", "type": "text", "metadata": {}}
    assert ISO.match(m["createdAt"])


@pytest.mark.parametrize("type_", ["text", "image", "file", "tool_call", "tool_result"])
async def test_every_message_type_is_accepted(owner, channel, type_):
    await post(owner, channel, "x", type_)
    [m] = (await (await owner.get(f"/api/messages?channelId={channel}")).get_json())["messages"]
    assert m["type"] == type_


async def test_keyset_pages_stay_correct_while_messages_arrive(owner, channel):
    ids = [await post(owner, channel, f"m{i}") for i in range(7)]
    page = (await (await owner.get(f"/api/messages?channelId={channel}&limit=3")).get_json())["messages"]
    assert [m["content"] for m in page] == ["m4", "m5", "m6"]
    await post(owner, channel, "new while paging")
    page = (await (await owner.get(f"/api/messages?channelId={channel}&limit=3&before={page[0]['id']}"))
            .get_json())["messages"]
    assert [m["content"] for m in page] == ["m1", "m2", "m3"]
    page = (await (await owner.get(f"/api/messages?channelId={channel}&limit=3&before={page[0]['id']}"))
            .get_json())["messages"]
    assert [m["id"] for m in page] == ids[:1]
    later = (await (await owner.get(f"/api/messages?channelId={channel}&after={ids[5]}")).get_json())["messages"]
    assert [m["content"] for m in later] == ["m6", "new while paging"]


@pytest.mark.parametrize("query,status,code", [
    ("", 400, "validation_error"),
    ("channelId=CH&limit=0", 400, "validation_error"),
    ("channelId=CH&limit=201", 400, "validation_error"),
    ("channelId=CH&limit=abc", 400, "validation_error"),
    ("channelId=ch_nope", 404, "channel_not_found"),
    ("channelId=CH&before=msg_nope", 404, "message_not_found"),
])
async def test_bad_history_queries(owner, channel, query, status, code):
    resp = await owner.get("/api/messages?" + query.replace("CH", channel))
    assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)


@pytest.mark.parametrize("body,status,code", [
    ({"channelId": "ch_nope", "content": "hi"}, 404, "channel_not_found"),
    ({"channelId": "CH", "content": "   "}, 400, "empty_message"),
    ({"channelId": "CH", "content": "x" * 101}, 413, "message_too_large"),
    ({"channelId": "CH", "content": "hi", "type": "video"}, 400, "validation_error"),
    ({"channelId": "CH", "content": 5}, 400, "validation_error"),
    ({"channelId": "CH"}, 400, "validation_error"),
    ({"content": "hi"}, 400, "validation_error"),
    ({"channelId": "CH", "content": "hi", "metadata": "x"}, 400, "validation_error"),
])
async def test_bad_posts_write_nothing(tmp_path, body, status, code):
    async with running_app(make_settings(tmp_path, max_message_chars=100)) as app:
        owner = app.test_client()
        await owner.post("/api/login", json={"password": "owner-password-1"})
        await make_agent(app)
        channel = await make_channel(owner)
        body = {k: (channel if v == "CH" else v) for k, v in body.items()}
        resp = await owner.post("/api/messages", json=body)
        assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)
        assert await app.xj.db.fetchval("SELECT count(*) FROM messages") == 0
        assert await app.xj.db.fetchval("SELECT count(*) FROM messages_fts") == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_malformed_json_is_400(owner, raw):
    resp = await owner.post("/api/messages", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert set(await resp.get_json()) >= {"error", "code"}


async def test_edit_own_message_and_not_others(app, owner, channel):
    mid = await post(owner, channel, "first 草稿")
    resp = await owner.put(f"/api/messages/{mid}", json={"content": "second 定稿"})
    m = (await resp.get_json())["message"]
    assert (m["content"], bool(ISO.match(m["updatedAt"]))) == ("second 定稿", True)
    hits = await search(owner, "定稿")
    assert [h["id"] for h in hits] == [mid]
    assert await search(owner, "草稿") == []
    admin, ad = await user_client(app, "ada", "admin")
    await owner.post(f"/api/channels/{channel}/members", json={"userIds": [ad["id"]]})
    resp = await admin.put(f"/api/messages/{mid}", json={"content": "hijack"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "not_your_message")


async def test_delete_keeps_a_tombstone(app, owner, channel):
    keep = await post(owner, channel, "keep")
    gone = await post(owner, channel, "secret 机密")
    resp = await owner.delete(f"/api/messages/{gone}")
    assert resp.status_code == 200
    page = (await (await owner.get(f"/api/messages?channelId={channel}")).get_json())["messages"]
    assert [(m["id"], m["content"], m.get("deleted", False)) for m in page] == \
        [(keep, "keep", False), (gone, "", True)]
    assert await app.xj.db.fetchval("SELECT count(*) FROM messages WHERE content LIKE '%机密%'") == 0
    assert await search(owner, "机密") == []
    assert (await owner.delete(f"/api/messages/{gone}")).status_code == 404
    assert (await owner.put(f"/api/messages/{gone}", json={"content": "back"})).status_code == 404


async def test_member_cannot_delete_others_message_but_admin_may(app, owner, channel):
    bob, b = await user_client(app, "bob")
    await owner.post(f"/api/channels/{channel}/members", json={"userIds": [b["id"]]})
    mid = await post(owner, channel, "owner's")
    resp = await bob.delete(f"/api/messages/{mid}")
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "not_your_message")
    bobs = await post(bob, channel, "bob's")
    assert (await owner.delete(f"/api/messages/{bobs}")).status_code == 200


async def test_message_in_an_unseen_channel_is_404(app, owner, channel):
    mid = await post(owner, channel, "private")
    bob, _ = await user_client(app, "bob")
    for resp in (await bob.put(f"/api/messages/{mid}", json={"content": "x"}), await bob.delete(f"/api/messages/{mid}")):
        assert (resp.status_code, (await resp.get_json())["code"]) == (404, "message_not_found")


class Recorder:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_message(self, app, message, channel, actor):
        self.seen.append((message["content"], channel["id"], actor.id))


async def test_user_message_reaches_on_message_and_the_engine(tmp_path):
    rec = Recorder()
    async with running_app(make_settings(tmp_path), plugins=[rec]) as app:
        turns = []

        async def handle_user_message(message, channel, actor, routing=None):
            turns.append((message["id"], channel["id"], actor.id))

        app.xj.engine.handle_user_message = handle_user_message
        owner = app.test_client()
        await owner.post("/api/login", json={"password": "owner-password-1"})
        await make_agent(app)
        cid = await make_channel(owner)
        mid = await post(owner, cid, "@诗人 写一首诗")
        oid = (await (await owner.get("/api/me")).get_json())["user"]["id"]
        for task in [t for t in app.xj._background if t.get_name() == f"turn:{mid}"]:
            await task  # the turn started for the message (service loops such as the scheduler run on)
        assert rec.seen == [("@诗人 写一首诗", cid, oid)]
        assert turns == [(mid, cid, oid)]
