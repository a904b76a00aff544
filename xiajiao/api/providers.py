"""Model providers and their health (circuit breaker state, failures, latency)."""
from __future__ import annotations

from quart import Blueprint, current_app, jsonify

from .. import auth

bp = Blueprint("providers", __name__)


@bp.get("/api/providers")
@auth.requires("member")
async def list_providers():
    return jsonify({"providers": current_app.xj.engine.gateway.provider_status()})
