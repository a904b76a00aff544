"""Files attached to a message, as the model receives them.

Images go to a vision-capable model as image parts (the provider plugin writes its wire
format); a model that cannot see gets a note naming the image instead. Documents are read
by the registered parser plugins and their text is added to the message, each file named,
within ``attachment_tokens``.
"""
from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections import OrderedDict
from pathlib import Path

from ..models import Image
from ..text import estimate_tokens

log = logging.getLogger("xiajiao.engine")

IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_CACHE: OrderedDict[tuple[str, float], str] = OrderedDict()  # (path, mtime) -> parsed text
_CACHE_SIZE = 64


def _path(app, url: str) -> Path | None:
    from ..api.uploads import upload_path

    return upload_path(app, url)


def _parser_for(app, name: str, path: Path):
    for suffix in (Path(name).suffix.lower(), path.suffix.lower()):
        for parser in app.parsers:
            if suffix and suffix in parser.extensions:
                return parser
    return None


async def document_text(app, name: str, path: Path) -> str | None:
    """The file's text through its parser plugin (cached), or None when no parser reads it."""
    parser = _parser_for(app, name, path)
    if parser is None:
        return None
    key = (str(path), path.stat().st_mtime)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    data = await asyncio.to_thread(path.read_bytes)
    if inspect.iscoroutinefunction(parser.parse):
        text = await parser.parse(data, name)
    else:
        text = await asyncio.to_thread(parser.parse, data, name)
    _CACHE[key] = text = (text or "").strip()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return text


def _cut(text: str, tokens: int) -> tuple[str, bool]:
    if estimate_tokens(text) <= tokens:
        return text, False
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix within the budget
        mid = (lo + hi + 1) // 2
        if estimate_tokens(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


async def with_attachments(app, content: str, attachments: list[dict], *, vision: bool,
                           images: bool = True) -> tuple[str, list[Image]]:
    """The message text with its documents' text added, and its images (for a vision model).

    ``images`` False (older messages of the history): images are only named."""
    budget = max(0, app.settings.attachment_tokens)
    notes: list[str] = []
    parts: list[Image] = []
    for item in attachments:
        name = str(item.get("name") or "file")
        path = _path(app, item.get("url") or "")
        if path is None:
            notes.append(f"[Attached file {name}: no longer available]")
            continue
        ext = path.suffix.lower().lstrip(".")
        if ext in IMAGE_TYPES:
            if vision and images:
                data = await asyncio.to_thread(path.read_bytes)
                parts.append(Image(IMAGE_TYPES[ext], base64.b64encode(data).decode("ascii"), name))
                notes.append(f"[Attached image: {name}]")
            elif not vision:
                notes.append(f"[Attached image: {name}. This model cannot see images; say so if the question "
                             "needs it.]")
            else:
                notes.append(f"[Attached image: {name} (shown earlier)]")
            continue
        try:
            text = await document_text(app, name, path)
        except Exception as exc:  # a broken file must not break the turn: the model is told it is unreadable
            log.warning("attachment %s could not be parsed", name, exc_info=True)
            notes.append(f"[Attached file {name}: could not be read ({type(exc).__name__})]")
            continue
        if text is None:
            notes.append(f"[Attached file {name}: no parser reads this type]")
            continue
        shown, cut = _cut(text, budget)
        budget -= estimate_tokens(shown)
        tail = f"\n[… {name} is cut here: {len(shown)} of {len(text)} characters]" if cut else ""
        notes.append(f"[Attached file: {name}]\n{shown}{tail}\n[End of {name}]")
    # the files first, the question last (a message cut to fit the budget keeps its end)
    return "\n\n".join([*notes, content.strip()] if content.strip() else notes), parts
