"""The MCP client plugin: servers added at run time (stdio and streamable HTTP, written here with the
official SDK and run as real processes), their tools named for every provider and called in agent
turns driven by the fake model, secrets masked, and the failures (a bad command, a hang, a crash and
its restart, a huge or invalid answer) ending the call with a reason while the server is marked."""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
from types import SimpleNamespace

import pytest

from chat_helpers import user_client
from conftest import llm_settings, login, make_settings, owner_actor, running_app
from fake_llm import Call, Reply

TOOLS = textwrap.dedent('''
    import os, sys, time
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    srv = MCPServer("demo")

    @srv.tool(description="Add two numbers")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @srv.tool(name="greet.in-zh", description="A greeting from the environment")
    def greet(name: str) -> str:
        return os.environ.get("GREETING", "?") + ", " + name

    @srv.tool(description="The server's process id")
    def pid() -> str:
        return str(os.getpid())

    @srv.tool(description="Return a very long text")
    def huge() -> str:
        return "x" * 50000

    @srv.tool(description="Report a failure")
    def broken() -> str:
        raise ToolError("the disk is full")

    @srv.tool(description="Never answer")
    def hang() -> str:
        time.sleep(3600)
        return ""

    @srv.tool(description="Exit the process")
    def crash() -> str:
        sys.stderr.write("crashing on purpose\\n")
        sys.stderr.flush()
        os._exit(3)

    @srv.tool(description="A tool whose schema is broken")
    def odd(x: int) -> str:
        return "odd"

    srv._tool_manager.get_tool("odd").parameters = {"type": "object", "properties": {"x": {"type": "strange"}}}
''')

STDIO_MAIN = "\nsrv.run()\n"

# a server written by hand (no SDK) whose answer to a call does not follow the protocol
MALFORMED = textwrap.dedent('''
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if "id" not in msg:
        continue
    m = msg.get("method")
    if m == "initialize":
        res = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
               "serverInfo": {"name": "raw", "version": "1"}}
    elif m == "tools/list":
        res = {"tools": [{"name": "bad", "inputSchema": {"type": "object"}}]}
    elif m == "tools/call":
        res = {"content": "not a list of blocks"}
    else:
        out = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no such method"}}
        print(json.dumps(out), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": res}), flush=True)
''')

HTTP_MAIN = textwrap.dedent('''
    import socket
    import uvicorn

    app = srv.streamable_http_app(host="127.0.0.1")

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != b"Bearer tok-0123456789abcdef":
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"no"})
            return
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(guarded, log_level="warning", lifespan="on")).run(sockets=[sock])
''')


@pytest.fixture
def stdio_script(tmp_path):
    path = tmp_path / "demo_server.py"
    path.write_text(TOOLS + STDIO_MAIN, encoding="utf-8")
    return path


