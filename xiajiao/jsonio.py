"""JSON the server writes (responses, WebSocket frames) and reads back from its own database.

Through orjson: a page of 50 messages encodes about ten times faster than with the standard
encoder, whose pure-Python path ``ensure_ascii=False`` selects. The output is the standard
encoder's compact form with the same values, Chinese kept as is (a float may be spelled
differently, ``2.5e-05`` as ``0.000025``, and NaN, which is not JSON, becomes null); whatever
orjson refuses (an integer beyond 64 bits, a lone surrogate) goes through the standard encoder,
so nothing that encoded before fails now.
Dates and dataclasses reach ``default`` as they did with the standard encoder.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text of ``obj``, non-ASCII characters kept."""
    try:
        return orjson.dumps(obj, default=default, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=default)


def loads(text: str | bytes) -> Any:
    """Parsed JSON; ValueError when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # or text orjson refuses that the standard parser reads (a lone surrogate)
        return json.loads(text)
