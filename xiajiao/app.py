"""The application: ``create_app(settings)`` builds the Quart app and wires every part."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from quart import g, jsonify, request
from quart_schema import QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from . import __version__, auth, chat, jsonio, safejson
from .bodies import BoundedRequest
from .openapi import XiajiaoOpenAPI
from .db import Database, WorkspaceDatabases, migrations_from_dir
from .errors import StartupError, XiajiaoError
from .errors import HTTP_CODES
from .models import Frame, Pack, Parser, ProviderKind, SearchBackend, Tool, Trigger
from . import proxies
from .plugins import (Plugins, Registry, load_bundled, load_directory, load_entrypoints, new_manager)
from .quart_app import XiajiaoApp
from .realtime import Hub
from .settings import SETTINGS_BY_NAME, Setting, Settings, load_settings

log = logging.getLogger("xiajiao")
access_log = logging.getLogger("xiajiao.access")

PACKAGE_DIR = Path(__file__).resolve().parent
# The web UI: inside an installed package it is xiajiao/web (setup.py maps the checkout's web/ there);
# run from a checkout (or an editable install) it is the top-level web/.
WEB_DIR = next((d for d in (PACKAGE_DIR / "web", PACKAGE_DIR.parent / "web") if (d / "templates").is_dir()),
               PACKAGE_DIR.parent / "web")
MIGRATIONS = Path(__file__).resolve().parent / "db" / "migrations"


def _cache_schema_adapters() -> None:
    """quart-schema builds a new pydantic TypeAdapter for every validated request (~1.5 ms
    each, measured by the bench); one adapter per model class gives the same results."""
    import functools

    import pydantic
    from quart_schema import conversion

    if getattr(conversion.TypeAdapter, "_xiajiao_cached", False):
        return

    @functools.lru_cache(maxsize=512)
    def cached(tp: Any) -> pydantic.TypeAdapter:
        return pydantic.TypeAdapter(tp)

    def adapter(tp: Any) -> pydantic.TypeAdapter:
        try:
            return cached(tp)
        except TypeError:  # an unhashable type: no caching
            return pydantic.TypeAdapter(tp)

    adapter._xiajiao_cached = True  # type: ignore[attr-defined]
    conversion.TypeAdapter = adapter  # type: ignore[misc, assignment]


def _validate_tool(tool: Any) -> None:
    import inspect
    import re

    if not isinstance(tool, Tool):
        raise TypeError("expected xiajiao.Tool")
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_\-]{0,63}", tool.name):
        raise ValueError(f"tool name {tool.name!r} must be letters, digits, _ or -")
    if not isinstance(tool.parameters, dict) or tool.parameters.get("type") != "object":
        raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type object")
    if not inspect.iscoroutinefunction(tool.fn):
        raise ValueError(f"tool {tool.name!r}: fn must be an async function")


def _typed(kind: type, label: str):
    def check(item: Any) -> None:
        if not isinstance(item, kind):
            raise TypeError(f"expected xiajiao.{label}")
    return check


# the frame types the core serves itself (xiajiao.api.ws and the engine); a plugin cannot take them
CORE_FRAMES = frozenset({"auth", "ping", "subscribe", "unsubscribe", "typing", "stop", "chain_decision",
                         "approval_decision"})


def _validate_frame(f: Any) -> None:
    if not isinstance(f, Frame):
        raise TypeError("expected xiajiao.Frame")
    if not isinstance(f.type, str) or not f.type.replace("_", "").isalnum() or not f.type.islower():
        raise ValueError(f"frame type {f.type!r}: lower-case letters, digits and _ only")
    if f.type in CORE_FRAMES:
        raise ValueError(f"{f.type!r} is a frame type of the core")
    if not callable(f.handle):
        raise TypeError("a frame needs an async handle(app, actor, data)")


def _validate_embedder(e: Any) -> None:
    if not getattr(e, "name", None) or not isinstance(getattr(e, "dim", None), int) or not hasattr(e, "embed"):
        raise TypeError("an embedder needs name, dim (int) and async embed(texts, kind=)")


def _client_json(app: XiajiaoApp) -> None:
    """JSON read from clients goes through xiajiao.safejson (depth, Unicode, NUL); the provider
    otherwise stays the one quart-schema installed."""
    class ClientJSON(type(app.json)):  # type: ignore[misc]  # subclass whatever provider quart-schema set
        def loads(self, s: str | bytes, **kwargs: Any) -> Any:
            return safejson.loads(s)

        def dumps(self, obj: Any, **kwargs: Any) -> str:
            if set(kwargs) <= {"separators"}:  # the compact responses (indented in debug mode: as before)
                return jsonio.dumps(obj, default=self.default)
            return super().dumps(obj, **kwargs)

    app.json = ClientJSON(app)
    app.json.ensure_ascii = False
    app.json.sort_keys = False


def _setting(*args: Any, **kw: Any) -> Setting:
    if len(args) == 1 and not kw and isinstance(args[0], Setting):
        return args[0]
    try:
        return Setting(*args, **kw)
    except ValueError as exc:
        raise TypeError(str(exc)) from None


def _validate_setting(setting: Any) -> None:
    if not isinstance(setting, Setting):
        raise TypeError("expected xiajiao.Setting")
    if setting.name in SETTINGS_BY_NAME:
        raise ValueError(f"{setting.name!r} is a setting of the core")


class Command:
    def __init__(self, name: str, fn, help: str = ""):
        self.name, self.fn, self.help = name, fn, help


def new_registries() -> dict[str, Registry]:
    return {
        "settings": Registry("setting", lambda s: s.name, _validate_setting, build=_setting),  # collected first
        "providers": Registry("provider kind", lambda k: k.name, _typed(ProviderKind, "ProviderKind")),
        "embedders": Registry("embedder", lambda e: e.name, _validate_embedder),
        "tools": Registry("tool", lambda t: t.name, _validate_tool),
        "parsers": Registry("parser", lambda p: p.name, _typed(Parser, "Parser")),
        "packs": Registry("pack", lambda p: p.name, _typed(Pack, "Pack")),
        "search_backends": Registry("search backend", lambda b: b.name, _typed(SearchBackend, "SearchBackend")),
        "triggers": Registry("trigger", lambda t: t.prefix, _typed(Trigger, "Trigger")),
        "frames": Registry("frame type", lambda f: f.type, _validate_frame),
        "routes": Registry("blueprint", lambda b: b.name),
        "commands": Registry("command", lambda c: c.name, build=Command),
    }


class Xiajiao:
    """The core, as plugins see it: the ``app`` argument of every hook."""

    def __init__(self, settings: Settings, plugins: Plugins):
        self.settings = settings
        self.plugins = plugins
        self.version = __version__
        self.registries = new_registries()
        self.data_dir = Path(settings.data_dir)
        self.uploads_dir = self.data_dir / "uploads"
        self.db = Database(self.data_dir / "xiajiao.db", label="xiajiao.db",
                           migrations=migrations_from_dir(MIGRATIONS), readers=settings.db_readers,
                           skip_migrations=settings.skip_migrations, on_connect=self._prepare_connection)
        self.workspaces = WorkspaceDatabases(self.data_dir / "workspaces", idle_seconds=settings.workspace_idle_seconds,
                                             readers=settings.db_readers, skip_migrations=settings.skip_migrations,
                                             on_connect=self._prepare_connection)
        self.hub = Hub(replay_size=settings.ws_replay_size, queue_size=settings.ws_queue_size,
                       replay_channels=settings.ws_replay_channels)
        self.engine: Any = None  # the conversation engine, set up in start()
        self.tasks: Any = None  # the background task queue (xiajiao.tasks), set up in start()
        self.ws_handlers: dict[str, Any] = {}  # WebSocket frame type -> async fn(conn, data); see xiajiao.api.ws
        self.quart: XiajiaoApp | None = None
        self.generated_password: str | None = None
        self.started = False
        self.stopping = False  # set when the stop begins: late socket clean-ups skip the database
        self._background: set[asyncio.Task] = set()
        self.state: dict[str, Any] = {}  # room for plugins' own state, keyed by plugin name
        self._plugin_dbs: dict[str, Database] = {}  # plugin_db(name): data/plugins/<name>.db
        self._plugin_db_lock = asyncio.Lock()
        self.metrics: dict[tuple[str, str], int] = {}  # (name, label) -> count, shown at /metrics
        self.limiter: Any = None  # per-user request limiter and per-address login limiter (xiajiao.api.auth)
        self.login_limiter: Any = None
        self.limits: Any = None  # set by xiajiao.api.auth
        self.trusted_proxies: Any = None
        from .backup import Backups

        self.backups = Backups(self)
        from .mcp_server import AgentsServer

        self.mcp = AgentsServer(self)  # POST /mcp; the SDK loads on the first request
        self.started_at: float | None = None

    def _prepare_connection(self, conn, label: str) -> None:
        # runs in the connection's thread when it opens; plugins add functions or pragmas
        self.plugins.call_sync("prepare_connection", conn=conn, database=label)

    # -- registries, by kind
    @property
    def tools(self) -> Registry:
        return self.registries["tools"]

    @property
    def providers(self) -> Registry:
        return self.registries["providers"]

    @property
    def embedders(self) -> Registry:
        return self.registries["embedders"]

    @property
    def parsers(self) -> Registry:
        return self.registries["parsers"]

    @property
    def packs(self) -> Registry:
        return self.registries["packs"]

    def collect_registrations(self) -> None:
        """Fill every registry; the plugins' settings first, so the others may read them."""
        for kind, registry in self.registries.items():
            self.plugins.collect_sync(f"register_{kind}", registry)
            if kind == "settings":
                self.settings = plugin_settings(self.settings, registry, self.plugins)

    def describe_plugins(self) -> list[dict]:
        """Every plugin with its version, hooks, what it registered and its settings' values (secrets
        masked): ``/-/plugins`` and ``xiajiao plugins``."""
        described = self.plugins.describe(self.registries)
        for p in described:
            names = p["registered"].get("settings", [])
            if names:
                p["settings"] = {self.settings.declared[n][0].env: self.settings.shown(n) for n in names}
        return described

    # -- helpers for plugins

    def workspace(self, agent_id: str) -> Path:
        """The folder of an agent: ``data/workspaces/<agent_id>/``."""
        return self.workspaces.folder(agent_id)

    async def workspace_db(self, agent_id: str, filename: str, migrations=()) -> Database:
        """An agent's own database file (opened on first use, closed when idle)."""
        return await self.workspaces.get(agent_id, filename, migrations)

    async def plugin_db(self, name: str, migrations=()) -> Database:
        """A plugin's own database file, ``data/plugins/<name>.db``, shared by all agents and channels
        (opened on first use with its migrations, closed when the app stops)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"plugin database name {name!r}: letters, digits and _ only")
        async with self._plugin_db_lock:
            db = self._plugin_dbs.get(name)
            if db is None:
                folder = self.data_dir / "plugins"
                folder.mkdir(parents=True, exist_ok=True)
                db = Database(folder / f"{name}.db", label=f"plugins/{name}.db", migrations=list(migrations),
                              readers=self.settings.db_readers, skip_migrations=self.settings.skip_migrations,
                              on_connect=self._prepare_connection)
                await db.open()
                self._plugin_dbs[name] = db
            return db

    def spawn(self, coro, *, name: str = "") -> asyncio.Task:
        """Run work in the background; it is awaited (or cancelled) on shutdown."""
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._background.add(task)

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def hook(self, name: str, **kwargs: Any) -> Any:
        return await self.plugins.call(name, app=self, **kwargs)

    def hook_soon(self, name: str, **kwargs: Any) -> asyncio.Task | None:
        """Call a hook in the background (``spawn``); no task at all when no plugin implements it."""
        if not getattr(self.plugins.pm.hook, name).get_hookimpls():
            return None
        return self.spawn(self.hook(name, **kwargs), name=name)

    # -- lifecycle

    def _check_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StartupError(
                f"data folder {self.data_dir} is not writable ({exc.strerror}); set XIAJIAO_DATA_DIR to a writable folder."
            ) from None

    async def start(self) -> None:
        self._check_data_dir()
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        await self.db.open()
        interrupted = await chat.mark_interrupted(self.db)
        if interrupted:
            log.warning("marked interrupted replies", extra={"count": interrupted})
        self.generated_password = await auth.ensure_owner(self.db, self.settings.owner_password or None)
        if self.generated_password:
            print(
                "\n  Xiajiao: the owner account was created.\n"
                f"  Owner password: {self.generated_password}\n"
                "  It is shown only this once; only a hash is stored.\n",
                file=sys.stdout, flush=True,
            )
        self.workspaces.start()
        from .engine import Engine  # the engine needs registries filled and the db open

        self.engine = Engine(self)
        await self.engine.start()
        self._install_frames()
        from .tasks import TaskQueue

        self.tasks = TaskQueue(self)
        await self.tasks.start()
        await self.hook("startup")
        if self.settings.backup_interval_hours > 0:
            self.spawn(self.backups.loop(), name="backups")
        self.started_at = time.time()
        self.started = True

    def _install_frames(self) -> None:
        """Serve the plugins' frame types on the socket, each called with the caller as ``actor``."""
        for frame in self.registries["frames"]:
            async def handle(conn: Any, data: dict, frame: Frame = frame) -> None:
                await frame.handle(self, conn.caller, data)

            self.ws_handlers[frame.type] = handle

    async def quiesce(self) -> None:
        """The first step of a stop, before the server waits for open connections: every
        WebSocket is closed with 1001 (going away), so none is left to be cut."""
        self.stopping = True
        await self.hub.close_all(1001)
        if self.tasks is not None:
            await self.tasks.stop()

    async def stop(self) -> None:
        await self.quiesce()
        if self.engine is not None:
            await self.engine.stop()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=self.settings.shutdown_timeout)
        await self.hook("shutdown")
        await self.workspaces.close()
        for pdb in self._plugin_dbs.values():
            await pdb.close()
        self._plugin_dbs.clear()
        await self.db.close()
        self.started = False


