"""Model providers and their health (circuit breaker state, failures, latency); a connection test."""
from __future__ import annotations

import time

from quart import Blueprint, g, jsonify

from .. import addresses, auth
from ..errors import BadRequest, NotFound, ProviderError
from ..models import ChatMessage, ChatRequest
from ..quart_app import current_app

bp = Blueprint("providers", __name__)


@bp.get("/api/providers")
@auth.requires("member")
async def list_providers():
    # provider errors may quote what the provider's server answered: admins only see them verbatim
    return jsonify({"providers": current_app.xj.engine.gateway.provider_status(detail=g.actor.at_least("admin"))})


def _provider(provider_id: str):
    cfg = current_app.xj.engine.gateway.config(provider_id)
    if cfg is None:
        raise NotFound(f"Provider {provider_id!r} not found", "provider_not_found")
    return cfg


@bp.post("/api/providers/<provider_id>/test")
@auth.requires("admin")
async def test_provider(provider_id: str):
    """Ask the provider's first model for a few tokens: ``{"ok", "model", "latencyMs"}`` or ``{"ok": false, "error", "code"}``."""
    gw = current_app.xj.engine.gateway
    cfg = _provider(provider_id)
    if not cfg.models:
        raise BadRequest(f"Provider {provider_id!r} lists no model to test", "no_models")
    if cfg.base_url:  # the Test reaches only where a provider may be (SSRF guard)
        await addresses.check_destination(cfg.base_url, allow_private=current_app.xj.settings.allow_private_provider_urls)
    model = f"{cfg.id}/{cfg.models[0]}"
    request = ChatRequest(model=cfg.models[0], messages=[ChatMessage("user", "Reply with one word: ok")],
                          max_tokens=8)
    t0 = time.perf_counter()
    try:  # straight to the provider: a failed test must not open the breaker for real traffic
        text = await gw.probe(cfg, request)
    except ProviderError as exc:
        return jsonify({"ok": False, "model": model, "error": exc.message, "code": exc.code})
    return jsonify({"ok": True, "model": model, "reply": text[:200],
                    "latencyMs": round((time.perf_counter() - t0) * 1000, 1)})


@bp.get("/api/providers/<provider_id>/models")
@auth.requires("admin")
async def provider_models(provider_id: str):
    """The models the provider lists at its ``/models`` endpoint: ``{"models": [...]}`` (502 with a code if it fails)."""
    cfg = _provider(provider_id)
    return jsonify({"providerId": cfg.id, "models": await current_app.xj.engine.gateway.list_models(cfg)})
