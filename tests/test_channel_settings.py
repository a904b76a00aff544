"""PUT /api/channels/<id>: agents replaced, standing instructions and summary instructions that reach
the model, unknown keys refused (never silently dropped)."""
from __future__ import annotations

import asyncio

from conftest import Frames, llm_settings, login, running_app


async def group(owner, agents=("translator", "coder"), default="translator") -> str:
    r = await owner.post("/api/channels", json={"name": "团队", "type": "group", "agentIds": list(agents),
                                                "defaultAgentId": default})
    assert r.status_code == 201, await r.get_data(as_text=True)
    return (await r.get_json())["id"]


async def view(owner, cid) -> dict:
    return (await (await owner.get(f"/api/channels/{cid}")).get_json())["channel"]


async def test_unknown_keys_are_refused_and_nothing_changes(llm_app):
    owner = llm_app.test_client()
    await login(owner)
    cid = await group(owner)
    before = await view(owner, cid)
    r = await owner.put(f"/api/channels/{cid}", json={"name": "新名字", "agentIDs": ["coder"]})
    body = await r.get_json()
    assert (r.status_code, body["code"]) == (400, "validation_error") and "agentIDs" in body["error"]
    assert await view(owner, cid) == before


async def test_agent_ids_replace_the_agents(llm_app):
    owner = llm_app.test_client()
    await login(owner)
    cid = await group(owner)
    r = await owner.put(f"/api/channels/{cid}", json={"agentIds": ["coder", "editor"]})
    assert r.status_code == 200, await r.get_data(as_text=True)
    ch = await view(owner, cid)
    assert sorted(ch["agentIds"]) == ["coder", "editor"] and ch["defaultAgentId"] is None  # the default left
    r = await owner.put(f"/api/channels/{cid}", json={"agentIds": ["coder", "ghost"]})
    assert (r.status_code, (await r.get_json())["code"]) == (404, "agent_not_found")
    assert sorted((await view(owner, cid))["agentIds"]) == ["coder", "editor"]
    r = await owner.post("/api/channels", json={"name": "dm", "type": "dm", "agentIds": ["coder"]})
    dm = (await r.get_json())["id"]
    r = await owner.put(f"/api/channels/{dm}", json={"agentIds": ["editor"]})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "invalid_dm")


async def test_standing_instructions_reach_the_model_in_that_channel_only(llm_app, fake_llm):
    owner = llm_app.test_client()
    await login(owner)
    cid = await group(owner)
    other = await group(owner)
    r = await owner.put(f"/api/channels/{cid}", json={"systemPrompt": "Always answer in exactly three words."})
    assert r.status_code == 200
    assert (await view(owner, cid))["config"]["systemPrompt"] == "Always answer in exactly three words."
    frames = Frames(llm_app, cid, other)
    fake_llm.script(text="Yes, of course.", chunks=1)
    assert (await owner.post("/api/messages", json={"channelId": cid, "content": "hello"})).status_code == 200
    await frames.wait_for("stream_end")
    system = fake_llm.last.system
    assert "## Instructions for this conversation\nAlways answer in exactly three words." in system
    assert system.startswith("# 翻译官")  # the persona still comes first
    fake_llm.script(text="Fine.", chunks=1)
    await owner.post("/api/messages", json={"channelId": other, "content": "hello"})
    await frames.wait_for("stream_end", lambda d: len(frames.of("stream_end")) == 2)
    assert "Always answer" not in fake_llm.last.system
    # cleared with an empty string
    await owner.put(f"/api/channels/{cid}", json={"systemPrompt": ""})
    assert "systemPrompt" not in (await view(owner, cid))["config"]


async def test_the_summary_of_a_channel_follows_its_consolidate_prompt(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, embedder="hash", consolidate_every=2)) as app:
        owner = app.test_client()
        await login(owner)
        cid = await group(owner)
        await owner.put(f"/api/channels/{cid}", json={"consolidatePrompt": "Keep only decisions and dates."})
        frames = Frames(app, cid)
        for i, text in enumerate(("We ship on Friday", "Agreed, Friday it is")):
            fake_llm.script(text=f"noted {i}", chunks=1)
            await owner.post("/api/messages", json={"channelId": cid, "content": text})
            await frames.wait_for("stream_end", lambda d, n=i + 1: len(frames.of("stream_end")) == n)
        fake_llm.script(text="Decision: ship on Friday.", chunks=1)
        for _ in range(500):  # the summary runs in the background after the second turn
            if any("Keep only decisions and dates." in (r.system or "") for r in fake_llm.chat_requests()):
                break
            await asyncio.sleep(0.01)
        summary_calls = [r for r in fake_llm.chat_requests() if "Keep only decisions and dates." in (r.system or "")]
        assert len(summary_calls) == 1 and "We ship on Friday" in summary_calls[0].last_user
