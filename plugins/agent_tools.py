"""Built-in tool call_agent: ask another agent and get its reply (nesting at most call_agent_depth deep)."""
from __future__ import annotations

from xiajiao import BadRequest, Setting, Tool, hookimpl


async def call_agent(args: dict, ctx) -> str:
    app = ctx.app
    limit = app.settings.call_agent_depth
    if ctx.depth + 1 > limit:
        raise BadRequest(f"call_agent may nest at most {limit} deep", "call_depth")
    target = app.engine.agents.find(str(args.get("agent", "")))
    if target is None:
        raise BadRequest(f"No agent named {args.get('agent')!r}", "agent_not_found")
    if target["id"] == ctx.agent["id"]:
        raise BadRequest("An agent cannot call itself", "call_self")
    return await app.engine.ask(target, str(args.get("message", "")), actor=ctx.actor, channel=ctx.channel,
                                depth=ctx.depth + 1)


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
