"""GET/PUT /api/settings: providers with write-only keys, default and fallback models, per-agent models."""
from __future__ import annotations

import logging

import pytest

from conftest import Frames, llm_settings, login, make_channel, running_app, user_says


@pytest.fixture
async def admin(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, default_model="")) as app:
        c = app.test_client()
        await login(c)
        c.app_ = app
        yield c


PROVIDER = {"id": "deepseek", "kind": "openai", "baseUrl": "", "apiKey": "sk-deepseek-secret-0001",
            "models": ["deepseek-chat"], "contextWindow": 64000}


async def test_get_shows_env_and_builtin_providers_with_masked_keys(admin, fake_llm):
    body = await (await admin.get("/api/settings")).get_json()
    assert body["providers"] == [
        {"id": "env-openai", "kind": "openai", "baseUrl": fake_llm.base_url, "apiKey": "sk-…3456",
         "models": ["fake-model", "fake-model-2"], "contextWindow": 32000, "options": {}, "source": "env",
         "readOnly": True},
        {"id": "env-anthropic", "kind": "anthropic", "baseUrl": fake_llm.anthropic_base_url, "apiKey": "sk-…3456",
         "models": ["fake-claude"], "contextWindow": 32000, "options": {}, "source": "env", "readOnly": True},
        {"id": "demo", "kind": "demo", "baseUrl": "", "apiKey": "", "models": ["demo"], "contextWindow": 8000,
         "options": {"delay": 0.0}, "source": "builtin", "readOnly": True}]
    assert body["defaultModel"] == "env-openai/fake-model"  # the first configured model
    assert body["models"] == ["env-openai/fake-model", "env-openai/fake-model-2", "env-anthropic/fake-claude",
                              "demo/demo"]
    assert body["agentModels"] == {"butler": "", "novelist": "", "editor": "", "translator": "", "coder": ""}
    assert body["settings"]["openai_api_key"] == "sk-…3456"
    assert "sk-test-key-123456" not in str(body)


async def test_put_providers_keeps_keys_write_only(admin, caplog):
    app = admin.app_
    with caplog.at_level(logging.DEBUG):
        resp = await admin.put("/api/settings", json={"providers": [PROVIDER], "defaultModel": "deepseek/deepseek-chat",
                                                      "fallbackModels": ["fake-claude"],
                                                      "agentModels": {"coder": "deepseek-chat"}})
    assert resp.status_code == 200, await resp.get_data()
    body = await resp.get_json()
    assert body["providers"][0] == {**PROVIDER, "apiKey": "sk-…0001", "options": {}, "source": "settings",
                                    "readOnly": False}
    assert (body["defaultModel"], body["fallbackModels"], body["agentModels"]["coder"]) == \
        ("deepseek/deepseek-chat", ["fake-claude"], "deepseek-chat")
    stored = await app.xj.db.fetchval("SELECT value FROM settings WHERE key = 'providers'")
    assert "sk-deepseek-secret-0001" in stored
    assert all("sk-deepseek-secret-0001" not in r.getMessage() for r in caplog.records)
    # sending the masked key back (or none) keeps the stored key; a new key replaces it
    for key, expected in [("sk-…0001", "sk-deepseek-secret-0001"), (None, "sk-deepseek-secret-0001"),
                          ("sk-new-key-99999999", "sk-new-key-99999999")]:
        item = {**PROVIDER, "models": ["deepseek-chat", "deepseek-reasoner"]}
        if key is None:
            item.pop("apiKey")
        else:
            item["apiKey"] = key
        assert (await admin.put("/api/settings", json={"providers": [item]})).status_code == 200
        assert app.xj.engine.gateway.config("deepseek").api_key == expected
    assert app.xj.engine.gateway.resolve("deepseek-reasoner")[0].id == "deepseek"


@pytest.mark.parametrize("body,code", [
    ({"providers": [{**PROVIDER, "kind": "martian"}]}, "unknown_provider"),
    ({"providers": [{**PROVIDER, "id": "Bad Id"}]}, "invalid_provider_id"),
    ({"providers": [{**PROVIDER, "baseUrl": "ftp://x"}]}, "invalid_base_url"),
    ({"providers": [PROVIDER, PROVIDER]}, "duplicate_provider"),
    ({"providers": [{**PROVIDER, "id": "demo"}]}, "duplicate_provider"),
    ({"defaultModel": "gpt-404"}, "unknown_model"),
    ({"fallbackModels": ["nope/x"]}, "unknown_model"),
    ({"agentModels": {"coder": "gpt-404"}}, "unknown_model"),
    ({"providers": [PROVIDER], "defaultModel": "deepseek/other"}, "unknown_model"),
    ({"providers": "x"}, "validation_error"),
])
async def test_bad_settings_are_refused_and_nothing_is_stored(admin, body, code):
    app = admin.app_
    before = await app.xj.db.fetchall("SELECT * FROM settings ORDER BY key")
    resp = await admin.put("/api/settings", json=body)
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, code)
    assert await app.xj.db.fetchall("SELECT * FROM settings ORDER BY key") == before
    assert [s.source for s in app.xj.engine.gateway.sources] == ["env", "env", "builtin"]


async def test_unknown_agent_in_agent_models_is_404(admin):
    resp = await admin.put("/api/settings", json={"agentModels": {"ghost": "demo"}})
    assert (resp.status_code, (await resp.get_json())["code"]) == (404, "agent_not_found")


async def test_guests_may_read_but_not_change_settings(admin):
    from conftest import owner_actor
    from xiajiao import auth

    app = admin.app_
    _, token = await auth.create_invite(app.xj.db, created_by=await owner_actor(app), role="guest")
    await auth.accept_invite(app.xj.db, token, username="gus", password="guest-password-1")
    guest = app.test_client()
    await login(guest, "guest-password-1", "gus")
    seen = await (await guest.get("/api/settings")).get_json()
    assert set(seen) == {"defaultModel", "models"}  # no providers, keys or server settings
    full = await (await admin.get("/api/settings")).get_json()
    assert seen == {"defaultModel": full["defaultModel"], "models": full["models"]}
    resp = await guest.put("/api/settings", json={"defaultModel": "demo"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "forbidden")


async def test_a_configured_provider_and_agent_model_are_used_by_turns(admin, fake_llm):
    app = admin.app_
    item = {**PROVIDER, "baseUrl": fake_llm.base_url, "models": ["ds-chat"]}
    assert (await admin.put("/api/settings", json={"providers": [item], "agentModels": {"coder": "ds-chat"}})
            ).status_code == 200
    ch = await make_channel(app, ["coder"], type="dm")
    frames = Frames(app, ch["id"])
    await user_says(app, ch, "hi")
    await frames.wait_for("stream_end")
    assert fake_llm.last.json["model"] == "ds-chat"
    assert fake_llm.last.headers["authorization"] == "Bearer sk-deepseek-secret-0001"
