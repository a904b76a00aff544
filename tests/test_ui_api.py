"""The one route the UI needed beyond the engine's: POST /api/providers/<id>/test (the settings "test" button)."""
from __future__ import annotations

import pytest

from conftest import free_port, llm_settings, login, running_app
from fake_llm import Reply


async def test_a_provider_answers_the_connection_test(llm_app, fake_llm):
    c = llm_app.test_client()
    await login(c)
    fake_llm.script(Reply(text="ok", chunks=1))
    resp = await c.post("/api/providers/env-openai/test", json={})
    assert resp.status_code == 200
    body = await resp.get_json()
    assert isinstance(body.pop("latencyMs"), float)
    assert body == {"ok": True, "model": "env-openai/fake-model", "reply": "ok"}
    sent = fake_llm.last.json
    assert (sent["model"], sent["max_tokens"], sent["messages"]) == (
        "fake-model", 8, [{"role": "user", "content": "Reply with one word: ok"}])


async def test_an_unreachable_provider_fails_the_test_without_an_error_status(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                            provider_retries=0)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        resp = await c.post("/api/providers/env-openai/test", json={})
        assert resp.status_code == 200
        assert await resp.get_json() == {"ok": False, "model": "env-openai/fake-model",
                                         "error": "Model 'fake-model': cannot reach the provider",
                                         "code": "connection_error"}
        assert fake_llm.chat_requests() == []


@pytest.mark.parametrize("role, provider, status, code", [
    ("owner", "nope", 404, "provider_not_found"),
    ("member", "env-openai", 403, "forbidden"),
    ("guest", "env-openai", 403, "forbidden"),
    (None, "env-openai", 401, "unauthenticated"),
])
async def test_the_connection_test_is_for_admins_and_known_providers(llm_app, fake_llm, role, provider, status, code):
    from xiajiao import auth

    c = llm_app.test_client()
    if role == "owner":
        await login(c)
    elif role:
        await auth.create_user(llm_app.xj.db, username=f"u-{role}", password="password-of-user", role=role)
        await login(c, password="password-of-user", username=f"u-{role}")
    resp = await c.post(f"/api/providers/{provider}/test", json={})
    assert resp.status_code == status
    assert (await resp.get_json())["code"] == code
    assert fake_llm.chat_requests() == []


async def test_a_failed_test_does_not_open_the_breaker_for_real_traffic(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, breaker_failures=1, provider_retries=0)) as app:
        c = app.test_client()
        await login(c)
        fake_llm.script(Reply(status=500))
        body = await (await c.post("/api/providers/env-openai/test", json={})).get_json()
        assert body["ok"] is False
        status = {p["id"]: p["health"] for p in (await (await c.get("/api/providers")).get_json())["providers"]}
        assert status["env-openai"]["state"] == "closed" and status["env-openai"]["calls"] == 0
        ch = (await (await c.post("/api/channels", json={"name": "t", "type": "dm", "agentIds": ["coder"]}))
              .get_json())["id"]
        [reply] = (await (await c.post("/api/turns", json={"channelId": ch, "content": "hi"})).get_json())["replies"]
        assert (reply["status"], reply["content"]) == ("done", "Echo: hi")


async def test_the_model_list_comes_from_the_providers_models_endpoint(llm_app, fake_llm):
    c = llm_app.test_client()
    await login(c)
    body = await (await c.get("/api/providers/env-openai/models")).get_json()
    assert body == {"providerId": "env-openai", "models": sorted(fake_llm.models)}
    assert fake_llm.requests[-1].path == "/v1/models"
    body = await (await c.get("/api/providers/env-anthropic/models")).get_json()
    assert body["models"] == sorted(fake_llm.models)
    resp = await c.get("/api/providers/demo/models")
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "no_model_list")


async def test_adding_a_provider_does_not_move_the_agents_to_it(tmp_path, fake_llm):
    from conftest import make_settings

    async with running_app(make_settings(tmp_path, demo_delay=0.0)) as app:
        c = app.test_client()
        await login(c)
        assert (await (await c.get("/api/settings")).get_json())["defaultModel"] == "demo/demo"
        resp = await c.put("/api/settings", json={"providers": [
            {"id": "lab", "kind": "openai", "baseUrl": fake_llm.base_url, "apiKey": "sk-x-123456",
             "models": ["fake-model"]}]})
        assert resp.status_code == 200
        assert (await resp.get_json())["defaultModel"] == "demo/demo"  # it changes only when the owner picks
        fake_llm.script(Reply(text="ok"))
        await c.post("/api/providers/lab/test", json={})
        assert (await (await c.get("/api/settings")).get_json())["defaultModel"] == "demo/demo"
        resp = await c.put("/api/settings", json={"defaultModel": "lab/fake-model"})
        assert (await resp.get_json())["defaultModel"] == "lab/fake-model"
