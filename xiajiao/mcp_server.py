"""The agents as MCP tools: ``POST /mcp`` speaks the Model Context Protocol's streamable HTTP
transport, so desktop assistants and IDEs can ask the team.

The official SDK's low-level server answers, stateless: each request is a Quart request like any
other (the caller resolved from the API key, ``requires``, rate limits, the access log) whose body
is handed to the SDK's session manager as an ASGI call, its answer streamed back. The tools a
caller sees are the agents he may talk to: ``ask_agent`` (``agent``, ``message``, ``sessionId``)
and ``ask_<agent id>`` for each. A call runs a real agent turn, as ``POST /v1/run`` does, in a
conversation of the caller shown in the web app; the answer carries its ``sessionId``.

The SDK is imported on the first request (in a worker thread: it takes a second), not at start.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import re
from typing import Any

from quart import Response, g
from werkzeug.datastructures import Headers

from .auth import authorized_channel
from .errors import Conflict, Forbidden, NotFound, XiajiaoError
from .models import Actor

log = logging.getLogger("xiajiao.mcp")

SCOPE_ACTOR = "xiajiao.actor"  # the caller, put in the ASGI scope the SDK hands to the handlers
SCOPE_ADDRESS = "xiajiao.address"
ASK_AGENT = "ask_agent"
TOOL_NAME_MAX = 64  # what every provider accepts ([A-Za-z0-9_-]{1,64}); MCP allows 128
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
SDK_MODULES = ("mcp_types", "mcp.server.lowlevel", "mcp.server.streamable_http_manager")


def tool_names(agent_ids: list[str]) -> dict[str, str]:
    """``ask_<id>`` for each agent id (tool name -> agent id), within 64 characters of letters,
    digits, ``_`` and ``-``; a name cut short, or taken, ends in a few hex digits of the id's hash."""
    names: dict[str, str] = {}
    for agent_id in agent_ids:
        name = "ask_" + _UNSAFE.sub("_", agent_id)
        if len(name) > TOOL_NAME_MAX or name in names or name == ASK_AGENT:
            tail = "_" + hashlib.sha256(agent_id.encode()).hexdigest()[:8]
            name = name[:TOOL_NAME_MAX - len(tail)] + tail
        names[name] = agent_id
    return names


