"""The gateway: model resolution, retries, Retry-After, failover before the first token, breaker, timeouts, usage."""
from __future__ import annotations

import asyncio

import pytest

from fake_llm import Reply
from xiajiao import BadRequest, ChatMessage, ChatRequest, ProviderError, TextDelta
from xiajiao.gateway import Breaker, backoff
from conftest import llm_settings, running_app


def req(model="env-openai/fake-model"):
    return ChatRequest(model=model, messages=[ChatMessage("user", "hi")])


async def run(gw, request, **kw):
    return "".join([e.text async for e in gw.stream(request, **kw) if isinstance(e, TextDelta)])


@pytest.fixture
async def gw_app(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, provider_retries=2, breaker_failures=3, breaker_cooldown=0.2,
                            first_token_timeout=0.5, idle_stream_timeout=0.5)
    async with running_app(settings) as app:
        yield app


@pytest.mark.parametrize("model,provider,name", [
    ("env-openai/fake-model", "env-openai", "fake-model"),
    ("fake-model-2", "env-openai", "fake-model-2"),
    ("fake-claude", "env-anthropic", "fake-claude"),
    ("demo", "demo", "demo"),
    ("", "env-openai", "fake-model"),  # the default model
])
async def test_models_resolve_to_their_provider(llm_app, model, provider, name):
    cfg, resolved = llm_app.xj.engine.gateway.resolve(model)
    assert (cfg.id, resolved) == (provider, name)


@pytest.mark.parametrize("model", ["gpt-9", "env-openai/gpt-9", "nope/fake-model"])
async def test_unknown_models_are_refused(llm_app, model):
    with pytest.raises(BadRequest) as info:
        llm_app.xj.engine.gateway.resolve(model)
    assert info.value.code == "unknown_model"


async def test_429_is_retried_after_the_retry_after_delay(gw_app, fake_llm):
    fake_llm.script(Reply(status=429, retry_after=0.1), Reply(text="ok now"))
    assert await run(gw_app.xj.engine.gateway, req()) == "ok now"
    chats = fake_llm.chat_requests()
    assert len(chats) == 2
    assert chats[1].at - chats[0].at >= 0.1  # Retry-After honoured (the wait is the server's, not a speed claim)


@pytest.mark.parametrize("first", [Reply(status=500), Reply(status=502), Reply(status=503, retry_after=0),
                                   Reply(text="x", cut_after=0)])
async def test_server_errors_and_broken_connections_are_retried(gw_app, fake_llm, first):
    fake_llm.script(first, Reply(text="recovered"))
    assert await run(gw_app.xj.engine.gateway, req()) == "recovered"
    assert len(fake_llm.chat_requests()) == 2


async def test_client_errors_are_not_retried(gw_app, fake_llm):
    fake_llm.script(Reply(status=400), Reply(text="never"))
    with pytest.raises(ProviderError):
        await run(gw_app.xj.engine.gateway, req(), fallback=[])
    assert len(fake_llm.chat_requests()) == 1


async def test_retries_give_up_after_the_setting(gw_app, fake_llm):
    fake_llm.script(*[Reply(status=500) for _ in range(3)], Reply(text="too late"))
    with pytest.raises(ProviderError) as info:
        await run(gw_app.xj.engine.gateway, req(), fallback=[])
    assert info.value.code == "provider_http_error"
    assert len(fake_llm.chat_requests()) == 3  # one call + provider_retries=2


async def test_failover_to_the_fallback_model_before_the_first_token(gw_app, fake_llm):
    fake_llm.script(*[Reply(status=500, model="fake-model") for _ in range(3)],
                    Reply(text="from claude", model="fake-claude"))
    assert await run(gw_app.xj.engine.gateway, req(), fallback=["fake-claude"]) == "from claude"
    assert [r.path for r in fake_llm.chat_requests()] == ["/v1/chat/completions"] * 3 + ["/v1/messages"]


async def test_no_failover_once_a_token_was_delivered(gw_app, fake_llm):
    fake_llm.script(Reply(text="abcdef", chunks=6, cut_after=2, model="fake-model"),
                    Reply(text="fallback", model="fake-claude"))
    got = []
    with pytest.raises(ProviderError) as info:
        async for e in gw_app.xj.engine.gateway.stream(req(), fallback=["fake-claude"]):
            got.append(e.text)
    assert got == ["a", "b"]
    assert info.value.code == "connection_error"
    assert [r.path for r in fake_llm.chat_requests()] == ["/v1/chat/completions"]


async def test_garbage_in_the_stream_after_a_token_is_reported_not_retried(gw_app, fake_llm):
    fake_llm.script(Reply(text="abc", chunks=3, garbage="data: {broken"), Reply(text="unused"))
    got = []
    with pytest.raises(ProviderError) as info:
        async for e in gw_app.xj.engine.gateway.stream(req(), fallback=[]):
            got.append(e.text)
    assert (got, info.value.code) == (["a"], "bad_stream")
    assert len(fake_llm.chat_requests()) == 1


