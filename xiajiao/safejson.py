"""JSON from clients, checked once: depth, valid Unicode text, no NUL characters.

Python's parser accepts ``"\\ud800"`` (a lone surrogate, which no database or encoder can write)
and hits the recursion limit on deep nesting; both would surface later as a 500. Every JSON
body (the app's JSON provider) and every WebSocket frame goes through :func:`loads`.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import BadRequest

MAX_DEPTH = 64
_BAD = re.compile("[\x00\ud800-\udfff]")


def check_text(text: str, what: str = "text") -> str:
    """``text`` unless it holds a NUL or a lone surrogate (400 ``invalid_text``)."""
    bad = _BAD.search(text)
    if bad:
        kind = "NUL characters" if bad.group() == "\x00" else "lone UTF-16 surrogates"
        raise BadRequest(f"The {what} holds {kind}, which are not accepted", "invalid_text")
    return text


def check(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` (parsed JSON) unless it nests deeper than ``max_depth`` or holds bad text."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise BadRequest(f"JSON may nest at most {max_depth} levels deep", "json_too_deep")
            if isinstance(item, dict):
                for k, v in item.items():
                    check_text(k, "key")
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
    return value


def loads(raw: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse and :func:`check` client JSON; ValueError for what is not JSON at all."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"JSON may nest at most {max_depth} levels deep", "json_too_deep") from None
    return check(value, max_depth)
