"""One agent turn: streamed DM reply, context (SOUL.md, prepare_prompt, history budget), stop, errors."""
from __future__ import annotations


import asyncio
import json


from fake_llm import Reply
from xiajiao import ChatMessage, hookimpl
from xiajiao.chat import get_message
from conftest import Frames, llm_settings, login, make_channel, running_app, user_says


async def reply_row(app, frames):
    end = await frames.wait_for("stream_end")
    return end, await get_message(app.xj.db, end["messageId"])


async def test_a_dm_streams_the_reply_and_stores_it(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["translator"], type="dm")
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(text="Hello, world", chunks=3)
    msg, routed = await user_says(llm_app, ch, "你好,世界")
    assert routed == ["translator"]
    end, row = await reply_row(llm_app, frames)
    start = frames.of("stream_start")[0]
    assert start == {"messageId": end["messageId"], "channelId": ch["id"], "agentId": "translator",
                     "replyTo": msg["id"], "createdAt": row["created_at"]}
    assert frames.of("stream_chunk") == [{"messageId": end["messageId"], "content": c}
                                         for c in ["Hell", "o, w", "orld"]]
    assert end == {"messageId": start["messageId"], "status": "done"}
    assert [f["type"] for f in frames.items if f["type"] != "subscribed"] == \
        ["message", "stream_start", "stream_chunk", "stream_chunk", "stream_chunk", "stream_end"]
    assert (row["content"], row["status"], row["agent_id"], row["type"]) == ("Hello, world", "done", "translator", "text")
    assert '"replyTo": "%s"' % msg["id"] in row["metadata"]
    # the model saw the SOUL.md as system prompt and the user's message
    sent = fake_llm.last.json["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith("# 翻译官 / Translator")
    assert sent[1:] == [{"role": "user", "content": "你好,世界"}]


async def test_soul_md_is_read_fresh_for_each_turn(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["coder"], type="dm")
    frames = Frames(llm_app, ch["id"])
    owner = llm_app.test_client()
    await login(owner)
    resp = await owner.put("/api/agents/coder", json={"soul": "You only answer in haiku."})
    assert resp.status_code == 200
    await user_says(llm_app, ch, "hi")
    await frames.wait_for("stream_end")
    assert fake_llm.last.system == "You only answer in haiku."
    # edited on disk by hand: the next turn sees it too
    (llm_app.xj.workspace("coder") / "SOUL.md").write_text("Changed by hand, longer.", encoding="utf-8")
    await user_says(llm_app, ch, "again")
    await frames.wait_for("stream_end", lambda d: len(frames.of("stream_end")) == 2)
    assert fake_llm.last.system == "Changed by hand, longer."


class Knowledge:
    @hookimpl
    def prepare_prompt(self, prompt, agent, message):
        prompt.add("Knowledge", f"{agent['name']} knows: the deploy takes 3 steps ({message['content']})", 40)
        prompt.add("Memory", "The user likes tea.", 60)


async def test_prepare_prompt_sections_reach_the_model(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[Knowledge()]) as app:
        ch = await make_channel(app, ["editor"], type="dm")
        frames = Frames(app, ch["id"])
        await user_says(app, ch, "部署流程?")
        await frames.wait_for("stream_end")
    system = fake_llm.last.system
    assert system.endswith("## Memory\nThe user likes tea.\n\n## Knowledge\n编辑 knows: the deploy takes 3 steps (部署流程?)")


class People:
    def __init__(self):
        self.seen = []

    @hookimpl
    def prepare_prompt(self, channel):
        self.seen.append(channel.get("_people"))


async def test_the_prompt_hooks_get_the_people_of_the_channel_at_the_start_of_the_turn(tmp_path, fake_llm):
    people = People()
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[people]) as app:
        ch = await make_channel(app, ["editor"])
        owner = await app.xj.db.fetchval("SELECT id FROM users WHERE role = 'owner'")
        frames = Frames(app, ch["id"])
        await user_says(app, ch, "@编辑 hello")
        await frames.wait_for("stream_end")
        await app.xj.db.execute("INSERT INTO users (id, username, password_hash, role, created_at) "
                                "VALUES ('u_2', 'ann', 'x', 'member', '')")
        await app.xj.db.execute("INSERT INTO channel_members (channel_id, member_type, member_id, joined_at) "
                                "VALUES (?, 'user', 'u_2', '9999')", (ch["id"],))
        await user_says(app, ch, "@编辑 again")
        await frames.wait_for("stream_end", lambda d: len(frames.of("stream_end")) == 2)
    assert people.seen == [[owner], [owner, "u_2"]]
    assert "_people" not in ch  # a copy per turn: the caller's channel is left as it was


