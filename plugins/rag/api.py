"""``/api/rag/*``: upload (background ingestion), query, list, status, delete, the passages a reply cites."""
from __future__ import annotations

from dataclasses import dataclass

from quart import Blueprint, current_app, g, jsonify, request
from quart_schema import validate_querystring, validate_request

from xiajiao import (MULTIPART_OVERHEAD, BadRequest, NotFound, TooLarge, authorized_channel, charge_limit, file_size,
                     get_message, limit_body, requires)

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


async def _cited_reply(message_id: str) -> tuple[str, str]:
    """The agent and the asked message of a reply the caller may read (404 otherwise)."""
    app = current_app.xj
    message = await get_message(app, message_id)
    if message is None or message.get("deleted"):
        raise NotFound("Message not found", "message_not_found")
    await authorized_channel(app, g.actor, message["channelId"], "channel.read")
    return message["agentId"] or "", (message["metadata"] or {}).get("replyTo") or ""


@bp.get("/api/rag/citations/<message_id>")
@requires("guest")
async def citations(message_id: str):
    """The passages a reply's [n] markers cite (whoever may read the reply's channel)."""
    agent_id, asked = await _cited_reply(message_id)
    found = await store.citations(current_app.xj, agent_id, asked) if agent_id else []
    return jsonify({"messageId": message_id, "agentId": agent_id or None, "citations": found})


@dataclass
class CitationQuery:
    n: int


@bp.get("/api/rag/citations/<message_id>/document")
@requires("guest")
@validate_querystring(CitationQuery)
async def cited_document(message_id: str, query_args: CitationQuery):
    """Citation n of a reply with its document's passages around it, to open the document there."""
    agent_id, asked = await _cited_reply(message_id)
    if not agent_id:
        raise NotFound("This reply has no such citation", "citation_not_found")
    found = await store.cited_document(current_app.xj, agent_id, asked, query_args.n)
    return jsonify({"messageId": message_id, **found})
