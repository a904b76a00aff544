"""HTTP tools as data: an admin defines a tool by method, URL template, headers and the JSON schema of
its arguments; agents call it like any tool.

- Stored in ``data/plugins/http_tools.json`` (written atomically); header values named in
  ``secretHeaders`` stay on the server and are shown masked.
- ``{name}`` placeholders in the URL take the argument of that name (URL-encoded); the other
  arguments go in the query string (GET, DELETE) or as a JSON body (POST, PUT, PATCH).
- Arguments are checked against the schema before the call; the target must be a public host unless
  listed in ``XIAJIAO_HTTP_TOOLS_ALLOWED_HOSTS``; redirects are not followed; size and time are bounded.
"""
from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote

from quart import Blueprint, current_app, jsonify, request

from xiajiao import (BadRequest, Conflict, NotFound, Setting, Tool, check_public_url, hookimpl,
                     parse_allowed_hosts, read_plugin_data, requires, write_plugin_data)

bp = Blueprint("http_tools", __name__)
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
MAX_RESULT_CHARS = 20_000
MAX_RESPONSE_BYTES = 2_000_000
FIELDS = {"name", "description", "method", "url", "headers", "secretHeaders", "parameters", "timeout", "approval"}


@hookimpl
def register_settings(register):
    register(Setting("http_tools_allowed_hosts", "", "Comma-separated hosts (or host:port) HTTP tools may call even "
                     "though they resolve to loopback or private addresses."))


FILE = "http_tools"  # data/plugins/http_tools.json


def load(app: Any) -> dict[str, dict]:
    return {d["name"]: d for d in read_plugin_data(app, FILE, [])}


def save(app: Any, defs: dict[str, dict]) -> None:
    write_plugin_data(app, FILE, list(defs.values()))


def placeholders(url: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(url) if f is not None]
    except ValueError:
        raise BadRequest("The URL template has an unbalanced { or }", "invalid_url_template") from None