async def test_history_is_kept_within_the_token_budget_oldest_dropped(tmp_path, fake_llm):
    from xiajiao import chat

    settings = llm_settings(tmp_path, fake_llm, reply_tokens=1000)
    async with running_app(settings) as app:
        gw = app.xj.engine.gateway
        gw.config("env-openai").context_window = 1000 + 256 + 200  # room for SOUL.md + a few messages
        await app.xj.engine.agents.update("translator", {"soul": "Translate."})
        ch = await make_channel(app, ["translator"], type="dm")
        for i in range(30):
            await chat.create_message(app.xj, channel_id=ch["id"], content=f"old message number {i} " + "x" * 40,
                                      user_id="u")
        frames = Frames(app, ch["id"])
        await user_says(app, ch, "the newest question")
        await frames.wait_for("stream_end")
    sent = fake_llm.last.json["messages"]
    contents = [m["content"] for m in sent[1:]]
    first = int(contents[0].split()[3])
    assert first > 0  # the oldest went first …
    assert contents == [f"old message number {i} " + "x" * 40 for i in range(first, 30)] + ["the newest question"]
    assert 30 - first >= 5  # … and what fits is kept, newest last


async def test_group_history_labels_other_agents(llm_app, fake_llm):
    from xiajiao import chat

    ch = await make_channel(llm_app, ["novelist", "editor"], default_agent_id="editor")
    await chat.create_message(llm_app.xj, channel_id=ch["id"], content="A poem about rain", agent_id="novelist")
    await chat.create_message(llm_app.xj, channel_id=ch["id"], content="my own older note", agent_id="editor")
    frames = Frames(llm_app, ch["id"])
    await user_says(llm_app, ch, "@编辑 please review")
    await frames.wait_for("stream_end")
    assert fake_llm.last.json["messages"][1:] == [
        {"role": "user", "content": "[小说家]: A poem about rain"},
        {"role": "assistant", "content": "my own older note"},
        {"role": "user", "content": "@编辑 please review"}]


async def test_stopping_a_turn_keeps_the_partial_reply(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["novelist"], type="dm")
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(text="Once upon a time there was", chunks=6, hang_after=2)
    await user_says(llm_app, ch, "tell me a story")
    chunks = await frames.wait_for("stream_chunk", lambda d: len(frames.of("stream_chunk")) == 2)
    owner = llm_app.test_client()
    await login(owner)
    running = await (await owner.get(f"/api/turns?channelId={ch['id']}")).get_json()
    assert running == {"turns": [{"messageId": chunks["messageId"], "agentId": "novelist", "channelId": ch["id"]}]}
    resp = await owner.post("/api/turns/stop", json={"messageId": chunks["messageId"]})
    assert await resp.get_json() == {"stopped": [chunks["messageId"]]}
    end, row = await reply_row(llm_app, frames)
    assert end == {"messageId": chunks["messageId"], "status": "stopped"}
    assert (row["content"], row["status"]) == ("Once upo", "stopped")


async def test_stop_by_channel_and_bad_stop_requests(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["novelist"], type="dm")
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(text="abcdef", chunks=3, hang_after=1)
    await user_says(llm_app, ch, "go")
    first = await frames.wait_for("stream_chunk")
    owner = llm_app.test_client()
    await login(owner)
    assert await (await owner.post("/api/turns/stop", json={"channelId": ch["id"]})).get_json() == \
        {"stopped": [first["messageId"]]}
    await frames.wait_for("stream_end")
    for body, status, code in [({}, 400, "invalid_stop"), ({"messageId": "msg_nope"}, 404, "turn_not_found"),
                               ({"channelId": "ch_nope"}, 404, "channel_not_found"),
                               ({"messageId": "a", "channelId": "b"}, 400, "invalid_stop")]:
        resp = await owner.post("/api/turns/stop", json=body)
        assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)


async def test_stop_over_websocket_handler(llm_app, fake_llm):
    from conftest import owner_actor

    ch = await make_channel(llm_app, ["novelist"], type="dm")
    frames = Frames(llm_app, ch["id"])
    frames.conn.actor = await owner_actor(llm_app)
    fake_llm.script(text="abcdef", chunks=3, hang_after=1)
    await user_says(llm_app, ch, "go")
    first = await frames.wait_for("stream_chunk")
    await llm_app.xj.ws_handlers["stop"](frames.conn, {"messageId": first["messageId"]})
    assert await frames.wait_for("stopped") == {"messageIds": [first["messageId"]]}
    assert (await frames.wait_for("stream_end"))["status"] == "stopped"


