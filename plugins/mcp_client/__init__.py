"""MCP client: the owner adds Model Context Protocol servers at run time — stdio (a command with
arguments and environment) or streamable HTTP (a URL with headers) — and their tools become tools
agents may be given, named ``mcp_<server>_<tool>``.

- Definitions live in ``data/plugins/mcp_servers.json`` with the last listing of each server's
  tools, so the tools exist at start without starting any server; a server starts on first use
  (see ``client.py`` for its life: status, timeouts, restarts with backoff, stop at shutdown).
- A tool's input schema is passed to the model as the server gives it; a tool whose schema is not
  a valid JSON schema of type object is left out, with the reason shown in the server's tool list.
- Tools named in a server's ``approval`` list (``"*"``: all) are marked ``Tool.approval``: their
  calls wait for a person's approval.
- Results: text parts joined, other parts described; more than ``mcp_max_result_chars`` characters
  are cut with a note; a result the server flags as an error ends the call with its text.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from quart import Blueprint, current_app, g, jsonify, request

from xiajiao import (BadRequest, Conflict, Forbidden, Setting, Tool, check_public_url, hookimpl, parse_allowed_hosts,
                     requires)

from . import store
from .client import Connection, McpFailure, describe_error, exposed_names

log = logging.getLogger("xiajiao.mcp_client")
bp = Blueprint("mcp_client", __name__)
PLUGIN = "mcp_client"
STATE = "mcp_client"


@hookimpl
def register_settings(register):
    register(Setting("mcp_start_timeout", 30.0, "Seconds an MCP server may take to start and list its tools.", float))
    register(Setting("mcp_call_timeout", 60.0, "Seconds a call of an MCP server's tool may take (a server's own "
                     "timeout overrides it).", float))
    register(Setting("mcp_restart_backoff", 1.0, "Seconds before an MCP server that failed is started again; "
                     "doubles with each failure in a row, up to a minute.", float))
    register(Setting("mcp_max_result_chars", 16_000, "Characters of an MCP tool's result given to the model (a turn takes 20,000 at most); "
                     "the rest is cut with a note.", int))
    register(Setting("mcp_allowed_hosts", "", "Comma-separated hosts (or host:port) streamable HTTP MCP servers "
                     "may be on even though they resolve to loopback or private addresses."))


# ------------------------------------------------------------------ state


class Servers:
    """Every defined server's connection and the tools it registered (``app.state['mcp_client']``)."""

    def __init__(self, app: Any):
        self.app = app
        self.conns: dict[str, Connection] = {}
        self.tools: dict[str, dict[str, str]] = {}  # server id -> exposed name -> tool name
        self.skipped: dict[str, dict[str, str]] = {}  # server id -> tool name -> why it is left out

    def conn(self, d: dict) -> Connection:
        c = self.conns.get(d["id"])
        if c is None:
            c = self.conns[d["id"]] = Connection(self.app, d)
        c.d = d
        return c

    def register(self, d: dict) -> None:
        """(Re)register the tools of ``d``'s last listing; those of a disabled server are removed."""
        self.unregister(d["id"])
        if not d.get("enabled", True):
            return
        listing = {t["name"]: t for t in d.get("tools", []) if isinstance(t, dict) and isinstance(t.get("name"), str)}
        names = exposed_names(d["id"], list(listing), taken=lambda n: n in self.app.tools)
        mine, skipped = {}, {}
        for exposed, name in names.items():
            reason = schema_problem(listing[name].get("inputSchema"))
            if reason:
                skipped[name] = reason
                continue
            self.app.tools.add(make_tool(d, exposed, listing[name], self.timeout()), PLUGIN)
            mine[exposed] = name
        self.tools[d["id"]], self.skipped[d["id"]] = mine, skipped

    def timeout(self) -> float:
        # the engine's limit on the call: beyond ours, so that ours (with its clearer reason) ends it first
        st = self.app.settings
        return st.mcp_start_timeout + max([st.mcp_call_timeout] + [c.d.get("timeout") or 0 for c in self.conns.values()]) + 5

    def unregister(self, server_id: str) -> None:
        for exposed in self.tools.pop(server_id, {}):
            self.app.tools.remove(exposed)
        self.skipped.pop(server_id, None)

    async def forget(self, server_id: str) -> None:
        self.unregister(server_id)
        c = self.conns.pop(server_id, None)
        if c is not None:
            await c.stop()

    def describe(self, d: dict) -> dict:
        c = self.conns.get(d["id"])
        exposed = {name: ex for ex, name in self.tools.get(d["id"], {}).items()}
        skipped = self.skipped.get(d["id"], {})
        tools = []
        for t in d.get("tools", []):
            name = t.get("name")
            row = {"name": name, "description": t.get("description") or "", "inputSchema": t.get("inputSchema"),
                   "exposedName": exposed.get(name), "approval": needs_approval(d, name)}
            if name in skipped:
                row["skipped"] = skipped[name]
            tools.append(row)
        live = c.describe() if c else {"status": "stopped", "lastError": None, "restarts": 0, "retryIn": 0.0}
        if not d.get("enabled", True):
            live["status"] = "disabled"
        return {**store.public(d), **live, "tools": tools}


