"""Plugins own their settings: register_settings declares them, the core resolves and shows them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, login, make_settings, running_app
from fake_llm import Reply
from xiajiao import ChatMessage, ChatRequest, ProviderKind, Setting, env_provider_configs, env_provider_settings, \
    hookimpl
from xiajiao.app import create_app
from xiajiao.errors import PluginError, SettingsError
from xiajiao.settings import SETTINGS, load_settings


class Weather:
    """A third party's plugin with three settings of its own."""

    @hookimpl
    def register_settings(register):
        register(Setting("weather_api_key", "", "API key of the weather service.", secret=True))
        register(Setting("weather_units", "metric", "metric or imperial."))
        register("weather_days", 3, "Days of forecast.", int, env="WEATHER_DAYS")


def settings_with(tmp_path, env, **overrides):
    base = make_settings(tmp_path, **overrides)
    return load_settings(env=env, **{**base.values, **base.pending})


async def test_register_settings_declares_settings_read_from_the_environment(tmp_path):
    env = {"XIAJIAO_WEATHER_API_KEY": "wk-1234567890abcdef", "WEATHER_DAYS": "5"}
    async with running_app(settings_with(tmp_path, env, weather_units="imperial"), plugins=[Weather]) as app:
        s = app.xj.settings
        assert (s.weather_api_key, s.weather_units, s.weather_days) == ("wk-1234567890abcdef", "imperial", 5)
        assert s.owner("weather_days") == "Weather" and s.owner("port") == "core"
        assert s.public()["weather_api_key"] == "wk-…cdef"
        owner = app.test_client()
        await login(owner)
        body = await (await owner.get("/-/plugins")).get_json()
        settings = (await (await owner.get("/api/settings")).get_json())["settings"]
    [mine] = [p for p in body["plugins"] if p["name"] == "Weather"]
    assert mine["registered"] == {"settings": ["weather_api_key", "weather_days", "weather_units"]}
    assert mine["settings"] == {"XIAJIAO_WEATHER_API_KEY": "wk-…cdef", "XIAJIAO_WEATHER_UNITS": "imperial",
                                "WEATHER_DAYS": 5}
    assert settings["weather_api_key"] == "wk-…cdef" and "1234567890" not in json.dumps(body) + json.dumps(settings)


async def test_a_plugin_setting_left_unset_has_its_default(tmp_path):
    async with running_app(make_settings(tmp_path), plugins=[Weather]) as app:
        assert (app.xj.settings.weather_api_key, app.xj.settings.weather_days) == ("", 3)


def test_a_bad_value_of_a_plugin_setting_names_its_variable(tmp_path):
    with pytest.raises(SettingsError, match="WEATHER_DAYS='soon' is not a whole number; change or unset WEATHER_DAYS"):
        create_app(settings_with(tmp_path, {"WEATHER_DAYS": "soon"}), plugins=[Weather])


def test_an_override_no_plugin_declares_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting.*weather_colour"):
        create_app(make_settings(tmp_path, weather_colour="blue"), plugins=[Weather])


class TakesPort:
    @hookimpl
    def register_settings(register):
        register(Setting("port", 1, "Mine."))


class TakesUnits:
    @hookimpl
    def register_settings(register):
        register(Setting("weather_units", "kelvin", "Mine too."))


class BadName:
    @hookimpl
    def register_settings(register):
        register("Weather-Units", "", "Not a name.")


@pytest.mark.parametrize("plugins, message", [
    ([TakesPort], "invalid setting: 'port' is a setting of the core"),
    ([Weather, TakesUnits], "setting 'weather_units' is registered twice: by '(Weather|TakesUnits)' and by "
                                "'(Weather|TakesUnits)'"),
    ([BadName], "bad register.. call for a setting: setting name 'Weather-Units' must be lower-case"),
])
def test_a_setting_declared_twice_or_badly_stops_the_start_naming_the_plugin(tmp_path, plugins, message):
    with pytest.raises(PluginError, match=message):
        create_app(make_settings(tmp_path), plugins=plugins)


# ------------------------------------------------------------------ providers own their settings


class ExampleProvider:
    """A new model provider kind, configured from its own environment variables: no core file changes."""

    @hookimpl
    def register_settings(register):
        for setting in env_provider_settings("example", "an Example provider", "the vendor's"):
            register(setting)

    @hookimpl
    def register_providers(register):
        from plugins.provider_openai import OpenAIProvider  # it speaks the OpenAI protocol, under its own kind

        register(ProviderKind(name="example", factory=OpenAIProvider, description="Example",
                              env_configs=lambda app: env_provider_configs(app, "example")))


