"""Every setting of Xiajiao, declared once as data.

Each setting is read from the environment as ``XIAJIAO_<NAME>``; the README table,
``xiajiao settings`` and the tests are all driven by :data:`SETTINGS`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import SettingsError


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    secret: bool = False

    @property
    def env(self) -> str:
        return "XIAJIAO_" + self.name.upper()


SETTINGS: list[Setting] = [
    # server
    Setting("host", "127.0.0.1", "Address the server listens on."),
    Setting("port", 18800, "TCP port the server listens on.", int),
    Setting("data_dir", "./data", "Folder holding xiajiao.db, the agent workspaces and uploads.", Path),
    Setting("owner_password", "", "Owner password set on first start; a strong one is generated and printed when empty.", str, True),
    Setting("plugins_dir", "", "Folder of single-file plugins (*.py) to load at start.", str),
    Setting("load_entrypoint_plugins", True, "Load third-party plugins installed under the 'xiajiao' entry-point group.", _bool),
    Setting("log_level", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR."),
    Setting("access_log", True, "Write one JSON log line per HTTP request.", _bool),
    Setting("trace_plugins", False, "Log every plugin hook call with its duration.", _bool),
    Setting("shutdown_timeout", 5.0, "Seconds to wait for running work on shutdown.", float),
    # storage
    Setting("skip_migrations", False, "Do not apply database migrations on start (the schema must already be current).", _bool),
    Setting("workspace_idle_seconds", 300.0, "Close an agent's memory.db / rag.db after this many idle seconds.", float),
    Setting("db_readers", 2, "Read connections per database file (writes always use one connection).", int),
    # accounts and limits
    Setting("session_days", 30, "Days a login session stays valid.", int),
    Setting("secure_cookies", False, "Always mark the session cookie Secure (it is set automatically behind HTTPS).", _bool),
    Setting("login_attempts_per_minute", 10, "Failed-or-not login attempts allowed per client address per minute.", int),
    Setting("rate_limit_per_minute", 120, "Requests (and WebSocket frames) allowed per user per minute.", int),
    Setting("rate_limit_burst", 30, "Extra requests allowed in a burst above the steady rate.", int),
    Setting("max_upload_bytes", 20 * 1024 * 1024, "Largest accepted upload or request body, in bytes.", int),
    Setting("max_message_chars", 32000, "Longest accepted chat message, in characters.", int),
    Setting("max_metadata_bytes", 16 * 1024, "Largest message metadata accepted, in bytes of JSON.", int),
    Setting("max_metadata_keys", 100, "Most keys (counted at every level) in a message's metadata.", int),
    Setting("ws_queue_size", 1000, "Frames queued per WebSocket before a slow client is told to resync and dropped.", int),
    Setting("ws_replay_size", 2000, "Frames kept per channel for replay after a reconnect.", int),
    Setting("ws_replay_channels", 1000, "Channels whose replay buffers are kept; the least recently used unfollowed ones are dropped.", int),
    # models and agents
    Setting("default_model", "", "Model used by agents that name none (empty: the first configured model, else the demo model)."),
    Setting("openai_api_key", "", "API key of an OpenAI-compatible provider configured from the environment.", str, True),
    Setting("openai_base_url", "", "Base URL of that OpenAI-compatible provider (empty: api.openai.com)."),
    Setting("openai_models", "", "Comma-separated models served by that provider."),
    Setting("anthropic_api_key", "", "API key of an Anthropic provider configured from the environment.", str, True),
    Setting("anthropic_base_url", "", "Base URL of that Anthropic provider (empty: the vendor's)."),
    Setting("anthropic_models", "", "Comma-separated models served by that provider."),
    Setting("allow_private_provider_urls", False, "Let the provider Test reach loopback and private-network addresses (a model server on this machine or network); cloud metadata addresses stay refused.", _bool),
    Setting("connect_timeout", 10.0, "Seconds to connect to a model provider.", float),
    Setting("first_token_timeout", 60.0, "Seconds to wait for a model's first token.", float),
    Setting("idle_stream_timeout", 60.0, "Seconds a model stream may stay silent before it is cut.", float),
    Setting("provider_retries", 2, "Retries of a model call on 429, 5xx and connection errors.", int),
    Setting("breaker_failures", 5, "Consecutive failures that open a provider's circuit breaker.", int),
    Setting("breaker_cooldown", 30.0, "Seconds an open circuit breaker waits before letting one probe through.", float),
    Setting("reply_tokens", 2048, "Tokens reserved for the reply inside the model's context window.", int),
    Setting("max_reply_chars", 100_000, "Longest agent reply, in characters; a longer one is cut and marked failed.", int),
    Setting("max_reply_seconds", 600.0, "Longest an agent reply may run, in seconds (tools included); then it is cut and marked failed.", float),
    Setting("max_retry_after", 30.0, "Longest Retry-After of a provider that is waited for; a longer one fails the call at once.", float),
    Setting("tool_max_rounds", 8, "Most model-tool rounds in one agent turn.", int),
    Setting("tool_timeout", 30.0, "Seconds one tool call may run.", float),
    Setting("hop_limit", 3, "Most agent-to-agent mention hops triggered by one user message.", int),
    Setting("call_agent_depth", 3, "Deepest nesting of the call_agent tool.", int),
    Setting("stream_coalesce_ms", 15.0, "Text deltas of a streamed reply closer than this share one stream_chunk frame (0: one frame per delta).", float),
    Setting("demo_delay", 0.01, "Seconds between the offline demo model's streamed words.", float),
    # memory and knowledge
    Setting("embedder", "", "Embedder for memory and knowledge (empty: the best one installed)."),
    Setting("embedding_model", "text-embedding-3-small", "Model of the 'openai' embedder (an OpenAI-compatible /v1/embeddings endpoint)."),
    Setting("embedding_base_url", "", "Base URL of the 'openai' embedder (empty: openai_base_url, else api.openai.com)."),
    Setting("embedding_api_key", "", "API key of the 'openai' embedder (empty: openai_api_key).", str, True),
    Setting("embedding_dim", 0, "Dimension asked of the 'openai' embedder (0: whatever the model returns).", int),
    Setting("embed_batch", 64, "Texts embedded and written per batch (one transaction each) when indexing.", int),
    Setting("memory_dedup_threshold", 0.9, "Cosine similarity above which a new memory merges into an existing one.", float),
    Setting("memory_prompt_chars", 1500, "Characters of memories injected into an agent's system prompt.", int),
    Setting("consolidate_every", 20, "Turns of a conversation after which the agent writes an episodic summary.", int),
    Setting("chunk_size", 200, "Characters of a knowledge chunk used for matching.", int),
    Setting("parent_chunk_size", 800, "Characters of the parent passage given to the model as context.", int),
    Setting("rrf_k", 60, "The k of Reciprocal Rank Fusion for hybrid retrieval.", int),
    Setting("rerank", False, "Rerank retrieved passages with the agent's model.", _bool),
    Setting("rag_max_document_bytes", 10 * 1024 * 1024, "Largest knowledge document accepted for an agent, in bytes.", int),
    Setting("rag_max_agent_bytes", 200 * 1024 * 1024, "Most bytes of knowledge documents one agent keeps.", int),
    Setting("parse_timeout", 60.0, "Seconds a document parser may run before the document is marked failed.", float),
    Setting("parse_memory_mb", 512, "Megabytes of memory a document parser's worker process may use.", int),
    Setting("parse_max_chars", 5_000_000, "Most characters of text extracted from one document.", int),
    Setting("parse_max_inflated_bytes", 100 * 1024 * 1024, "Most bytes a compressed document (DOCX …) may inflate to.", int),
    Setting("parse_max_entries", 2000, "Most entries in a compressed document.", int),
    Setting("parse_max_ratio", 100.0, "Highest compression ratio of an entry in a compressed document.", float),
    Setting("parse_max_pages", 2000, "Most pages of a PDF document.", int),
    Setting("rag_prompt_chars", 3000, "Characters of knowledge passages injected into an agent's system prompt.", int),
    # operations
    Setting("cors_origins", "", "Comma-separated origins other sites' pages may call the API from (empty: none; '*': any, without credentials)."),
    Setting("cors_credentials", False, "Let those origins send cookies and API keys (refused together with '*').", _bool),
    Setting("cors_max_age", 600, "Seconds a browser may cache a CORS preflight answer.", int),
    Setting("log_format", "json", "Log line format: 'json' (one object per line) or 'text'."),
    Setting("backup_dir", "", "Folder of backup archives (empty: <data dir>/backups).", str),
    Setting("backup_interval_hours", 0.0, "Hours between automatic backups (0: none).", float),
    Setting("backup_keep", 7, "Automatic and on-demand backups kept in the backup folder; older ones are deleted.", int),
]

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass
class Settings:
    """The resolved settings; attribute access by name (``settings.port``)."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        for k, v in changes.items():
            if k not in SETTINGS_BY_NAME:
                raise SettingsError(f"unknown setting {k!r}")
            values[k] = v
        return Settings(values)

    def public(self) -> dict[str, Any]:
        """Values for display, secrets redacted."""
        out = {}
        for s in SETTINGS:
            v = self.values[s.name]
            if s.secret:
                v = mask(v) if v else ""
            out[s.name] = str(v) if isinstance(v, Path) else v
        return out


