"""Incoming webhooks: one scheme for everything a URL with a secret token can start.

A plugin registers a :class:`~xiajiao.models.Trigger` (``register_triggers``) for the ids it owns
(by prefix: ``sch_`` schedules, ``wf_`` workflows). ``POST /api/triggers/<id>`` then checks the
token (``X-Trigger-Token`` header or ``?token=``) against the stored hash, at most one start per
``TRIGGER_INTERVAL`` seconds per id, and hands the caller's optional ``{"text"}`` to ``fire``.
Only a hash of the token is stored; the token is shown once, when it is made.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Callable

from .errors import Forbidden, NotFound, RateLimited, Unauthorized

TRIGGER_INTERVAL = 10.0  # seconds between two starts by one id's webhook
MAX_TEXT = 8000


def token_hash(token: str) -> str:
    """The stored form of a trigger token (sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_trigger_token() -> tuple[str, str]:
    """A fresh trigger token and its hash: show the token once, store the hash."""
    token = "xjt_" + secrets.token_urlsafe(24)
    return token, token_hash(token)


class Triggers:
    """The registered trigger kinds and the time of each id's last start."""

    def __init__(self, core: Any, clock: Callable[[], float] = time.monotonic):
        self.core = core
        self.clock = clock
        self.last: dict[str, float] = {}

    def kind_of(self, trigger_id: str):
        for kind in self.core.registries["triggers"]:
            if trigger_id.startswith(kind.prefix):
                return kind
        return None

    async def fire(self, trigger_id: str, token: str, text: str) -> dict:
        kind = self.kind_of(trigger_id)
        found = await kind.find(self.core, trigger_id) if kind is not None else None
        if found is None:
            raise NotFound("No such trigger", "trigger_not_found")
        if not token:
            raise Unauthorized("Send the trigger's token (X-Trigger-Token header or ?token=)", "trigger_token_missing")
        if not hmac.compare_digest(token_hash(token), found["hash"]):
            raise Forbidden("Wrong trigger token", "trigger_token_invalid")
        if not found.get("enabled", True):
            raise Forbidden(f"This {kind.name} is paused", f"{kind.name}_paused")
        now = self.clock()
        wait = TRIGGER_INTERVAL - (now - self.last.get(trigger_id, now - TRIGGER_INTERVAL))
        if wait > 0:
            raise RateLimited("This trigger ran moments ago", retry_after=wait)
        self.last[trigger_id] = now
        if len(self.last) > 10_000:  # ids whose interval is over carry nothing worth keeping
            self.last = {k: t for k, t in self.last.items() if now - t < TRIGGER_INTERVAL}
        return await kind.fire(self.core, trigger_id, text[:MAX_TEXT])


def triggers(core: Any) -> Triggers:
    found = core.state.get("_triggers")
    if found is None:
        found = core.state["_triggers"] = Triggers(core)
    return found
