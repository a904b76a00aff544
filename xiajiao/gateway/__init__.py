"""The model gateway: one door to every configured model provider.

It resolves a model name to a provider (``provider/model`` or a bare model a
provider lists), builds one provider object per configuration (so its HTTP client
and connection pool are reused), and wraps every call with timeouts (first token,
idle stream), retries with jittered backoff (429, 5xx, connection errors; honouring
``Retry-After``), failover along a fallback chain *only before the first token*,
a circuit breaker per provider, and usage/latency records per agent and provider.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator

from ..errors import BadRequest, ProviderError
from ..ids import now_iso
from ..models import ChatEvent, ChatRequest, ProviderConfig, TextDelta, Timeouts, ToolCallsDone, Usage
from ..settings import Setting, mask

log = logging.getLogger("xiajiao.gateway")

RETRY_BASE = 0.25  # seconds; doubled per attempt, jittered
RETRY_CAP = 8.0
RETRY_AFTER_CAP = 60.0
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")


class Breaker:
    """A circuit breaker: opens after ``threshold`` consecutive failures; after ``cooldown``
    seconds it lets one probe through (half-open); the probe's outcome closes or re-opens it."""

    def __init__(self, threshold: int, cooldown: float):
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self.probing = True  # exactly one probe
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def release(self) -> None:
        """The probe ended without a verdict (cancelled): let the next call probe."""
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self.probing = False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (time.monotonic() - self.opened_at))


@dataclass
class Health:
    calls: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_latency_ms: float | None = None
    last_first_token_ms: float | None = None


@dataclass
class Source:
    """Where a provider configuration came from."""

    config: ProviderConfig
    source: str  # settings | env | builtin

    @property
    def read_only(self) -> bool:
        return self.source != "settings"


@dataclass
class Call:
    """The outcome of one streamed model call, filled in as it runs."""

    provider: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    first_token_ms: float | None = None
    latency_ms: float | None = None
    attempts: int = 0


REQUEST_FAULTS = (400, 404, 413, 422)  # the provider refused this request, not a sign it is down


def request_fault(exc: ProviderError) -> bool:
    """Was the call refused because of the request itself (bad parameters, unknown model, too long)?"""
    return exc.extra.get("httpStatus") in REQUEST_FAULTS


def backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(max(0.0, retry_after), RETRY_AFTER_CAP)
    return min(RETRY_CAP, RETRY_BASE * (2 ** attempt)) * random.uniform(0.5, 1.0)


def config_from_json(data: dict) -> ProviderConfig:
    return ProviderConfig(id=data["id"], kind=data["kind"], base_url=data.get("baseUrl", "") or "",
                          api_key=data.get("apiKey", "") or "", models=list(data.get("models") or []),
                          context_window=int(data.get("contextWindow") or 32000),
                          options=dict(data.get("options") or {}))


def config_to_json(cfg: ProviderConfig, *, masked: bool = True) -> dict:
    return {"id": cfg.id, "kind": cfg.kind, "baseUrl": cfg.base_url,
            "apiKey": (mask(cfg.api_key) if cfg.api_key else "") if masked else cfg.api_key,
            "models": list(cfg.models), "contextWindow": cfg.context_window, "options": dict(cfg.options)}


def env_provider_settings(prefix: str, provider: str, default_base_url: str) -> list[Setting]:
    """The settings by which the owner configures one ``provider`` from the environment, for a
    provider plugin to declare: ``<prefix>_api_key`` (secret), ``<prefix>_base_url``, ``<prefix>_models``."""
    return [Setting(f"{prefix}_api_key", "", f"API key of {provider} configured from the environment.", str, True),
            Setting(f"{prefix}_base_url", "", f"Base URL of that provider (empty: {default_base_url})."),
            Setting(f"{prefix}_models", "", "Comma-separated models served by that provider.")]


def env_provider_configs(app: Any, kind: str, prefix: str | None = None) -> list[ProviderConfig]:
    """The provider ``env-<kind>`` the settings of :func:`env_provider_settings` describe, if a key or
    a base URL is set (a ``ProviderKind.env_configs`` for provider plugins)."""
    s, prefix = app.settings, prefix or kind
    key, url = getattr(s, f"{prefix}_api_key"), getattr(s, f"{prefix}_base_url")
    if not (key or url):
        return []
    models = [m.strip() for m in getattr(s, f"{prefix}_models").split(",") if m.strip()]
    return [ProviderConfig(id=f"env-{kind}", kind=kind, base_url=url, api_key=key, models=models)]


