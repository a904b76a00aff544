"""Model providers against the fake servers on loopback: real HTTP, JSON and SSE, through the vendors' clients."""
from __future__ import annotations

import json

import pytest

from fake_llm import Call, Reply, split_text
from xiajiao import (ChatMessage, ChatRequest, ProviderConfig, ProviderError, TextDelta, Timeouts, ToolCall,
                     ToolCallsDone, Usage, hookimpl)
from conftest import make_settings, running_app

import plugins.provider_anthropic as anth
import plugins.provider_demo as demo
import plugins.provider_openai as oai

TIMEOUTS = Timeouts(connect=5, first_token=5, idle=5)


async def collect(provider, request):
    return [e async for e in provider.stream(request, timeouts=TIMEOUTS)]


def texts(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture
async def openai_provider(fake_llm):
    p = oai.OpenAIProvider(ProviderConfig(id="o", kind="openai", base_url=fake_llm.base_url, api_key="sk-abc"))
    yield p
    await p.aclose()


@pytest.fixture
async def anthropic_provider(fake_llm):
    p = anth.AnthropicProvider(ProviderConfig(id="a", kind="anthropic", base_url=fake_llm.anthropic_base_url,
                                              api_key="sk-ant"))
    yield p
    await p.aclose()


def req(text="hi", **kw):
    return ChatRequest(model=kw.pop("model", "fake-model"),
                       messages=[ChatMessage("system", "be brief"), ChatMessage("user", text)], **kw)


@pytest.mark.parametrize("text,n,pieces", [
    ("abcdef", 3, ["ab", "cd", "ef"]),
    ("你好", 5, ["你", "好"]),
    ("", 3, []),
])
def test_fake_server_splits_text_into_pieces(text, n, pieces):
    assert split_text(text, n) == pieces


async def test_openai_streams_text_and_usage(fake_llm, openai_provider):
    fake_llm.script(text="你好,世界 hello", chunks=4, prompt_tokens=11, completion_tokens=7)
    events = await collect(openai_provider, req("hi there"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["你好", ",世界", " he", "llo"]
    assert [e for e in events if isinstance(e, Usage)] == [Usage(11, 7)]
    sent = fake_llm.last
    assert sent.headers["authorization"] == "Bearer sk-abc"
    assert sent.json["stream"] is True and sent.json["model"] == "fake-model"
    assert sent.json["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]


async def test_openai_assembles_streamed_tool_calls(fake_llm, openai_provider):
    fake_llm.script(text="let me look", tool_calls=[Call("lookup", {"q": "部署"}, fragments=4),
                                                    Call("clock", {}, id="c2")])
    tools = [{"type": "function", "function": {"name": "lookup", "description": "", "parameters": {"type": "object"}}}]
    events = await collect(openai_provider, req("find", tools=tools))
    done = [e for e in events if isinstance(e, ToolCallsDone)]
    assert done == [ToolCallsDone([ToolCall("call_0_lookup", "lookup", '{"q": "部署"}'), ToolCall("c2", "clock", "{}")])]
    assert texts(events) == "let me look"
    assert fake_llm.last.json["tools"] == tools


async def test_openai_sends_tool_history_in_wire_shape(fake_llm, openai_provider):
    request = ChatRequest(model="fake-model", messages=[
        ChatMessage("user", "q"), ChatMessage("assistant", "", tool_calls=[ToolCall("c1", "f", '{"a": 1}')]),
        ChatMessage("tool", "42", tool_call_id="c1")])
    await collect(openai_provider, request)
    assert fake_llm.last.json["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                                                              "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"}]


@pytest.mark.parametrize("reply,code,retryable,retry_after", [
    (Reply(status=429, retry_after=2), "rate_limited", True, 2.0),
    (Reply(status=500), "provider_http_error", True, None),
    (Reply(status=503, retry_after=1), "provider_http_error", True, 1.0),
    (Reply(status=400), "provider_http_error", False, None),
    (Reply(status=401), "provider_http_error", False, None),
    (Reply(text="abcdef", chunks=6, cut_after=2), "connection_error", True, None),
    (Reply(text="abcdef", chunks=6, garbage="data: {not json"), "bad_stream", True, None),
])
async def test_openai_errors_become_provider_errors(fake_llm, openai_provider, reply, code, retryable, retry_after):
    fake_llm.script(reply)
    with pytest.raises(ProviderError) as info:
        await collect(openai_provider, req())
    assert (info.value.code, info.value.retryable, info.value.retry_after) == (code, retryable, retry_after)


async def test_openai_connection_refused_is_retryable():
    from conftest import free_port

    p = oai.OpenAIProvider(ProviderConfig(id="o", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(ProviderError) as info:
        await collect(p, req())
    await p.aclose()
    assert (info.value.code, info.value.retryable) == ("connection_error", True)


async def test_anthropic_streams_text_tool_use_and_usage(fake_llm, anthropic_provider):
    fake_llm.script(text="Claude 在此", chunks=3, tool_calls=[Call("lookup", {"q": "x", "n": 2}, fragments=3)],
                    prompt_tokens=9, completion_tokens=5)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}]
    events = await collect(anthropic_provider, req("hello", model="fake-claude", tools=tools))
    assert texts(events) == "Claude 在此"
    assert [e for e in events if isinstance(e, Usage)] == [Usage(9, 5)]
    assert [e for e in events if isinstance(e, ToolCallsDone)] == [
        ToolCallsDone([ToolCall("toolu_0_lookup", "lookup", '{"q": "x", "n": 2}')])]
    sent = fake_llm.last
    assert sent.path == "/v1/messages"
    assert "sk-ant" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert sent.json["system"] == "be brief"
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert sent.json["tools"] == [{"name": "lookup", "description": "d", "input_schema": {"type": "object",
                                                                                          "properties": {}}}]


async def test_anthropic_tool_results_become_user_turns(fake_llm, anthropic_provider):
    request = ChatRequest(model="fake-claude", messages=[
        ChatMessage("user", "q"), ChatMessage("assistant", "checking", tool_calls=[ToolCall("t1", "f", '{"a": 1}')]),
        ChatMessage("tool", "42", tool_call_id="t1")])
    await collect(anthropic_provider, request)
    assert fake_llm.last.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}]


@pytest.mark.parametrize("reply,code,retryable", [
    (Reply(status=429, retry_after=3), "rate_limited", True),
    (Reply(status=529), "provider_http_error", True),
    (Reply(status=400), "provider_http_error", False),
    (Reply(text="abcdef", chunks=6, cut_after=1), "connection_error", True),
])
async def test_anthropic_errors_become_provider_errors(fake_llm, anthropic_provider, reply, code, retryable):
    fake_llm.script(reply)
    with pytest.raises(ProviderError) as info:
        await collect(anthropic_provider, req(model="fake-claude"))
    assert (info.value.code, info.value.retryable) == (code, retryable)


async def test_fake_server_embeddings_and_models(fake_llm):
    import openai

    client = openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="x", max_retries=0)
    first = await client.embeddings.create(model="e", input=["部署流程", "deploy"])
    again = await client.embeddings.create(model="e", input="部署流程")
    assert len(first.data) == 2 and len(first.data[0].embedding) == fake_llm.dim
    assert first.data[0].embedding == again.data[0].embedding != first.data[1].embedding
    assert abs(sum(v * v for v in first.data[1].embedding) - 1) < 1e-6  # unit length (float32 precision)
    assert [m.id for m in (await client.models.list()).data] == fake_llm.models
    await client.close()


# ------------------------------------------------------------------ the offline demo model


@pytest.mark.parametrize("user,expected", [
    ("hello", 'I am the offline demo model, not a real AI yet. You said: "hello". '
              "Add a model provider and its key in Settings to get real answers."),
    ("你好", "我是离线演示模型,还没有接入真实的大模型。你说:「你好」。在设置里添加一个模型服务商和密钥,就能得到真正的回答。"),
])
async def test_demo_model_says_it_is_a_demo(user, expected):
    p = demo.DemoProvider(ProviderConfig(id="demo", kind="demo", options={"delay": 0}))
    events = await collect(p, ChatRequest(model="demo", messages=[ChatMessage("user", user)]))
    assert texts(events) == expected
    assert len([e for e in events if isinstance(e, TextDelta)]) > 3  # it streams


async def test_demo_model_in_a_group_answers_the_latest_message_not_the_oldest():
    p = demo.DemoProvider(ProviderConfig(id="demo", kind="demo", options={"delay": 0}))
    merged = "[Poet]: an old line\n\nfirst question\n\nthe latest question"
    events = await collect(p, ChatRequest(model="demo", messages=[ChatMessage("user", merged)]))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert 'You said: "the latest question"' in text and "old line" not in text


async def test_demo_model_calls_a_tool_when_asked_and_reads_the_result():
    p = demo.DemoProvider(ProviderConfig(id="demo", kind="demo", options={"delay": 0}))
    tools = [{"type": "function", "function": {"name": "clock", "description": "",
                                               "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                                              "required": ["zone"]}}}]
    ask = [ChatMessage("user", "please use the clock tool")]
    events = await collect(p, ChatRequest(model="demo", messages=ask, tools=tools))
    done = [e for e in events if isinstance(e, ToolCallsDone)]
    assert done == [ToolCallsDone([ToolCall("demo_call_0", "clock", json.dumps({"zone": "please use the clock tool"}))])]
    follow = ask + [ChatMessage("assistant", "", tool_calls=done[0].calls),
                    ChatMessage("tool", "10:00", tool_call_id="demo_call_0")]
    events = await collect(p, ChatRequest(model="demo", messages=follow, tools=tools))
    assert texts(events) == "(demo model) The tool clock returned: 10:00"


async def test_demo_is_the_default_model_when_nothing_is_configured(tmp_path):
    async with running_app(make_settings(tmp_path, demo_delay=0.0)) as app:
        gw = app.xj.engine.gateway
        assert gw.default_model() == "demo/demo"
        assert [s.source for s in gw.sources] == ["builtin"]


async def test_a_plugin_can_register_a_provider_kind(tmp_path, fake_llm):
    from xiajiao import ProviderKind

    class Echo:
        def __init__(self, config):
            self.config = config

        async def stream(self, request, *, timeouts):
            yield TextDelta("echo:" + request.messages[-1].content)

        async def aclose(self):
            pass

    class Plugin:
        @hookimpl
        def register_providers(self, register):
            register(ProviderKind(name="echo", factory=Echo, needs_key=False,
                                  builtin_configs=lambda app: [ProviderConfig(id="echo", kind="echo", models=["e1"])]))

    async with running_app(make_settings(tmp_path, default_model="echo/e1"), plugins=[Plugin()]) as app:
        text = await app.xj.engine.complete({"id": "x", "model": ""}, [ChatMessage("user", "hi")])
    assert text == "echo:hi"


async def test_openai_stream_left_midway_closes_its_connection_and_a_finished_one_is_kept(fake_llm, openai_provider):
    fake_llm.script(Reply(text="abcdef", chunks=6, hang_after=2), Reply(text="ok", chunks=1))
    events = openai_provider.stream(req(), timeouts=TIMEOUTS)
    assert await events.__anext__() == TextDelta("a")
    await events.aclose()  # the Stop button: the gateway closes the provider's stream
    assert openai_provider.http.idle == []
    assert texts(await collect(openai_provider, req())) == "ok"
    assert len(openai_provider.http.idle) == 1  # read to its end: back in the pool for the next call