class AgentsServer:
    """The MCP endpoint of one app (``core.mcp``)."""

    def __init__(self, core: Any):
        self.core = core
        self.types: Any = None  # mcp_types, once loaded
        self.manager: Any = None  # the SDK's StreamableHTTPSessionManager
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        async with self._lock:
            if self._task is None:
                await asyncio.get_running_loop().run_in_executor(None, lambda: [importlib.import_module(m)
                                                                                for m in SDK_MODULES])
                self._build()
                self._task = self.core.spawn(self._run(), name="mcp-server")
        while not self._ready.is_set():
            if self._task.done():  # it failed to start: the reason is logged by spawn
                raise XiajiaoError("The MCP server could not start", "mcp_unavailable", status=503)
            await asyncio.wait([self._task, asyncio.ensure_future(self._ready.wait())],
                               return_when=asyncio.FIRST_COMPLETED)

    def _build(self) -> None:
        import mcp_types
        from mcp.server.lowlevel import Server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        self.types = mcp_types
        server: Any = Server("xiajiao", version=self.core.version, title="Xiajiao",
                             instructions="Ask the agents of this Xiajiao team. Each call is one turn of a "
                                          "conversation; pass the sessionId of an answer to continue it.",
                             on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.manager = StreamableHTTPSessionManager(server, stateless=True,
                                                    max_request_body_size=self.core.settings.max_upload_bytes)

    async def _run(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await asyncio.Event().wait()  # until the app stops (the background task is cancelled)

    # ---------------------------------------------------------------- the HTTP side

    async def respond(self, request: Any, actor: Actor) -> Response:
        """Answer one HTTP request to ``/mcp`` through the SDK's transport."""
        await self._start()
        body = await request.get_data()
        scope = {**request.scope, "path": "/mcp", "raw_path": b"/mcp", "root_path": "",
                 SCOPE_ACTOR: actor, SCOPE_ADDRESS: g.get("client_address")}
        messages: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()
        first = True

        async def receive() -> dict:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            messages.put_nowait(message)

        call = asyncio.ensure_future(self.manager.handle_request(scope, receive, send))
        call.add_done_callback(lambda _: messages.put_nowait(None))
        start = await messages.get()
        if start is None or start["type"] != "http.response.start":
            gone.set()
            if call.done() and not call.cancelled() and call.exception() is not None:
                raise call.exception()  # an unexpected failure: the app's 500
            raise XiajiaoError("The MCP server gave no answer", "mcp_unavailable", status=503)

        async def stream():
            finished = False
            try:
                while True:
                    message = await messages.get()
                    if message is None:
                        return
                    if message["type"] == "http.response.body":
                        if message.get("body"):
                            yield message["body"]
                        if not message.get("more_body"):
                            finished = True
                            return
            finally:
                gone.set()  # the SDK sees the client leave
                if not finished:
                    call.cancel()

        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])])
        resp = Response(stream(), status=start["status"], headers=headers)
        resp.timeout = None  # a turn takes as long as it takes
        return resp

    # ---------------------------------------------------------------- who may ask whom

    async def agents_for(self, actor: Actor) -> list[dict]:
        """The agents ``actor`` may talk to: every agent for members and above (they start
        conversations); for a guest, those of the conversations he may write in."""
        agents = self.core.engine.agents
        if actor.at_least("member"):
            return list(agents.all())
        ids: list[str] = []
        for row in await self._shared_channels(actor):
            if row["agent_id"] not in ids and await self._may_write(actor, row["channel_id"]):
                ids.append(row["agent_id"])
        return [a for a in (agents.get(i) for i in ids) if a is not None]

    async def _shared_channels(self, actor: Actor, agent_id: str | None = None) -> list[dict]:
        rows = await self.core.db.fetchall(
            "SELECT c.id AS channel_id, a.member_id AS agent_id FROM channel_members m "
            "JOIN channels c ON c.id = m.channel_id "
            "JOIN channel_members a ON a.channel_id = c.id AND a.member_type = 'agent' "
            "WHERE m.member_type = 'user' AND m.member_id = ? AND m.can_write = 1 AND c.archived_at IS NULL "
            + ("AND a.member_id = ? " if agent_id else "")
            + "ORDER BY c.type = 'dm' DESC, coalesce(c.last_message_at, c.created_at) DESC",
            (actor.id, agent_id) if agent_id else (actor.id,))
        return list(rows)

    async def _may_write(self, actor: Actor, channel_id: str) -> bool:
        try:
            await authorized_channel(self.core, actor, channel_id, "channel.write")
        except (NotFound, Forbidden, Conflict):
            return False
        return True

    async def _session(self, actor: Actor, agent: dict, session_id: str | None) -> tuple[dict, dict]:
        from .api._machine import session_for

        if session_id or actor.at_least("member"):
            return await session_for(agent, session_id, source="mcp")
        for row in await self._shared_channels(actor, agent["id"]):  # a guest starts no conversation
            if await self._may_write(actor, row["channel_id"]):
                return agent, await authorized_channel(self.core, actor, row["channel_id"], "channel.write")
        raise NotFound(f"Agent {agent['id']!r} not found", "agent_not_found")

    # ---------------------------------------------------------------- the MCP handlers

    def _caller(self, ctx: Any) -> tuple[Actor, str | None]:
        scope = ctx.request.scope if ctx.request is not None else {}
        actor = scope.get(SCOPE_ACTOR)
        if actor is None:  # never: /mcp requires a login before the SDK is reached
            raise PermissionError("no caller")
        return actor, scope.get(SCOPE_ADDRESS)

    async def _list_tools(self, ctx: Any, params: Any) -> Any:
        t = self.types
        actor, _ = self._caller(ctx)
        agents = await self.agents_for(actor)
        roster = "; ".join(f"{a['id']} ({a['name']})" + (f": {a['description']}" if a.get("description") else "")
                           for a in agents)
        session = {"type": "string", "description": "The sessionId of an earlier answer, to continue that "
                                                    "conversation (optional)"}
        message = {"type": "string", "description": "What to ask or tell the agent"}
        output = {"type": "object", "properties": {
            "text": {"type": "string"}, "sessionId": {"type": "string"}, "status": {"type": "string"},
            "agent": {"type": "string"}}, "required": ["text", "sessionId"]}
        hints = t.ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                  open_world_hint=True)
        tools = [t.Tool(name=ASK_AGENT, title="Ask an agent",
                        description="Ask one of the team's agents and get its reply. Agents: " + (roster or "none"),
                        input_schema={"type": "object", "properties": {
                            "agent": {"type": "string", "description": "The agent's id or name",
                                      **({"enum": [a["id"] for a in agents]} if agents else {})},
                            "message": message, "sessionId": session}, "required": ["agent", "message"]},
                        output_schema=output, annotations=hints)]
        by_id = {a["id"]: a for a in agents}
        for name, agent_id in tool_names(list(by_id)).items():
            agent = by_id[agent_id]
            tools.append(t.Tool(
                name=name, title=f"Ask {agent['name']}",
                description=f"Ask {agent['name']} and get its reply." + (f" {agent['description']}"
                                                                         if agent.get("description") else ""),
                input_schema={"type": "object", "properties": {"message": message, "sessionId": session},
                              "required": ["message"]},
                output_schema=output, annotations=hints))
        return t.ListToolsResult(tools=tools)

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        actor, address = self._caller(ctx)
        args = params.arguments or {}
        try:
            return await self._ask(actor, address, params.name, args)
        except XiajiaoError as err:
            return self._failure(err.message, err.code or "error")

    def _failure(self, message: str, code: str, session_id: str | None = None) -> Any:
        t = self.types
        extra = f" (sessionId {session_id})" if session_id else ""
        return t.CallToolResult(content=[t.TextContent(text=f"{message} [{code}]{extra}")], is_error=True)

    async def _ask(self, actor: Actor, address: str | None, name: str, args: dict) -> Any:
        from .api.messages import check_content
        from .errors import BadRequest
        from .quart_app import current_app
        from .ratelimit import charge

        t = self.types
        quart = self.core.quart
        async with quart.app_context():  # the API's helpers read the caller from g
            g.actor, g.client_address = actor, address
            agents = await self.agents_for(actor)
            if name == ASK_AGENT:
                wanted = args.get("agent")
                if not isinstance(wanted, str) or not wanted:
                    raise BadRequest("Name the agent (agent)", "agent_required")
                agent = await current_app.xj.engine.agents.lookup(wanted)
            else:
                agent_id = tool_names([a["id"] for a in agents]).get(name)
                agent = current_app.xj.engine.agents.get(agent_id) if agent_id else None
                if agent is None:
                    raise NotFound(f"Unknown tool {name!r}", "unknown_tool")
            if agent is None or agent["id"] not in {a["id"] for a in agents}:
                raise NotFound(f"Agent {args.get('agent')!r} not found", "agent_not_found")
            text, session_id = args.get("message"), args.get("sessionId")
            if not isinstance(text, str):
                raise BadRequest("message must be a string", "invalid_message")
            if session_id is not None and not isinstance(session_id, str):
                raise BadRequest("sessionId must be a string", "invalid_session_id")
            check_content(text)
            charge("turns")
            agent, channel = await self._session(actor, agent, session_id or None)
            result = await self.core.engine.converse(agent, channel, text, actor)
        if result.error:
            return self._failure(result.error.get("error", "The turn failed"), result.error.get("code", "turn_failed"),
                                 channel["id"])
        answer = {"text": result.text, "sessionId": channel["id"], "status": result.status, "agent": agent["id"]}
        return t.CallToolResult(content=[t.TextContent(text=result.text), t.TextContent(
            text=f"(sessionId: {channel['id']}; pass it as sessionId to continue this conversation)")],
            structured_content=answer)
