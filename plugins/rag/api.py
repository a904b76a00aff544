"""``/api/rag/*``: upload (background ingestion), query, list, status, delete."""
from __future__ import annotations

from dataclasses import dataclass

from quart import Blueprint, current_app, g, jsonify, request
from quart_schema import validate_querystring, validate_request

from xiajiao import MULTIPART_OVERHEAD, BadRequest, TooLarge, charge_limit, file_size, limit_body, requires

from . import store

bp = Blueprint("rag", __name__)


@dataclass
class AgentQuery:
    agentId: str


@dataclass
class QueryBody:
    agentId: str
    query: str
    topK: int = 5


@bp.post("/api/rag/upload")
@requires("member")
async def upload():
    app = current_app.xj
    doc_limit = app.settings.rag_max_document_bytes
    limit_body(doc_limit + MULTIPART_OVERHEAD)
    form = await request.form
    files = await request.files
    agent_id = form.get("agentId", "")
    await store.agent_row(app, agent_id)
    file = files.get("file")
    if file is None or not file.filename:
        raise BadRequest("A file is required (multipart field 'file')", "missing_file")
    size = file_size(file.stream)
    if size > doc_limit:
        raise TooLarge(f"The document is larger than the limit of {doc_limit} bytes", "document_too_large")
    agent_limit = app.settings.rag_max_agent_bytes
    if await store.stored_bytes(app, agent_id) + size > agent_limit:
        raise TooLarge(f"The agent's documents would exceed the limit of {agent_limit} bytes; "
                       "delete some first", "knowledge_base_full")
    charge_limit("upload_bytes", size)
    parser = store.pick_parser(app, file.filename, file.mimetype)
    data = file.read()
    doc = await store.create_document(app, agent_id, file.filename, data, parser, g.actor.id)
    app.spawn(store.ingest(app, agent_id, doc, data, parser, g.actor.id), name=f"ingest:{agent_id}:{doc['uid']}")
    body = store.document_json(doc, agent_id)
    return jsonify({"documentId": body["id"], "document": body}), 202


@bp.post("/api/rag/query")
@requires("member")
@validate_request(QueryBody)
async def query(data: QueryBody):
    app = current_app.xj
    agent = await store.agent_row(app, data.agentId)
    found = await store.search(app, agent, data.query, data.topK, user_id=g.actor.id)
    return jsonify({"agentId": data.agentId, "query": data.query, **found})


@bp.get("/api/rag/documents")
@requires("member")
@validate_querystring(AgentQuery)
async def documents(query_args: AgentQuery):
    app = current_app.xj
    await store.agent_row(app, query_args.agentId)
    rows = await store.list_documents(app, query_args.agentId)
    return jsonify({"documents": [store.document_json(r, query_args.agentId) for r in rows]})


@bp.get("/api/rag/documents/<document_id>")
@requires("member")
@validate_querystring(AgentQuery)
async def document(document_id: str, query_args: AgentQuery):
    app = current_app.xj
    await store.agent_row(app, query_args.agentId)
    row = await store.get_document(app, query_args.agentId, document_id)
    return jsonify({"document": store.document_json(row, query_args.agentId)})


@bp.delete("/api/rag/documents/<document_id>")
@requires("admin")
@validate_querystring(AgentQuery)
async def delete(document_id: str, query_args: AgentQuery):
    app = current_app.xj
    await store.agent_row(app, query_args.agentId)
    await store.delete_document(app, query_args.agentId, document_id)
    return jsonify({"ok": True, "deleted": document_id})
