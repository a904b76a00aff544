"""The OpenAI-compatible endpoint, driven by the official ``openai`` client against a live server
(real HTTP on loopback, the fake model behind it); and /v1/run, /v1/stream."""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from chat_helpers import make_user
from conftest import OWNER_PASSWORD, live_server, llm_settings
from fake_llm import Call, Reply
from xiajiao import Tool, auth, hookimpl


async def lookup(args, ctx):
    return {"city": args["city"], "weather": "sunny, 24°C"}


class WeatherTool:
    @hookimpl
    def register_tools(self, register):
        register(Tool(name="weather", description="The weather of a city",
                      parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                      fn=lookup))


@pytest.fixture
async def live(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, embedder="hash")
    async with live_server(settings, plugins=[WeatherTool()]) as (app, base):
        yield app, base


async def key_for(app, username=None, role="member") -> tuple[str, dict]:
    """(secret, key row) of a new API key of the owner, or of a new user ``username``."""
    user = await auth.owner(app.xj.db) if username is None else await make_user(app, username, role)
    key, secret = await auth.create_api_key(app.xj.db, user["id"], "test")
    return secret, key


def client_for(base, secret, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0, **kw)


async def test_a_non_streamed_completion_is_a_real_agent_turn(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    fake_llm.script(Reply(text="Once upon a time.", prompt_tokens=40, completion_tokens=5))
    resp = await client_for(base, secret).chat.completions.create(
        model="agent/novelist", messages=[{"role": "system", "content": "Answer in one line."},
                                          {"role": "user", "content": "Tell me a story"}])
    assert resp.object == "chat.completion" and resp.model == "agent/novelist"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "Once upon a time."
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (40, 5, 45)
    sent = fake_llm.last
    soul = app.xj.engine.agents.soul("novelist")
    assert sent.messages[0]["role"] == "system" and sent.messages[0]["content"].startswith(soul.strip()[:40])
    assert [m["content"] for m in sent.messages[1:]] == ["Answer in one line.", "Tell me a story"]
    # nothing was recorded: no conversation appeared
    assert await app.xj.db.fetchval("SELECT count(*) FROM messages") == 0


async def test_a_streamed_completion_speaks_openais_chunks_and_usage(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    fake_llm.script(Reply(text="one two three four", chunks=4, prompt_tokens=12, completion_tokens=4))
    stream = await client_for(base, secret).chat.completions.create(
        model="novelist", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 4)


async def test_the_raw_stream_ends_with_done_and_has_no_usage_unless_asked(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}) as http:
        async with http.stream("POST", "/v1/chat/completions", json={
                "model": "agent/novelist", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in resp.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: hi"


async def test_an_agents_own_tools_run_server_side_and_only_the_answer_comes_back(live, fake_llm):
    app, base = live
    owner_secret, _ = await key_for(app)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": owner_secret}) as http:
        made = await http.post("/api/agents", json={"name": "Weatherman", "tools": ["weather"]})
        assert made.status_code == 201, made.text
        agent_id = made.json()["agent"]["id"] if "agent" in made.json() else made.json()["id"]
    fake_llm.script(Reply(tool_calls=[Call("weather", {"city": "Hangzhou"})]), Reply(text="It is sunny in Hangzhou."))
    resp = await client_for(base, owner_secret).chat.completions.create(
        model=f"agent/{agent_id}", messages=[{"role": "user", "content": "Weather in Hangzhou?"}])
    assert resp.choices[0].message.content == "It is sunny in Hangzhou."
    assert resp.choices[0].message.tool_calls is None
    second = fake_llm.chat_requests()[-1]
    assert second.messages[-1]["role"] == "tool" and "sunny, 24°C" in second.messages[-1]["content"]
    assert [t["function"]["name"] for t in fake_llm.chat_requests()[-2].json["tools"]] == ["weather"]


async def test_an_agents_memory_is_recalled_in_a_completion(live, fake_llm):
    app, base = live
    owner_secret, _ = await key_for(app)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": owner_secret}) as http:
        added = await http.post("/api/agents/novelist/memories",
                                json={"content": "The reader's cat is called Mochi", "class": "semantic"})
        assert added.status_code in (200, 201), added.text
    await client_for(base, owner_secret).chat.completions.create(
        model="agent/novelist", messages=[{"role": "user", "content": "What is my cat called?"}])
    assert "The reader's cat is called Mochi" in fake_llm.last.system


async def test_models_list_agents_for_members_and_provider_models_for_admins(live):
    app, base = live
    member, _ = await key_for(app, "alice")
    owner, _ = await key_for(app)
    listed = [m async for m in client_for(base, member).models.list()]
    ids = {m.id for m in listed}
    assert {"agent/butler", "agent/novelist", "agent/editor", "agent/translator", "agent/coder"} == ids
    novelist = next(m for m in listed if m.id == "agent/novelist")
    assert novelist.owned_by == "xiajiao" and novelist.model_extra["name"] == "小说家"
    assert novelist.model_extra["description"].startswith("写小说")
    owner_ids = {m.id async for m in client_for(base, owner).models.list()}
    assert ids < owner_ids and {"env-openai/fake-model", "env-anthropic/fake-claude"} <= owner_ids


async def test_client_tools_pass_through_to_a_provider_model(live, fake_llm):
    app, base = live
    owner, _ = await key_for(app)
    tools = [{"type": "function", "function": {"name": "get_time", "description": "Now",
                                               "parameters": {"type": "object", "properties": {}}}}]
    fake_llm.script(Reply(tool_calls=[Call("get_time", {}, id="call_1")]))
    resp = await client_for(base, owner).chat.completions.create(
        model="env-openai/fake-model", messages=[{"role": "user", "content": "time?"}], tools=tools)
    assert fake_llm.last.json["tools"] == tools
    assert fake_llm.last.messages == [{"role": "user", "content": "time?"}]  # no persona for a provider model
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_1", "get_time", "{}")]
    # the client answers the call; the conversation goes on
    fake_llm.script(Reply(text="It is noon."))
    stream = await client_for(base, owner).chat.completions.create(
        model="env-openai/fake-model", stream=True, tools=tools, messages=[
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "It is noon."
    assert fake_llm.last.messages[-1] == {"role": "tool", "content": "12:00", "tool_call_id": "call_1"}


async def test_streamed_tool_calls_of_a_provider_model(live, fake_llm):
    app, base = live
    owner, _ = await key_for(app)
    fake_llm.script(Reply(tool_calls=[Call("get_time", {"tz": "UTC"}, id="call_9")]))
    stream = await client_for(base, owner).chat.completions.create(
        model="fake-model", stream=True, messages=[{"role": "user", "content": "time?"}],
        tools=[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}])
    chunks = [c async for c in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        (0, "call_9", "get_time", {"tz": "UTC"})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("body,status,code", [
    ({"model": "agent/nobody", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ({"model": "env-openai/fake-model", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ({"model": "novelist", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "unsupported_n"),
    ({"model": "novelist", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}, 400, "unsupported_content"),
    ({"model": "novelist", "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_messages"),
    ({"model": "novelist", "messages": ["hello"]}, 400, "invalid_messages"),
    ({"model": "novelist", "messages": []}, 400, "invalid_messages"),
    ({"model": "novelist", "messages": [{"role": "system", "content": "x"}]}, 400, "invalid_messages"),
    ({"model": "novelist", "messages": [{"role": "user"}]}, 400, "invalid_messages"),
    ({"model": "novelist", "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_messages"),
    ({"model": "novelist"}, 400, "validation_error"),
])
async def test_bad_requests_get_openais_error_shape(live, body, status, code):
    app, base = live
    member, _ = await key_for(app, "alice")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {member}"}) as http:
        resp = await http.post("/v1/chat/completions", json=body)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["type"] and "param" in err


async def test_the_openai_client_raises_its_own_errors(live):
    app, base = live
    member, _ = await key_for(app, "alice")
    with pytest.raises(openai.NotFoundError) as info:
        await client_for(base, member).chat.completions.create(model="agent/nobody",
                                                               messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await client_for(base, "xj_not-a-key").models.list()


async def test_a_failing_model_is_a_502_in_openais_shape(live, fake_llm):
    app, base = live
    member, _ = await key_for(app, "alice")
    fake_llm.script(*[Reply(status=500) for _ in range(3)])
    with pytest.raises(openai.InternalServerError) as info:
        await client_for(base, member).chat.completions.create(model="agent/translator",
                                                               messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.body["code"] == "provider_http_error"


async def test_a_recorded_completion_is_a_conversation_in_the_web_app(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    fake_llm.script(Reply(text="Bonjour"), Reply(text="Encore bonjour"))
    c = client_for(base, secret, default_headers={"X-Xiajiao-Record": "true"})
    raw = await c.chat.completions.with_raw_response.create(
        model="agent/translator", messages=[{"role": "user", "content": "Say hello in French"}])
    session = raw.headers["x-xiajiao-session"]
    assert raw.parse().choices[0].message.content == "Bonjour"
    await c.chat.completions.create(model="agent/translator", messages=[
        {"role": "user", "content": "Say hello in French"}, {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Again"}])
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}) as http:
        channels = (await http.get("/api/channels")).json()["channels"]
        history = (await http.get("/api/messages", params={"channelId": session})).json()["messages"]
    assert [ch["id"] for ch in channels] == [session]  # one conversation per agent, reused
    assert channels[0]["agentIds"] == ["translator"]
    assert [(m["agentId"], m["content"], m["status"]) for m in history] == [
        (None, "Say hello in French", "done"), ("translator", "Bonjour", "done"),
        (None, "Again", "done"), ("translator", "Encore bonjour", "done")]
    # the client's messages were the context, not the stored history twice over
    assert [m["content"] for m in fake_llm.last.messages[1:]] == ["Say hello in French", "Bonjour", "Again"]


async def test_a_client_that_goes_away_ends_the_turn(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    fake_llm.script(Reply(text="never ending story", chunks=6, hang_after=1))
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret, "X-Xiajiao-Record": "1"}) as http:
        async with http.stream("POST", "/v1/chat/completions", json={
                "model": "agent/novelist", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # leave mid-stream: the connection closes
    for _ in range(500):
        row = await app.xj.db.fetchone("SELECT content, status FROM messages WHERE agent_id = 'novelist'")
        if row and row["status"] != "streaming":
            break
        await asyncio.sleep(0.02)
    assert row == {"content": "nev", "status": "interrupted"}  # the model hangs: only the cut ended the turn


# ------------------------------------------------------------------ /v1/run and /v1/stream


async def test_run_answers_in_json_and_a_session_continues(live, fake_llm):
    app, base = live
    secret, _ = await key_for(app, "alice")
    fake_llm.script(Reply(text="Noted: blue.", prompt_tokens=10, completion_tokens=3), Reply(text="Blue."))
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
        first = await http.post("/v1/run", json={"agent": "translator", "input": "My colour is blue"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert {k: body[k] for k in ("text", "usage", "rounds", "done")} == {
            "text": "Noted: blue.", "usage": {"promptTokens": 10, "completionTokens": 3, "totalTokens": 13},
            "rounds": 1, "done": True}
        second = await http.post("/v1/run", json={"sessionId": body["sessionId"], "input": "What is my colour?"})
        assert second.json()["sessionId"] == body["sessionId"] and second.json()["text"] == "Blue."
        other = await http.post("/v1/run", json={"pack": "default", "persona": "editor", "input": "hi"})
        assert other.status_code == 200 and other.json()["sessionId"] != body["sessionId"]
        history = (await http.get("/api/messages", params={"channelId": body["sessionId"]})).json()["messages"]
    assert [m["content"] for m in fake_llm.chat_requests()[1].messages[1:]] == [
        "My colour is blue", "Noted: blue.", "What is my colour?"]
    assert [m["content"] for m in history] == ["My colour is blue", "Noted: blue.", "What is my colour?", "Blue."]


async def test_stream_sends_text_tool_and_end_events(live, fake_llm):
    app, base = live
    owner, _ = await key_for(app)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": owner}, timeout=30) as http:
        made = await http.post("/api/agents", json={"name": "Weatherman", "tools": ["weather"]})
        agent_id = made.json()["agent"]["id"] if "agent" in made.json() else made.json()["id"]
        fake_llm.script(Reply(tool_calls=[Call("weather", {"city": "Xi'an"})]), Reply(text="Sunny in Xi'an", chunks=3))
        async with aconnect_sse(http, "POST", "/v1/stream", json={"agent": agent_id, "input": "weather?"}) as source:
            events = [(e.event, json.loads(e.data)) async for e in source.aiter_sse()]
    kinds = [k for k, _ in events]
    assert kinds == ["tool", "tool_end", "text", "text", "text", "end"]
    assert events[0][1] == {"type": "tool", "name": "weather", "arguments": {"city": "Xi'an"},
                            "callId": events[0][1]["callId"]}
    assert "sunny, 24°C" in events[1][1]["result"] and events[1][1]["error"] is False
    assert "".join(d["delta"] for k, d in events if k == "text") == "Sunny in Xi'an"
    end = events[-1][1]
    assert (end["text"], end["done"], end["rounds"]) == ("Sunny in Xi'an", True, 2)


@pytest.mark.parametrize("body,status,code", [
    ({"input": "hi"}, 400, "agent_required"),
    ({"agent": "nobody", "input": "hi"}, 404, "agent_not_found"),
    ({"pack": "nopack", "input": "hi"}, 404, "pack_not_found"),
    ({"agent": "novelist", "input": "  "}, 400, "empty_message"),
    ({"agent": "novelist", "input": "hi", "sessionId": "ch_0000000000000000"}, 404, "session_not_found"),
    ({"agent": "novelist"}, 400, "validation_error"),
])
async def test_run_refuses_bad_input(live, body, status, code):
    app, base = live
    secret, _ = await key_for(app, "alice")
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": secret}) as http:
        resp = await http.post("/v1/run", json=body)
    assert (resp.status_code, resp.json()["code"]) == (status, code)


async def test_another_users_session_is_not_found(live):
    app, base = live
    alice, _ = await key_for(app, "alice")
    bob, _ = await key_for(app, "bob")
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        made = await http.post("/v1/run", json={"agent": "translator", "input": "hi"}, headers={"X-API-Key": alice})
        resp = await http.post("/v1/run", json={"sessionId": made.json()["sessionId"], "input": "hi"},
                               headers={"X-API-Key": bob})
    assert (resp.status_code, resp.json()["code"]) == (404, "session_not_found")


async def test_each_api_key_has_its_own_rate_limit(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, rate_limit_per_minute=1, rate_limit_burst=3)
    async with live_server(settings) as (app, base):
        first, _ = await key_for(app, "alice")
        user_id = (await app.xj.db.fetchone("SELECT user_id FROM api_keys"))["user_id"]
        _, second = await auth.create_api_key(app.xj.db, user_id, "second")
        async with httpx.AsyncClient(base_url=base) as http:
            got = [(await http.get("/v1/models", headers={"X-API-Key": first})).status_code for _ in range(4)]
            other = (await http.get("/v1/models", headers={"X-API-Key": second})).status_code
            login = await http.post("/api/login", json={"password": OWNER_PASSWORD})
    assert got == [200, 200, 200, 429] and other == 200 and login.status_code == 200


async def test_browser_apps_of_listed_origins_may_ask_for_recording_and_read_the_session(tmp_path):
    from conftest import make_settings, running_app

    async with running_app(make_settings(tmp_path, cors_origins="https://chat.example")) as app:
        c = app.test_client()
        r = await c.options("/v1/chat/completions", headers={
            "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-xiajiao-record"})
        assert "x-xiajiao-record" in r.headers["Access-Control-Allow-Headers"].lower()
        secret, _ = await key_for(app, "alice")
        r = await c.post("/v1/chat/completions", headers={"Origin": "https://chat.example", "X-API-Key": secret,
                                                          "X-Xiajiao-Record": "yes"},
                         json={"model": "agent/translator", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.headers["X-Xiajiao-Session"].startswith("ch_")
        assert "x-xiajiao-session" in r.headers["Access-Control-Expose-Headers"].lower()
