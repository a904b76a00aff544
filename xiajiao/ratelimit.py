"""Token-bucket rate limits, keyed by user id (or client address before login).

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a
second; each request (or WebSocket frame) takes one. An empty bucket answers with
the seconds until the next token, which becomes ``Retry-After``.
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


def limiters_for(settings) -> tuple[RateLimiter, RateLimiter]:
    """(requests per user/address, login attempts per address) from the settings."""
    requests = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    logins = RateLimiter(settings.login_attempts_per_minute, settings.login_attempts_per_minute)
    return requests, logins
