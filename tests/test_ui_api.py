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
