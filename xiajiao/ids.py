"""Identifiers and timestamps in the forms the API uses."""
from __future__ import annotations

import secrets
import time
from datetime import datetime, UTC


def new_id(prefix: str) -> str:
    """``prefix_`` + 16 random hex digits (``msg_3f9a…``)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def now_iso() -> str:
    """Now in ISO 8601 UTC with milliseconds: ``2026-03-24T10:00:00.123Z``."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
