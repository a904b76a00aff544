"""Collaboration chains: each agent's output is the next one's input; approval between steps over REST and WS."""
from __future__ import annotations

import pytest

from fake_llm import Reply
from conftest import Frames, llm_settings, login, make_channel, owner_actor, running_app, user_says


@pytest.fixture
async def chain_app(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        yield app


async def group(app, approval=False):
    ch = await make_channel(app, ["novelist", "editor", "translator"], default_agent_id="novelist")
    resp = await app.owner.put(f"/api/channels/{ch['id']}/chain",
                               json={"agentIds": ["novelist", "editor", "translator"], "approval": approval})
    assert await resp.get_json() == {"channelId": ch["id"], "agentIds": ["novelist", "editor", "translator"],
                                     "approval": approval}
    return await app.xj.db.fetchone("SELECT * FROM channels WHERE id = ?", (ch["id"],))


def statuses(frames):
    return [(d["currentAgent"], d["step"], d["totalSteps"], d["status"]) for d in frames.of("collab_status")]


async def test_a_chain_hands_each_output_to_the_next_agent(chain_app, fake_llm):
    ch = await group(chain_app)
    frames = Frames(chain_app, ch["id"])
    fake_llm.script(Reply(text="草稿:春天来了"), Reply(text="润色:春天悄悄来了"), Reply(text="Spring quietly came"))
    _, routed = await user_says(chain_app, ch, "写一句关于春天的话")
    assert routed == ["novelist", "editor", "translator"]
    last = await frames.wait_for("collab_status", lambda d: d["status"] == "completed")
    assert statuses(frames) == [("novelist", 1, 3, "running"), ("editor", 2, 3, "running"),
                                ("translator", 3, 3, "running"), ("translator", 3, 3, "completed")]
    chats = fake_llm.chat_requests()
    assert chats[0].last_user == "写一句关于春天的话"
    assert chats[1].last_user == "[小说家 → 编辑]\n草稿:春天来了"
    assert chats[2].last_user == "[编辑 → 翻译官]\n润色:春天悄悄来了"
    run = await (await chain_app.owner.get(f"/api/chains/{last['chainId']}")).get_json()
    assert run["status"] == "completed" and [o["agentId"] for o in run["outputs"]] == ["novelist", "editor",
                                                                                      "translator"]


async def test_a_mention_in_a_chained_group_routes_normally(chain_app, fake_llm):
    ch = await group(chain_app)
    _, routed = await user_says(chain_app, ch, "@编辑 just you")
    assert routed == ["editor"]


async def test_approval_pauses_between_steps_edit_then_stop(chain_app, fake_llm):
    ch = await group(chain_app, approval=True)
    frames = Frames(chain_app, ch["id"])
    fake_llm.script(Reply(text="first draft"), Reply(text="edited draft"))
    resp = await chain_app.owner.post("/api/chains", json={"channelId": ch["id"], "input": "write"})
    assert resp.status_code == 201
    chain_id = (await resp.get_json())["chainId"]
    paused = await frames.wait_for("collab_status", lambda d: d["status"] == "paused")
    owner_id = (await owner_actor(chain_app)).id
    assert paused == {"chainId": chain_id, "currentAgent": "novelist", "step": 1, "totalSteps": 3, "status": "paused",
                      "handoff": "first draft", "nextAgent": "editor", "startedBy": owner_id}
    resp = await chain_app.owner.post(f"/api/chains/{chain_id}/decision", json={"action": "edit",
                                                                                "text": "my better draft"})
    assert resp.status_code == 200
    await frames.wait_for("collab_status", lambda d: d["status"] == "paused" and d["step"] == 2)
    assert fake_llm.chat_requests()[1].last_user == "[小说家 → 编辑]\nmy better draft"
    resp = await chain_app.owner.post(f"/api/chains/{chain_id}/decision", json={"action": "stop"})
    end = await frames.wait_for("collab_status", lambda d: d["status"] == "stopped")  # not "completed"
    assert end["step"] == 2 and "reason" not in end
    assert len(fake_llm.chat_requests()) == 2
    stored = await (await chain_app.owner.get(f"/api/chains/{chain_id}")).get_json()
    assert (stored["status"], stored["step"], len(stored["outputs"])) == ("stopped", 2, 2)


async def test_approval_over_websocket_handler(chain_app, fake_llm):
    ch = await group(chain_app, approval=True)
    frames = Frames(chain_app, ch["id"])
    frames.conn.actor = await owner_actor(chain_app)
    await user_says(chain_app, ch, "go")
    paused = await frames.wait_for("collab_status", lambda d: d["status"] == "paused")
    handler = chain_app.xj.ws_handlers["chain_decision"]
    await handler(frames.conn, {"chainId": paused["chainId"], "action": "dance"})
    assert (await frames.wait_for("error"))["code"] == "invalid_action"
    for step in (1, 2):
        current = await frames.wait_for("collab_status", lambda d, step=step: d["status"] == "paused" and d["step"] == step)
        await handler(frames.conn, {"chainId": current["chainId"], "action": "approve"})
    await frames.wait_for("collab_status", lambda d: d["status"] == "completed")
    assert [s[3] for s in statuses(frames)] == ["running", "paused", "running", "paused", "running", "completed"]


async def test_a_failing_step_ends_the_chain_with_error(chain_app, fake_llm):
    ch = await group(chain_app)
    frames = Frames(chain_app, ch["id"])
    fake_llm.script(Reply(text="ok"), Reply(status=400))
    await user_says(chain_app, ch, "go")
    end = await frames.wait_for("collab_status", lambda d: d["status"] == "error")
    assert (end["currentAgent"], end["step"], end["reason"]) == ("editor", 2, "step_error")


@pytest.mark.parametrize("path,body,status,code", [
    ("/api/chains", {"channelId": "ch_nope", "input": "x"}, 404, "channel_not_found"),
    ("/api/chains/chain_nope/decision", {"action": "approve"}, 404, "chain_not_found"),
])
async def test_bad_chain_requests(chain_app, path, body, status, code):
    resp = await chain_app.owner.post(path, json=body)
    assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)