async def test_a_new_provider_is_configured_by_its_own_settings(tmp_path, fake_llm):
    env = {"XIAJIAO_EXAMPLE_BASE_URL": fake_llm.base_url, "XIAJIAO_EXAMPLE_API_KEY": "sk-example-0000001",
           "XIAJIAO_EXAMPLE_MODELS": "ex-1, ex-2"}
    fake_llm.script(Reply(text="hello from example"))
    async with running_app(settings_with(tmp_path, env), plugins=[ExampleProvider]) as app:
        owner = app.test_client()
        await login(owner)
        body = await (await owner.get("/api/settings")).get_json()
        [src] = [p for p in body["providers"] if p["id"] == "env-example"]
        assert (src["kind"], src["models"], src["apiKey"], src["source"], src["readOnly"]) == \
            ("example", ["ex-1", "ex-2"], "sk-…0001", "env", True)
        assert body["defaultModel"] == "env-example/ex-1"  # the only configured provider
        text = ""
        async for event in app.xj.engine.gateway.stream(ChatRequest(model="env-example/ex-2", messages=[
                ChatMessage(role="user", content="hi")])):
            text += getattr(event, "text", "")
    assert text == "hello from example"
    assert fake_llm.requests[-1].headers.get("authorization") == "Bearer sk-example-0000001"


def test_the_core_declares_no_provider_or_feature_setting():
    core = {s.name for s in SETTINGS}
    moved = {"openai_api_key", "openai_base_url", "openai_models", "anthropic_api_key", "anthropic_base_url",
             "anthropic_models", "demo_delay", "embedding_model", "embedding_api_key", "chunk_size", "rrf_k",
             "rerank", "rag_prompt_chars", "memory_prompt_chars", "consolidate_every", "call_agent_depth"}
    assert core & moved == set()
    for path in (ROOT / "xiajiao").rglob("*.py"):  # no provider's name in the core's code
        code = "\n".join(line.split("#")[0] for line in path.read_text(encoding="utf-8").splitlines())
        assert '"openai"' not in code and '"anthropic"' not in code and "openai_" not in code, path


# ------------------------------------------------------------------ the command line


PLUGIN_FILE = '''
from xiajiao import Setting, hookimpl

@hookimpl
def register_settings(register):
    register(Setting("weather_api_key", "", "API key of the weather service.", secret=True))
    register(Setting("weather_units", "metric", "metric or imperial."))
'''


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / "weather.py").write_text(PLUGIN_FILE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "XIAJIAO_PLUGINS_DIR": str(folder),
           "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false", "XIAJIAO_WEATHER_API_KEY": "wk-1234567890abcdef",
           "XIAJIAO_OPENAI_API_KEY": "sk-openai-987654321"}
    res = subprocess.run([sys.executable, "-m", "xiajiao.cli", *args], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1234567890" not in res.stdout and "987654321" not in res.stdout
    return res


def test_settings_command_lists_plugin_settings_under_their_plugin_masked(tmp_path):
    out = run_cli(tmp_path, "settings").stdout
    sections = {}
    for block in ("# core\n" + out).split("\n# "):
        head, _, body = block.lstrip("# ").partition("\n")
        sections[head] = body.strip().splitlines()
    assert sections["weather"] == ["weather_api_key = 'wk-…cdef'", "weather_units = 'metric'"]
    assert "openai_api_key = 'sk-…4321'" in sections["plugins.provider_openai"]
    assert "port = 18800" in sections["core"] and not any(line.startswith("openai") for line in sections["core"])
    table = run_cli(tmp_path, "settings", "--markdown").stdout
    assert "| `XIAJIAO_WEATHER_API_KEY` | `weather` | `(empty)` | API key of the weather service. |" in table


def test_plugins_command_shows_each_plugins_settings_masked(tmp_path):
    out = run_cli(tmp_path, "plugins").stdout
    block = out.split("weather  (file)\n", 1)[1].split("\n\n")[0]
    assert "    settings:\n        XIAJIAO_WEATHER_API_KEY = 'wk-…cdef'\n        XIAJIAO_WEATHER_UNITS = 'metric'" in block
    listed = {p["name"]: p for p in json.loads(run_cli(tmp_path, "plugins", "--json").stdout)}
    assert listed["plugins.provider_openai"]["settings"]["XIAJIAO_OPENAI_API_KEY"] == "sk-…4321"