def plugin_settings(settings: Settings, registry: Registry, plugins: Plugins) -> Settings:
    """``settings`` with the settings the plugins declared resolved (see Settings.with_plugins),
    plugin by plugin in load order."""
    order = {name: i for i, name in enumerate(plugins.info)}
    entries = sorted(registry.entries.values(), key=lambda r: order.get(r.plugin, len(order)))
    return settings.with_plugins((r.item, r.plugin) for r in entries)


def resolve_settings(settings: Settings, plugins: Plugins) -> Settings:
    """``settings`` completed with those the loaded ``plugins`` declare through register_settings."""
    registry = new_registries()["settings"]
    plugins.collect_sync("register_settings", registry)
    return plugin_settings(settings, registry, plugins)


def build_plugins(settings: Settings, extra: Iterable[Any] = ()) -> Plugins:
    plugins = new_manager(trace=settings.trace_plugins)
    load_bundled(plugins, __version__)
    if settings.load_entrypoint_plugins:
        load_entrypoints(plugins)
    if settings.plugins_dir:
        load_directory(plugins, settings.plugins_dir)
    for module in extra:
        plugins.register(module, getattr(module, "__name__", None), source="test")
    return plugins


def create_app(settings: Settings | None = None, *, plugins: Iterable[Any] = ()) -> XiajiaoApp:
    """Build the app. ``plugins``: extra plugin objects to register (tests use this)."""
    settings = settings or load_settings()
    pm = build_plugins(settings, plugins)
    core = Xiajiao(settings, pm)
    core.collect_registrations()
    settings = core.settings  # now with the plugins' settings

    app = XiajiaoApp(__name__, static_folder=str(WEB_DIR / "static"), static_url_path="/static",
                template_folder=str(WEB_DIR / "templates"))
    app.request_class = BoundedRequest  # body limits counted as bytes arrive, chunked ones included
    app.xj = core
    core.quart = app
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 64 * 1024
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_upload_bytes + 64 * 1024
    app.config["BODY_TIMEOUT"] = 120
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # the DefaultJSONProvider has them
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _cache_schema_adapters()
    QuartSchema(app, openapi_path="/openapi.json", redoc_ui_path=None, swagger_ui_path=None, scalar_ui_path=None,
                info={"title": "Xiajiao", "version": __version__}, openapi_provider_class=XiajiaoOpenAPI)
    _client_json(app)

    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    trusted_origins = frozenset(o.rstrip("/").lower() for o in origins if o != "*")  # pass the CSRF check
    if origins:  # off by default: only pages of the listed origins may call the API from a browser
        from quart_cors import cors

        cors(app, allow_origin="*" if "*" in origins else origins, allow_credentials=settings.cors_credentials,
             allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
             allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID", "Last-Event-ID",
                            "X-Xiajiao-Record"],
             expose_headers=["X-Request-ID", "Retry-After", "X-Xiajiao-Session"], max_age=settings.cors_max_age)

    from .api import register_blueprints

    register_blueprints(app)
    for bp in core.registries["routes"]:
        app.register_blueprint(bp)

    @app.before_serving
    async def _start() -> None:
        await core.start()

    @app.after_serving
    async def _stop() -> None:
        await core.stop()

    try:
        trusted = proxies.parse_trusted(settings.trusted_proxies)
    except ValueError as exc:
        raise StartupError(f"XIAJIAO_TRUSTED_PROXIES: {exc}") from None
    core.trusted_proxies = trusted

    def _see_client(ctx) -> None:
        seen = proxies.client(ctx.remote_addr, ctx.scheme, ctx.headers, trusted)
        g.client_address, g.client_scheme, g.client_host = seen

    @app.before_websocket
    async def _before_ws() -> None:
        from quart import websocket

        _see_client(websocket)

    @app.before_request
    async def _before() -> None:
        _see_client(request)
        g.t0 = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if (0 < len(rid) <= 128 and rid.isprintable()) else secrets.token_hex(8)
        auth.check_csrf(request.method, request.headers, trusted_origins, host=g.client_host)
        for value in request.args.values():
            safejson.check_text(value, "query string")
        g.actor = await auth.resolve_actor(core.db, cookie=request.cookies.get(auth.SESSION_COOKIE),
                                           headers=request.headers)

    @app.after_request
    async def _after(response):
        rid = g.get("request_id")
        if rid:
            response.headers["X-Request-ID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        rule = request.url_rule.rule if request.url_rule else None
        key = ("http_requests_total", f'status="{response.status_code // 100}xx"')
        core.metrics[key] = core.metrics.get(key, 0) + 1
        if settings.access_log:
            actor = g.get("actor")
            access_log.info("request", extra={
                "request_id": rid, "method": request.method, "path": request.path, "route": rule,
                "status": response.status_code,
                "ms": round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 2),
                "user": actor.id if actor else None, "address": g.get("client_address"),
            })
        return response

    @app.errorhandler(XiajiaoError)
    async def _xiajiao_error(err: XiajiaoError):
        return jsonify(err.to_json()), err.status, err.headers

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(err: RequestSchemaValidationError):
        detail = err.validation_error
        errors = []
        if hasattr(detail, "errors"):
            for e in detail.errors():
                errors.append({"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")})
        message = "Invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors) if errors \
            else "Invalid request body"
        return jsonify({"error": message, "code": "validation_error", "fields": errors}), 400

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException):
        code = HTTP_CODES.get(err.code or 500, "http_error")
        message = err.description if err.code != 404 else "Not found"
        if err.code == 413:
            message = f"Request body is larger than the limit of {settings.max_upload_bytes} bytes"
        return jsonify({"error": message, "code": code}), err.code or 500

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception):
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return jsonify({"error": "Internal server error", "code": "internal_error",
                        "requestId": g.get("request_id")}), 500

    return app
