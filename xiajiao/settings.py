"""Every setting of the core, declared once as data.

Each setting is read from the environment as ``XIAJIAO_<NAME>``; the README table,
``xiajiao settings`` and the tests are all driven by :data:`SETTINGS` and by the settings
plugins declare through the ``register_settings`` hook (model providers, memory, knowledge …).
Plugin settings are resolved once the plugins are loaded (:meth:`Settings.with_plugins`);
until then overrides for them wait in the :class:`Settings` object.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import SettingsError


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


_SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
CORE = "core"  # the owner of the settings in SETTINGS


@dataclass(frozen=True)
class Setting:
    """One setting: its name, default, one-line help, how its text is parsed, whether it is a
    secret (masked wherever it is shown) and its environment variable (``XIAJIAO_<NAME>``)."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    secret: bool = False
    env: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SETTING_NAME.match(self.name):
            raise ValueError(f"setting name {self.name!r} must be lower-case letters, digits and _")
        if not self.env:
            object.__setattr__(self, "env", "XIAJIAO_" + self.name.upper())
        if not _ENV_NAME.match(self.env):
            raise ValueError(f"setting {self.name!r}: environment variable {self.env!r} must be upper-case")
        if self.type is bool:
            object.__setattr__(self, "type", _bool)
        if not callable(self.type):
            raise ValueError(f"setting {self.name!r}: type must turn a string into the value")
        if not isinstance(self.help, str) or not self.help.strip():
            raise ValueError(f"setting {self.name!r} needs a one-line help text")

    def parse(self, raw: str) -> Any:
        try:
            return self.type(raw)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number", _bool: "true or false"}.get(self.type, "valid")
            raise SettingsError(f"{self.env}={raw!r} is not {kind}; change or unset {self.env}.") from None

    def default_value(self) -> Any:
        return self.type(self.default) if self.type is Path else self.default


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
    Setting("loop_slow_ms", 0.0, "Log every callback that holds the event loop for more than this many "
            "milliseconds of CPU, with where it was (0: off; the benchmark's smoke run uses 50).", float),
    Setting("shutdown_timeout", 5.0, "Seconds to wait for running work on shutdown.", float),
    # storage
    Setting("skip_migrations", False, "Do not apply database migrations on start (the schema must already be current).", _bool),
    Setting("workspace_idle_seconds", 300.0, "Close an agent's memory.db / rag.db after this many idle seconds.", float),
    Setting("db_readers", 2, "Read connections per database file (writes always use one connection).", int),
    # accounts and limits
    Setting("session_days", 30, "Days a login session stays valid.", int),
    Setting("secure_cookies", False, "Always mark the session cookie Secure (it is set automatically behind HTTPS).", _bool),
    Setting("trusted_proxies", "", "Comma-separated addresses or networks (CIDR) of your reverse proxies: only requests "
            "from them may set the client address, scheme and host by X-Forwarded-For/-Proto/-Host (login throttle, "
            "rate limits, Secure cookies, the WebSocket origin check, logs). Empty: no proxy is trusted.", str),
    Setting("login_attempts_per_minute", 30, "Login (and, in their own bucket, invite) attempts allowed per client address per minute.", int),
    Setting("login_failures_per_address", 10, "Wrong passwords from one address before each further try waits, doubling from 1 s up to 15 min.", int),
    Setting("login_failures_per_account", 50, "Wrong passwords for one account from all addresses before each further try waits (doubling).", int),
    Setting("rate_limit_per_minute", 1200, "Requests (and WebSocket frames) allowed per user (or address before login) per minute.", int),
    Setting("rate_limit_burst", 600, "Extra requests allowed in a burst above the steady rate.", int),
    Setting("turn_rate_per_minute", 60, "Messages that start agent turns (and chain runs) allowed per user per minute.", int),
    Setting("turn_rate_burst", 30, "Such messages allowed in a burst above the steady rate.", int),
    Setting("upload_bytes_per_minute", 500 * 1024 * 1024, "Upload bytes (files and knowledge documents) allowed per user per minute.", int),
    Setting("task_rate_per_minute", 60, "Background tasks a user may create per minute (burst as large).", int),
    Setting("max_upload_bytes", 20 * 1024 * 1024, "Largest accepted upload or request body, in bytes.", int),
    Setting("max_message_chars", 32000, "Longest accepted chat message, in characters.", int),
    Setting("max_metadata_bytes", 16 * 1024, "Largest message metadata accepted, in bytes of JSON.", int),
    Setting("max_metadata_keys", 100, "Most keys (counted at every level) in a message's metadata.", int),
    Setting("ws_queue_size", 1000, "Frames queued per WebSocket before a slow client is told to resync and dropped.", int),
    Setting("ws_replay_size", 2000, "Frames kept per channel for replay after a reconnect.", int),
    Setting("ws_replay_channels", 1000, "Channels whose replay buffers are kept; the least recently used unfollowed ones are dropped.", int),
    # models and agents
    Setting("default_model", "", "Model used by agents that name none (empty: the first configured model, else the demo model)."),
    Setting("allow_private_provider_urls", False, "Let the provider Test reach loopback and private-network addresses (a model server on this machine or network); cloud metadata addresses stay refused.", _bool),
    Setting("connect_timeout", 10.0, "Seconds to connect to a model provider.", float),
    Setting("first_token_timeout", 60.0, "Seconds to wait for a model's first token.", float),
    Setting("idle_stream_timeout", 60.0, "Seconds a model stream may stay silent before it is cut.", float),
    Setting("provider_retries", 2, "Retries of a model call on 429, 5xx and connection errors.", int),
    Setting("breaker_failures", 5, "Consecutive failures that open a provider's circuit breaker.", int),
    Setting("breaker_cooldown", 30.0, "Seconds an open circuit breaker waits before letting one probe through.", float),
    Setting("vision_models", "gpt-4o*,gpt-4.1*,gpt-5*,o3*,o4*,claude-*,gemini-*,*-vl*,*vision*,glm-4v*,llava*,qwen*-vl*,pixtral*",
            "Comma-separated model names (shell patterns) that see images; others get a note instead. A provider's own 'vision' option (true, false or a list) wins."),
    Setting("attachment_tokens", 8000, "Tokens of attached documents' text given to the model with one message (each file named; the rest cut).", int),
    Setting("reply_tokens", 2048, "Tokens reserved for the reply inside the model's context window.", int),
    Setting("max_reply_chars", 100_000, "Longest agent reply, in characters; a longer one is cut and marked failed.", int),
    Setting("max_reply_seconds", 600.0, "Longest an agent reply may run, in seconds (tools included); then it is cut and marked failed.", float),
    Setting("max_retry_after", 30.0, "Longest Retry-After of a provider that is waited for; a longer one fails the call at once.", float),
    Setting("tool_max_rounds", 8, "Most model-tool rounds in one agent turn.", int),
    Setting("tool_timeout", 30.0, "Seconds one tool call may run.", float),
    Setting("tool_approval_timeout", 300.0, "Seconds a tool call that needs approval waits for a decision; then it counts as rejected (expired). The wait does not count toward max_reply_seconds.", float),
    Setting("hop_limit", 3, "Most agent-to-agent mention hops triggered by one user message.", int),
    Setting("stream_coalesce_ms", 15.0, "Text deltas of a streamed reply closer than this share one stream_chunk frame (0: one frame per delta).", float),
    # machine API: OpenAI-compatible endpoint, background tasks, webhooks
    Setting("api_record_chats", False, "Record every /v1/chat/completions turn of an agent in a conversation the user sees in the web app (a request may ask with the header X-Xiajiao-Record).", _bool),
    Setting("task_concurrency", 2, "Background tasks (/v1/tasks) run at the same time; the others wait queued.", int),
    Setting("webhook_allowed_hosts", "", "Comma-separated hosts (or host:port) a task webhook may reach even when they resolve to loopback, private or link-local addresses."),
    Setting("webhook_attempts", 5, "Deliveries tried per task webhook before giving up.", int),
    Setting("webhook_backoff", 2.0, "Seconds before the second webhook attempt; doubled for each later one.", float),
    Setting("webhook_timeout", 10.0, "Seconds one webhook delivery may take.", float),
    # memory and knowledge
    Setting("embedder", "", "Embedder for memory and knowledge (empty: the best one installed)."),
    Setting("embed_batch", 64, "Texts embedded and written per batch (one transaction each) when indexing.", int),
    Setting("parse_timeout", 60.0, "Seconds a document parser may run before the document is marked failed.", float),
    Setting("parse_memory_mb", 512, "Megabytes of memory a document parser's worker process may use.", int),
    Setting("parse_max_chars", 20_000_000, "Most characters of text extracted from one document.", int),
    Setting("parse_max_inflated_bytes", 100 * 1024 * 1024, "Most bytes a compressed document (DOCX …) may inflate to.", int),
    Setting("parse_max_entries", 2000, "Most entries in a compressed document.", int),
    Setting("parse_max_ratio", 100.0, "Highest compression ratio of an entry in a compressed document.", float),
    Setting("parse_max_pages", 2000, "Most pages of a PDF document.", int),
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
    """The resolved settings; attribute access by name (``settings.port``).

    ``declared`` maps every known setting's name to its declaration and its owner (``"core"`` or
    the plugin that declared it). Overrides and environment of settings no plugin has declared
    yet wait in ``pending`` / ``env`` until :meth:`with_plugins` resolves them.
    """

    values: dict[str, Any] = field(default_factory=dict)
    declared: dict[str, tuple[Setting, str]] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        for k, v in changes.items():
            if k not in self.declared:
                raise SettingsError(f"unknown setting {k!r}")
            values[k] = v
        return Settings(values, dict(self.declared), dict(self.pending), self.env)

    def with_plugins(self, settings: Iterable[tuple[Setting, str]]) -> "Settings":
        """These settings with the plugin settings ``(Setting, plugin name)`` resolved: an override
        given to :func:`load_settings`, else the environment, else the default. An override that no
        core or plugin setting has declared is an error now."""
        values, declared, pending = dict(self.values), dict(self.declared), dict(self.pending)
        envs = {s.env: name for name, (s, _) in declared.items()}
        for setting, plugin in settings:
            if setting.name in declared:
                if declared[setting.name] == (setting, plugin):
                    continue  # already resolved (the same plugins loaded twice)
                raise SettingsError(f"setting {setting.name!r} of plugin {plugin!r} is already declared by "
                                    f"{declared[setting.name][1]!r}")
            if setting.env in envs:
                raise SettingsError(f"setting {setting.name!r} of plugin {plugin!r} uses {setting.env}, the "
                                    f"variable of {envs[setting.env]!r}")
            values[setting.name] = _resolve(setting, self.env, pending)
            declared[setting.name] = (setting, plugin)
            envs[setting.env] = setting.name
        if pending:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(pending))}")
        return Settings(values, declared, {}, self.env)

    def owner(self, name: str) -> str:
        """``"core"`` or the name of the plugin that declared the setting ``name``."""
        return self.declared[name][1]

    def public(self) -> dict[str, Any]:
        """Values for display, secrets redacted."""
        return {name: self.shown(name) for name in self.declared}

    def shown(self, name: str) -> Any:
        """The value of ``name`` for display: a secret masked, a path as text."""
        setting, _ = self.declared[name]
        v = self.values[name]
        if setting.secret:
            return mask(v) if v else ""
        return str(v) if isinstance(v, Path) else v

    def by_owner(self) -> dict[str, list[Setting]]:
        """The declared settings grouped by owner, the core first, plugins in load order."""
        out: dict[str, list[Setting]] = {CORE: []}
        for setting, owner in self.declared.values():
            out.setdefault(owner, []).append(setting)
        return out


def _resolve(setting: Setting, env: Mapping[str, str], overrides: dict[str, Any]) -> Any:
    if setting.name in overrides:
        return overrides.pop(setting.name)
    raw = env.get(setting.env)
    return setting.default_value() if raw is None else setting.parse(raw)


def mask(secret: str) -> str:
    secret = str(secret)
    if len(secret) <= 8:
        return "****"
    return secret[:3] + "…" + secret[-4:]


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve every core setting from ``env`` (default ``os.environ``), then ``overrides``.

    Overrides of other names are kept for the plugin settings :meth:`Settings.with_plugins`
    resolves later. A bad value raises :class:`SettingsError` whose message says what to change.
    """
    env = dict(os.environ if env is None else env)
    values = {s.name: _resolve(s, env, overrides) for s in SETTINGS}
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
    return Settings(values, {s.name: (s, CORE) for s in SETTINGS}, overrides, env)
