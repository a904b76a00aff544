"""Agent memory: tools, near-duplicate merging, hybrid search, prompt injection, consolidation, the API."""
from __future__ import annotations

import json

import pytest

from fake_llm import Reply

from conftest import login, make_settings, running_app
from xiajiao import Actor, Prompt, ToolContext
from xiajiao.ids import now_iso  # noqa: F401


@pytest.fixture
def settings(tmp_path):
    # the hash embedder scores restatements lower than e5-small (whose default threshold is 0.95)
    return make_settings(tmp_path, embedder="hash", memory_dedup_threshold=0.9)


async def add_agent(app, agent_id="agent_mem", name="Keeper", knowledge=0) -> dict:
    now = now_iso()
    await app.xj.db.execute(
        "INSERT INTO agents (id, name, knowledge, created_at, updated_at) VALUES (?,?,?,?,?)",
        (agent_id, name, knowledge, now, now))
    app.xj.workspace(agent_id).mkdir(parents=True, exist_ok=True)
    await app.xj.engine.agents.load()  # written behind the agents service's back: it reads them again
    return await app.xj.db.fetchone("SELECT * FROM agents WHERE id = ?", (agent_id,))


@pytest.fixture
async def agent(app):
    return await add_agent(app)


OWNER = Actor("user_owner", "owner", "Owner")


def ctx(app, agent, channel_id="ch_a", message_id="msg_1"):
    return ToolContext(app=app.xj, agent=agent, channel={"id": channel_id}, message={"id": message_id},
                       actor=OWNER)


async def call(app, tool, args, context):
    return await app.xj.tools.get(tool).fn(args, context)


async def prompt_for(app, agent, text, channel_id="ch_b"):
    prompt = Prompt(soul="You are Keeper.")
    await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel={"id": channel_id},
                      message={"id": "msg_q", "content": text}, actor=OWNER)
    return prompt.render()


async def test_a_memory_written_in_one_conversation_is_recalled_in_another(app, agent):
    out = await call(app, "memory_write", {"content": "The user's cat is called Mochi", "class": "semantic"},
                     ctx(app, agent, "ch_a", "msg_41"))
    assert out["status"] == "created"
    assert out["memory"]["source"] == {"channelId": "ch_a", "messageId": "msg_41"}
    await call(app, "memory_write", {"content": "用户喜欢喝乌龙茶", "class": "semantic"}, ctx(app, agent, "ch_a", "msg_42"))

    rendered = await prompt_for(app, agent, "What is my cat called?", "ch_b")
    assert "## Memories" in rendered
    lines = rendered.split("## Memories\n", 1)[1].splitlines()
    assert lines[1] == f"- (semantic) The user's cat is called Mochi (id {out['memory']['id']})"

    rendered = await prompt_for(app, agent, "我喜欢喝什么茶?", "ch_c")
    lines = rendered.split("## Memories\n", 1)[1].splitlines()
    assert lines[1].startswith("- (semantic) 用户喜欢喝乌龙茶 (id mem")


