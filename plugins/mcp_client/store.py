"""The MCP servers the owner added: their definitions, validated, kept in
``data/plugins/mcp_servers.json`` (written atomically, secrets included: they stay on the server) and
shown with every secret value masked."""
from __future__ import annotations

import re
from typing import Any

from xiajiao import BadRequest, NotFound, read_plugin_data, write_plugin_data

SERVER_ID = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
TRANSPORTS = ("stdio", "http")
FIELDS = {"id", "name", "transport", "command", "args", "env", "url", "headers", "enabled", "approval", "timeout"}
MASK = "****"


FILE = "mcp_servers"  # data/plugins/mcp_servers.json


def load(app: Any) -> dict[str, dict]:
    return {d["id"]: d for d in read_plugin_data(app, FILE, [])}


def save(app: Any, defs: dict[str, dict]) -> None:
    write_plugin_data(app, FILE, list(defs.values()))


def stored(app: Any, server_id: str) -> tuple[dict[str, dict], dict]:
    defs = load(app)
    if server_id not in defs:
        raise NotFound("No such MCP server", "mcp_server_not_found")
    return defs, defs[server_id]


def _strings(value: Any, what: str, code: str, name: re.Pattern | None = None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"{what} must map names to string values", code)
    for k, v in value.items():
        if name is not None and not name.match(k):
            raise BadRequest(f"{what}: {k!r} is not a valid name", code)
        if "\x00" in v or "\n" in v or "\r" in v:
            raise BadRequest(f"{what}: the value of {k!r} has a NUL or a line break", code)
    return dict(value)


def check(definition: Any, old: dict | None = None) -> dict:
    """The definition, validated and normalised (``old``: the stored one it updates; masked secrets sent
    back keep their stored values); BadRequest with a code otherwise."""
    if not isinstance(definition, dict):
        raise BadRequest("Send the server as a JSON object", "invalid_json")
    unknown = set(definition) - FIELDS - {"status", "tools", "lastError"}  # what GET shows may be sent back
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", "unknown_field")
    d = {**(old or {}), **{k: v for k, v in definition.items() if k in FIELDS}}
    if old is not None:
        d["id"] = old["id"]
    sid = d.get("id")
    if not isinstance(sid, str) or not SERVER_ID.match(sid):
        raise BadRequest("id: lower-case letters, digits and _, starting with a letter, at most 24 (its tools are "
                         "named mcp_<id>_<tool>)", "invalid_id")
    name = d.get("name") or sid
    if not isinstance(name, str) or len(name) > 100 or "\x00" in name:
        raise BadRequest("name: at most 100 characters", "invalid_name")
    transport = d.get("transport")
    if transport not in TRANSPORTS:
        raise BadRequest("transport must be stdio (a command) or http (a streamable HTTP URL)", "invalid_transport")
    out: dict = {"id": sid, "name": name.strip() or sid, "transport": transport}
    if transport == "stdio":
        command = d.get("command")
        if not isinstance(command, str) or not command.strip() or len(command) > 1000 or "\x00" in command:
            raise BadRequest("command: the program that starts the server (e.g. npx, uvx, python)", "invalid_command")
        args = d.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) and "\x00" not in a for a in args) or len(args) > 100:
            raise BadRequest("args must be a list of strings", "invalid_args")
        env = _strings(d.get("env"), "env", "invalid_env", ENV_NAME)
        out.update(command=command.strip(), args=list(args), env=_unmask(env, (old or {}).get("env", {})),
                   url="", headers={})
    else:
        url = d.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url) or len(url) > 2000:
            raise BadRequest("url must be the http(s) address of a streamable HTTP MCP endpoint", "invalid_url")
        headers = _strings(d.get("headers"), "headers", "invalid_headers", HEADER_NAME)
        out.update(command="", args=[], env={}, url=url, headers=_unmask(headers, (old or {}).get("headers", {})))
    enabled = d.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequest("enabled must be true or false", "invalid_enabled")
    approval = d.get("approval") or []
    if approval == "*":
        approval = ["*"]
    if not isinstance(approval, list) or not all(isinstance(a, str) and a for a in approval):
        raise BadRequest("approval must list the server's tool names (or \"*\" for all) whose calls wait for a "
                         "person's approval", "invalid_approval")
    timeout = d.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                or not 0 < timeout <= 3600):
        raise BadRequest("timeout: seconds a tool call may take, more than 0 and at most 3600", "invalid_timeout")
    out.update(enabled=enabled, approval=sorted(set(approval)), timeout=float(timeout) if timeout else None,
               tools=(old or {}).get("tools", []) if _same_target(out, old) else [])
    return out


def _same_target(new: dict, old: dict | None) -> bool:
    """Whether the tool listing kept from ``old`` still describes ``new`` (the same program or address)."""
    return old is not None and all(new.get(k) == old.get(k) for k in ("transport", "command", "args", "url"))


def _unmask(values: dict[str, str], old: dict[str, str]) -> dict[str, str]:
    return {k: old[k] if v.startswith(MASK) and k in old else v for k, v in values.items()}


def masked(value: str) -> str:
    return MASK + value[-4:] if len(value) > 12 else MASK


def public(d: dict) -> dict:
    """The definition as the API shows it: every environment and header value masked."""
    out = {k: v for k, v in d.items() if k != "tools"}
    out["env"] = {k: masked(v) for k, v in d.get("env", {}).items()}
    out["headers"] = {k: masked(v) for k, v in d.get("headers", {}).items()}
    return out
