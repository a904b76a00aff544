"""Xiajiao: a self-hosted AI agent team.

This module is the public facade for plugins: import from ``xiajiao`` only.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (BadRequest, Conflict, Forbidden, NotFound, ProviderError, RateLimited,  # noqa: E402
                     TooLarge, Unauthorized, UnsupportedMediaType, XiajiaoError)
from .models import (Actor, ChatMessage, ChatRequest, Embedder, Image, Pack, Parser, Persona, Prompt,  # noqa: E402
                     Provider, ProviderConfig, ProviderKind, SearchBackend, TextDelta, Timeouts, Tool, ToolCall,
                     ToolCallsDone, ToolContext, Trigger, Usage, Frame)
from .plugins import hookimpl  # noqa: E402
from .settings import Setting  # noqa: E402
from .engine.mentions import find_mentions  # noqa: E402
from .gateway import env_provider_configs, env_provider_settings  # noqa: E402
from .gateway.net import pooled_client  # noqa: E402
from .gateway.wire import StreamClientError, stream_client  # noqa: E402
from .safejson import check_text  # noqa: E402
from .auth import authorized_channel, requires  # noqa: E402
from .addresses import check_url as check_public_url, parse_allowed as parse_allowed_hosts  # noqa: E402
from .chat import create_message as post_message  # noqa: E402
from .channels import add_members as add_channel_members, open_channel, rename as rename_channel  # noqa: E402
from .parsing import ParseLimits, guard_zip, parse_document, parse_limits  # noqa: E402
from .bodies import MULTIPART_OVERHEAD, file_size, limit_body  # noqa: E402
from .ratelimit import charge as charge_limit  # noqa: E402
from .db import migrations_from_dir  # noqa: E402
from .db.driver import errors as db_errors  # noqa: E402
from .ids import new_id, now_iso  # noqa: E402
from .triggers import new_trigger_token  # noqa: E402
from .text import (fts_any, fts_any_parts, fts_query, index_text, letter_counts, query_terms, snippet,  # noqa: E402
                   within_budget)
from .vectors import VectorIndex, active_embedder, embed  # noqa: E402
from .services import (ask_agent, channel_has_agent, channel_people, complete, find_agent, get_agent,  # noqa: E402
                       get_channel, get_message, get_person, list_agents, notify_user, plugin_db, publish_frame,
                       read_plugin_data, run_turn, transcript, write_plugin_data)

__all__ = [
    "__version__", "hookimpl", "Setting", "find_mentions", "pooled_client", "stream_client", "StreamClientError",
    "env_provider_settings",
    "env_provider_configs",
    "Actor", "ChatMessage", "ChatRequest", "Embedder", "Image", "Pack", "Parser", "Persona", "Prompt", "Provider",
    "ProviderConfig", "ProviderKind", "TextDelta", "Timeouts", "Tool", "ToolCall", "ToolCallsDone", "ToolContext",
    "Usage",
    "XiajiaoError", "BadRequest", "Conflict", "Forbidden", "NotFound", "ProviderError", "RateLimited", "TooLarge",
    "Unauthorized", "UnsupportedMediaType",
    "requires", "check_text", "charge_limit", "authorized_channel", "post_message", "open_channel", "add_channel_members",
    "rename_channel", "check_public_url", "parse_allowed_hosts", "SearchBackend",
    "ParseLimits", "guard_zip", "parse_document", "parse_limits", "MULTIPART_OVERHEAD", "file_size", "limit_body",
    "migrations_from_dir", "db_errors", "new_id", "now_iso",
    "fts_any", "fts_any_parts", "fts_query", "index_text", "letter_counts", "query_terms", "snippet", "within_budget", "VectorIndex", "active_embedder",
    "embed",
    "get_agent", "find_agent", "list_agents", "get_channel", "channel_people", "channel_has_agent", "get_person",
    "get_message",
    "transcript", "complete", "ask_agent", "run_turn", "notify_user", "read_plugin_data", "write_plugin_data",
    "publish_frame", "plugin_db", "Trigger", "new_trigger_token", "Frame",
]