def servers(app: Any) -> Servers:
    s = app.state.get(STATE)
    if s is None:
        s = app.state[STATE] = Servers(app)
    return s


def needs_approval(d: dict, tool: str) -> bool:
    return "*" in d.get("approval", []) or tool in d.get("approval", [])


def schema_problem(schema: Any) -> str | None:
    """Why an MCP tool's input schema cannot be handed to a model (None: it can)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        return "its input schema is not a JSON object"
    if schema.get("type") != "object":
        return "its input schema is not of type object"
    if not isinstance(schema.get("properties", {}), dict):
        return "its input schema's properties is not an object"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"its input schema is invalid: {exc.message}"
    return None


def make_tool(d: dict, exposed: str, spec: dict, timeout: float) -> Tool:
    server_id, name = d["id"], spec["name"]
    annotations = spec.get("annotations") or {}
    read_only = annotations.get("readOnlyHint") is True

    async def run(args: dict, ctx) -> str:
        app = ctx.app
        definition = store.load(app).get(server_id)
        if definition is None or not definition.get("enabled", True):
            raise McpFailure(f"MCP server {server_id!r} is no longer available")
        conn = servers(app).conn(definition)
        result = await conn.call(name, args)
        return result_text(app, result)

    description = (spec.get("description") or spec.get("title") or name).strip()
    return Tool(name=exposed, description=f"{description[:4000]} (MCP server {d['name']})", parameters=spec["inputSchema"],
                fn=run, read_only=read_only, mutating=not read_only, min_role="member",
                timeout=timeout, approval=needs_approval(d, name))


def result_text(app: Any, result: Any) -> str:
    """The text of a CallToolResult for the model; McpFailure when the server flags an error."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes, not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}{' — ' + block.name if getattr(block, 'name', '') else ''}]")
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {res.uri}, binary, not shown]")
        else:
            parts.append(f"[{kind or 'unknown'} content, not shown]")
    structured = getattr(result, "structured_content", None)
    if structured is not None and not parts:
        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if getattr(result, "is_error", False):
        raise McpFailure(f"the tool reported an error: {truncate(app, text) or 'no details'}", "mcp_tool_error")
    return truncate(app, text)


def truncate(app: Any, text: str) -> str:
    limit = max(100, app.settings.mcp_max_result_chars)
    if len(text) <= limit:
        return text
    return (text[:limit] + f"\n[… output truncated: the tool returned {len(text):,} characters, the first "
            f"{limit:,} are shown]")


async def list_tools_now(app: Any, d: dict, *, restart: bool = False) -> None:
    """Start ``d``'s server if needed, list its tools, keep the listing and register the tools."""
    conn = servers(app).conn(d)
    if restart:
        await conn.restart()
    listing = await conn.refresh()
    tools = [{"name": t.name, "title": getattr(t, "title", None), "description": t.description or "",
              "inputSchema": t.input_schema,
              "annotations": t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else None}
             for t in listing]
    defs = store.load(app)
    if d["id"] not in defs:  # deleted meanwhile
        return
    defs[d["id"]]["tools"] = tools
    store.save(app, defs)
    d["tools"] = tools
    servers(app).register(defs[d["id"]])


async def _discover(app: Any, d: dict) -> None:
    try:
        await list_tools_now(app, d)
    except McpFailure:
        pass  # recorded on the server (unhealthy, with the reason)
    except Exception as exc:  # a refused URL or a bug must show on the server, not vanish in a background task
        servers(app).conn(d).fail(describe_error(exc))


# ------------------------------------------------------------------ hooks