@pytest.fixture
async def http_server(tmp_path):
    """A streamable HTTP MCP server in its own process (it needs ``Authorization: Bearer tok-…``)."""
    path = tmp_path / "demo_http.py"
    path.write_text(TOOLS + HTTP_MAIN, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(sys.executable, str(path), stdout=asyncio.subprocess.PIPE)
    try:
        port = int((await asyncio.wait_for(proc.stdout.readline(), 60)).decode())
        yield f"http://127.0.0.1:{port}/mcp", port
    finally:
        proc.kill()
        await proc.wait()


def stdio(script, **over):
    return {"id": "local", "name": "Local demo", "transport": "stdio", "command": sys.executable,
            "args": [str(script)], "env": {"GREETING": "你好", "API_TOKEN": "secret-token-123456"}, **over}


async def refreshed(owner, sid="local", **body):
    r = await owner.post(f"/api/mcp/servers/{sid}/refresh", json=body)
    assert r.status_code == 200, await r.get_data(as_text=True)
    return (await r.get_json())["server"]


async def add_server(owner, body):
    r = await owner.post("/api/mcp/servers", json=body)
    assert r.status_code == 201, await r.get_data(as_text=True)
    return await refreshed(owner, body["id"])


async def turn(app, fake_llm, agent_id, *replies, text="go"):
    """One agent turn (its tools, the fake model scripted with ``replies``); the tool messages the model got."""
    from xiajiao import ask_agent, get_agent

    start = len(fake_llm.chat_requests())
    fake_llm.script(*replies)
    answer = await ask_agent(app.xj, get_agent(app.xj, agent_id), text, actor=await owner_actor(app))
    requests = fake_llm.chat_requests()[start:]
    tool_msgs = [m["content"] for r in requests[1:2] for m in r.json["messages"] if m["role"] == "tool"]
    return answer, requests, tool_msgs


async def test_a_stdio_server_is_added_listed_and_called_in_a_turn(tmp_path, fake_llm, stdio_script):
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        owner = app.test_client()
        await login(owner)
        server = await add_server(owner, stdio(stdio_script))
        assert server["status"] == "ready", server
        tools = {t["name"]: t for t in server["tools"]}
        assert tools["add"]["exposedName"] == "mcp_local_add"
        assert tools["greet.in-zh"]["exposedName"] == "mcp_local_greet_in-zh"  # only [A-Za-z0-9_-]
        assert tools["add"]["inputSchema"]["properties"].keys() == {"a", "b"}
        assert "exposedName" in tools["odd"] and tools["odd"]["exposedName"] is None
        assert "strange" in tools["odd"]["skipped"] or "invalid" in tools["odd"]["skipped"]
        # secrets stay on the server
        assert server["env"] == {"GREETING": "****", "API_TOKEN": "****3456"}
        stored = (tmp_path / "data" / "plugins" / "mcp_servers.json").read_text(encoding="utf-8")
        assert "secret-token-123456" in stored and "你好" in stored
        listed = await (await owner.get("/api/mcp/servers")).get_json()
        assert "secret-token-123456" not in json.dumps(listed, ensure_ascii=False)
        names = [t["name"] for t in (await (await owner.get("/api/tools")).get_json())["tools"]]
        assert {"mcp_local_add", "mcp_local_greet_in-zh", "mcp_local_huge"} <= set(names)
        assert "mcp_local_odd" not in names

        # enabled per agent through its allow-list; the model sees the schema as the server gave it
        r = await owner.put("/api/agents/butler", json={"tools": ["mcp_local_add", "mcp_local_greet_in-zh",
                                                                  "mcp_local_huge", "mcp_local_broken"]})
        assert r.status_code == 200, await r.get_data(as_text=True)
        answer, requests, tool_msgs = await turn(
            app, fake_llm, "butler",
            Reply(tool_calls=[Call("mcp_local_add", {"a": 2, "b": 40}), Call("mcp_local_greet_in-zh", {"name": "小明"})]),
            Reply(text="42, and a greeting."))
        offered = {t["function"]["name"]: t["function"] for t in requests[0].json["tools"]}
        assert offered["mcp_local_add"]["parameters"] == tools["add"]["inputSchema"]
        assert tool_msgs == ["42", "你好, 小明"]
        assert answer == "42, and a greeting."

        # a huge answer is cut with a note; a tool error ends the call with its text
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_local_huge"), Call("mcp_local_broken")]),
                                           Reply(text="done"))
        assert tool_msgs[0].startswith("x" * 100) and "output truncated" in tool_msgs[0] and "50,000" in tool_msgs[0]
        assert len(tool_msgs[0]) < 16_200
        assert tool_msgs[1].startswith("Error: the tool reported an error") and "the disk is full" in tool_msgs[1]
        assert (await (await owner.get("/api/mcp/servers/local")).get_json())["server"]["status"] == "ready"
        pid = int(await app.xj.tools.get("mcp_local_pid").fn({}, SimpleNamespace(app=app.xj)))
        os.kill(pid, 0)  # running …
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # … and stopped with the app
    # the listing is kept: after a restart the tools exist before the server is started
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        assert app.xj.tools.get("mcp_local_add") is not None
        owner = app.test_client()
        await login(owner)
        assert (await (await owner.get("/api/mcp/servers/local")).get_json())["server"]["status"] == "stopped"
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_local_add", {"a": 1, "b": 1})]), Reply(text="2"))
        assert tool_msgs == ["2"]  # started lazily by the call
        assert (await (await owner.get("/api/mcp/servers/local")).get_json())["server"]["status"] == "ready"


async def test_a_streamable_http_server_with_a_secret_header(tmp_path, fake_llm, http_server):
    url, port = http_server
    settings = llm_settings(tmp_path, fake_llm, mcp_allowed_hosts=f"127.0.0.1:{port}")
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        body = {"id": "remote", "transport": "http", "url": url,
                "headers": {"Authorization": "Bearer tok-0123456789abcdef"}, "approval": ["crash"]}
        server = await add_server(owner, body)
        assert server["status"] == "ready", server
        assert server["headers"] == {"Authorization": "****cdef"}
        tools = {t["name"]: t for t in server["tools"]}
        assert tools["crash"]["approval"] is True and tools["add"]["approval"] is False
        assert app.xj.tools.get("mcp_remote_crash").approval is True
        assert app.xj.tools.get("mcp_remote_add").approval is False
        await owner.put("/api/agents/butler", json={"tools": ["mcp_remote_add"]})
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_remote_add", {"a": 20, "b": 3})]), Reply(text="23"))
        assert tool_msgs == ["23"]

        # the masked header sent back keeps its value; marking every tool for approval
        r = await owner.put("/api/mcp/servers/remote", json={"headers": server["headers"], "approval": "*"})
        assert r.status_code == 200, await r.get_data(as_text=True)
        assert app.xj.tools.get("mcp_remote_add").approval is True
        server = await refreshed(owner, "remote", restart=True)
        assert server["status"] == "ready", server

        # a wrong header: the start fails with the reason, the call ends with it
        # (only "crash" asks first again: a direct ask has no one to ask, so a marked tool is refused there)
        r = await owner.put("/api/mcp/servers/remote", json={"headers": {"Authorization": "Bearer wrong"},
                                                             "approval": ["crash"]})
        assert r.status_code == 200
        server = await refreshed(owner, "remote")
        assert server["status"] == "unhealthy" and server["lastError"]
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_remote_add", {"a": 1, "b": 1})]), Reply(text="no"))
        assert tool_msgs[0].startswith("Error: MCP server 'remote'"), tool_msgs  # the listing is kept, the call fails


