"""``POST /mcp``: the agents as MCP tools over streamable HTTP (see xiajiao.mcp_server)."""
from __future__ import annotations

from quart import Blueprint, g, request

from .. import auth
from ..quart_app import current_app

bp = Blueprint("mcp", __name__)


@bp.post("/mcp")
@auth.requires("guest")
async def mcp_endpoint():
    return await current_app.xj.mcp.respond(request, g.actor)