def check(definition: Any) -> dict:
    """The definition, validated and normalised; BadRequest with a code otherwise."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(definition, dict):
        raise BadRequest("Send the tool as a JSON object", "invalid_json")
    unknown = set(definition) - FIELDS
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", "unknown_field")
    name = definition.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise BadRequest("name: letters, digits and _, starting with a letter, at most 48", "invalid_name")
    description = definition.get("description")
    if not isinstance(description, str) or not description.strip() or len(description) > 1000:
        raise BadRequest("description: 1 to 1000 characters (the model reads it)", "invalid_description")
    method = str(definition.get("method", "GET")).upper()
    if method not in METHODS:
        raise BadRequest(f"method must be one of {', '.join(METHODS)}", "invalid_method")
    url = definition.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/{}\s]+", url) or len(url) > 2000:
        raise BadRequest("url must be an http(s) URL template with a fixed host, e.g. https://api.example.com/items/{id}",
                         "invalid_url_template")
    headers = definition.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise BadRequest("headers must map names to string values", "invalid_headers")
    secret = definition.get("secretHeaders") or []
    if not isinstance(secret, list) or not set(secret) <= set(headers):
        raise BadRequest("secretHeaders must name headers that are given", "invalid_headers")
    params = definition.get("parameters") or {"type": "object", "properties": {}}
    try:
        Draft202012Validator.check_schema(params)
    except SchemaError as exc:
        raise BadRequest(f"parameters is not a valid JSON schema: {exc.message}", "invalid_schema") from None
    if params.get("type") != "object" or not isinstance(params.get("properties", {}), dict):
        raise BadRequest("parameters must be a JSON schema of type object", "invalid_schema")
    missing = [p for p in placeholders(url) if p not in params.get("properties", {})]
    if missing:
        raise BadRequest(f"URL placeholders without a parameter: {', '.join(missing)}", "invalid_url_template")
    timeout = definition.get("timeout", 15)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 120:
        raise BadRequest("timeout: seconds, more than 0 and at most 120", "invalid_timeout")
    approval = definition.get("approval", False)
    if not isinstance(approval, bool):
        raise BadRequest("approval must be true or false (each call waits for a person's approval)", "invalid_approval")
    return {"name": name, "description": description.strip(), "method": method, "url": url, "headers": headers,
            "secretHeaders": list(secret), "parameters": params, "timeout": float(timeout), "approval": approval}


def stored(app: Any, name: str) -> tuple[dict[str, dict], dict]:
    """All definitions and the one named ``name`` (404 when there is none)."""
    defs = load(app)
    if name not in defs:
        raise NotFound("No such HTTP tool", "tool_not_found")
    return defs, defs[name]


def public(definition: dict) -> dict:
    """The definition as the API shows it: secret header values masked."""
    out = dict(definition)
    out["headers"] = {k: ("****" + v[-4:] if len(v) > 8 else "****") if k in definition["secretHeaders"] else v
                      for k, v in definition["headers"].items()}
    return out


def make_tool(definition: dict) -> Tool:
    async def run(args: dict, ctx) -> dict:
        return await call(ctx.app, definition, args)

    return Tool(name=definition["name"], description=definition["description"], parameters=definition["parameters"],
                fn=run, read_only=definition["method"] == "GET", mutating=definition["method"] != "GET",
                min_role="member", timeout=definition["timeout"] + 5, approval=bool(definition.get("approval")))


async def call(app: Any, d: dict, args: dict) -> dict:
    import httpx  # loaded once serving (xiajiao.server.warm_up), not at start
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(d["parameters"]).iter_errors(args), key=lambda e: list(e.path))
    if errors:
        raise BadRequest(f"Invalid arguments: {errors[0].message}", "invalid_arguments")
    used = placeholders(d["url"])
    url = d["url"].format(**{k: quote(str(args.get(k, "")), safe="") for k in used})
    rest = {k: v for k, v in args.items() if k not in used}
    allowed = parse_allowed_hosts(app.settings.http_tools_allowed_hosts)
    await check_public_url(url, allowed, kind="url", setting="XIAJIAO_HTTP_TOOLS_ALLOWED_HOSTS")
    kw: dict = {"headers": d["headers"]}
    if d["method"] in BODY_METHODS:
        kw["json"] = rest
    else:
        kw["params"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in rest.items()}
    try:
        async with httpx.AsyncClient(timeout=d["timeout"], follow_redirects=False) as client:
            async with client.stream(d["method"], url, **kw) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_RESPONSE_BYTES:
                        break
    except httpx.HTTPError as exc:
        raise BadRequest(f"The call failed: {type(exc).__name__}", "http_tool_failed") from None
    text = bytes(body).decode("utf-8", "replace")
    out: dict = {"status": resp.status_code}
    if "json" in resp.headers.get("content-type", ""):
        try:
            out["json"] = json.loads(text)
            return out
        except ValueError:
            pass
    out["text"] = text[:MAX_RESULT_CHARS]
    return out


@hookimpl
def startup(app):
    for d in load(app).values():
        if d["name"] not in app.tools:
            app.tools.add(make_tool(d), "http_tools")


@hookimpl
def register_routes(register):
    register(bp)


@bp.get("/api/http-tools")
@requires("admin")
async def list_tools():
    return jsonify({"tools": [public(d) for d in load(current_app.xj).values()]})


@bp.post("/api/http-tools")
@requires("admin")
async def create_tool():
    app = current_app.xj
    d = check(await request.get_json(silent=True))
    defs = load(app)
    if d["name"] in defs or d["name"] in app.tools:
        raise Conflict(f"A tool named {d['name']!r} exists already", "tool_exists")
    defs[d["name"]] = d
    save(app, defs)
    app.tools.add(make_tool(d), "http_tools")
    return jsonify({"tool": public(d)}), 201


@bp.put("/api/http-tools/<name>")
@requires("admin")
async def update_tool(name: str):
    app = current_app.xj
    defs, old = stored(app, name)
    body = await request.get_json(silent=True)
    if isinstance(body, dict):  # masked secrets sent back unchanged keep their stored value
        body = {**old, **body, "name": name}
        body["headers"] = {k: (old["headers"].get(k, v) if k in old["secretHeaders"] and v.startswith("****") else v)
                           for k, v in (body.get("headers") or {}).items()}
    d = check(body)
    defs[name] = d
    save(app, defs)
    app.tools.remove(name)
    app.tools.add(make_tool(d), "http_tools")
    return jsonify({"tool": public(d)})


@bp.delete("/api/http-tools/<name>")
@requires("admin")
async def delete_tool(name: str):
    app = current_app.xj
    defs, _old = stored(app, name)
    del defs[name]
    save(app, defs)
    app.tools.remove(name)
    return jsonify({"ok": True, "deleted": name})
