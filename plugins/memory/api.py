"""``/api/agents/<id>/memories``: list (filter by class, search), create, edit, delete (owner and admins)."""
from __future__ import annotations

from dataclasses import dataclass

from quart import Blueprint, current_app, g, jsonify, request
from quart_schema import validate_querystring, validate_request

from xiajiao import BadRequest, requires

from . import store

bp = Blueprint("memory", __name__)


@dataclass
class ListQuery:
    q: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass
class NewMemory:
    content: str
    importance: float = 0.5
    tags: list[str] | None = None
    scope: str = "private"  # "shared": a team fact recalled in every channel
    supersedes: str | None = None  # id of an older memory this one updates


@dataclass
class MemoryChange:
    content: str | None = None
    importance: float | None = None
    tags: list[str] | None = None
    scope: str | None = None


def _limits(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= 200 or offset < 0:
        raise BadRequest("limit must be 1-200 and offset at least 0", "invalid_paging")
    return limit, offset


@bp.get("/api/agents/<agent_id>/memories")
@requires("admin")
@validate_querystring(ListQuery)
async def list_memories(agent_id: str, query_args: ListQuery):
    app = current_app.xj
    await store.agent_row(app, agent_id)
    klass = request.args.get("class") or None  # "class" is a Python keyword: read it by hand
    store.check_fields(klass=klass)
    limit, offset = _limits(query_args.limit, query_args.offset)
    if query_args.q:
        rows = await store.search(app, agent_id, query_args.q, klass=klass, limit=limit)
        total = len(rows)
    else:
        rows, total = await store.listing(app, agent_id, klass=klass, limit=limit, offset=offset)
    return jsonify({"memories": [store.memory_json(r) for r in rows], "total": total})


@bp.post("/api/agents/<agent_id>/memories")
@requires("admin")
@validate_request(NewMemory)
async def create_memory(agent_id: str, data: NewMemory):
    app = current_app.xj
    await store.agent_row(app, agent_id)
    body = await request.get_json()
    row, status = await store.write(app, agent_id, data.content, klass=body.get("class", "semantic"),
                                    importance=data.importance, tags=data.tags, origin="api",
                                    user_id=store.writer_id(g.actor), scope=data.scope,
                                    supersedes=data.supersedes)
    return jsonify({"status": status, "memory": store.memory_json(row)}), 201 if status == "created" else 200


@bp.put("/api/agents/<agent_id>/memories/<memory_id>")
@requires("admin")
@validate_request(MemoryChange)
async def update_memory(agent_id: str, memory_id: str, data: MemoryChange):
    app = current_app.xj
    await store.agent_row(app, agent_id)
    body = await request.get_json()
    row = await store.update(app, agent_id, memory_id, content=data.content, klass=body.get("class"),
                             importance=data.importance, tags=data.tags, scope=data.scope)
    return jsonify({"memory": store.memory_json(row)})


@bp.get("/api/agents/<agent_id>/memories/<memory_id>")
@requires("admin")
async def get_memory(agent_id: str, memory_id: str):
    app = current_app.xj
    await store.agent_row(app, agent_id)
    row = await store.get(app, agent_id, memory_id)
    history = await store.versions(app, agent_id, memory_id)
    return jsonify({"memory": store.memory_json(row), "versions": [
        {"version": v["version"], "content": v["content"], "replacedAt": v["replaced_at"],
         "source": {"channelId": v["channel_id"], "messageId": v["message_id"]},
         **({"range": {"fromSeq": v["range_start"], "toSeq": v["range_end"]}} if v["range_start"] is not None else {})}
        for v in history]})


@bp.delete("/api/agents/<agent_id>/memories/<memory_id>")
@requires("admin")
async def delete_memory(agent_id: str, memory_id: str):
    app = current_app.xj
    await store.agent_row(app, agent_id)
    await store.delete(app, agent_id, memory_id)
    return jsonify({"ok": True, "deleted": memory_id})
