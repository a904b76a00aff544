"""Workflows: stored steps of a group channel run one after another, each step's output the next
one's input; approvals before a step, retry/skip on error, a stop condition, suspend/resume/cancel,
restarts (a paused run stays paused, a running step becomes interrupted), webhooks, bad input."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect

from chat_helpers import PASSWORD, make_user, recv_until, send, user_client
from conftest import OWNER_PASSWORD, live_server, llm_settings, login, running_app
from fake_llm import Reply
from plugins.workflows import runner
from xiajiao import BadRequest, Frame, Trigger, hookimpl, notify_user


@pytest.fixture
def settings(tmp_path, fake_llm):
    return llm_settings(tmp_path, fake_llm)


@pytest.fixture
async def app(settings):
    async with running_app(settings) as app:
        yield app


async def group(owner, agents=("novelist", "editor", "translator")) -> str:
    r = await owner.post("/api/channels", json={"name": "写作室", "type": "group", "agentIds": list(agents)})
    assert r.status_code == 201, await r.get_data(as_text=True)
    return (await r.get_json())["id"]


THREE = [{"agentId": "novelist", "instruction": "Write a poem about {{input}}"},
         {"agentId": "editor", "instruction": "Polish this:\n{{previous}}", "approval": True},
         {"agentId": "translator", "instruction": "把它译成中文：{{previous}}（原题：{{input}}）"}]


async def create(owner, cid, steps=THREE, **extra) -> dict:
    r = await owner.post(f"/api/channels/{cid}/workflows", json={"name": "诗歌流水线", "steps": steps, **extra})
    assert r.status_code == 201, await r.get_data(as_text=True)
    return await r.get_json()


async def start(owner, wid, text="the sea") -> dict:
    r = await owner.post(f"/api/workflows/{wid}/runs", json={"input": text})
    assert r.status_code == 201, await r.get_data(as_text=True)
    return (await r.get_json())["run"]


async def until(owner, run_id, *statuses, timeout=10.0) -> dict:
    for _ in range(int(timeout / 0.01)):
        run = (await (await owner.get(f"/api/workflow-runs/{run_id}")).get_json())["run"]
        if run["status"] in statuses:
            return run
        await asyncio.sleep(0.01)
    raise AssertionError(f"the run never became {statuses}: {run['status']}")


async def messages(owner, cid) -> list[dict]:
    return (await (await owner.get("/api/messages", query_string={"channelId": cid})).get_json())["messages"]


async def test_a_three_step_workflow_waits_for_approval_across_a_restart_then_completes(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        cid = await group(owner)
        wf = (await create(owner, cid))["workflow"]
        fake_llm.script(Reply(text="Waves fold and unfold."))
        run = await start(owner, wf["id"])
        paused = await until(owner, run["id"], "paused")
        assert [s["status"] for s in paused["steps"]] == ["done", "waiting", "pending"]
        assert paused["step"] == 1 and paused["steps"][0]["output"] == "Waves fold and unfold."
        assert fake_llm.last.last_user == "Write a poem about the sea"

    async with running_app(settings) as app:  # the server restarted: the run still waits
        owner = app.test_client()
        await login(owner)
        run = (await (await owner.get(f"/api/workflow-runs/{run['id']}")).get_json())["run"]
        assert run["status"] == "paused" and [s["status"] for s in run["steps"]] == ["done", "waiting", "pending"]
        fake_llm.script(Reply(text="Waves fold, unfold."), Reply(text="海浪折叠，又展开。"))
        r = await owner.post(f"/api/workflow-runs/{run['id']}/approve")
        assert r.status_code == 200
        r = await owner.post(f"/api/workflow-runs/{run['id']}/approve")  # deciding twice
        assert (r.status_code, (await r.get_json())["code"]) == (409, "not_waiting")
        done = await until(owner, run["id"], "completed")
        assert [s["status"] for s in done["steps"]] == ["done", "done", "done"]
        assert done["steps"][1]["decision"]["decision"] == "approved" and done["steps"][1]["decision"]["by"]
        assert done["steps"][1]["instruction"] == "Polish this:\nWaves fold and unfold."
        assert fake_llm.last.last_user == "把它译成中文：Waves fold, unfold.（原题：the sea）"
        assert all(s["startedAt"] and s["finishedAt"] for s in done["steps"])
        posted = await messages(owner, cid)
        assert [(m["agentId"] or "user", m["content"]) for m in posted] == [
            ("user", "the sea"), ("novelist", "Waves fold and unfold."), ("editor", "Waves fold, unfold."),
            ("translator", "海浪折叠，又展开。")]
        assert posted[3]["metadata"]["workflow"] == {"runId": run["id"], "step": 3}
        history = (await (await owner.get(f"/api/workflows/{wf['id']}/runs")).get_json())["runs"]
        assert [(h["id"], h["status"], h["reason"], h["input"]) for h in history] == [
            (run["id"], "completed", "api", "the sea")]
        r = await owner.post(f"/api/workflow-runs/{run['id']}/reject")
        assert r.status_code == 409


async def test_a_step_cut_by_a_stop_is_interrupted_and_resumes(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        cid = await group(owner)
        wf = (await create(owner, cid, steps=THREE[:1]))["workflow"]
        fake_llm.script(Reply(text="a long poem", hang_after=0))
        run = await start(owner, wf["id"])
        for _ in range(1000):
            if any(r.path.endswith("/chat/completions") for r in fake_llm.requests):
                break
            await asyncio.sleep(0.01)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        got = (await (await owner.get(f"/api/workflow-runs/{run['id']}")).get_json())["run"]
        assert got["status"] == "interrupted" and got["steps"][0]["status"] == "interrupted"
        fake_llm.script(Reply(text="a short poem"))
        r = await owner.post(f"/api/workflow-runs/{run['id']}/resume")
        assert r.status_code == 200
        done = await until(owner, run["id"], "completed")
        assert done["steps"][0]["output"] == "a short poem"


@pytest.mark.parametrize("policy,expected", [
    ({"onError": "retry", "retries": 2}, ("completed", ["done", "done"], 3)),
    ({"onError": "skip"}, ("completed", ["skipped", "done"], 1)),
    ({"onError": "stop"}, ("failed", ["error", "pending"], 1)),
])
async def test_a_failing_step_is_retried_skipped_or_stops_the_run(app, owner, fake_llm, policy, expected):
    cid = await group(owner)
    steps = [{"agentId": "novelist", "instruction": "{{input}}", **policy},
             {"agentId": "editor", "instruction": "got: {{previous}}"}]
    wf = (await create(owner, cid, steps=steps))["workflow"]
    fails = 2 if policy["onError"] == "retry" else 1
    fake_llm.script(*[Reply(status=400, error_message="bad request")] * fails, Reply(text="fine"), Reply(text="end"))
    run = await start(owner, wf["id"], "go")
    done = await until(owner, run["id"], "completed", "failed")
    status, step_statuses, attempts = expected
    assert (done["status"], [s["status"] for s in done["steps"]], done["steps"][0]["attempts"]) == (
        status, step_statuses, attempts)
    if policy["onError"] == "skip":  # a skipped step leaves the previous output as it was
        assert done["steps"][1]["instruction"] == "got: go"
    if status == "failed":
        assert done["error"].startswith("step 1:") and done["steps"][0]["error"]


async def test_a_stop_condition_ends_the_run_early(app, owner, fake_llm):
    cid = await group(owner)
    wf = (await create(owner, cid, steps=THREE[:1] + THREE[2:], stopWhen={"contains": "DONE"}))["workflow"]
    fake_llm.script(Reply(text="All DONE here"))
    run = await start(owner, wf["id"])
    done = await until(owner, run["id"], "completed")
    assert done["stoppedEarly"] and [s["status"] for s in done["steps"]] == ["done", "skipped"]


async def test_suspend_resume_and_cancel(app, owner, fake_llm):
    cid = await group(owner)
    wf = (await create(owner, cid))["workflow"]
    fake_llm.script(Reply(text="v1"))
    run = await start(owner, wf["id"])
    await until(owner, run["id"], "paused")
    r = await owner.post(f"/api/workflow-runs/{run['id']}/suspend")
    assert (await r.get_json())["run"]["status"] == "suspended"
    assert (await owner.post(f"/api/workflow-runs/{run['id']}/approve")).status_code == 409
    r = await owner.post(f"/api/workflow-runs/{run['id']}/resume")
    assert r.status_code == 200
    await until(owner, run["id"], "paused")  # resumed: it asks again
    r = await owner.post(f"/api/workflow-runs/{run['id']}/cancel")
    body = (await r.get_json())["run"]
    assert body["status"] == "cancelled" and body["steps"][1]["status"] == "cancelled" and body["finishedAt"]
    assert (await owner.post(f"/api/workflow-runs/{run['id']}/resume")).status_code == 409
    assert (await owner.post(f"/api/workflow-runs/{run['id']}/cancel")).status_code == 409

    # a run cancelled while its step is under way
    fake_llm.script(Reply(text="never ends", hang_after=0))
    run = await start(owner, wf["id"])
    for _ in range(1000):
        got = (await (await owner.get(f"/api/workflow-runs/{run['id']}")).get_json())["run"]
        if got["steps"][0]["status"] == "running":
            break
        await asyncio.sleep(0.01)
    r = await owner.post(f"/api/workflow-runs/{run['id']}/cancel")
    body = (await r.get_json())["run"]
    assert body["status"] == "cancelled" and body["steps"][0]["status"] == "cancelled"
    assert runner(app.xj).tasks == {}
    fake_llm.release()


async def test_a_webhook_starts_a_run_with_its_token(app, owner, fake_llm):
    cid = await group(owner)
    made = await create(owner, cid, steps=THREE[:1])
    wid, token = made["workflow"]["id"], made["triggerToken"]
    assert made["triggerUrl"] == f"/api/triggers/{wid}" and token.startswith("xjt_")
    anon = app.test_client()
    r = await anon.post(f"/api/triggers/{wid}", headers={"X-Trigger-Token": "xjt_wrong"}, json={"text": "x"})
    assert (r.status_code, (await r.get_json())["code"]) == (403, "trigger_token_invalid")
    assert (await anon.post(f"/api/triggers/{wid}")).status_code == 401
    assert (await anon.post("/api/triggers/wf_0000000000000000?token=" + token)).status_code == 404
    fake_llm.script(Reply(text="a poem about CI"))
    r = await anon.post(f"/api/triggers/{wid}?token={token}", json={"text": "build 42"})
    assert r.status_code == 202
    run_id = (await r.get_json())["runId"]
    done = await until(owner, run_id, "completed")
    assert done["reason"] == "trigger" and done["input"] == "build 42"
    assert fake_llm.last.last_user == "Write a poem about build 42"
    r = await anon.post(f"/api/triggers/{wid}", headers={"X-Trigger-Token": token})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # a new token: the old one stops working
    fresh = (await (await owner.post(f"/api/workflows/{wid}/token")).get_json())["triggerToken"]
    assert fresh != token
    assert (await anon.post(f"/api/triggers/{wid}?token={token}")).status_code == 403


BAD = [
    ({"name": "w", "steps": []}, "empty_steps"),
    ({"name": "w"}, "empty_steps"),
    ({"name": "w", "steps": [{"agentId": "nobody"}]}, "unknown_agent"),
    ({"name": "w", "steps": [{"agentId": "coder"}]}, "agent_not_in_channel"),
    ({"name": "w", "steps": [{"agentId": "novelist", "instruction": "{{nope}}"}]}, "invalid_template"),
    ({"name": "w", "steps": [{"agentId": "novelist", "instruction": "{{previous"}]}, "invalid_template"),
    ({"name": "w", "steps": [{"agentId": "novelist", "instruction": "{{step1}}"}]}, "invalid_template"),
    ({"name": "w", "steps": [{"agentId": "novelist", "instruction": "  "}]}, "invalid_template"),
    ({"name": "w", "steps": [{"agentId": "novelist", "onError": "pray"}]}, "invalid_on_error"),
    ({"name": "w", "steps": [{"agentId": "novelist", "onError": "retry", "retries": 99}]}, "invalid_retries"),
    ({"name": "w", "steps": [{"agentId": "novelist"}], "stopWhen": {"equals": "x"}}, "invalid_stop_condition"),
    ({"name": "", "steps": [{"agentId": "novelist"}]}, "invalid_name"),
    ({"name": "w", "steps": [{"agentId": "novelist", "colour": 1}]}, "unknown_field"),
    ({"name": "w", "steps": ["novelist"]}, "invalid_step"),
]


async def test_bad_workflows_are_refused_with_a_code(app, owner):
    cid = await group(owner, ("novelist", "editor"))
    for body, code in BAD:
        r = await owner.post(f"/api/channels/{cid}/workflows", json=body)
        assert (r.status_code, (await r.get_json())["code"]) == (400, code), body
    r = await owner.post(f"/api/channels/{cid}/workflows", data="nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    wf = (await create(owner, cid, steps=[{"agentId": "novelist"}, {"agentId": "editor", "instruction": "{{step1}}"}]))
    wid = wf["workflow"]["id"]
    r = await owner.put(f"/api/workflows/{wid}", json={"steps": [{"agentId": "nobody"}]})
    assert (await r.get_json())["code"] == "unknown_agent"
    r = await owner.put(f"/api/workflows/{wid}", json={"name": "改名", "stopWhen": {"notContains": "ok"}})
    assert (await r.get_json())["workflow"]["name"] == "改名"
    assert (await owner.post(f"/api/workflows/{wid}/runs", json={"input": ""})).status_code == 400
    dm = await owner.post("/api/channels", json={"name": "d", "type": "dm", "agentIds": ["novelist"]})
    r = await owner.post(f"/api/channels/{(await dm.get_json())['id']}/workflows",
                         json={"name": "w", "steps": [{"agentId": "novelist"}]})
    assert (await r.get_json())["code"] == "not_a_group"
    assert (await owner.get("/api/workflows/wf_0000000000000000")).status_code == 404
    assert (await owner.get("/api/workflow-runs/wfr_0000000000000000")).status_code == 404
    r = await owner.delete(f"/api/workflows/{wid}")
    assert r.status_code == 200 and (await owner.get(f"/api/workflows/{wid}")).status_code == 404


async def test_people_outside_the_channel_see_nothing_and_members_decide_only_their_runs(app, owner, fake_llm):
    cid = await group(owner)
    wf = (await create(owner, cid))["workflow"]
    stranger, _ = await user_client(app, "stranger")
    assert (await stranger.get(f"/api/workflows/{wf['id']}")).status_code == 404
    assert (await stranger.get(f"/api/channels/{cid}/workflows")).status_code == 404
    member, user = await user_client(app, "colleague")
    await owner.post(f"/api/channels/{cid}/members", json={"userIds": [user["id"]]})
    fake_llm.script(Reply(text="v1"))
    run = await start(owner, wf["id"])
    await until(owner, run["id"], "paused")
    r = await member.post(f"/api/workflow-runs/{run['id']}/approve")
    assert (r.status_code, (await r.get_json())["code"]) == (403, "not_your_chain")
    assert (await member.put(f"/api/workflows/{wf['id']}", json={"name": "x"})).status_code == 403
    listed = (await (await member.get(f"/api/channels/{cid}/workflows")).get_json())
    assert [w["id"] for w in listed["workflows"]] == [wf["id"]] and listed["activeRuns"][0]["id"] == run["id"]
    assert (await owner.post(f"/api/workflow-runs/{run['id']}/reject")).status_code == 200
    assert (await until(owner, run["id"], "rejected"))["steps"][1]["status"] == "rejected"


class Knock:
    """A plugin's own trigger kind: ids starting with ``knock_``."""

    def __init__(self):
        self.heard = []

    @hookimpl
    def register_triggers(self, register):
        from xiajiao.triggers import token_hash

        async def find(app, trigger_id):
            return {"hash": token_hash("xjt_open-sesame"), "enabled": trigger_id != "knock_off"}

        async def fire(app, trigger_id, text):
            self.heard.append((trigger_id, text))
            return {"started": trigger_id}

        register(Trigger("knock", "knock_", find, fire))


