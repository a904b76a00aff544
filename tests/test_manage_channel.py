"""The manage_channel tool acts with the rights of the person the agent answers."""
from __future__ import annotations

import asyncio

import pytest

from chat_helpers import make_user
from conftest import llm_settings, login, running_app
from fake_llm import Call, Reply
from xiajiao import Actor, ToolContext, XiajiaoError, auth, chat


@pytest.fixture
async def app(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        yield app


async def tool(app, actor, args, channel_id=None):
    ctx = ToolContext(app=app.xj, agent={"id": "butler", "name": "Butler"}, channel={"id": channel_id} if channel_id else None,
                      message={"id": "m"}, actor=actor)
    return await app.xj.tools.get("manage_channel").fn(args, ctx)


async def owner_actor(app):
    row = await auth.owner(app.xj.db)
    return Actor(row["id"], "owner", "Owner")


async def test_create_a_group_add_members_and_rename(app):
    owner = await owner_actor(app)
    mia = await make_user(app, "mia")
    made = (await tool(app, owner, {"action": "create_group", "name": "发布小组", "agentIds": ["coder"],
                                    "userIds": [mia["id"]]}))["created"]
    assert (made["name"], made["agentIds"], sorted(made["userIds"])) == ("发布小组", ["coder"], sorted([owner.id, mia["id"]]))
    row = await chat.get_channel(app.xj.db, made["id"])
    assert row["created_by"] == owner.id and row["type"] == "group"
    out = await tool(app, owner, {"action": "add_members", "agentIds": ["editor"]}, channel_id=made["id"])
    assert sorted(out["channel"]["agentIds"]) == ["coder", "editor"]
    out = await tool(app, owner, {"action": "rename", "name": "Release crew"}, channel_id=made["id"])
    assert out["channel"]["name"] == "Release crew"


async def test_a_member_cannot_change_someone_elses_group_through_the_agent(app):
    owner = await owner_actor(app)
    mia = await make_user(app, "mia")
    made = (await tool(app, owner, {"action": "create_group", "name": "owners", "userIds": [mia["id"]]}))["created"]
    as_mia = Actor(mia["id"], "member", "mia")
    for args, code in (({"action": "rename", "name": "mine now"}, "forbidden"),
                       ({"action": "add_members", "agentIds": ["coder"]}, "forbidden")):
        with pytest.raises(XiajiaoError) as err:
            await tool(app, as_mia, args, channel_id=made["id"])
        assert err.value.code == code
    assert (await chat.get_channel(app.xj.db, made["id"]))["name"] == "owners"
    stranger = await make_user(app, "sam")
    with pytest.raises(XiajiaoError) as err:  # a channel he cannot see does not exist for him
        await tool(app, Actor(stranger["id"], "member", "sam"), {"action": "rename", "name": "x"}, channel_id=made["id"])
    assert err.value.code == "channel_not_found"
    with pytest.raises(XiajiaoError) as err:
        await tool(app, owner, {"action": "explode"})
    assert err.value.code == "invalid_action"


async def test_in_a_turn_a_guest_may_not_use_it(app, fake_llm):
    owner = app.test_client()
    await login(owner)
    await owner.put("/api/agents/butler", json={"tools": ["manage_channel"]})
    guest = await make_user(app, "gus", "guest")
    r = await owner.post("/api/channels", json={"name": "lobby", "type": "group", "agentIds": ["butler"],
                                                "userIds": [guest["id"]], "defaultAgentId": "butler"})
    cid = (await r.get_json())["id"]
    fake_llm.script(Reply(tool_calls=[Call("manage_channel", {"action": "rename", "name": "hijacked"})]),
                    Reply(text="I cannot do that.", chunks=1))
    g = app.test_client()
    token = await auth.create_session(app.xj.db, guest["id"], days=1)
    g.set_cookie("localhost", auth.SESSION_COOKIE, token)
    r = await g.post("/api/messages", json={"channelId": cid, "content": "rename this room"})
    assert r.status_code == 200, await r.get_data(as_text=True)
    for _ in range(1000):
        if len(fake_llm.chat_requests()) >= 1:
            break
        await asyncio.sleep(0.01)
    offered = [t["function"]["name"] for t in (fake_llm.chat_requests()[0].json.get("tools") or [])]
    assert "manage_channel" not in offered  # not even offered to a guest's turn
    await asyncio.sleep(0.2)
    assert (await chat.get_channel(app.xj.db, cid))["name"] == "lobby"