async def test_first_token_timeout_is_retried_then_reported(gw_app, fake_llm):
    fake_llm.script(*[Reply(text="late", hang_after=0) for _ in range(3)])
    with pytest.raises(ProviderError) as info:
        await run(gw_app.xj.engine.gateway, req(), fallback=[])
    assert info.value.code == "timeout"
    assert len(fake_llm.chat_requests()) == 3


async def test_an_idle_stream_is_cut(gw_app, fake_llm):
    fake_llm.script(Reply(text="abcd", chunks=4, hang_after=2))
    got = []
    with pytest.raises(ProviderError) as info:
        async for e in gw_app.xj.engine.gateway.stream(req(), fallback=[]):
            got.append(e.text)
    assert got == ["a", "b"] and info.value.code == "timeout"
    assert "next token" in info.value.message


async def test_breaker_opens_after_consecutive_failures_then_probes(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, provider_retries=0, breaker_failures=2, breaker_cooldown=0.3)
    async with running_app(settings) as app:
        gw = app.xj.engine.gateway
        fake_llm.script(Reply(status=500), Reply(status=500))
        for _ in range(2):
            with pytest.raises(ProviderError):
                await run(gw, req(), fallback=[])
        assert gw.breaker("env-openai").state == "open"
        with pytest.raises(ProviderError) as info:
            await run(gw, req(), fallback=[])
        assert info.value.code == "circuit_open"
        assert len(fake_llm.chat_requests()) == 2  # the open breaker kept the call away from the provider
        await asyncio.sleep(0.35)
        assert gw.breaker("env-openai").state == "half_open"
        assert await run(gw, req(), fallback=[]) == "Echo: hi"
        assert gw.breaker("env-openai").state == "closed"


def test_breaker_lets_exactly_one_probe_through():
    b = Breaker(threshold=1, cooldown=0)
    b.failure()
    assert b.allow() is True
    assert b.allow() is False  # a second caller waits for the probe's outcome
    b.failure()
    assert b.failures == 2 and b.opened_at is not None
    assert b.allow() is True
    b.success()
    assert (b.state, b.failures) == ("closed", 0)


@pytest.mark.parametrize("attempt,retry_after,low,high", [
    (0, None, 0.125, 0.25), (1, None, 0.25, 0.5), (3, None, 1.0, 2.0), (10, None, 4.0, 8.0),
    (0, 3.0, 3.0, 3.0), (2, 500.0, 60.0, 60.0),
])
def test_backoff_is_jittered_and_honours_retry_after(attempt, retry_after, low, high):
    for _ in range(50):
        assert low <= backoff(attempt, retry_after) <= high


async def test_usage_and_latency_are_recorded_per_agent_and_provider(gw_app, fake_llm):
    gw = gw_app.xj.engine.gateway
    fake_llm.script(Reply(text="hello", prompt_tokens=12, completion_tokens=3), Reply(status=400))
    await run(gw, req(), agent_id="novelist")
    with pytest.raises(ProviderError):
        await run(gw, req(), agent_id="novelist", fallback=[])
    await gw.flush()
    rows = await gw_app.xj.db.fetchall("SELECT agent_id, provider, model, prompt_tokens, completion_tokens, ok, "
                                       "error, latency_ms FROM usage ORDER BY id")
    assert [(r["agent_id"], r["provider"], r["model"], r["prompt_tokens"], r["completion_tokens"], r["ok"])
            for r in rows] == [("novelist", "env-openai", "fake-model", 12, 3, 1),
                               ("novelist", "env-openai", "fake-model", 0, 0, 0)]
    assert rows[1]["error"].startswith("provider_http_error: ") and all(r["latency_ms"] > 0 for r in rows)


async def test_providers_api_shows_health(gw_app, fake_llm):
    from conftest import login

    fake_llm.script(Reply(status=400))
    with pytest.raises(ProviderError):
        await run(gw_app.xj.engine.gateway, req(), fallback=[])
    c = gw_app.test_client()
    await login(c)
    body = await (await c.get("/api/providers")).get_json()
    by_id = {p["id"]: p for p in body["providers"]}
    assert set(by_id) == {"env-openai", "env-anthropic", "demo"}
    h = by_id["env-openai"]["health"]
    # a 400 is the request's fault: recorded as a failed call, not counted toward the breaker
    assert (h["state"], h["consecutiveFailures"], h["calls"], h["failures"]) == ("closed", 0, 1, 1)
    assert h["lastError"] == "provider_http_error: Model 'fake-model': HTTP 400 from the provider (scripted error)"
    assert by_id["demo"]["health"]["calls"] == 0 and by_id["demo"]["source"] == "builtin"
