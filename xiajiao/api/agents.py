"""Agents: list, create, read (with SOUL.md), update, delete."""
from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint, jsonify
from quart_schema import validate_request

from .. import auth
from ..agents import agent_json
from ..quart_app import current_app

bp = Blueprint("agents", __name__)


class AgentUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    avatar: str | None = Field(default=None, max_length=16)
    description: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, max_length=200)
    tools: list[str] | None = None
    soul: str | None = None
    status: str | None = None
    knowledge: bool | None = None
    requireApproval: bool | None = None  # every tool call of the agent waits for a person's approval


def _fields(data: AgentUpdate) -> dict:
    fields = data.model_dump(exclude_none=True)
    if "requireApproval" in fields:  # kept in the agent's config (and so in its agent.json)
        fields["config"] = {"requireApproval": fields.pop("requireApproval")}
    return fields


class AgentCreate(AgentUpdate):
    name: str = Field(min_length=1, max_length=64)


def _agents():
    return current_app.xj.engine.agents


@bp.get("/api/agents")
@auth.requires("guest")
async def list_agents():
    return jsonify({"agents": [agent_json(a) for a in _agents().all()]})


@bp.get("/api/agents/<agent_id>")
@auth.requires("guest")
async def get_agent(agent_id: str):
    agent = _agents().require(agent_id)
    return jsonify(agent_json(agent, soul=_agents().soul(agent_id)))


@bp.post("/api/agents")
@auth.requires("admin")
@validate_request(AgentCreate)
async def create_agent(data: AgentCreate):
    agent = await _agents().create(_fields(data))
    return jsonify(agent_json(agent, soul=_agents().soul(agent["id"]))), 201


class AgentRegister(BaseModel):
    id: str = Field(min_length=1, max_length=64)


@bp.post("/api/agents/register")
@auth.requires("admin")
@validate_request(AgentRegister)
async def register_agent(data: AgentRegister):
    """Register a folder copied into data/workspaces/<id>/ from another installation."""
    agent = await _agents().register(data.id)
    return jsonify(agent_json(agent, soul=_agents().soul(agent["id"]))), 201


@bp.put("/api/agents/<agent_id>")
@auth.requires("admin")
@validate_request(AgentUpdate)
async def update_agent(agent_id: str, data: AgentUpdate):
    agent = await _agents().update(agent_id, _fields(data))
    return jsonify(agent_json(agent, soul=_agents().soul(agent_id)))


@bp.delete("/api/agents/<agent_id>")
@auth.requires("admin")
async def delete_agent(agent_id: str):
    await _agents().delete(agent_id)
    return jsonify({"ok": True})


@bp.get("/api/tools")
@auth.requires("member")
async def list_tools():
    """Every tool plugins registered: what an agent's allow-list may name."""
    core = current_app.xj
    tools = [{"name": reg.name, "description": reg.item.description, "parameters": reg.item.parameters,
              "readOnly": reg.item.read_only, "mutating": reg.item.mutating, "minRole": reg.item.min_role,
              "approval": reg.item.approval,
              "plugin": reg.plugin}
             for reg in sorted(core.tools.entries.values(), key=lambda r: r.name)]
    return jsonify({"tools": tools})