async def test_a_plugin_registers_its_own_trigger_kind(tmp_path):
    from conftest import make_settings

    knock = Knock()
    async with running_app(make_settings(tmp_path), plugins=[knock]) as app:
        c = app.test_client()
        r = await c.post("/api/triggers/knock_door", headers={"X-Trigger-Token": "xjt_open-sesame"},
                         json={"text": "hello"})
        assert (r.status_code, await r.get_json()) == (202, {"ok": True, "started": "knock_door"})
        r = await c.post("/api/triggers/knock_off?token=xjt_open-sesame")
        assert (r.status_code, (await r.get_json())["code"]) == (403, "knock_paused")
        assert knock.heard == [("knock_door", "hello")]


class Echo:
    """A plugin's own WebSocket frame: ``echo {"text"}`` answers its sender, no text is refused."""

    @hookimpl
    def register_frames(self, register):
        async def echo(app, actor, data):
            if not isinstance(data.get("text"), str):
                raise BadRequest("echo what?", "nothing_to_echo", extra={"asked": data.get("text")})
            notify_user(app, actor.id, "echoed", {"text": data["text"], "by": actor.id})

        register(Frame("echo", echo))


async def wf_frame(ws, pred=lambda run: True) -> dict:
    """The next ``workflow_run`` frame whose run satisfies ``pred`` (other frames are skipped)."""
    while True:
        frame, _ = await recv_until(ws, "workflow_run", timeout=10)
        if pred(frame["data"]):
            return frame["data"]