@hookimpl
def startup(app):
    s = servers(app)
    for d in store.load(app).values():
        s.conn(d)
        try:
            s.register(d)
        except Exception as exc:  # one bad stored listing must not stop the start
            log.warning("MCP server %s: its tools were not registered: %s", d["id"], exc)


@hookimpl
async def shutdown(app):
    s = app.state.get(STATE)
    if s is not None:
        await asyncio.gather(*(c.stop() for c in s.conns.values()), return_exceptions=True)


@hookimpl
def register_routes(register):
    register(bp)


# ------------------------------------------------------------------ routes


def _owner_for_stdio(d: dict) -> None:
    # a stdio server is a program run on this machine: only the owner may say which
    if d["transport"] == "stdio" and g.actor.role != "owner":
        raise Forbidden("Only the owner may add or change a stdio MCP server (it runs a program on the server)",
                        "owner_only")


async def _check_url(app: Any, d: dict) -> None:
    if d["transport"] == "http" and d["enabled"]:  # a disabled server is not contacted; enabling it checks
        await check_public_url(d["url"], parse_allowed_hosts(app.settings.mcp_allowed_hosts), kind="url",
                               setting="XIAJIAO_MCP_ALLOWED_HOSTS")


async def _body() -> Any:
    body = await request.get_json(silent=True)
    if body is None:
        raise BadRequest("Send the server as a JSON object", "invalid_json")
    return body


@bp.get("/api/mcp/servers")
@requires("admin")
async def list_servers():
    app = current_app.xj
    s = servers(app)
    return jsonify({"servers": [s.describe(d) for d in store.load(app).values()]})


@bp.post("/api/mcp/servers")
@requires("admin")
async def create_server():
    app = current_app.xj
    d = store.check(await _body())
    _owner_for_stdio(d)
    await _check_url(app, d)
    defs = store.load(app)
    if d["id"] in defs:
        raise Conflict(f"An MCP server with id {d['id']!r} exists already", "mcp_server_exists")
    defs[d["id"]] = d
    store.save(app, defs)
    if d["enabled"]:
        app.spawn(_discover(app, d), name=f"mcp-discover:{d['id']}")  # starts it and lists its tools
    return jsonify({"server": servers(app).describe(d)}), 201


@bp.get("/api/mcp/servers/<server_id>")
@requires("admin")
async def get_server(server_id: str):
    app = current_app.xj
    _defs, d = store.stored(app, server_id)
    return jsonify({"server": servers(app).describe(d)})


@bp.put("/api/mcp/servers/<server_id>")
@requires("admin")
async def update_server(server_id: str):
    app = current_app.xj
    defs, old = store.stored(app, server_id)
    d = store.check(await _body(), old)
    _owner_for_stdio(old)
    _owner_for_stdio(d)
    await _check_url(app, d)
    defs[server_id] = d
    store.save(app, defs)
    s = servers(app)
    moved = not store._same_target(d, old) or d["env"] != old["env"] or d["headers"] != old["headers"]
    if (moved or not d["enabled"]) and server_id in s.conns:
        await s.conns[server_id].stop()
    s.conn(d)
    s.register(d)
    if d["enabled"] and moved:
        app.spawn(_discover(app, d), name=f"mcp-discover:{d['id']}")
    return jsonify({"server": s.describe(d)})


@bp.delete("/api/mcp/servers/<server_id>")
@requires("admin")
async def delete_server(server_id: str):
    app = current_app.xj
    defs, d = store.stored(app, server_id)
    _owner_for_stdio(d)
    del defs[server_id]
    store.save(app, defs)
    await servers(app).forget(server_id)
    return jsonify({"ok": True, "deleted": server_id})


@bp.post("/api/mcp/servers/<server_id>/refresh")
@requires("admin")
async def refresh_server(server_id: str):
    """Start the server (again, when ``{"restart": true}`` or when it is unhealthy) and list its tools now."""
    app = current_app.xj
    _defs, d = store.stored(app, server_id)
    if not d["enabled"]:
        raise Conflict("The server is disabled", "mcp_server_disabled")
    body = await request.get_json(silent=True) or {}
    conn = servers(app).conn(d)
    restart = bool(body.get("restart")) if isinstance(body, dict) else False
    try:
        await list_tools_now(app, d, restart=restart or conn.status == "unhealthy")
    except McpFailure:
        pass  # the reason is in the server's lastError, shown below
    return jsonify({"server": servers(app).describe(store.load(app).get(server_id, d))})