def mask(secret: str) -> str:
    secret = str(secret)
    if len(secret) <= 8:
        return "****"
    return secret[:3] + "…" + secret[-4:]


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve every setting from ``env`` (default ``os.environ``), then ``overrides``.

    A bad value raises :class:`SettingsError` whose message says what to change.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name in overrides:
            values[s.name] = overrides.pop(s.name)
            continue
        raw = env.get(s.env)
        if raw is None:
            values[s.name] = s.type(s.default) if s.type is Path else s.default
            continue
        try:
            values[s.name] = s.type(raw)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number", _bool: "true or false"}.get(s.type, "valid")
            raise SettingsError(f"{s.env}={raw!r} is not {kind}; change or unset {s.env}.") from None
    if overrides:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(overrides))}")
    if not (0 < values["port"] < 65536):
        raise SettingsError(f"XIAJIAO_PORT={values['port']} is out of range 1-65535; change XIAJIAO_PORT.")
    values["data_dir"] = Path(values["data_dir"]).expanduser()
    origins = [o.strip() for o in values["cors_origins"].split(",") if o.strip()]
    if "*" in origins and values["cors_credentials"]:
        raise SettingsError("XIAJIAO_CORS_ORIGINS='*' cannot be combined with XIAJIAO_CORS_CREDENTIALS=true "
                            "(any site could act as a logged-in user); list the origins instead.")
    for o in origins:
        if o != "*" and not (o.startswith(("http://", "https://")) and o.count("/") == 2):
            raise SettingsError(f"XIAJIAO_CORS_ORIGINS entry {o!r} must be an origin like https://app.example.com "
                                "(scheme and host, no path).")
    if values["log_format"] not in ("json", "text"):
        raise SettingsError(f"XIAJIAO_LOG_FORMAT={values['log_format']!r} must be 'json' or 'text'.")
    return Settings(values)