async def test_an_http_server_on_a_private_address_needs_the_setting(tmp_path, http_server):
    url, _port = http_server
    async with running_app(make_settings(tmp_path)) as app:
        owner = app.test_client()
        await login(owner)
        r = await owner.post("/api/mcp/servers", json={"id": "remote", "transport": "http", "url": url})
        assert (r.status_code, (await r.get_json())["code"]) == (400, "url_forbidden")


async def test_a_bad_command_marks_the_server_unhealthy(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, mcp_restart_backoff=0.0)) as app:
        owner = app.test_client()
        await login(owner)
        r = await owner.post("/api/mcp/servers", json={"id": "nope", "transport": "stdio",
                                                       "command": str(tmp_path / "no-such-program")})
        assert r.status_code == 201
        server = await refreshed(owner, "nope")
        assert server["status"] == "unhealthy"
        assert "not found" in server["lastError"] or "No such file" in server["lastError"], server["lastError"]
        assert server["tools"] == []


async def test_a_hang_a_crash_and_the_restart(tmp_path, fake_llm, stdio_script):
    settings = llm_settings(tmp_path, fake_llm, mcp_restart_backoff=0.0, mcp_call_timeout=1.0)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        await add_server(owner, stdio(stdio_script))
        await owner.put("/api/agents/butler", json={"tools": ["mcp_local_hang", "mcp_local_crash", "mcp_local_add"]})

        # a call that never answers ends with a timeout inside the turn; the others go on
        answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_local_hang"), Call("mcp_local_add", {"a": 1, "b": 2})]),
                                           Reply(text="one timed out"))
        assert tool_msgs[0] == "Error: MCP server 'local' did not answer within 1 s"
        assert tool_msgs[1] == "3"
        assert answer == "one timed out"

        # the process exits mid-call: the call ends with the reason, the server is unhealthy, then restarted
        conn = app.xj.state["mcp_client"].conns["local"]
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler", Reply(tool_calls=[Call("mcp_local_crash")]),
                                           Reply(text="it crashed"))
        assert tool_msgs[0].startswith("Error: MCP server 'local' closed the connection"), tool_msgs
        server = (await (await owner.get("/api/mcp/servers/local")).get_json())["server"]
        assert server["status"] in ("unhealthy", "starting", "ready")
        if server["status"] == "unhealthy":
            assert "closed the connection" in server["lastError"], server["lastError"]
        _answer, _r, tool_msgs = await turn(app, fake_llm, "butler",
                                           Reply(tool_calls=[Call("mcp_local_add", {"a": 5, "b": 5})]), Reply(text="10"))
        assert tool_msgs == ["10"]
        assert conn.status == "ready"
    assert conn.client is None  # stopped at shutdown


async def test_a_malformed_answer_ends_the_call_and_marks_the_server(tmp_path, fake_llm):
    script = tmp_path / "raw_server.py"
    script.write_text(MALFORMED, encoding="utf-8")
    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        owner = app.test_client()
        await login(owner)
        await add_server(owner, {"id": "raw", "transport": "stdio", "command": sys.executable, "args": [str(script)]})
        await owner.put("/api/agents/butler", json={"tools": ["mcp_raw_bad"]})
        answer, _r, tool_msgs = await turn(app, fake_llm, "butler", Reply(tool_calls=[Call("mcp_raw_bad")]),
                                           Reply(text="it failed"))
        assert tool_msgs == ["Error: MCP server 'raw' sent a malformed answer: content: Input should be a valid list"]
        assert answer == "it failed"
        server = (await (await owner.get("/api/mcp/servers/raw")).get_json())["server"]
        assert server["status"] == "unhealthy" and "malformed" in server["lastError"]


async def test_a_server_that_never_starts_times_out(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, mcp_start_timeout=1.0, mcp_restart_backoff=0.0)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        r = await owner.post("/api/mcp/servers", json={"id": "mute", "transport": "stdio", "command": sys.executable,
                                                       "args": ["-c", "import time; time.sleep(3600)"]})
        assert r.status_code == 201
        server = await refreshed(owner, "mute")
        assert (server["status"], server["lastError"]) == ("unhealthy", "the server did not start within 1 s")


