"""File uploads: type checked by content, stored under a random name, served safely."""
from __future__ import annotations

import asyncio
import codecs
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO

import filetype
from quart import Blueprint, request, send_file

from .. import auth
from ..bodies import MULTIPART_OVERHEAD, copy_file, file_size, limit_body
from ..errors import BadRequest, NotFound, TooLarge, UnsupportedMediaType
from ..ratelimit import charge
from ..quart_app import current_app

bp = Blueprint("uploads", __name__)

# sniffed MIME type -> stored extension; anything else is refused
ALLOWED = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/ogg": "ogg", "audio/x-wav": "wav",
    "video/mp4": "mp4", "video/webm": "webm",
}
SERVED_TYPES = {ext: mime for mime, ext in ALLOWED.items()} | {
    "txt": "text/plain", "md": "text/markdown"}  # Quart adds "; charset=utf-8" to text types itself
IMAGES = {"png", "jpg", "gif", "webp"}
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[a-z0-9]{1,5}$")


def sniff(stream: IO[bytes], filename: str) -> str:
    """The extension to store an upload under, judged by its content (never by its name)."""
    stream.seek(0)
    kind = filetype.guess(stream.read(8192))
    if kind is not None:
        if kind.mime in ALLOWED:
            return ALLOWED[kind.mime]
        raise UnsupportedMediaType(f"Files of type {kind.mime} are not accepted", "unsupported_file_type")
    if _is_utf8_text(stream):
        return "md" if filename.lower().endswith((".md", ".markdown")) else "txt"
    raise UnsupportedMediaType("Accepted: images, PDF, Office documents, audio, video, UTF-8 text",
                               "unsupported_file_type")


def _is_utf8_text(stream: IO[bytes]) -> bool:
    """UTF-8 without NUL bytes, decoded piece by piece."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while piece := stream.read(256 * 1024):
            if b"\x00" in piece:
                return False
            decoder.decode(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def stored_name(filename: str, ext: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(filename).stem).strip("-")[:40] or "file"
    return f"{stem}-{secrets.token_hex(8)}.{ext}"


@bp.post("/api/upload")
@auth.requires("guest")
async def upload():
    core = current_app.xj
    limit = core.settings.max_upload_bytes
    limit_body(limit + MULTIPART_OVERHEAD)
    files = await request.files
    f = files.get("file")
    if f is None:
        raise BadRequest("Send the file as multipart form field 'file'", "missing_file")
    size = file_size(f.stream)
    if size > limit:
        raise TooLarge(f"The file is larger than the limit of {limit} bytes", "file_too_large")
    if not size:
        raise BadRequest("The file is empty", "empty_file")
    charge("upload_bytes", size)
    original = f.filename or "file"
    ext = await asyncio.to_thread(sniff, f.stream, original)
    month = time.strftime("%Y-%m", time.gmtime())
    folder = core.uploads_dir / month
    folder.mkdir(parents=True, exist_ok=True)
    name = stored_name(original, ext)
    tmp = folder / f".{name}.part"
    await asyncio.to_thread(copy_file, f.stream, tmp)
    os.replace(tmp, folder / name)  # all or nothing
    return {"url": f"/uploads/{month}/{name}", "name": original, "size": size,
            "mimeType": SERVED_TYPES[ext]}


def upload_path(core, url: str) -> Path | None:
    """The file behind an ``/uploads/<month>/<name>`` URL this server gave out, or None."""
    parts = url.split("/") if isinstance(url, str) else []
    if len(parts) != 4 or parts[:2] != ["", "uploads"] or not _MONTH.match(parts[2]) or not _NAME.match(parts[3]):
        return None
    path = core.uploads_dir / parts[2] / parts[3]
    return path if parts[3].rsplit(".", 1)[1] in SERVED_TYPES and path.is_file() else None


@bp.get("/uploads/<month>/<name>")
@auth.requires("guest")
async def serve(month: str, name: str):
    if not _MONTH.match(month) or not _NAME.match(name):
        raise NotFound("File not found", "file_not_found")
    ext = name.rsplit(".", 1)[1]
    path = current_app.xj.uploads_dir / month / name
    if ext not in SERVED_TYPES or not path.is_file():
        raise NotFound("File not found", "file_not_found")
    resp = await send_file(path, mimetype=SERVED_TYPES[ext], as_attachment=ext not in IMAGES,
                           attachment_filename=name, conditional=True)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, max-age=86400"
    return resp
