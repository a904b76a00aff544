"""The default message router (a ``trylast`` route_message: any plugin answering first wins).

DM: the channel's agent. Group: every @mentioned agent (Chinese or English names, aliases,
ids; ``@all``), else the group's default agent. An agent's reply triggers only the other
agents it mentions; the engine limits those hops.
"""
from __future__ import annotations

from xiajiao import find_mentions, hookimpl


@hookimpl(trylast=True)
def route_message(message, channel, agents):
    sender = message.get("agentId")
    ids = [a["id"] for a in agents]
    if channel["type"] == "dm":
        return [] if sender else ids[:1]
    found, everyone = find_mentions(message.get("content") or "", agents)
    if everyone:
        found = found + [i for i in ids if i not in found]
    if sender:
        return [i for i in found if i != sender]
    if found:
        return found
    default = channel.get("default_agent_id")
    return [default] if default in ids else []
