"""``POST /api/triggers/<id>``: an incoming webhook starts a schedule, a workflow … (see xiajiao.triggers)."""
from __future__ import annotations

from quart import Blueprint, jsonify, request

from .. import auth
from ..quart_app import current_app
from ..triggers import triggers

bp = Blueprint("triggers", __name__)


@bp.post("/api/triggers/<trigger_id>")
@auth.requires(None)
async def fire(trigger_id: str):
    """The token comes as ``X-Trigger-Token`` or ``?token=``; an optional JSON ``{"text": "..."}``
    goes to what starts (added to a schedule's prompt, a workflow's input)."""
    token = request.headers.get("X-Trigger-Token") or request.args.get("token") or ""
    body = await request.get_json(silent=True)
    text = body["text"] if isinstance(body, dict) and isinstance(body.get("text"), str) else ""
    started = await triggers(current_app.xj).fire(trigger_id, token, text)
    return jsonify({"ok": True, **started}), 202
