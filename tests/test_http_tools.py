"""HTTP tools defined as data by an admin: validated definitions, masked secrets, the call an agent
makes (URL template, query or JSON body, headers), the public-address rule, and the agent turn."""
from __future__ import annotations

import asyncio
import json

import pytest

from chat_helpers import user_client
from conftest import llm_settings, login, make_settings, running_app
from fake_llm import Call, Reply


def ctx(app):
    from types import SimpleNamespace

    return SimpleNamespace(app=app.xj)


class Echo:
    """Answers every request with what it received, as JSON."""

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader, writer):
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            length = int(headers.get("content-length", headers.get("Content-Length", "0")))
            body = (await reader.readexactly(length)).decode() if length else ""
            path, _, query = target.partition("?")
            data = json.dumps({"method": method, "path": path, "query": query, "body": body,
                               "auth": headers.get("authorization", headers.get("Authorization"))}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(data), data))
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def echo():
    async with Echo() as e:
        yield e


def weather(base, **over):
    return {"name": "get_weather", "description": "The weather in a city", "method": "GET",
            "url": base + "/cities/{city}/weather", "headers": {"Authorization": "Bearer sk-weather-123456789"},
            "secretHeaders": ["Authorization"],
            "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                             "units": {"type": "string", "enum": ["c", "f"]}},
                           "required": ["city"]}, **over}


async def test_define_call_and_mask(tmp_path, echo):
    async with running_app(make_settings(tmp_path, http_tools_allowed_hosts=f"127.0.0.1:{echo.port}")) as app:
        owner = app.test_client()
        await login(owner)
        r = await owner.post("/api/http-tools", json=weather(echo.base))
        assert r.status_code == 201, await r.get_data(as_text=True)
        shown = (await r.get_json())["tool"]
        assert shown["headers"]["Authorization"] == "****6789"
        assert "get_weather" in [t["name"] for t in (await (await owner.get("/api/tools")).get_json())["tools"]]
        tool = app.xj.tools.get("get_weather")
        out = await tool.fn({"city": "上海 Pudong", "units": "c"}, ctx(app))
        assert out["status"] == 200
        assert out["json"] == {"method": "GET", "path": "/cities/%E4%B8%8A%E6%B5%B7%20Pudong/weather",
                               "query": "units=c", "body": "", "auth": "Bearer sk-weather-123456789"}
        with pytest.raises(Exception) as err:
            await tool.fn({"units": "kelvin"}, ctx(app))
        assert getattr(err.value, "code", "") == "invalid_arguments"

        # a POST tool sends the rest as JSON; an edit that sends the masked secret back keeps it
        r = await owner.put("/api/http-tools/get_weather", json={"method": "POST", "headers": shown["headers"]})
        assert r.status_code == 200, await r.get_data(as_text=True)
        out = await app.xj.tools.get("get_weather").fn({"city": "Paris", "units": "f"}, ctx(app))
        assert (out["json"]["method"], json.loads(out["json"]["body"]), out["json"]["auth"]) == \
            ("POST", {"units": "f"}, "Bearer sk-weather-123456789")
        stored = (tmp_path / "data" / "plugins" / "http_tools.json").read_text()
        assert "sk-weather-123456789" in stored  # kept on the server …
        listed = await (await owner.get("/api/http-tools")).get_json()
        assert "sk-weather-123456789" not in json.dumps(listed)  # … never shown
        assert (await owner.delete("/api/http-tools/get_weather")).status_code == 200
        assert app.xj.tools.get("get_weather") is None
    async with running_app(make_settings(tmp_path)) as app:  # deleted stays deleted after a restart
        assert app.xj.tools.get("get_weather") is None


async def test_definitions_survive_a_restart_and_loopback_needs_the_setting(tmp_path, echo):
    async with running_app(make_settings(tmp_path)) as app:
        owner = app.test_client()
        await login(owner)
        assert (await owner.post("/api/http-tools", json=weather(echo.base))).status_code == 201
    async with running_app(make_settings(tmp_path)) as app:
        tool = app.xj.tools.get("get_weather")
        assert tool is not None
        with pytest.raises(Exception) as err:
            await tool.fn({"city": "Paris"}, ctx(app))
        assert getattr(err.value, "code", "") == "url_forbidden"


@pytest.mark.parametrize("change,code", [
    ({"name": "bad name"}, "invalid_name"),
    ({"name": "rag_query"}, "tool_exists"),
    ({"method": "TRACE"}, "invalid_method"),
    ({"url": "ftp://x/{city}"}, "invalid_url_template"),
    ({"url": "https://api.example.com/{town}"}, "invalid_url_template"),
    ({"url": "https://api.example.com/{city"}, "invalid_url_template"),
    ({"parameters": {"type": "object", "properties": {"city": {"type": "strange"}}}}, "invalid_schema"),
    ({"parameters": {"type": "array"}}, "invalid_schema"),
    ({"secretHeaders": ["X-Missing"]}, "invalid_headers"),
    ({"timeout": 999}, "invalid_timeout"),
    ({"extra": 1}, "unknown_field"),
    ({"description": ""}, "invalid_description"),
])
async def test_invalid_definitions_are_400_with_a_code(app, owner, change, code):
    body = {**weather("https://api.example.com"), **change}
    r = await owner.post("/api/http-tools", json=body)
    assert (r.status_code, (await r.get_json())["code"]) == (409 if code == "tool_exists" else 400, code)
    assert (await (await owner.get("/api/http-tools")).get_json())["tools"] == []


async def test_only_admins_define_tools(app):
    member, _ = await user_client(app, "mo")
    assert (await member.get("/api/http-tools")).status_code == 403
    assert (await member.post("/api/http-tools", json=weather("https://api.example.com"))).status_code == 403


async def test_an_agent_calls_an_http_tool_in_a_turn(tmp_path, fake_llm, echo):
    settings = llm_settings(tmp_path, fake_llm, http_tools_allowed_hosts=f"127.0.0.1:{echo.port}")
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        assert (await owner.post("/api/http-tools", json=weather(echo.base))).status_code == 201
        assert (await owner.put("/api/agents/butler", json={"tools": ["get_weather"]})).status_code == 200
        r = await owner.post("/api/channels", json={"name": "dm", "type": "dm", "agentIds": ["butler"]})
        cid = (await r.get_json())["id"]
        fake_llm.script(Reply(tool_calls=[Call("get_weather", {"city": "Hangzhou"})]), Reply(text="Sunny.", chunks=1))
        await owner.post("/api/messages", json={"channelId": cid, "content": "weather in Hangzhou?"})
        for _ in range(1000):
            if len(fake_llm.chat_requests()) >= 2:
                break
            await asyncio.sleep(0.01)
        first = fake_llm.chat_requests()[0].json
        assert "get_weather" in [t["function"]["name"] for t in first["tools"]]
        tool_msg = [m for m in fake_llm.chat_requests()[1].json["messages"] if m["role"] == "tool"][0]
        assert "/cities/Hangzhou/weather" in tool_msg["content"]
