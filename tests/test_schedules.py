"""Scheduled agents on a controllable clock: cron and one-off runs post into their channel, a run
missed while the server was down runs once (or is skipped), deleting deletes, triggers from outside,
the manage_schedule tool, and bad input."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from chat_helpers import user_client
from conftest import llm_settings, login, running_app
from fake_llm import Call, Reply
from plugins.schedules import scheduler
from plugins.schedules import store as sstore

UTC = dt.UTC


@pytest.fixture
def settings(tmp_path, fake_llm):
    return llm_settings(tmp_path, fake_llm)


@pytest.fixture
async def app(settings):
    async with running_app(settings) as app:
        yield app


async def room(owner, agent="translator") -> str:
    r = await owner.post("/api/channels", json={"name": "早报", "type": "group", "agentIds": [agent],
                                                "defaultAgentId": agent})
    return (await r.get_json())["id"]


async def new(owner, **body) -> dict:
    r = await owner.post("/api/schedules", json=body)
    assert r.status_code == 201, await r.get_data(as_text=True)
    return await r.get_json()


async def messages(owner, cid) -> list[dict]:
    return (await (await owner.get("/api/messages", query_string={"channelId": cid})).get_json())["messages"]


def clock(sched, when: dt.datetime):
    sched.now = lambda: when


async def test_a_cron_schedule_fires_on_the_clock_and_posts_into_its_channel(app, owner, fake_llm):
    cid = await room(owner)
    sched = scheduler(app.xj)
    clock(sched, dt.datetime(2030, 3, 4, 0, 30, tzinfo=UTC))  # 08:30 in Shanghai
    made = await new(owner, agentId="translator", channelId=cid, prompt="写今天的早报", cron="0 9 * * *",
                     timezone="Asia/Shanghai")
    s = made["schedule"]
    assert s["nextRunAt"] == "2030-03-04T01:00:00.000Z" and s["timezone"] == "Asia/Shanghai"
    assert made["triggerToken"].startswith("xjt_") and made["triggerUrl"] == f"/api/triggers/{s['id']}"

    clock(sched, dt.datetime(2030, 3, 4, 0, 59, tzinfo=UTC))
    assert await sched.tick() == []  # not yet
    fake_llm.script(text="今日早报：一切正常。", chunks=2)
    clock(sched, dt.datetime(2030, 3, 4, 1, 0, 5, tzinfo=UTC))
    runs = await sched.tick()
    assert len(runs) == 1
    await asyncio.gather(*runs)
    assert await sched.tick() == []  # the same minute never fires twice

    posted = await messages(owner, cid)
    assert [(m["content"], m["agentId"] or "user") for m in posted] == [("写今天的早报", "user"),
                                                                      ("今日早报：一切正常。", "translator")]
    assert posted[0]["metadata"]["schedule"] == {"id": s["id"], "agentId": "translator", "reason": "schedule"}
    assert fake_llm.last.last_user == "写今天的早报"
    body = await (await owner.get(f"/api/schedules/{s['id']}")).get_json()
    assert body["schedule"]["nextRunAt"] == "2030-03-05T01:00:00.000Z"
    last = body["schedule"]["lastRun"]
    assert (last["status"], last["reason"], last["replyId"]) == ("done", "schedule", posted[1]["id"])


async def test_a_one_off_runs_once(app, owner, fake_llm):
    cid = await room(owner)
    sched = scheduler(app.xj)
    clock(sched, dt.datetime(2030, 1, 1, tzinfo=UTC))
    s = (await new(owner, agentId="translator", channelId=cid, prompt="提醒：交报告", at="2030-01-02T09:00",
                   timezone="Europe/Berlin"))["schedule"]
    assert s["nextRunAt"] == "2030-01-02T08:00:00.000Z"
    fake_llm.script(text="已提醒", chunks=1)
    clock(sched, dt.datetime(2030, 1, 2, 8, 1, tzinfo=UTC))
    await asyncio.gather(*await sched.tick())
    clock(sched, dt.datetime(2031, 1, 2, 8, 1, tzinfo=UTC))
    assert await sched.tick() == []
    body = (await (await owner.get(f"/api/schedules/{s['id']}")).get_json())["schedule"]
    assert body["nextRunAt"] is None and body["lastRun"]["status"] == "done"
    assert len(await messages(owner, cid)) == 2


@pytest.mark.parametrize("catch_up", [True, False])
async def test_a_run_missed_during_downtime_runs_once_at_start_or_is_skipped(tmp_path, fake_llm, catch_up):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        cid = await room(owner)
        s = (await new(owner, agentId="translator", channelId=cid, prompt="日报", cron="*/5 * * * *",
                       catchUp=catch_up))["schedule"]
    # the server was down for three days: many runs were missed
    db = await running_db(settings, "translator")
    await db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ?", (sstore.iso(
        dt.datetime.now(UTC) - dt.timedelta(days=3)), s["id"]))
    await db.close()
    fake_llm.script(text="补发日报", chunks=1)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        sched = scheduler(app.xj)
        await asyncio.gather(*sched.running)
        runs = (await (await owner.get(f"/api/schedules/{s['id']}/runs")).get_json())["runs"]
        posted = await messages(owner, cid)
        if catch_up:
            assert [(r["reason"], r["status"]) for r in runs] == [("catch_up", "done")]
            assert [m["content"] for m in posted] == ["日报", "补发日报"]
        else:
            assert [(r["reason"], r["status"]) for r in runs] == [("catch_up", "skipped")]
            assert "while the server was down" in runs[0]["error"] and posted == []
        nxt = sstore.parse_iso((await (await owner.get(f"/api/schedules/{s['id']}")).get_json())["schedule"]["nextRunAt"])
        assert dt.datetime.now(UTC) < nxt <= dt.datetime.now(UTC) + dt.timedelta(minutes=5)


async def running_db(settings, agent_id):
    from xiajiao.db import Database

    db = Database(settings.data_dir / "workspaces" / agent_id / "schedules.db", skip_migrations=True)
    await db.open()
    return db


async def test_deleting_really_deletes(app, owner):
    cid = await room(owner)
    sched = scheduler(app.xj)
    s = (await new(owner, agentId="translator", channelId=cid, prompt="x", cron="* * * * *"))["schedule"]
    await owner.post(f"/api/schedules/{s['id']}/run")
    await asyncio.gather(*sched.running)
    r = await owner.delete(f"/api/schedules/{s['id']}")
    assert (r.status_code, await r.get_json()) == (200, {"ok": True, "deleted": s["id"]})
    db = await app.xj.workspace_db("translator", "schedules.db", sstore.MIGRATIONS)
    assert await db.fetchval("SELECT COUNT(*) FROM schedules") == 0
    assert await db.fetchval("SELECT COUNT(*) FROM runs") == 0
    clock(sched, dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert await sched.tick() == []
    assert (await owner.get(f"/api/schedules/{s['id']}")).status_code == 404


async def test_a_trigger_runs_the_schedule_with_the_callers_text(app, owner, fake_llm):
    cid = await room(owner)
    made = await new(owner, agentId="translator", channelId=cid, prompt="Summarise the build:", cron="0 0 1 1 *")
    sid, token = made["schedule"]["id"], made["triggerToken"]
    anon = app.test_client()
    r = await anon.post(f"/api/triggers/{sid}", headers={"X-Trigger-Token": "xjt_wrong"})
    assert (r.status_code, (await r.get_json())["code"]) == (403, "trigger_token_invalid")
    r = await anon.post(f"/api/triggers/{sid}")
    assert (r.status_code, (await r.get_json())["code"]) == (401, "trigger_token_missing")
    r = await anon.post("/api/triggers/sch_0000000000000000", headers={"X-Trigger-Token": token})
    assert (r.status_code, (await r.get_json())["code"]) == (404, "trigger_not_found")
    fake_llm.script(text="Build is green.", chunks=1)
    r = await anon.post(f"/api/triggers/{sid}", headers={"X-Trigger-Token": token}, json={"text": "build 42 passed"})
    assert r.status_code == 202
    await asyncio.gather(*scheduler(app.xj).running)
    assert [m["content"] for m in await messages(owner, cid)] == ["Summarise the build:\n\nbuild 42 passed",
                                                                  "Build is green."]
    r = await anon.post(f"/api/triggers/{sid}?token={token}")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    await owner.put(f"/api/schedules/{sid}", json={"enabled": False})


async def test_the_manage_schedule_tool_creates_lists_and_deletes(app, owner, fake_llm):
    cid = await room(owner, "butler")
    r = await owner.put("/api/agents/butler", json={"tools": ["manage_schedule"]})
    assert r.status_code == 200, await r.get_data(as_text=True)
    fake_llm.script(Reply(tool_calls=[Call("manage_schedule", {"action": "create", "prompt": "Water the plants",
                                                                "cron": "0 8 * * 1", "timezone": "UTC"})]),
                    Reply(text="Scheduled.", chunks=1))
    await owner.post("/api/messages", json={"channelId": cid, "content": "remind me every Monday"})
    waiting: list = []
    for _ in range(500):  # a schedule change waits for a person's approval
        waiting = (await (await owner.get("/api/approvals", query_string={"channelId": cid})).get_json())["approvals"]
        if waiting:
            break
        await asyncio.sleep(0.01)
    assert [a["toolName"] for a in waiting] == ["manage_schedule"]
    assert (await (await owner.get("/api/schedules")).get_json())["schedules"] == []  # nothing before approval
    r = await owner.post(f"/api/approvals/{waiting[0]['id']}", json={"decision": "approve"})
    assert r.status_code == 200, await r.get_data(as_text=True)
    for _ in range(500):
        listed = (await (await owner.get("/api/schedules")).get_json())["schedules"]
        if listed:
            break
        await asyncio.sleep(0.01)
    [s] = listed
    me = (await (await owner.get("/api/me")).get_json())["user"]
    assert (s["agentId"], s["channelId"], s["prompt"], s["cron"], s["createdBy"]) == \
        ("butler", cid, "Water the plants", "0 8 * * 1", me["id"])


@pytest.mark.parametrize("body,status,code", [
    ({"cron": "61 * * * *"}, 400, "invalid_cron"),
    ({"cron": "every day"}, 400, "invalid_cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, 400, "invalid_timezone"),
    ({"at": "2000-01-01T00:00:00Z"}, 400, "invalid_time"),
    ({"at": "next tuesday"}, 400, "invalid_time"),
    ({"cron": "0 9 * * *", "at": "2099-01-01T00:00"}, 400, "invalid_schedule"),
    ({}, 400, "invalid_schedule"),
    ({"cron": "0 9 * * *", "agentId": "ghost"}, 404, "agent_not_found"),
    ({"cron": "0 9 * * *", "agentId": "coder"}, 400, "agent_not_in_channel"),
    ({"cron": "0 9 * * *", "prompt": ""}, 400, "missing_prompt"),
    ({"cron": 5}, 400, "invalid_cron"),
])
async def test_bad_schedules_are_refused(app, owner, body, status, code):
    cid = await room(owner)
    r = await owner.post("/api/schedules", json={"agentId": "translator", "channelId": cid, "prompt": "p", **body})
    assert (r.status_code, (await r.get_json())["code"]) == (status, code)
    assert (await (await owner.get("/api/schedules")).get_json())["schedules"] == []


async def test_a_deleted_agents_schedules_are_gone(app, owner):
    cid = await room(owner)
    s = (await new(owner, agentId="translator", channelId=cid, prompt="x", cron="* * * * *"))["schedule"]
    assert (await owner.delete("/api/agents/translator")).status_code == 200
    assert (await owner.get(f"/api/schedules/{s['id']}")).status_code == 404
    clock(scheduler(app.xj), dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert await scheduler(app.xj).tick() == []
    r = await owner.post("/api/schedules", json={"agentId": "translator", "channelId": cid, "prompt": "p",
                                                 "cron": "0 9 * * *"})
    assert (r.status_code, (await r.get_json())["code"]) == (404, "agent_not_found")


async def test_only_the_creator_and_admins_see_a_schedule(app, owner):
    cid = await room(owner)
    s = (await new(owner, agentId="translator", channelId=cid, prompt="x", cron="0 9 * * *"))["schedule"]
    member, _ = await user_client(app, "mo")
    assert (await member.get(f"/api/schedules/{s['id']}")).status_code == 404
    assert (await member.delete(f"/api/schedules/{s['id']}")).status_code == 404
    assert (await (await member.get("/api/schedules")).get_json())["schedules"] == []
    r = await member.post("/api/schedules", json={"agentId": "translator", "channelId": cid, "prompt": "p",
                                                  "cron": "0 9 * * *"})
    assert (r.status_code, (await r.get_json())["code"]) == (404, "channel_not_found")  # not in that channel
    admin, _ = await user_client(app, "ad", "admin")
    assert (await admin.get(f"/api/schedules/{s['id']}")).status_code == 200
    guest, _ = await user_client(app, "gu", "guest")
    assert (await guest.get("/api/schedules")).status_code == 403