@functools.lru_cache(maxsize=256)
def _matches_patterns(name: str, patterns: str) -> bool:
    """Whether ``name`` matches one of the comma-separated glob ``patterns`` (case-insensitive; asked
    every turn, so remembered)."""
    from fnmatch import fnmatch

    return any(fnmatch(name.lower(), p.strip().lower()) for p in patterns.split(",") if p.strip())


class Gateway:
    def __init__(self, app):
        self.app = app
        s = app.settings
        self.timeouts = Timeouts(connect=s.connect_timeout, first_token=s.first_token_timeout, idle=s.idle_stream_timeout)
        self.retries = max(0, s.provider_retries)
        self.sources: list[Source] = []
        self.stored_default = ""
        self.fallback_models: list[str] = []
        self._providers: dict[str, tuple[ProviderConfig, Any]] = {}
        self.breakers: dict[str, Breaker] = {}
        self.health: dict[str, Health] = {}
        self._usage: list[tuple] = []
        self._flusher: asyncio.Task | None = None

    # ------------------------------------------------------------------ configuration

    async def load(self) -> None:
        """(Re)read provider configurations: settings table, environment, built-in kinds."""
        rows = {r["key"]: r["value"] for r in await self.app.db.fetchall(
            "SELECT key, value FROM settings WHERE key IN ('providers', 'default_model', 'fallback_models')")}
        stored = [config_from_json(d) for d in json.loads(rows.get("providers") or "[]")]
        self.stored_default = json.loads(rows.get("default_model") or '""')
        self.fallback_models = json.loads(rows.get("fallback_models") or "[]")
        self.sources = [Source(c, "settings") for c in stored]
        for origin in ("env", "builtin"):
            for kind in self.app.providers:
                offer = kind.env_configs if origin == "env" else kind.builtin_configs
                if offer:
                    self.sources += [Source(c, origin) for c in offer(self.app)]
        live = {src.config.id for src in self.sources}
        for pid in list(self._providers):
            cfg, _ = self._providers[pid]
            if pid not in live or self.config(pid) != cfg:
                await self._close_provider(pid)

    def config(self, provider_id: str) -> ProviderConfig | None:
        for src in self.sources:
            if src.config.id == provider_id:
                return src.config
        return None

    def configured(self) -> list[Source]:
        """Providers the owner configured (settings or environment), not the built-in ones."""
        return [s for s in self.sources if s.source != "builtin"]

    def models(self) -> list[str]:
        """Every model name a user may pick, as ``provider/model``."""
        return [f"{s.config.id}/{m}" for s in self.sources for m in s.config.models]

    def default_model(self) -> str:
        chosen = self.stored_default or self.app.settings.default_model
        if chosen:
            return chosen
        for src in self.configured():
            if src.config.models:
                return f"{src.config.id}/{src.config.models[0]}"
        for src in self.sources:
            if src.config.models:
                return f"{src.config.id}/{src.config.models[0]}"
        raise BadRequest("No model is configured", "no_model")

    def default_model_info(self) -> dict:
        """The default model and whether a built-in provider (not one the owner configured) serves it."""
        try:
            cfg, name = self.resolve(None)
        except BadRequest:
            return {"model": None, "builtin": False, "configured": False}
        source = next((s.source for s in self.sources if s.config.id == cfg.id), "builtin")
        return {"model": f"{cfg.id}/{name}", "builtin": source == "builtin", "configured": True}

    def resolve(self, model: str | None) -> tuple[ProviderConfig, str]:
        """``provider/model`` or a bare model name → (its provider configuration, the model name)."""
        model = (model or "").strip() or self.default_model()
        if "/" in model:
            pid, name = model.split("/", 1)
            cfg = self.config(pid)
            if cfg is not None and name and (name in cfg.models or not cfg.models or cfg.options.get("any_model")):
                return cfg, name
        for src in self.sources:
            if model in src.config.models:
                return src.config, model
        raise BadRequest(f"Unknown model {model!r}", "unknown_model")

    def check_model(self, model: str) -> None:
        if model:
            self.resolve(model)

    def provider(self, cfg: ProviderConfig):
        entry = self._providers.get(cfg.id)
        if entry is not None and entry[0] == cfg:
            return entry[1]
        kind = self.app.providers.get(cfg.kind)
        if kind is None:
            raise BadRequest(f"Unknown provider kind {cfg.kind!r}", "unknown_provider")
        provider = kind.factory(cfg)
        if entry is not None:
            self.app.spawn(self._aclose(entry[1]))
        self._providers[cfg.id] = (cfg, provider)
        return provider

    async def _close_provider(self, pid: str) -> None:
        entry = self._providers.pop(pid, None)
        if entry:
            await self._aclose(entry[1])

    @staticmethod
    async def _aclose(provider) -> None:
        try:
            await provider.aclose()
        except Exception:  # closing a client must never break a reload
            log.warning("closing a provider client failed", exc_info=True)

    def breaker(self, pid: str) -> Breaker:
        b = self.breakers.get(pid)
        if b is None:
            s = self.app.settings
            b = self.breakers[pid] = Breaker(s.breaker_failures, s.breaker_cooldown)
        return b

    def sees_images(self, model: str | None) -> bool:
        """Whether a model takes image parts: the provider's ``vision`` option (true, false or a list of
        models), else the ``vision_models`` patterns."""
        cfg, name = self.resolve(model)
        option = cfg.options.get("vision") if isinstance(cfg.options, dict) else None
        if isinstance(option, bool):
            return option
        if isinstance(option, list):
            return name in option
        return _matches_patterns(name, str(self.app.settings.vision_models or ""))

    def context_window(self, model: str | None) -> int:
        cfg, name = self.resolve(model)
        per_model = cfg.options.get("context_windows", {}) if isinstance(cfg.options, dict) else {}
        return int(per_model.get(name) or cfg.context_window)

    # ------------------------------------------------------------------ calling

    async def stream(self, request: ChatRequest, *, agent_id: str | None = None, fallback: list[str] | None = None,
                     call: Call | None = None) -> AsyncIterator[ChatEvent]:
        """Stream one model call with retries, breaker and failover (before the first token only)."""
        call = call if call is not None else Call()
        chain = [request.model, *[m for m in (fallback if fallback is not None else self.fallback_models)
                                  if m and m != request.model]]
        last: ProviderError | None = None
        for position, model in enumerate(chain):
            try:
                cfg, name = self.resolve(model)
            except BadRequest:
                if position == 0:
                    raise
                continue  # a stale fallback entry is skipped
            breaker = self.breaker(cfg.id)
            attempt = 0
            while True:
                if not breaker.allow():
                    last = ProviderError(f"Provider {cfg.id!r} is unavailable (circuit open)", "circuit_open",
                                         retryable=True, retry_after=breaker.retry_in())
                    break
                call.provider, call.model, call.attempts = cfg.id, name, call.attempts + 1
                started = False
                t0 = time.perf_counter()
                try:
                    async for event in self._guarded(self.provider(cfg), replace(request, model=name), call, t0):
                        started = True
                        yield event
                except ProviderError as exc:
                    refused = request_fault(exc)
                    if refused:  # the provider works; our request was wrong: no breaker count, no failover
                        breaker.release()
                    else:
                        breaker.failure()
                    self._record(agent_id, cfg.id, name, call, t0, error=exc)
                    if started or refused:
                        raise
                    last = exc
                    bound = self.app.settings.max_retry_after
                    if exc.retry_after is not None and exc.retry_after > bound:
                        # waiting silently for minutes helps nobody: fail now and say why
                        last = ProviderError(f"{exc.message}; the provider asks to wait {exc.retry_after:g} s "
                                             f"(Retry-After), more than max_retry_after ({bound:g} s)",
                                             "provider_retry_after_too_long", retry_after=exc.retry_after)
                        break
                    if exc.retryable and attempt < self.retries:
                        await asyncio.sleep(backoff(attempt, exc.retry_after))
                        attempt += 1
                        continue
                    break
                except BaseException:  # cancelled (Stop, a timeout, shutdown) or the reader went away
                    breaker.release()
                    raise
                breaker.success()
                self._record(agent_id, cfg.id, name, call, t0)
                return
        raise last or ProviderError("No provider could answer", "provider_error")

    async def _guarded(self, provider, request: ChatRequest, call: Call, t0: float) -> AsyncIterator[ChatEvent]:
        """The provider's events, with the first-token and idle timeouts, errors as ProviderError.

        The idle timeout is one lazily re-armed timer per stream (not one per chunk): each
        event only records the time; the timer, when it fires, re-arms itself unless the
        stream has been silent for ``idle`` seconds (time spent by the consumer does not count).
        """
        loop = asyncio.get_running_loop()
        idle = self.timeouts.idle
        events = provider.stream(request, timeouts=self.timeouts).__aiter__()
        first = True
        last, paused = loop.time(), False
        handle: asyncio.TimerHandle | None = None
        try:
            async with asyncio.timeout(None) as deadline:
                def check() -> None:
                    nonlocal handle
                    now = loop.time()
                    if paused or now - last < idle:
                        handle = loop.call_at((now if paused else last) + idle, check)
                    else:
                        deadline.reschedule(now)

                while True:
                    try:
                        if first:
                            async with asyncio.timeout(self.timeouts.first_token):
                                event = await events.__anext__()
                            last = loop.time()
                            handle = loop.call_at(last + idle, check)
                        else:
                            event = await events.__anext__()
                            last = loop.time()
                    except StopAsyncIteration:
                        return
                    except ProviderError:
                        raise
                    except (asyncio.CancelledError, TimeoutError):
                        raise
                    except Exception as exc:  # a provider plugin's bug or an unparsable stream is a provider failure
                        raise ProviderError(f"Model {request.model!r} failed: {type(exc).__name__}: {exc}",
                                            "provider_error", retryable=True) from exc
                    if isinstance(event, Usage):
                        call.usage = event
                        continue
                    if first:
                        call.first_token_ms = (time.perf_counter() - t0) * 1000
                        first = False
                    paused = True
                    yield event
                    paused, last = False, loop.time()
        except TimeoutError:
            what = "first token" if first else "next token"
            raise ProviderError(f"Model {request.model!r} timed out waiting for the {what}", "timeout",
                                retryable=first) from None
        finally:
            if handle is not None:
                handle.cancel()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # the stream is already broken; closing it is best effort
                    pass

    async def probe(self, cfg: ProviderConfig, request: ChatRequest) -> str:
        """One call straight to a provider (a connection test): no retries, no fallback, and neither
        the circuit breaker nor the health of real traffic hears of it."""
        t0 = time.perf_counter()
        parts = [e.text async for e in self._guarded(self.provider(cfg), request, Call(), t0)
                 if isinstance(e, TextDelta)]
        return "".join(parts)

    async def list_models(self, cfg: ProviderConfig) -> list[str]:
        """The models the provider itself lists (its ``/models`` endpoint)."""
        provider = self.provider(cfg)
        lister = getattr(provider, "list_models", None)
        if lister is None:
            raise BadRequest(f"Providers of kind {cfg.kind!r} cannot list their models", "no_model_list")
        return list(await lister())

    async def complete(self, request: ChatRequest, *, agent_id: str | None = None) -> tuple[str, list]:
        """Run a call to the end: (text, tool calls)."""
        parts: list[str] = []
        calls: list = []
        async for event in self.stream(request, agent_id=agent_id):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ToolCallsDone):
                calls.extend(event.calls)
        return "".join(parts), calls

    # ------------------------------------------------------------------ usage and health

    def _record(self, agent_id: str | None, provider: str, model: str, call: Call, t0: float,
                error: ProviderError | None = None) -> None:
        latency = (time.perf_counter() - t0) * 1000
        call.latency_ms = latency
        h = self.health.setdefault(provider, Health())
        h.calls += 1
        h.last_latency_ms = round(latency, 2)
        if call.first_token_ms is not None:
            h.last_first_token_ms = round(call.first_token_ms, 2)
        if error is not None:
            h.failures += 1
            h.last_error = f"{error.code}: {error.message}"[:300]
            h.last_error_at = now_iso()
        self._usage.append((agent_id, provider, model, call.usage.prompt_tokens if not error else 0,
                            call.usage.completion_tokens if not error else 0, call.first_token_ms, latency,
                            0 if error else 1, h.last_error if error else None, now_iso()))
        if self._flusher is None or self._flusher.done():
            self._flusher = self.app.spawn(self._flush_later(), name="usage-flush")

    async def _flush_later(self) -> None:
        await asyncio.sleep(0.5)  # batch the usage rows of many calls into one write
        await self.flush()

    async def flush(self) -> None:
        rows, self._usage = self._usage, []
        if rows:
            await self.app.db.executemany(
                "INSERT INTO usage (agent_id, provider, model, prompt_tokens, completion_tokens, first_token_ms, "
                "latency_ms, ok, error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def provider_status(self, detail: bool = True) -> list[dict]:
        """Health of every provider; without ``detail`` the last error is its code only."""
        out = []
        for src in self.sources:
            cfg = src.config
            b, h = self.breaker(cfg.id), self.health.get(cfg.id, Health())
            out.append({"id": cfg.id, "kind": cfg.kind, "source": src.source, "models": list(cfg.models),
                        "health": {"state": b.state, "consecutiveFailures": b.failures, "calls": h.calls,
                                   "failures": h.failures,
                                   "lastError": h.last_error if detail or not h.last_error else h.last_error.split(":", 1)[0],
                                   "lastErrorAt": h.last_error_at,
                                   "lastLatencyMs": h.last_latency_ms, "lastFirstTokenMs": h.last_first_token_ms,
                                   "retryInSeconds": round(b.retry_in(), 2)}})
        return out

    async def close(self) -> None:
        if self._flusher and not self._flusher.done():
            self._flusher.cancel()
        await self.flush()
        for pid in list(self._providers):
            await self._close_provider(pid)