async def test_provider_down_sends_an_error_frame_and_keeps_the_user_message(tmp_path, fake_llm):
    from conftest import free_port

    settings = llm_settings(tmp_path, fake_llm, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                            provider_retries=0)
    async with running_app(settings) as app:
        ch = await make_channel(app, ["coder"], type="dm")
        frames = Frames(app, ch["id"])
        msg, _ = await user_says(app, ch, "are you there?")
        err = await frames.wait_for("error")
        end, row = await reply_row(app, frames)
        assert err == {"channelId": ch["id"], "agentId": "coder", "messageId": end["messageId"],
                       "error": "Model 'fake-model': cannot reach the provider", "code": "connection_error",
                       "reason": "provider_unreachable"}
        assert end["status"] == "error" and row["status"] == "error"
        # the failure is the agent's message, with the reason the page words
        assert row["agent_id"] == "coder" and row["user_id"] is None
        assert json.loads(row["metadata"])["error"]["reason"] == "provider_unreachable"
        assert (await get_message(app.xj.db, msg["id"]))["content"] == "are you there?"


async def test_unknown_model_sends_an_error_frame(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["coder"], type="dm")
    llm_app.xj.engine.agents.by_id["coder"]["model"] = "gpt-vanished"  # configured once, provider removed since
    frames = Frames(llm_app, ch["id"])
    msg, _ = await user_says(llm_app, ch, "hello")
    err = await frames.wait_for("error")
    stored = await frames.wait_for("message", lambda d: d["agentId"] == "coder")
    assert err == {"channelId": ch["id"], "agentId": "coder", "messageId": stored["id"],
                   "error": "Unknown model 'gpt-vanished'", "code": "unknown_model", "reason": "model_unavailable"}
    # stored as the agent's failed reply to the message, so a reload shows the same
    assert (stored["agentId"], stored["status"], stored["metadata"]["replyTo"]) == ("coder", "error", msg["id"])
    assert stored["metadata"]["error"]["reason"] == "model_unavailable"
    assert frames.of("stream_start") == [] and fake_llm.chat_requests() == []


async def test_one_agents_turns_in_a_channel_run_in_order(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["novelist"], type="dm")
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(Reply(text="first reply", chunks=4, delay=0.02), Reply(text="second reply", chunks=2))
    await user_says(llm_app, ch, "one")
    await user_says(llm_app, ch, "two")
    await frames.wait_for("stream_end", lambda d: len(frames.of("stream_end")) == 2)
    types = [(f["type"], (f.get("data") or {}).get("messageId")) for f in frames.items
             if f["type"] in ("stream_start", "stream_end")]
    assert [t for t, _ in types] == ["stream_start", "stream_end", "stream_start", "stream_end"]
    assert types[0][1] == types[1][1] and types[2][1] == types[3][1]
    # the second turn saw the first reply in its history
    assert {"role": "assistant", "content": "first reply"} in fake_llm.last.json["messages"]


async def test_different_agents_answer_in_parallel(llm_app, fake_llm):
    ch = await make_channel(llm_app, ["novelist", "editor"])
    frames = Frames(llm_app, ch["id"])
    fake_llm.script(Reply(text="aaaa", chunks=4, hang_after=1), Reply(text="bbbb", chunks=2))
    await user_says(llm_app, ch, "@小说家 @编辑 hello both")
    # the second agent finishes while the first one is still hanging mid-reply
    end = await frames.wait_for("stream_end")
    started = [d["messageId"] for d in frames.of("stream_start")]
    assert len(started) == 2 and end["messageId"] in started
    assert len(frames.of("stream_end")) == 1  # one finished while the other still streams
    fake_llm.release()
    await frames.wait_for("stream_end", lambda d: len(frames.of("stream_end")) == 2)


class TurnLog:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_turn_end(self, agent, message, reply, actor):
        self.seen.append((agent["id"], message["content"], reply["content"], reply["status"], actor.role))


async def test_on_turn_end_sees_the_question_and_the_stored_reply(tmp_path, fake_llm):
    log = TurnLog()
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[log]) as app:
        ch = await make_channel(app, ["butler"], type="dm")
        frames = Frames(app, ch["id"])
        fake_llm.script(text="Noted.")
        await user_says(app, ch, "I like tea")
        await frames.wait_for("stream_end")
        for _ in range(100):
            if log.seen:
                break
            await asyncio.sleep(0.01)
    assert log.seen == [("butler", "I like tea", "Noted.", "done", "owner")]


async def test_complete_is_a_non_streaming_helper(llm_app, fake_llm):
    fake_llm.script(text="a summary", chunks=3)
    agent = llm_app.xj.engine.agents.get("butler")
    text = await llm_app.xj.engine.complete(agent, [ChatMessage("user", "summarize")], max_tokens=50)
    assert text == "a summary"
    assert fake_llm.last.json["max_tokens"] == 50


