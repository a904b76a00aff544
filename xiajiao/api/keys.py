"""Personal API keys: each user creates, lists and revokes his own (the secret is shown once)."""
from __future__ import annotations

from pydantic.dataclasses import dataclass

from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import auth
from ..quart_app import current_app

bp = Blueprint("keys", __name__)


@dataclass
class NewKey:
    name: str = ""


@bp.get("/api/keys")
@auth.requires("guest")
async def list_keys():
    return jsonify({"keys": await auth.list_api_keys(current_app.xj.db, g.actor.id)})


@bp.post("/api/keys")
@auth.requires("guest")
@validate_request(NewKey)
async def create_key(data: NewKey):
    key, secret = await auth.create_api_key(current_app.xj.db, g.actor.id, data.name)
    return jsonify({"key": key, "secret": secret}), 201


@bp.get("/api/keys/<key_id>/webhook-secret")
@auth.requires("guest")
async def key_webhook_secret(key_id: str):
    """The secret that signs the webhooks of tasks created with this key (HMAC-SHA256)."""
    return jsonify({"webhookSecret": await auth.webhook_secret(current_app.xj.db, g.actor.id, key_id)})


@bp.delete("/api/keys/<key_id>")
@auth.requires("guest")
async def revoke_key(key_id: str):
    core = current_app.xj
    await core.hub.disconnect_credential(await auth.revoke_api_key(core.db, g.actor.id, key_id))
    return jsonify({"ok": True})
