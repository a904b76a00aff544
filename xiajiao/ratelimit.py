"""Rate limits, keyed by user id (or client address before login).

A token bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a
second; each request (or WebSocket frame) takes one, what is expensive (messages that
start agent turns, upload bytes, tasks) takes from its own bucket. An empty bucket
answers with the seconds until the next token, which becomes ``Retry-After``. Logins
are throttled apart: see :class:`LoginThrottle`.
"""
from __future__ import annotations

import time
from typing import Callable

from .errors import RateLimited


class RateLimiter:
    def __init__(self, per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 50_000):
        self.rate = max(per_minute, 0.0001) / 60.0
        self.capacity = float(max(1, burst))
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def hit(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 when allowed, else seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate

    def check(self, key: str, message: str = "Too many requests, slow down") -> None:
        """Raise :class:`RateLimited` (429 with Retry-After) when ``key`` is over its limit."""
        wait = self.hit(key)
        if wait > 0:
            raise RateLimited(message, retry_after=wait)

    def reset(self, key: str) -> None:
        self._buckets.pop(key, None)

    def _prune(self, now: float) -> None:
        # buckets that have refilled completely carry no state worth keeping
        full = [k for k, (t, last) in self._buckets.items()
                if t + (now - last) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]


class Backoff:
    """Failures per key: ``free`` of them pass, then each further try waits, doubling from
    ``base`` seconds up to ``cap``. A success clears the key; a quiet ``forget`` seconds too."""

    def __init__(self, free: int, *, base: float = 1.0, cap: float = 900.0, forget: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000):
        self.free, self.base, self.cap, self.forget = max(0, free), base, cap, forget
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last one)

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        count, last = self._failures.get(key, (0, 0.0))
        now = self.clock()
        if count and now - last > self.forget:
            self._failures.pop(key, None)
            return 0.0
        if count < self.free:
            return 0.0
        return max(0.0, last + min(self.cap, self.base * 2 ** (count - self.free)) - now)

    def failed(self, key: str) -> None:
        now = self.clock()
        count, _ = self._failures.get(key, (0, now))
        self._failures[key] = (count + 1, now)
        if len(self._failures) > self.max_keys:
            for k in [k for k, (_, t) in self._failures.items() if now - t > self.forget]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class LoginThrottle:
    """Login attempts: a flood guard per address, and backoff on wrong passwords per address
    and per account. The account's allowance is large, so wrong passwords sent from one
    address slow that address down without locking the real user out from his own."""

    def __init__(self, settings, clock: Callable[[], float] = time.monotonic):
        self.attempts = RateLimiter(settings.login_attempts_per_minute, settings.login_attempts_per_minute,
                                    clock=clock)
        self.by_address = Backoff(settings.login_failures_per_address, clock=clock)
        self.by_account = Backoff(settings.login_failures_per_account, clock=clock)

    def check(self, address: str, account: str) -> None:
        """Raise :class:`RateLimited` when this address or account must wait before trying."""
        wait = max(self.attempts.hit(address), self.by_address.wait(address), self.by_account.wait(account))
        if wait > 0:
            raise RateLimited("Too many login attempts, wait a moment", retry_after=wait)

    def failed(self, address: str, account: str) -> None:
        self.by_address.failed(address)
        self.by_account.failed(account)

    def succeeded(self, address: str, account: str) -> None:
        self.by_address.succeeded(address)
        self.by_account.succeeded(account)


class Limits:
    """The buckets of a running app: cheap requests apart from what is expensive."""

    def __init__(self, settings):
        self.requests = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.turns = RateLimiter(settings.turn_rate_per_minute, settings.turn_rate_burst)
        self.upload_bytes = RateLimiter(settings.upload_bytes_per_minute,
                                        max(settings.upload_bytes_per_minute, settings.max_upload_bytes))
        self.tasks = RateLimiter(settings.task_rate_per_minute, settings.task_rate_per_minute)
        self.invites = RateLimiter(settings.login_attempts_per_minute, settings.login_attempts_per_minute)
        self.logins = LoginThrottle(settings)


KINDS = ("turns", "upload_bytes", "tasks", "invites")


def charge(kind: str, cost: float = 1.0) -> None:
    """Take ``cost`` from the current caller's ``kind`` bucket (``turns``, ``upload_bytes``,
    ``tasks``, ``invites``); raise :class:`RateLimited` (429 with Retry-After) when it is empty."""
    from quart import g

    from .quart_app import current_app

    from .auth import client_key

    if kind not in KINDS:
        raise ValueError(f"unknown limit {kind!r}")
    limiter: RateLimiter = getattr(current_app.xj.limits, kind)
    wait = limiter.hit(client_key(g.get("actor"), g.get("client_address")), cost)
    if wait > 0:
        raise RateLimited("Too many requests of this kind, slow down", retry_after=wait)
