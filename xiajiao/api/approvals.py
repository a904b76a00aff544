"""Tool approvals: the tool calls waiting for a person, and the decision (approve, edit, reject)."""
from __future__ import annotations

from quart import Blueprint, g, jsonify, request

from .. import auth
from ..engine.approvals import STATUSES, approval_json
from ..errors import BadRequest
from ..quart_app import current_app

bp = Blueprint("approvals", __name__)


@bp.get("/api/approvals")
@auth.requires("guest")
async def list_approvals():
    """A channel's tool calls waiting for approval (``status``: another state, or ``all``), newest first."""
    core = current_app.xj
    channel_id = request.args.get("channelId", "")
    status = request.args.get("status", "pending")
    if status not in (*STATUSES, "all"):
        raise BadRequest(f"status must be one of {', '.join(STATUSES)} or all", "invalid_status")
    channel = await auth.authorized_channel(core, g.actor, channel_id)
    items = await core.engine.approvals.list(channel["id"], None if status == "all" else status)
    return jsonify({"approvals": items})


@bp.get("/api/approvals/<approval_id>")
@auth.requires("guest")
async def get_approval(approval_id: str):
    approvals = current_app.xj.engine.approvals
    row = await approvals.get(approval_id)
    await approvals.authorize(g.actor, row)
    return jsonify(approval_json(row))


@bp.post("/api/approvals/<approval_id>")
@auth.requires("guest")
async def decide(approval_id: str):
    """Approve, edit (with new ``arguments``) or reject a tool call waiting for approval."""
    body = await request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('Send {"decision": "approve" | "edit" | "reject", "arguments": {...}}', "invalid_json")
    decided = await current_app.xj.engine.approvals.decide(g.actor, approval_id, body.get("decision"),
                                                           body.get("arguments"))
    return jsonify(decided)