async def socket_of(base, username, password):
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return http.cookies["session"]


async def test_decisions_over_the_websocket_follow_the_rest_rules(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with live_server(settings, plugins=[Echo()]) as (app, base):
        guest = await make_user(app, "visitor", "guest")
        member = await make_user(app, "colleague")
        await make_user(app, "stranger")
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/login", json={"password": OWNER_PASSWORD})
            r = await http.post("/api/channels", json={"name": "写作室", "type": "group",
                                                       "agentIds": ["novelist", "editor", "translator"]})
            cid = r.json()["id"]
            await http.post(f"/api/channels/{cid}/members", json={"userIds": [guest["id"], member["id"]]})
            wf = (await http.post(f"/api/channels/{cid}/workflows", json={"name": "诗歌流水线", "steps": THREE})).json()
            ws_url = base.replace("http", "ws") + "/ws"
            tokens = {"owner": http.cookies["session"]}
            for name in ("visitor", "colleague", "stranger"):
                tokens[name] = await socket_of(base, name, PASSWORD)
            async with connect(ws_url) as mine, connect(ws_url) as theirs, connect(ws_url) as guests, \
                    connect(ws_url) as outside:
                for ws, who in ((mine, "owner"), (theirs, "colleague"), (guests, "visitor"), (outside, "stranger")):
                    await send(ws, {"type": "auth", "token": tokens[who]})
                    await recv_until(ws, "auth_ok")
                for ws in (mine, theirs, guests):
                    await send(ws, {"type": "subscribe", "channelId": cid})
                    await recv_until(ws, "subscribed")

                fake_llm.script(Reply(text="Waves fold and unfold."))
                r = await http.post(f"/api/workflows/{wf['workflow']['id']}/runs", json={"input": "the sea"})
                run_id = r.json()["run"]["id"]
                for ws in (mine, theirs, guests):
                    paused = await wf_frame(ws, lambda run: run["status"] == "paused")
                    assert paused["id"] == run_id and [s["status"] for s in paused["steps"]] == [
                        "done", "waiting", "pending"]

                # who did not start the run may not decide it, a guest no more than a member
                for ws in (guests, theirs):
                    await send(ws, {"type": "workflow_decision", "data": {"runId": run_id, "action": "approve"}})
                    err, _ = await recv_until(ws, "error")
                    assert (err["data"]["code"], err["data"]["runId"], err["data"]["type"]) == (
                        "not_your_chain", run_id, "workflow_decision")
                await send(outside, {"type": "workflow_decision", "runId": run_id, "action": "approve"})
                err, _ = await recv_until(outside, "error")
                assert (err["data"]["code"], err["data"]["runId"]) == ("run_not_found", run_id)
                for bad, code in (({"runId": run_id, "action": "dance"}, "invalid_action"),
                                  ({"runId": "wfr_nope", "action": "approve"}, "run_not_found"),
                                  ({"runId": 7, "action": "approve"}, "run_not_found")):
                    await send(mine, {"type": "workflow_decision", "data": bad})
                    err, _ = await recv_until(mine, "error")
                    assert err["data"]["code"] == code, bad
                assert (await http.get(f"/api/workflow-runs/{run_id}")).json()["run"]["status"] == "paused"

                fake_llm.script(Reply(text="Waves fold, unfold."), Reply(text="海浪折叠，又展开。"))
                await send(mine, {"type": "workflow_decision", "data": {"runId": run_id, "action": "approve"}})
                for ws in (mine, theirs, guests):  # everyone subscribed sees the decision and the end
                    decided = await wf_frame(ws, lambda run: run["steps"][1]["decision"] is not None)
                    assert decided["steps"][1]["decision"]["decision"] == "approved"
                    done = await wf_frame(ws, lambda run: run["status"] == "completed")
                    assert [s["output"] for s in done["steps"]] == [
                        "Waves fold and unfold.", "Waves fold, unfold.", "海浪折叠，又展开。"]
                await send(mine, {"type": "workflow_decision", "data": {"runId": run_id, "action": "approve"}})
                err, _ = await recv_until(mine, "error")
                assert (err["data"]["code"], err["data"]["runId"]) == ("not_waiting", run_id)
                await send(mine, {"type": "workflow_decision", "data": {"runId": run_id, "action": "cancel"}})
                err, _ = await recv_until(mine, "error")
                assert err["data"]["code"] == "run_finished"

                # suspend, resume, reject and cancel, in the frame as over REST
                fake_llm.script(Reply(text="v1"), Reply(text="v2"))
                r = await http.post(f"/api/workflows/{wf['workflow']['id']}/runs", json={"input": "the hills"})
                second = r.json()["run"]["id"]
                await wf_frame(theirs, lambda run: run["id"] == second and run["status"] == "paused")
                for action, status in (("suspend", "suspended"), ("resume", "paused"), ("reject", "rejected")):
                    await send(mine, {"type": "workflow_decision", "data": {"runId": second, "action": action}})
                    got = await wf_frame(theirs, lambda run, status=status: run["id"] == second
                                         and run["status"] == status)
                    assert got["status"] == status
                assert got["steps"][1]["status"] == "rejected"
                fake_llm.script(Reply(text="v1"))
                r = await http.post(f"/api/workflows/{wf['workflow']['id']}/runs", json={"input": "the sky"})
                third = r.json()["run"]["id"]
                await wf_frame(guests, lambda run: run["id"] == third and run["status"] == "paused")
                await send(mine, {"type": "workflow_decision", "data": {"runId": third, "action": "cancel"}})
                got = await wf_frame(guests, lambda run: run["id"] == third and run["status"] == "cancelled")
                assert got["steps"][1]["status"] == "cancelled"

                # a plugin's own frame type answers its sender, and refuses with its code and fields
                await send(guests, {"type": "echo", "text": "你好"})
                echoed, _ = await recv_until(guests, "echoed")
                assert echoed["data"] == {"text": "你好", "by": guest["id"]}
                await send(guests, {"type": "echo"})
                err, _ = await recv_until(guests, "error")
                assert (err["data"]["code"], err["data"]["type"], err["data"]["asked"]) == (
                    "nothing_to_echo", "echo", None)


class Squatter:
    @hookimpl
    def register_frames(self, register):
        async def handle(app, actor, data):
            pass

        register(Frame("approval_decision", handle))


def test_a_plugin_cannot_take_a_frame_type_of_the_core(tmp_path):
    from conftest import make_settings
    from xiajiao.app import create_app
    from xiajiao.plugins import PluginError

    with pytest.raises(PluginError, match="'approval_decision' is a frame type of the core"):
        create_app(make_settings(tmp_path), plugins=[Squatter()])
