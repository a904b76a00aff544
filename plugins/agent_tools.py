"""Built-in tools: call_agent (ask another agent and get its reply, nesting at most call_agent_depth
deep) and manage_channel (create a group, add members, rename, with the rights of the person the
agent answers)."""
from __future__ import annotations

from xiajiao import (BadRequest, Setting, Tool, add_channel_members, ask_agent, find_agent, hookimpl, open_channel,
                     rename_channel)


async def call_agent(args: dict, ctx) -> str:
    app = ctx.app
    limit = app.settings.call_agent_depth
    if ctx.depth + 1 > limit:
        raise BadRequest(f"call_agent may nest at most {limit} deep", "call_depth")
    target = find_agent(app, str(args.get("agent", "")))
    if target is None:
        raise BadRequest(f"No agent named {args.get('agent')!r}", "agent_not_found")
    if target["id"] == ctx.agent["id"]:
        raise BadRequest("An agent cannot call itself", "call_self")
    return await ask_agent(app, target, str(args.get("message", "")), actor=ctx.actor, channel=ctx.channel,
                           depth=ctx.depth + 1)


def _ids(value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("agentIds and userIds must be lists of ids", "invalid_ids")
    return value


async def manage_channel(args: dict, ctx) -> dict:
    app, actor = ctx.app, ctx.actor
    action = args.get("action")
    here = (ctx.channel or {}).get("id")
    if action == "create_group":
        name = str(args.get("name") or "").strip()
        if not name:
            raise BadRequest("A group needs a name", "missing_name")
        agents = _ids(args.get("agentIds")) or [ctx.agent["id"]]
        view = await open_channel(app, actor, name=name[:100], type="group", agent_ids=agents,
                                  user_ids=_ids(args.get("userIds")), default_agent_id=agents[0])
        return {"created": {"id": view["id"], "name": view["name"], "agentIds": view["agentIds"],
                            "userIds": view["userIds"]}}
    channel_id = str(args.get("channelId") or here or "")
    if action == "add_members":
        view = await add_channel_members(app, actor, channel_id, user_ids=_ids(args.get("userIds")),
                                         agent_ids=_ids(args.get("agentIds")))
        return {"channel": {"id": view["id"], "agentIds": view["agentIds"], "userIds": view["userIds"]}}
    if action == "rename":
        name = str(args.get("name") or "").strip()
        if not name:
            raise BadRequest("A new name is needed", "missing_name")
        view = await rename_channel(app, actor, channel_id, name[:100])
        return {"channel": {"id": view["id"], "name": view["name"]}}
    raise BadRequest("action must be create_group, add_members or rename", "invalid_action")


@hookimpl
def register_settings(register):
    register(Setting("call_agent_depth", 3, "Deepest nesting of the call_agent tool.", int))


@hookimpl
def register_tools(register):
    register(Tool(
        name="call_agent",
        description="Ask another agent of the team (by name) and get its full reply.",
        parameters={"type": "object", "properties": {
            "agent": {"type": "string", "description": "The other agent's name"},
            "message": {"type": "string", "description": "What to ask or hand over"}},
            "required": ["agent", "message"]},
        fn=call_agent, read_only=True, min_role="member", timeout=300))
    register(Tool(
        name="manage_channel",
        description="Create a group (with agents and people), add members to a channel, or rename it. You act "
                    "with the rights of the person you answer: only channels they may manage.",
        parameters={"type": "object", "properties": {
            "action": {"type": "string", "enum": ["create_group", "add_members", "rename"]},
            "name": {"type": "string", "description": "The group's (new) name"},
            "channelId": {"type": "string", "description": "The channel to change (default: this one)"},
            "agentIds": {"type": "array", "items": {"type": "string"}},
            "userIds": {"type": "array", "items": {"type": "string"}}},
            "required": ["action"]},
        fn=manage_channel, read_only=False, mutating=True, min_role="member"))
