"""Backups (owner), channel export (readers) and import (admins)."""
from __future__ import annotations

import re

from quart import Blueprint, Response, g, jsonify, request, send_file

from .. import auth, backup, exports
from ..errors import BadRequest, NotFound
from ..quart_app import current_app

bp = Blueprint("backups", __name__)

_NAME = re.compile(r"^xiajiao-backup-\d{8}-\d{6}(-\d+)?\.tar\.gz$")


@bp.post("/api/backups")
@auth.requires("owner")
async def create_backup():
    """Write a backup archive into the backup folder now; the server keeps serving meanwhile."""
    core = current_app.xj
    manifest = await core.backups.run()
    return jsonify({"backup": _summary(manifest)}), 201


@bp.get("/api/backups")
@auth.requires("owner")
async def list_backups():
    core = current_app.xj
    return jsonify({"backups": backup.list_backups(core.backups.folder), "folder": str(core.backups.folder),
                    "last": core.backups.last, "intervalHours": core.settings.backup_interval_hours,
                    "keep": core.settings.backup_keep})


@bp.get("/api/backups/<name>")
@auth.requires("owner")
async def download_backup(name: str):
    core = current_app.xj
    path = core.backups.folder / name
    if not _NAME.match(name) or not path.is_file():
        raise NotFound("No such backup", "backup_not_found")
    return await send_file(path, mimetype="application/gzip", as_attachment=True, attachment_filename=name)


@bp.get("/api/channels/<channel_id>/export")
@auth.requires("member")
async def export_channel(channel_id: str):
    """The channel as JSON (``?format=json``, the default) or Markdown (``?format=md``)."""
    core = current_app.xj
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "md"):
        raise BadRequest("format must be 'json' or 'md'", "invalid_format")
    await auth.authorized_channel(core, g.actor, channel_id)  # admins: any channel; members: their own
    doc = await exports.export_channel(core.db, channel_id)
    safe = re.sub(r"[^\w.-]+", "-", doc["channel"]["name"], flags=re.UNICODE).strip("-") or channel_id
    if fmt == "md":
        resp = Response(exports.to_markdown(doc), content_type="text/markdown; charset=utf-8")
    else:
        resp = jsonify(doc)
    resp.headers["Content-Disposition"] = f"attachment; filename=\"{channel_id}.{fmt}\"; filename*=UTF-8''{_quote(safe)}.{fmt}"
    return resp


@bp.post("/api/channels/import")
@auth.requires("admin")
async def import_channel():
    """Create a new channel from a JSON export (``GET /api/channels/<id>/export``)."""
    core = current_app.xj
    doc = await request.get_json(silent=True)
    if doc is None:
        raise BadRequest("Send the JSON export as the request body", "invalid_json")
    channel = await exports.import_channel(core.db, doc, creator_id=g.actor.id)
    count = await core.db.fetchval("SELECT COUNT(*) FROM messages WHERE channel_id = ?", (channel["id"],))
    return jsonify({"id": channel["id"], "ok": True, "messages": count}), 201


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name)


def _summary(manifest: dict) -> dict:
    return {"name": manifest["path"].rsplit("/", 1)[-1], "bytes": manifest["bytes"], "createdAt": manifest["createdAt"],
            "files": len(manifest["files"]), "databases": len(manifest["databases"])}

