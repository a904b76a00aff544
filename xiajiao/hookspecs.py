"""Every hook of Xiajiao, grouped by lifecycle.

Implementations may be plain or ``async def``; the core awaits whatever comes back
through one helper (:func:`xiajiao.plugins.call_hook`). Argument names are stable
across hooks (``app``, ``agent``, ``channel``, ``message``, ``actor``), so an
implementation declares only the ones it needs. ``docs/plugins.md`` documents
each hook under a heading that is its exact signature.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("xiajiao")

# ------------------------------------------------------------------ registration
# Called once at start-up. Each hands a ``register`` callback; the core validates
# what is registered, rejects duplicates and records which plugin gave what.


@hookspec
def register_settings(register):
    """Declare the plugin's settings with register(Setting(name, default, help, type, secret, env))."""


@hookspec
def register_providers(register):
    """Register model provider kinds with register(ProviderKind(...))."""


@hookspec
def register_embedders(register):
    """Register text embedders with register(Embedder instance)."""


@hookspec
def register_tools(register):
    """Register tools agents may call with register(Tool(...))."""


@hookspec
def register_parsers(register):
    """Register document parsers with register(Parser(...))."""


@hookspec
def register_packs(register):
    """Register domain packs (personas with their tools) with register(Pack(...))."""


@hookspec
def register_search_backends(register):
    """Register web search backends for the web_search tool with register(SearchBackend(...))."""


@hookspec
def register_triggers(register):
    """Register what incoming webhooks (POST /api/triggers/<id>) can start with register(Trigger(...))."""


@hookspec
def register_frames(register):
    """Register WebSocket frame types clients may send with register(Frame(type, handle))."""


@hookspec
def register_routes(register):
    """Register HTTP routes with register(blueprint) (a Quart Blueprint)."""


@hookspec
def register_commands(register):
    """Register command-line commands with register(name, function, help)."""


# ------------------------------------------------------------------ app lifecycle


@hookspec
def startup(app):
    """Run once when the app has started, its databases open and its registries filled."""


@hookspec
def shutdown(app):
    """Run once when the app stops, before its databases close."""


@hookspec
def prepare_connection(conn, database):
    """Configure a fresh SQLite connection (functions, pragmas) of the named database."""


@hookspec
def prepare_jinja_env(env):
    """Change the Jinja environment of the web UI (filters, globals) before first use."""


# ------------------------------------------------------------------ one agent turn


@hookspec(firstresult=True)
def route_message(app, message, channel, agents):
    """Return the ids of the agents that should answer ``message`` in ``channel``, or None to pass."""


@hookspec
def prepare_prompt(app, prompt, agent, channel, message, actor):
    """Add sections to ``prompt`` (a Prompt) before an agent's model call: memory, knowledge, rules."""


@hookspec(firstresult=True)
def decide_tool_permission(app, actor, agent, tool):
    """Return True to allow, False to deny ``actor``'s turn of ``agent`` calling ``tool``; None to pass."""


@hookspec(firstresult=True)
def authorize(actor, action, resource):
    """Return True to allow, False to deny ``actor`` the ``action`` on ``resource``; None to pass."""


# ------------------------------------------------------------------ events
# Observers: a failure is logged with the plugin's name and never breaks the caller.


@hookspec
def on_message(app, message, channel, actor):
    """Observe a message stored in a channel (from a user or an agent)."""


@hookspec
def on_turn_end(app, agent, channel, message, reply, actor):
    """Observe an agent's finished turn: ``message`` asked, ``reply`` is the stored answer."""


@hookspec
def on_agent_created(app, agent):
    """Observe a new agent (its workspace folder exists)."""


@hookspec
def on_agent_deleted(app, agent):
    """Observe a deleted agent (its workspace is about to be removed)."""