async def test_chain_definition_is_checked(chain_app):
    ch = await make_channel(chain_app, ["novelist"])
    dm = await make_channel(chain_app, ["coder"], type="dm")
    for cid, body, code in [(ch["id"], {"agentIds": ["coder"]}, "invalid_chain"),
                            (dm["id"], {"agentIds": ["coder"]}, "not_a_group")]:
        resp = await chain_app.owner.put(f"/api/channels/{cid}/chain", json=body)
        assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)
    resp = await chain_app.owner.post("/api/chains", json={"channelId": ch["id"], "input": "x"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "no_chain")
    resp = await chain_app.owner.post("/api/chains", json={"channelId": ch["id"], "input": ""})
    assert resp.status_code == 400


async def test_a_paused_run_is_still_waiting_after_a_restart_and_goes_on_when_approved(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        ch = await group(app, approval=True)
        frames = Frames(app, ch["id"])
        fake_llm.script(Reply(text="first draft"))
        chain_id = (await (await c.post("/api/chains", json={"channelId": ch["id"], "input": "write"})).get_json())[
            "chainId"]
        await frames.wait_for("collab_status", lambda d: d["status"] == "paused")
    async with running_app(settings) as app:  # the same data folder, a new process
        c = app.test_client()
        await login(c)
        runs = (await (await c.get(f"/api/channels/{ch['id']}/chains")).get_json())["runs"]
        assert [(r["chainId"], r["status"], r["step"], r["handoff"], r["nextAgent"]) for r in runs] == [
            (chain_id, "paused", 1, "first draft", "editor")]
        owner_id = await app.xj.db.fetchval("SELECT id FROM users WHERE role = 'owner'")
        assert runs[0]["startedBy"] == owner_id and runs[0]["createdAt"] and runs[0]["totalSteps"] == 3
        frames = Frames(app, ch["id"])
        fake_llm.script(Reply(text="edited"), Reply(text="translated"))
        resp = await c.post(f"/api/chains/{chain_id}/decision", json={"action": "approve"})
        assert resp.status_code == 200
        await frames.wait_for("collab_status", lambda d: d["status"] == "paused" and d["step"] == 2)
        assert fake_llm.chat_requests()[-1].last_user == "[小说家 → 编辑]\nfirst draft"
        await c.post(f"/api/chains/{chain_id}/decision", json={"action": "approve"})
        await frames.wait_for("collab_status", lambda d: d["status"] == "completed")
        run = await (await c.get(f"/api/chains/{chain_id}")).get_json()
        assert run["status"] == "completed" and [o["agentId"] for o in run["outputs"]] == [
            "novelist", "editor", "translator"]
        resp = await c.post(f"/api/chains/{chain_id}/decision", json={"action": "approve"})
        assert (resp.status_code, (await resp.get_json())["code"]) == (409, "chain_not_paused")


async def test_a_run_cut_off_mid_step_reads_interrupted_after_a_restart(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        ch = await group(app)
        frames = Frames(app, ch["id"])
        fake_llm.script(Reply(text="never ends", chunks=4, hang_after=1))
        await c.post("/api/chains", json={"channelId": ch["id"], "input": "write"})
        await frames.wait_for("stream_chunk")
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        [run] = (await (await c.get(f"/api/channels/{ch['id']}/chains")).get_json())["runs"]
        assert run["status"] == "interrupted"