@pytest.mark.parametrize("change,code", [
    ({"id": "Bad Id"}, "invalid_id"),
    ({"transport": "sse"}, "invalid_transport"),
    ({"command": ""}, "invalid_command"),
    ({"args": "not a list"}, "invalid_args"),
    ({"env": {"BAD NAME": "x"}}, "invalid_env"),
    ({"env": {"A": 1}}, "invalid_env"),
    ({"approval": [1]}, "invalid_approval"),
    ({"timeout": 0}, "invalid_timeout"),
    ({"extra": 1}, "unknown_field"),
    ({"transport": "http", "url": "ftp://x"}, "invalid_url"),
    ({"transport": "http", "url": "https://example.com/mcp", "headers": {"X": "a\nb"}}, "invalid_headers"),
])
async def test_invalid_definitions_are_400_with_a_code(app, owner, change, code):
    body = {**stdio("server.py"), **change}
    r = await owner.post("/api/mcp/servers", json=body)
    assert (r.status_code, (await r.get_json())["code"]) == (400, code)
    assert (await (await owner.get("/api/mcp/servers")).get_json())["servers"] == []


async def test_who_may_manage_servers(app, owner):
    admin, _ = await user_client(app, "ada", "admin")
    member, _ = await user_client(app, "mo")
    assert (await member.get("/api/mcp/servers")).status_code == 403
    assert (await member.post("/api/mcp/servers", json=stdio("s.py"))).status_code == 403
    r = await admin.post("/api/mcp/servers", json=stdio("s.py"))
    assert (r.status_code, (await r.get_json())["code"]) == (403, "owner_only")  # a stdio server runs a program
    r = await owner.post("/api/mcp/servers", json=stdio("s.py", enabled=False))
    assert r.status_code == 201
    assert (await owner.post("/api/mcp/servers", json=stdio("s.py"))).status_code == 409
    assert (await admin.get("/api/mcp/servers")).status_code == 200
    assert (await admin.delete("/api/mcp/servers/local")).status_code == 403
    assert (await owner.get("/api/mcp/servers/nope")).status_code == 404
    assert (await owner.delete("/api/mcp/servers/local")).status_code == 200
    assert (await owner.get("/api/mcp/servers/local")).status_code == 404


def test_exposed_names_fit_every_provider():
    from plugins.mcp_client.client import exposed_names

    names = exposed_names("srv", ["read file", "x" * 80, "read_file", "日本語", "web"], taken=lambda n: n == "mcp_srv_web")
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names)
    assert len(names) == 5
    assert names["mcp_srv_read_file"] == "read file"
    assert names["mcp_srv____"] == "日本語"
    by_tool = {tool: n for n, tool in names.items()}
    for tool in ("read_file", "web", "x" * 80):  # taken, or too long: a hash of the tool ends the name
        assert re.fullmatch(r".+_[0-9a-f]{8}", by_tool[tool]) and len(by_tool[tool]) <= 64
    assert by_tool["web"].startswith("mcp_srv_web_") and len(by_tool["x" * 80]) == 64


async def test_a_tool_marked_for_approval_waits_in_the_chat_until_a_person_approves(tmp_path, fake_llm, stdio_script):
    from conftest import Frames, make_channel

    async with running_app(llm_settings(tmp_path, fake_llm)) as app:
        owner = app.test_client()
        await login(owner)
        server = await add_server(owner, stdio(stdio_script, approval=["pid"]))
        assert {t["name"]: t["approval"] for t in server["tools"]}["pid"] is True
        await owner.put("/api/agents/butler", json={"tools": ["mcp_local_pid", "mcp_local_add"]})
        room = await make_channel(app, ["butler"], default_agent_id="butler")
        frames = Frames(app, room["id"])
        fake_llm.script(Reply(tool_calls=[Call("mcp_local_pid", {}, id="c1")]), Reply(text="done"))
        r = await owner.post("/api/messages", json={"channelId": room["id"], "content": "which process?"})
        assert r.status_code == 200
        approval = await frames.wait_for("tool_approval", lambda d: d["status"] == "pending")
        assert (approval["toolName"], approval["arguments"]) == ("mcp_local_pid", {})
        assert len(fake_llm.chat_requests()) == 1  # the call waits; nothing was sent back yet
        r = await owner.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        assert r.status_code == 200
        assert (await frames.wait_for("stream_end"))["status"] == "done"
        tool_msgs = [m["content"] for m in fake_llm.chat_requests()[-1].json["messages"] if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and tool_msgs[0].isdigit() and int(tool_msgs[0]) != os.getpid()