async def test_memory_prompt_respects_its_budget(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash", memory_prompt_chars=80)) as app:
        agent = await add_agent(app)
        for i in range(6):
            await call(app, "memory_write", {"content": f"Project {i} deploys with docker compose on port 80{i}"},
                       ctx(app, agent))
        rendered = await prompt_for(app, agent, "how does the project deploy?")
        section = rendered.split("## Memories\n", 1)[1]
        listed = section.split("\n", 1)[1]
        assert 0 < len(listed) <= 80
        assert listed.count("- (semantic) Project") == 1


@pytest.mark.parametrize("first, second, merged_content", [
    ("The user's name is Alice", "The user's name is Alice.", "The user's name is Alice."),
    ("用户的邮箱是 alice@example.com", "用户邮箱是 alice@example.com", "用户邮箱是 alice@example.com"),
    ("The deploy target is staging-2", "The deploy target is staging-2 now", "The deploy target is staging-2 now"),
])
async def test_a_duplicate_memory_merges(app, agent, first, second, merged_content):
    a = await call(app, "memory_write", {"content": first, "importance": 0.3}, ctx(app, agent, "ch_a", "msg_1"))
    b = await call(app, "memory_write", {"content": second, "importance": 0.8}, ctx(app, agent, "ch_b", "msg_2"))
    assert (a["status"], b["status"]) == ("created", "merged")
    assert b["memory"]["id"] == a["memory"]["id"]
    assert b["memory"]["content"] == merged_content
    assert (b["memory"]["version"], b["memory"]["merges"], b["memory"]["importance"]) == (2, 1, 0.8)
    assert b["memory"]["source"] == {"channelId": "ch_b", "messageId": "msg_2"}
    db = await app.xj.workspace_db(agent["id"], "memory.db")
    assert await db.fetchval("SELECT COUNT(*) FROM memories") == 1
    assert await db.fetchall("SELECT version, content FROM memory_versions") == [{"version": 1, "content": first}]


async def test_different_memories_and_other_classes_do_not_merge(app, agent):
    c = ctx(app, agent)
    r1 = await call(app, "memory_write", {"content": "Always answer in English"}, c)
    r2 = await call(app, "memory_write", {"content": "Always answer in English", "class": "procedural"}, c)
    r3 = await call(app, "memory_write", {"content": "The office is in Hangzhou"}, c)
    assert [r["status"] for r in (r1, r2, r3)] == ["created", "created", "created"]


async def test_merge_threshold_is_the_setting(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash", memory_dedup_threshold=1.01)) as app:
        agent = await add_agent(app)
        r1 = await call(app, "memory_write", {"content": "The user's name is Alice"}, ctx(app, agent))
        r2 = await call(app, "memory_write", {"content": "The user's name is Alice"}, ctx(app, agent))
        assert (r1["status"], r2["status"]) == ("created", "created")


async def test_hybrid_search_ranks_by_relevance_then_importance(app, agent):
    c = ctx(app, agent)
    for content, importance in [("Deploy the API with docker compose", 0.2),
                                ("The user prefers tea over coffee", 0.9),
                                ("Deploy the worker with docker compose", 0.9),
                                ("周五下午发布新版本", 0.5)]:
        await call(app, "memory_write", {"content": content, "importance": importance, "class": "episodic"}, c)
    out = await call(app, "memory_search", {"query": "docker compose deploy", "limit": 2}, c)
    assert [m["content"] for m in out["memories"]] == ["Deploy the worker with docker compose",
                                                       "Deploy the API with docker compose"]
    out = await call(app, "memory_search", {"query": "发布", "limit": 1}, c)
    assert [m["content"] for m in out["memories"]] == ["周五下午发布新版本"]
    out = await call(app, "memory_search", {"query": "tea", "class": "semantic"}, c)
    assert out["memories"] == []


@pytest.mark.parametrize("args, code", [
    ({"content": ""}, "invalid_content"),
    ({"content": "x", "class": "dream"}, "invalid_class"),
    ({"content": "x", "importance": 2}, "invalid_importance"),
    ({"content": "x" * 4001}, "content_too_long"),
    ({"content": "x", "tags": "a"}, "invalid_tags"),
])
async def test_memory_write_rejects_bad_input_and_stores_nothing(app, agent, args, code):
    from xiajiao import BadRequest

    await call(app, "memory_write", {"content": "A valid memory"}, ctx(app, agent))
    with pytest.raises(BadRequest) as err:
        await call(app, "memory_write", args, ctx(app, agent))
    assert err.value.code == code
    db = await app.xj.workspace_db(agent["id"], "memory.db")
    assert await db.fetchval("SELECT COUNT(*) FROM memories") == 1


# ------------------------------------------------------------------ API


async def test_memory_api_crud_filter_and_search(app, owner, agent):
    base = f"/api/agents/{agent['id']}/memories"
    r = await owner.post(base, json={"content": "Ship on Fridays", "class": "procedural", "tags": ["release"]})
    assert r.status_code == 201
    created = (await r.get_json())["memory"]
    assert {k: created[k] for k in ("class", "content", "importance", "tags", "origin", "version", "source")} == {
        "class": "procedural", "content": "Ship on Fridays", "importance": 0.5, "tags": ["release"],
        "origin": "api", "version": 1, "source": {"channelId": None, "messageId": None}}
    r = await owner.post(base, json={"content": "用户的生日是三月五日", "class": "semantic"})
    assert r.status_code == 201

    r = await owner.get(base + "?class=procedural")
    assert [m["content"] for m in (await r.get_json())["memories"]] == ["Ship on Fridays"]
    r = await owner.get(base, query_string={"q": "生日"})
    assert [m["content"] for m in (await r.get_json())["memories"]][0] == "用户的生日是三月五日"
    r = await owner.get(base)
    body = await r.get_json()
    assert body["total"] == 2

    r = await owner.put(f"{base}/{created['id']}", json={"content": "Ship on Thursdays", "importance": 1})
    assert r.status_code == 200
    changed = (await r.get_json())["memory"]
    assert (changed["content"], changed["importance"], changed["version"]) == ("Ship on Thursdays", 1, 2)
    r = await owner.get(f"{base}/{created['id']}")
    assert [v["content"] for v in (await r.get_json())["versions"]] == ["Ship on Fridays"]
    r = await owner.get(base + "?q=Thursdays")
    assert (await r.get_json())["memories"][0]["id"] == created["id"]

    r = await owner.delete(f"{base}/{created['id']}")
    assert (r.status_code, await r.get_json()) == (200, {"ok": True, "deleted": created["id"]})
    r = await owner.delete(f"{base}/{created['id']}")
    assert (r.status_code, (await r.get_json())["code"]) == (404, "memory_not_found")
    r = await owner.get(base + "?q=Thursdays")
    assert [m["content"] for m in (await r.get_json())["memories"]] == ["用户的生日是三月五日"]


@pytest.mark.parametrize("method, path, body, status, code", [
    ("get", "/api/agents/nobody/memories", None, 404, "agent_not_found"),
    ("post", "/api/agents/agent_mem/memories", {"content": "x", "class": "nope"}, 400, "invalid_class"),
    ("post", "/api/agents/agent_mem/memories", {"content": "  "}, 400, "invalid_content"),
    ("post", "/api/agents/agent_mem/memories", {"importance": 1}, 400, "validation_error"),
    ("get", "/api/agents/agent_mem/memories?class=nope", None, 400, "invalid_class"),
    ("get", "/api/agents/agent_mem/memories?limit=0", None, 400, "invalid_paging"),
    ("put", "/api/agents/agent_mem/memories/mem_missing", {"content": "x"}, 404, "memory_not_found"),
])
async def test_memory_api_bad_input(app, owner, agent, method, path, body, status, code):
    kwargs = {"json": body} if body is not None else {}
    r = await getattr(owner, method)(path, **kwargs)
    assert (r.status_code, (await r.get_json())["code"]) == (status, code)


@pytest.mark.parametrize("role, status", [("member", 403), ("guest", 403), ("admin", 200)])
async def test_memory_api_is_for_owner_and_admins(app, agent, role, status):
    from xiajiao import auth

    await auth.create_user(app.xj.db, username=f"u_{role}", password="password-123", role=role)
    c = app.test_client()
    await login(c, "password-123", f"u_{role}")
    r = await c.get(f"/api/agents/{agent['id']}/memories")
    assert r.status_code == status
    anonymous = await app.test_client().get(f"/api/agents/{agent['id']}/memories")
    assert anonymous.status_code == 401


async def test_memory_lives_in_the_agent_folder(app, agent):
    await call(app, "memory_write", {"content": "Folder-bound fact"}, ctx(app, agent))
    folder = app.xj.workspace(agent["id"])
    assert (folder / "memory.db").is_file()
    tables = {r["name"] for r in await app.xj.db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any("memor" in t for t in tables)
    assert json.loads(json.dumps(sorted(tables)))  # the main db holds none of the agent's memory


# ------------------------------------------------------------------ consolidation


async def add_conversation(app, channel_id, agent, n):
    """A channel with ``n`` user/agent exchanges; returns the agent replies as stored rows."""
    now = now_iso()
    db = app.xj.db
    await db.execute("INSERT INTO channels (id, name, type, created_at, updated_at) VALUES (?,?,?,?,?)",
                     (channel_id, "dm", "dm", now, now))
    replies = []
    for i in range(n):
        for who, text in (("user", f"question {i}"), ("agent", f"answer {i}")):
            await db.execute(
                "INSERT INTO messages (id, channel_id, user_id, agent_id, content, created_at) VALUES (?,?,?,?,?,?)",
                (f"msg_{channel_id}_{who}_{i}", channel_id, "user_x" if who == "user" else None,
                 agent["id"] if who == "agent" else None, text, now))
        replies.append(await db.fetchone("SELECT * FROM messages WHERE id = ?", (f"msg_{channel_id}_agent_{i}",)))
    return replies


async def test_turns_are_counted_and_every_n_a_summary_range_is_claimed(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash", consolidate_every=3)) as app:
        from plugins.memory import store

        agent = await add_agent(app)
        replies = await add_conversation(app, "ch_c", agent, 7)
        claims = [await store.count_turn(app.xj, agent["id"], "ch_c", r["seq"]) for r in replies]
        assert claims == [None, None, (0, replies[2]["seq"]), None, None, (replies[2]["seq"], replies[5]["seq"]),
                          None]
        talk = await store.transcript(app.xj, "ch_c", 0, replies[2]["seq"])
        assert talk == "user: question 0\nKeeper: answer 0\nuser: question 1\nKeeper: answer 1\n" \
                       "user: question 2\nKeeper: answer 2"


async def run_turn_ends(app, agent, channel_id, replies):
    import asyncio

    for r in replies:
        await app.xj.hook("on_turn_end", agent=agent, channel={"id": channel_id}, message=None, reply=r, actor=OWNER)
    for _ in range(500):
        if not [t for t in app.xj._background if t.get_name().startswith("consolidate:")]:
            break
        await asyncio.sleep(0.01)
    return await app.xj.workspace_db(agent["id"], "memory.db")


async def test_after_n_turns_the_model_writes_a_versioned_episodic_summary(tmp_path, fake_llm):
    from conftest import llm_settings

    async with running_app(llm_settings(tmp_path, fake_llm, embedder="hash", consolidate_every=2)) as app:
        agent = await add_agent(app)
        replies = await add_conversation(app, "ch_s", agent, 4)
        fake_llm.script(text="The user asked questions 0 and 1; Keeper answered both.", chunks=1)
        db = await run_turn_ends(app, agent, "ch_s", replies[:2])
        first = await app.xj.db.fetchval("SELECT seq FROM messages WHERE id = 'msg_ch_s_user_0'")
        row = await db.fetchone("SELECT class, content, version, range_start, range_end, channel_id FROM memories "
                                "WHERE class = 'episodic'")
        assert row == {"class": "episodic", "content": "The user asked questions 0 and 1; Keeper answered both.",
                       "version": 1, "range_start": first, "range_end": replies[1]["seq"], "channel_id": "ch_s"}
        assert "user: question 0" in fake_llm.last.last_user and "Keeper: answer 1" in fake_llm.last.last_user

        fake_llm.script(text="Questions 0 to 3 were asked and answered.", chunks=1)
        await run_turn_ends(app, agent, "ch_s", replies[2:])
        rows = await db.fetchall("SELECT content, version, range_start, range_end FROM memories WHERE class = 'episodic'")
        assert rows == [{"content": "Questions 0 to 3 were asked and answered.", "version": 2, "range_start": first,
                         "range_end": replies[3]["seq"]}]
        # the second summary was asked to build on the first
        assert "Earlier summary:\nThe user asked questions 0 and 1" in fake_llm.last.last_user
        state = await db.fetchone("SELECT turns, summarized_seq, summaries FROM conversations")
        assert state == {"turns": 0, "summarized_seq": replies[3]["seq"], "summaries": 2}


async def test_a_failed_summary_gives_its_range_back(tmp_path, fake_llm):
    from conftest import llm_settings

    async with running_app(llm_settings(tmp_path, fake_llm, embedder="hash", consolidate_every=2,
                                        provider_retries=0)) as app:
        agent = await add_agent(app)
        replies = await add_conversation(app, "ch_d", agent, 2)
        fake_llm.script(Reply(status=500), Reply(status=500), Reply(status=500))
        db = await run_turn_ends(app, agent, "ch_d", replies)
        state = await db.fetchone("SELECT turns, summarized_seq, summaries FROM conversations")
        assert state == {"turns": 0, "summarized_seq": 0, "summaries": 0}
        assert await db.fetchval("SELECT COUNT(*) FROM memories WHERE class = 'episodic'") == 0


async def test_an_agent_without_memories_gets_no_memory_section_and_no_memory_db(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash")) as app:
        agent = await add_agent(app, agent_id="agent_blank")
        prompt = Prompt(soul="s")
        await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel={"id": "c"},
                          message={"content": "what do you remember?"}, actor=OWNER)
        assert [s for s in prompt.sections if s[0] == "Memories"] == []
        assert not (app.xj.workspace("agent_blank") / "memory.db").exists()
        await call(app, "memory_write", {"content": "The owner likes green tea", "class": "semantic"},
                   ctx(app, agent))
        prompt = Prompt(soul="s")
        await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel={"id": "c"},
                          message={"content": "what tea does the owner like?"}, actor=OWNER)
        assert [s[0] for s in prompt.sections] == ["Memories"] and "green tea" in prompt.sections[0][1]


# ------------------------------------------------------------------ whose memory: scope


async def test_a_members_private_fact_does_not_reach_other_peoples_turns(tmp_path, fake_llm):
    from fake_llm import Call
    from chat_helpers import make_user
    from conftest import Frames, llm_settings, make_channel, user_says

    secret = "my bank card PIN-666000 is private"
    async with running_app(llm_settings(tmp_path, fake_llm, embedder="hash")) as app:
        await app.xj.engine.agents.update("coder", {"tools": ["memory_write", "memory_search"]})
        a, b = await make_user(app, "member_a"), await make_user(app, "member_b")
        guest = await make_user(app, "guest_g", role="guest")
        actor = {u["id"]: Actor(u["id"], u["role"], u["username"]) for u in (a, b, guest)}

        async def turn(channel, user, text, *replies):
            frames = Frames(app, channel["id"])
            fake_llm.script(*replies) if replies else None
            before = len([r for r in fake_llm.requests if r.path.endswith("/chat/completions")])
            await user_says(app, channel, text, actor=actor[user["id"]])
            try:
                await frames.wait_for("stream_end")
            except TimeoutError:
                raise AssertionError(frames.items) from None
            chats = [r for r in fake_llm.requests if r.path.endswith("/chat/completions")][before:]
            return "\n".join(m.get("content") or "" for r in chats for m in r.messages if m["role"] == "system")

        dm_a = await make_channel(app, ["coder"], type="dm", users=(a["id"],))
        await turn(dm_a, a, f"Remember: {secret}", Reply(tool_calls=[Call("memory_write", {"content": secret}, id="w1")]),
                   Reply(text="Noted."))
        [row] = await (await app.xj.workspace_db("coder", "memory.db")).fetchall("SELECT * FROM memories")
        assert (row["user_id"], row["channel_id"], row["scope"]) == (a["id"], dm_a["id"], "private")

        dm_b = await make_channel(app, ["coder"], type="dm", users=(b["id"],))
        assert "PIN-666000" not in await turn(dm_b, b, "What is the bank card PIN?")
        group = await make_channel(app, ["coder"], type="group", users=(guest["id"], b["id"]), default_agent_id="coder")
        assert "PIN-666000" not in await turn(group, guest, "Tell me the bank card PIN")
        # the model's own memory_search in another person's turn finds nothing either
        await turn(dm_b, b, "search", Reply(tool_calls=[Call("memory_search", {"query": "bank card PIN"}, id="s1")]),
                   Reply(text="nothing"))
        tool_results = [m for m in fake_llm.last.messages if m["role"] == "tool"]
        assert tool_results and "PIN-666000" not in tool_results[-1]["content"]
        # the owner of the fact still gets it in their own conversation
        assert "PIN-666000" in await turn(dm_a, a, "What is my bank card PIN?")

        # an explicit choice makes it a team fact, recalled everywhere
        owner = app.test_client()
        await login(owner)
        r = await owner.put(f"/api/agents/coder/memories/{row['uid']}", json={"scope": "shared"})
        assert (await r.get_json())["memory"]["scope"] == "shared"
        assert "PIN-666000" in await turn(dm_b, b, "What is the bank card PIN?")


async def test_near_duplicates_of_different_people_do_not_merge(app, agent):
    alice, bob = Actor("user_alice", "member"), Actor("user_bob", "member")
    first = await call(app, "memory_write", {"content": "The user's name is Alice"},
                       ToolContext(app=app.xj, agent=agent, channel={"id": "dm_a"}, message={"id": "m1"}, actor=alice))
    second = await call(app, "memory_write", {"content": "The user's name is Alice"},
                        ToolContext(app=app.xj, agent=agent, channel={"id": "dm_b"}, message={"id": "m2"}, actor=bob))
    assert (first["status"], second["status"]) == ("created", "created")
    assert second["memory"]["userId"] == "user_bob" and second["memory"]["source"]["channelId"] == "dm_b"


async def test_an_updated_fact_supersedes_the_old_one_which_is_kept_marked_and_never_ranked_first(app, agent):
    old = (await call(app, "memory_write", {"content": "The user lives in Berlin, Kreuzberg"}, ctx(app, agent)))["memory"]
    new = (await call(app, "memory_write", {"content": "The user moved to Munich in May", "supersedes": old["id"]},
                      ctx(app, agent, message_id="msg_2")))["memory"]
    assert new["id"] != old["id"] and new["supersededBy"] is None
    # the old fact matches the question's words better, yet the current one comes first
    found = (await call(app, "memory_search", {"query": "lives in Berlin Kreuzberg"}, ctx(app, agent)))["memories"]
    assert [m["id"] for m in found[:2]] == [new["id"], old["id"]]
    assert found[1]["supersededBy"] == new["id"] and found[1]["supersededAt"]
    rendered = await prompt_for(app, agent, "Where does the user live? Berlin?", "ch_a")
    assert "moved to Munich" in rendered and "Kreuzberg" not in rendered
    # deleting the newer memory makes the older one current again
    from plugins.memory import store

    await store.delete(app.xj, agent["id"], new["id"])
    assert (await store.get(app.xj, agent["id"], old["id"]))["superseded_by"] is None


@pytest.mark.parametrize("supersedes, status", [("mem_nothere", 404), (7, 400)])
async def test_superseding_needs_an_existing_memory(app, agent, supersedes, status):
    from conftest import login

    client = app.test_client()
    await login(client)
    r = await client.post(f"/api/agents/{agent['id']}/memories", json={"content": "x y z", "supersedes": supersedes})
    assert r.status_code == status, await r.get_data(as_text=True)
    if status == 404:
        assert (await r.get_json())["code"] == "memory_not_found"
        from plugins.memory import store

        db = await store.open_db(app.xj, agent["id"])
        assert await db.fetchval("SELECT COUNT(*) FROM memories") == 0  # nothing written
