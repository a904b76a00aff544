"""Conversations that hold up: topics and branches (the tree), the JSON turn, reply versions
(regenerate, retry, edit-and-resend), failures as the agent's message, resume of a streaming reply."""
from __future__ import annotations

import asyncio

import pytest

from conftest import Frames, llm_settings, login, running_app
from fake_llm import Reply


@pytest.fixture
async def site(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        yield app


async def dm(app, agent="translator", name="Talk") -> str:
    resp = await app.owner.post("/api/channels", json={"name": name, "type": "dm", "agentIds": [agent]})
    assert resp.status_code == 201
    return (await resp.get_json())["id"]


async def turn(app, channel_id, content) -> dict:
    resp = await app.owner.post("/api/turns", json={"channelId": channel_id, "content": content})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return await resp.get_json()


async def page(app, channel_id) -> dict:
    return await (await app.owner.get(f"/api/messages?channelId={channel_id}&limit=100")).get_json()


async def test_the_json_turn_returns_the_finished_reply(site, fake_llm):
    cid = await dm(site)
    fake_llm.script(text="Hello, world", chunks=3)
    body = await turn(site, cid, "你好")
    assert body["message"]["content"] == "你好" and body["message"]["channelId"] == cid
    [reply] = body["replies"]
    assert (reply["content"], reply["status"], reply["agentId"]) == ("Hello, world", "done", "translator")
    assert reply["metadata"]["replyTo"] == body["message"]["id"]
    assert [m["content"] for m in (await page(site, cid))["messages"]] == ["你好", "Hello, world"]


async def test_the_json_turn_of_a_failed_provider_is_the_agents_error_reply(site, fake_llm):
    cid = await dm(site)
    fake_llm.script(Reply(status=401, error_message="bad key"))
    [reply] = (await turn(site, cid, "hi"))["replies"]
    assert (reply["status"], reply["agentId"], reply["userId"]) == ("error", "translator", None)
    assert reply["metadata"]["error"]["reason"] == "key_rejected"
    stored = (await page(site, cid))["messages"][-1]
    assert (stored["status"], stored["metadata"]["error"]["reason"]) == ("error", "key_rejected")


@pytest.mark.parametrize("reply,reason", [
    (Reply(status=429), "provider_rate_limited"),
    (Reply(status=400, error_message="This model's maximum context length is 8192 tokens"), "context_too_long"),
    (Reply(status=403), "key_rejected"),
    (Reply(status=500), "provider_error"),
])
async def test_failure_reasons(tmp_path, fake_llm, reply, reason):
    async with running_app(llm_settings(tmp_path, fake_llm, provider_retries=0)) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        cid = await dm(app)
        fake_llm.script(reply)
        [out] = (await turn(app, cid, "hi"))["replies"]
        assert out["metadata"]["error"]["reason"] == reason


async def test_a_group_without_default_agent_says_why_nobody_answers(site):
    resp = await site.owner.post("/api/channels", json={"name": "g", "type": "group",
                                                        "agentIds": ["translator", "coder"]})
    cid = (await resp.get_json())["id"]
    body = await (await site.owner.post("/api/messages", json={"channelId": cid, "content": "anyone?"})).get_json()
    assert (body["answeredBy"], body["reason"]) == ([], "no_default_agent")
    body = await (await site.owner.post("/api/messages", json={"channelId": cid, "content": "@代码助手 hi"})).get_json()
    assert body["answeredBy"] == ["coder"] and "reason" not in body


# ------------------------------------------------------------------ topics and branches


async def test_topics_and_branches_form_a_tree(site, fake_llm):
    root = await dm(site)
    first = await turn(site, root, "one")
    await turn(site, root, "two")
    resp = await site.owner.post(f"/api/channels/{root}/topics", json={"name": "Side topic"})
    assert resp.status_code == 201
    topic = (await resp.get_json())["channel"]
    assert (topic["parentId"], topic["depth"], topic["type"], topic["agentIds"]) == (root, 1, "dm", ["translator"])
    resp = await site.owner.post(f"/api/channels/{root}/fork", json={"messageId": first["replies"][0]["id"],
                                                                     "name": "What if"})
    branch = (await resp.get_json())["channel"]
    assert (branch["parentId"], branch["forkMessageId"], branch["depth"]) == (root, first["replies"][0]["id"], 1)
    deeper_turn = await turn(site, branch["id"], "three")
    resp = await site.owner.post(f"/api/channels/{branch['id']}/fork",
                                 json={"messageId": deeper_turn["message"]["id"]})
    deeper = (await resp.get_json())["channel"]
    assert deeper["depth"] == 2 and deeper["name"] == "What if (branch)"

    tree = await (await site.owner.get(f"/api/channels/{deeper['id']}/tree")).get_json()
    assert tree["rootId"] == root
    shape = {c["id"]: (c["parentId"], c["depth"], c["childIds"]) for c in tree["channels"]}
    assert shape == {root: (None, 0, [topic["id"], branch["id"]]), topic["id"]: (root, 1, []),
                     branch["id"]: (root, 1, [deeper["id"]]), deeper["id"]: (branch["id"], 2, [])}
    listing = {c["id"]: c for c in (await (await site.owner.get("/api/channels")).get_json())["channels"]}
    assert listing[root]["childIds"] == [topic["id"], branch["id"]]
    assert (listing[deeper["id"]]["parentId"], listing[deeper["id"]]["depth"]) == (branch["id"], 2)

    # a topic starts empty; a branch shows what it inherits (not copied), then its own messages
    assert (await page(site, topic["id"]))["messages"] == []
    shown = (await page(site, deeper["id"]))["messages"]
    assert [(m["content"], m.get("inherited", False)) for m in shown] == [
        ("one", True), ("Echo: one", True), ("three", True)]
    assert await site.xj.db.fetchval("SELECT COUNT(*) FROM messages WHERE channel_id = ?", (deeper["id"],)) == 0


async def test_a_branch_inherits_history_up_to_the_fork_and_the_model_receives_it(site, fake_llm):
    root = await dm(site)
    first = await turn(site, root, "my name is Ada")
    await turn(site, root, "I live in Paris")  # after the fork point: not in the branch
    resp = await site.owner.post(f"/api/channels/{root}/fork", json={"messageId": first["replies"][0]["id"]})
    branch = (await resp.get_json())["id"]
    fake_llm.script(text="You are Ada")
    body = await turn(site, branch, "who am I?")
    assert body["replies"][0]["content"] == "You are Ada"
    sent = [(m["role"], m["content"]) for m in fake_llm.last.messages if m["role"] != "system"]
    assert sent == [("user", "my name is Ada"), ("assistant", "Echo: my name is Ada"), ("user", "who am I?")]
    # the parent goes on without the branch's messages
    await turn(site, root, "and you?")
    sent = [m["content"] for m in fake_llm.last.messages if m["role"] == "user"]
    assert sent == ["my name is Ada", "I live in Paris", "and you?"]


async def test_per_branch_memory_consolidation_counts_the_branch_as_its_own_conversation(site, fake_llm):
    root = await dm(site)
    first = await turn(site, root, "hello")
    branch = (await (await site.owner.post(f"/api/channels/{root}/fork",
                                           json={"messageId": first["replies"][0]["id"]})).get_json())["id"]
    await turn(site, branch, "in the branch")
    from plugins.memory import store

    db = await store.open_db(site.xj, "translator")
    for _ in range(100):  # the turn counter is written in the background after each turn
        rows = await db.fetchall("SELECT channel_id FROM conversations")
        if {r["channel_id"] for r in rows} >= {root, branch}:
            break
        await asyncio.sleep(0.05)
    assert {r["channel_id"] for r in rows} >= {root, branch}


@pytest.mark.parametrize("case", ["other_channel", "deleted", "archived"])
async def test_bad_forks_are_refused_with_a_code(site, case):
    root = await dm(site)
    other = await dm(site, "coder", "Other")
    theirs = (await turn(site, other, "elsewhere"))["message"]["id"]
    mine = (await turn(site, root, "here"))["message"]["id"]
    if case == "other_channel":
        resp = await site.owner.post(f"/api/channels/{root}/fork", json={"messageId": theirs})
        assert (resp.status_code, (await resp.get_json())["code"]) == (400, "message_not_in_channel")
    elif case == "deleted":
        await site.owner.delete(f"/api/messages/{mine}")
        resp = await site.owner.post(f"/api/channels/{root}/fork", json={"messageId": mine})
        assert (resp.status_code, (await resp.get_json())["code"]) == (404, "message_not_found")
    else:
        topic = (await (await site.owner.post(f"/api/channels/{root}/topics", json={"name": "t"})).get_json())["id"]
        msg = (await turn(site, topic, "x"))["message"]["id"]
        resp = await site.owner.post(f"/api/channels/{root}/archive", json={"archived": True})
        assert resp.status_code == 200 and (await resp.get_json())["channel"]["archived"] is True
        resp = await site.owner.post(f"/api/channels/{topic}/fork", json={"messageId": msg})
        assert (resp.status_code, (await resp.get_json())["code"]) == (409, "channel_archived")
        resp = await site.owner.post("/api/messages", json={"channelId": topic, "content": "still?"})
        assert (resp.status_code, (await resp.get_json())["code"]) == (409, "channel_archived")
        await site.owner.post(f"/api/channels/{root}/archive", json={"archived": False})
        resp = await site.owner.post(f"/api/channels/{topic}/fork", json={"messageId": msg})
        assert resp.status_code == 201


async def test_deleting_a_conversation_deletes_its_topics_and_branches(site):
    root = await dm(site)
    msg = (await turn(site, root, "hi"))["message"]["id"]
    branch = (await (await site.owner.post(f"/api/channels/{root}/fork", json={"messageId": msg})).get_json())["id"]
    await turn(site, branch, "more")
    assert (await site.owner.delete(f"/api/channels/{root}")).status_code == 200
    assert (await site.owner.get(f"/api/channels/{branch}")).status_code == 404
    assert await site.xj.db.fetchval("SELECT COUNT(*) FROM messages WHERE channel_id IN (?, ?)", (root, branch)) == 0


# ------------------------------------------------------------------ versions


async def wait_reply(app, channel_id, pred, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        msgs = (await page(app, channel_id))["messages"]
        found = [m for m in msgs if m["agentId"] and m["status"] != "streaming" and pred(m)]
        if found:
            return found[-1], msgs
        await asyncio.sleep(0.05)
    raise AssertionError("no such reply")


async def test_regenerate_keeps_the_earlier_versions_and_the_model_sees_only_the_newest(site, fake_llm):
    cid = await dm(site)
    fake_llm.script(text="version one")
    first = (await turn(site, cid, "tell me"))["replies"][0]
    fake_llm.script(text="version two")
    resp = await site.owner.post(f"/api/messages/{first['id']}/regenerate")
    assert resp.status_code == 202 and (await resp.get_json())["versionGroup"] == first["id"]
    second, msgs = await wait_reply(site, cid, lambda m: m["content"] == "version two")
    assert second["versionGroup"] == first["id"] and second["metadata"]["replyTo"] == first["metadata"]["replyTo"]
    old = next(m for m in msgs if m["id"] == first["id"])
    assert old["content"] == "version one" and old["superseded"] is True and old["versionGroup"] == first["id"]
    # the history the model receives has the question once and only the current version
    assert [m["content"] for m in fake_llm.last.messages if m["role"] != "system"] == ["tell me"]
    fake_llm.script(text="version three")
    await site.owner.post(f"/api/messages/{old['id']}/regenerate")  # from any version of the group
    await wait_reply(site, cid, lambda m: m["content"] == "version three")
    await turn(site, cid, "next")
    assert [m["content"] for m in fake_llm.last.messages if m["role"] != "system"] == [
        "tell me", "version three", "next"]
    versions = [m for m in (await page(site, cid))["messages"] if m.get("versionGroup") == first["id"]]
    assert [(m["content"], m.get("superseded", False)) for m in versions] == [
        ("version one", True), ("version two", True), ("version three", False)]


async def test_retry_a_failed_reply_once_the_provider_recovers(site, fake_llm):
    cid = await dm(site)
    fake_llm.script(Reply(status=401))
    failed = (await turn(site, cid, "hello?"))["replies"][0]
    assert failed["status"] == "error"
    resp = await site.owner.post(f"/api/messages/{failed['id']}/retry")
    assert resp.status_code == 202
    again, _ = await wait_reply(site, cid, lambda m: m["status"] == "done")
    assert again["content"] == "Echo: hello?" and again["versionGroup"] == failed["id"]
    resp = await site.owner.post(f"/api/messages/{again['id']}/retry")
    assert (resp.status_code, (await resp.get_json())["code"]) == (409, "not_failed")


async def test_edit_and_resend_answers_the_edited_text(site, fake_llm):
    cid = await dm(site)
    body = await turn(site, cid, "capital of Frnace?")
    resp = await site.owner.post(f"/api/messages/{body['message']['id']}/resend",
                                 json={"content": "capital of France?"})
    assert resp.status_code == 202
    again, msgs = await wait_reply(site, cid, lambda m: m["content"] == "Echo: capital of France?")
    assert again["versionGroup"] == body["replies"][0]["id"]
    assert msgs[0]["content"] == "capital of France?" and msgs[0]["updatedAt"]
    assert [m["content"] for m in fake_llm.last.messages if m["role"] != "system"] == ["capital of France?"]


async def test_bad_version_requests_get_codes(site, fake_llm):
    cid = await dm(site)
    body = await turn(site, cid, "hi")
    reply, asked = body["replies"][0]["id"], body["message"]["id"]
    resp = await site.owner.post(f"/api/messages/{asked}/regenerate")
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "not_a_reply")
    resp = await site.owner.post(f"/api/messages/{reply}/resend", json={"content": "mine?"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "not_your_message")
    await site.owner.delete(f"/api/messages/{reply}")
    resp = await site.owner.post(f"/api/messages/{reply}/regenerate")
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "message_not_found")


# ------------------------------------------------------------------ resume


async def test_a_page_read_mid_stream_has_the_text_so_far_and_the_frames_after_its_seq_the_rest(site, fake_llm):
    cid = await dm(site)
    frames = Frames(site, cid)
    fake_llm.script(Reply(text="abcdefgh", chunks=8, delay=0.15))
    await site.owner.post("/api/messages", json={"channelId": cid, "content": "go"})
    await frames.wait_for("stream_chunk")
    await frames.wait_for("stream_chunk", lambda d: d["content"] in "cdefgh")
    snap = await page(site, cid)
    live = snap["messages"][-1]
    assert live["status"] == "streaming" and live["agentId"] == "translator" and live["content"]
    await frames.wait_for("stream_end")
    rest = "".join(f["data"]["content"] for f in frames.items
                   if f["type"] == "stream_chunk" and f["seq"] > snap["seq"])
    assert live["content"] + rest == "abcdefgh"
    assert snap["epoch"] == site.xj.hub.epoch
