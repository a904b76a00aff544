"""Settings for the UI: model providers (keys write-only), default model, per-agent models."""
from __future__ import annotations

import json
import re

from pydantic import BaseModel, Field
from quart import Blueprint, g, jsonify
from quart_schema import validate_request

from .. import addresses, auth
from ..errors import BadRequest, NotFound
from ..gateway import config_from_json, config_to_json
from ..ids import now_iso
from ..settings import mask
from ..quart_app import current_app

bp = Blueprint("settings_api", __name__)
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")


class ProviderBody(BaseModel):
    id: str = Field(min_length=1, max_length=40)
    kind: str = Field(min_length=1, max_length=40)
    baseUrl: str = Field(default="", max_length=500)
    apiKey: str | None = Field(default=None, max_length=1000)
    models: list[str] = Field(default_factory=list, max_length=200)
    contextWindow: int = Field(default=32000, ge=512, le=10_000_000)


class SettingsBody(BaseModel):
    providers: list[ProviderBody] | None = Field(default=None, max_length=50)
    defaultModel: str | None = Field(default=None, max_length=200)
    fallbackModels: list[str] | None = Field(default=None, max_length=10)
    agentModels: dict[str, str] | None = None


def _current_default(gw) -> str:
    try:
        return gw.default_model()
    except BadRequest:
        return ""


def settings_json(core) -> dict:
    gw = core.engine.gateway
    providers = []
    for src in gw.sources:
        providers.append({**config_to_json(src.config), "source": src.source, "readOnly": src.read_only})
    return {"providers": providers, "defaultModel": _current_default(gw), "fallbackModels": list(gw.fallback_models),
            "agentModels": {a["id"]: a["model"] for a in core.engine.agents.all()}, "models": gw.models(),
            "providerKinds": [{"name": k.name, "description": k.description, "defaultBaseUrl": k.default_base_url,
                               "needsKey": k.needs_key} for k in core.providers],
            "settings": core.settings.public()}


@bp.get("/api/settings")
@auth.requires("guest")
async def get_settings():
    """Admins see everything (keys masked); others only which models exist and the default."""
    full = settings_json(current_app.xj)
    if g.actor.at_least("admin"):
        return jsonify(full)
    return jsonify({"defaultModel": full["defaultModel"], "models": full["models"]})


def _check_provider(core, body: ProviderBody, stored: dict) -> dict:
    if not _PROVIDER_ID.match(body.id):
        raise BadRequest(f"provider id {body.id!r} must be lower-case letters, digits, _ or -", "invalid_provider_id")
    if body.kind not in core.providers:
        raise BadRequest(f"Unknown provider kind {body.kind!r}", "unknown_provider")
    if body.baseUrl and not re.match(r"^https?://[^\s/]+", body.baseUrl):
        raise BadRequest("baseUrl must be an http(s) URL", "invalid_base_url")
    if body.baseUrl:
        addresses.check_url_form(body.baseUrl)
    models = [m.strip() for m in body.models if m.strip()]
    if any(len(m) > 200 for m in models):
        raise BadRequest("model names are at most 200 characters", "invalid_models")
    old = stored.get(body.id)
    key = body.apiKey
    if key is None or (old is not None and old.api_key and key == mask(old.api_key)):
        key = old.api_key if old is not None else ""  # keys are write-only: the masked form keeps the stored one
    return {"id": body.id, "kind": body.kind, "baseUrl": body.baseUrl.rstrip("/"), "apiKey": key,
            "models": models, "contextWindow": body.contextWindow}


@bp.put("/api/settings")
@auth.requires("admin")
@validate_request(SettingsBody)
async def put_settings(data: SettingsBody):
    core = current_app.xj
    gw = core.engine.gateway
    agents = core.engine.agents
    stored = {s.config.id: s.config for s in gw.sources if s.source == "settings"}
    writes: dict[str, str] = {}
    if data.providers is not None:
        reserved = {s.config.id: s.config for s in gw.sources if s.source != "settings"}
        seen: set[str] = set()
        items = []
        for body in data.providers:
            if body.id in seen or (body.id in reserved and body.kind != reserved[body.id].kind):
                raise BadRequest(f"provider id {body.id!r} is used twice or reserved", "duplicate_provider")
            seen.add(body.id)
            if body.id in reserved:
                continue  # a read-only provider (environment, built-in) as GET showed it: not stored here
            items.append(_check_provider(core, body, stored))
        writes["providers"] = json.dumps(items, ensure_ascii=False)
    if data.fallbackModels is not None:
        writes["fallback_models"] = json.dumps([m for m in data.fallbackModels if m], ensure_ascii=False)
    if data.defaultModel is not None and not (not gw.stored_default and data.defaultModel == _current_default(gw)):
        writes["default_model"] = json.dumps(data.defaultModel.strip(), ensure_ascii=False)
    elif "providers" in writes and not gw.stored_default and not core.settings.default_model:
        # adding a provider never moves the agents to it silently: the default in use stays until the owner picks
        try:
            writes["default_model"] = json.dumps(gw.default_model(), ensure_ascii=False)
        except BadRequest:
            pass
    for agent_id in (data.agentModels or {}):
        if agents.get(agent_id) is None:
            raise NotFound(f"Agent {agent_id!r} not found", "agent_not_found")
    models = {a: m for a, m in (data.agentModels or {}).items() if agents.get(a)["model"] != m}

    # validate model names against the configuration as it will be, before anything is stored
    old = (list(gw.sources), gw.stored_default, list(gw.fallback_models))
    try:
        if "providers" in writes:
            from ..gateway import Source

            gw.sources = [Source(config_from_json(d), "settings") for d in json.loads(writes["providers"])] + \
                [s for s in gw.sources if s.source != "settings"]
        if "default_model" in writes:
            gw.stored_default = json.loads(writes["default_model"])
            if gw.stored_default:
                gw.resolve(gw.stored_default)
        for model in json.loads(writes.get("fallback_models", "[]")):
            gw.resolve(model)
        for model in models.values():
            if model:
                gw.resolve(model)
    finally:
        gw.sources, gw.stored_default, gw.fallback_models = old

    now = now_iso()

    def work(conn):
        for key, value in writes.items():
            conn.execute("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         (key, value, now))

    await core.db.run_write(work)
    await gw.load()
    for agent_id, model in models.items():  # through the agents service: agent.json follows the database
        await agents.update(agent_id, {"model": model})
    return jsonify(settings_json(core))