async def test_the_demo_model_answers_when_nothing_is_configured(tmp_path):
    from conftest import make_settings

    async with running_app(make_settings(tmp_path, demo_delay=0.0, stream_coalesce_ms=0.0)) as app:
        ch = await make_channel(app, ["translator"], type="dm")
        frames = Frames(app, ch["id"])
        await user_says(app, ch, "hello")
        _, row = await reply_row(app, frames)
    assert row["content"].startswith("I am the offline demo model")
    assert len(frames.of("stream_chunk")) > 5


async def test_partial_text_is_saved_while_streaming(tmp_path, fake_llm):
    from xiajiao.engine import turn as turn_mod

    turn_mod.PARTIAL_SAVE_SECONDS, old = 0.0, turn_mod.PARTIAL_SAVE_SECONDS
    try:
        async with running_app(llm_settings(tmp_path, fake_llm)) as app:
            ch = await make_channel(app, ["novelist"], type="dm")
            frames = Frames(app, ch["id"])
            fake_llm.script(text="partial text here", chunks=3, hang_after=2)
            await user_says(app, ch, "hi")
            chunk = await frames.wait_for("stream_chunk", lambda d: len(frames.of("stream_chunk")) == 2)
            row = None
            for _ in range(200):
                row = await get_message(app.xj.db, chunk["messageId"])
                if row["content"] == "partial tex":
                    break
                await asyncio.sleep(0.01)
            assert (row["content"], row["status"]) == ("partial tex", "streaming")
            fake_llm.release()
    finally:
        turn_mod.PARTIAL_SAVE_SECONDS = old


async def test_end_to_end_over_http_and_a_real_websocket(tmp_path, fake_llm):
    """POST /api/messages on a live server; the reply streams over /ws; a stop frame stops the next one."""
    import json

    import httpx
    import websockets

    from conftest import OWNER_PASSWORD, live_server
    from xiajiao import auth

    settings = llm_settings(tmp_path, fake_llm)
    async with live_server(settings) as (app, base):
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.post("/api/login", json={"password": OWNER_PASSWORD})).status_code == 200
            token = http.cookies.get(auth.SESSION_COOKIE)
            resp = await http.post("/api/channels", json={"name": "dm", "type": "dm", "agentIds": ["translator"]})
            cid = resp.json()["id"]
            async with websockets.connect(base.replace("http", "ws") + "/ws") as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                await ws.send(json.dumps({"type": "subscribe", "channelId": cid}))

                async def until(type_):
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if frame["type"] == type_:
                            return frame

                await until("subscribed")
                fake_llm.script(text="Hello there", chunks=3)
                resp = await http.post("/api/messages", json={"channelId": cid, "content": "你好"})
                assert resp.status_code == 200
                start = await until("stream_start")
                assert start["data"] == {"messageId": start["data"]["messageId"], "channelId": cid,
                                         "agentId": "translator", "replyTo": resp.json()["id"],
                                         "createdAt": start["data"]["createdAt"]}
                chunks = []
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if frame["type"] == "stream_chunk":
                        chunks.append(frame["data"]["content"])
                    elif frame["type"] == "stream_end":
                        break
                assert "".join(chunks) == "Hello there"
                stored = (await http.get(f"/api/messages?channelId={cid}")).json()["messages"]
                assert [(m["content"], m["agentId"]) for m in stored] == [("你好", None), ("Hello there", "translator")]

                fake_llm.script(text="a long answer", chunks=5, hang_after=1)
                await http.post("/api/messages", json={"channelId": cid, "content": "more"})
                first = await until("stream_chunk")
                await ws.send(json.dumps({"type": "stop", "data": {"messageId": first["data"]["messageId"]}}))
                assert (await until("stopped"))["data"] == {"messageIds": [first["data"]["messageId"]]}
                assert (await until("stream_end"))["data"]["status"] == "stopped"


async def test_deltas_arriving_together_share_one_frame(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, stream_coalesce_ms=15.0)
    async with running_app(settings) as app:
        ch = await make_channel(app, ["translator"], type="dm")
        frames = Frames(app, ch["id"])
        fake_llm.script(text="abcdefghijkl", chunks=6)  # all six deltas arrive in one read
        await user_says(app, ch, "hi")
        end, row = await reply_row(app, frames)
    chunks = [d["content"] for d in frames.of("stream_chunk")]
    assert chunks[0] == "ab"  # the first delta goes out at once
    assert "".join(chunks) == row["content"] == "abcdefghijkl"
    assert len(chunks) < 6
    kinds = [f["type"] for f in frames.items if f["type"].startswith("stream_")]
    assert kinds[-1] == "stream_end" and kinds.count("stream_end") == 1
