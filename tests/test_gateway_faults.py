"""Gateway defects an operator hits first: a provider's 400 (the request's fault) neither counts
toward the breaker nor fails over; after a failover the stored reply names the model that answered."""
from __future__ import annotations

import pytest

from conftest import Frames, llm_settings, make_channel, running_app, user_says
from fake_llm import Reply
from test_gateway import req, run
from xiajiao import ProviderError


@pytest.fixture
async def gw_app(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, provider_retries=2, breaker_failures=2, breaker_cooldown=30)
    async with running_app(settings) as app:
        yield app


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_request_fault_does_not_open_the_breaker_or_fail_over(gw_app, fake_llm, status):
    gw = gw_app.xj.engine.gateway
    for _ in range(3):  # more than breaker_failures
        fake_llm.script(Reply(status=status, model="fake-model"), Reply(text="from claude", model="fake-claude"))
        with pytest.raises(ProviderError) as info:
            await run(gw, req(), fallback=["fake-claude"])
        assert info.value.extra["httpStatus"] == status
        fake_llm.reset()
    assert gw.breaker("env-openai").state == "closed"
    fake_llm.script(Reply(text="fine", model="fake-model"))
    assert await run(gw, req(), fallback=["fake-claude"]) == "fine"


async def test_server_errors_still_count_and_fail_over(gw_app, fake_llm):
    gw = gw_app.xj.engine.gateway
    fake_llm.script(*[Reply(status=500, model="fake-model") for _ in range(3)],
                    Reply(text="from claude", model="fake-claude"))
    assert await run(gw, req(), fallback=["fake-claude"]) == "from claude"
    assert gw.breaker("env-openai").state == "open"


async def test_after_a_failover_the_reply_names_the_model_that_answered(gw_app, fake_llm):
    app = gw_app
    gw = app.xj.engine.gateway
    gw.fallback_models = ["env-anthropic/fake-claude"]
    ch = await make_channel(app, ["coder"], type="dm")
    frames = Frames(app, ch["id"])
    fake_llm.script(*[Reply(status=503, model="fake-model") for _ in range(3)],
                    Reply(text="answered by claude", model="fake-claude"))
    await user_says(app, ch, "hello")
    end = await frames.wait_for("stream_end")
    row = await app.xj.db.fetchone("SELECT content, metadata FROM messages WHERE id = ?", (end["messageId"],))
    import json

    assert row["content"] == "answered by claude"
    assert json.loads(row["metadata"])["model"] == "env-anthropic/fake-claude"
