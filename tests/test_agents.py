"""Agents over the API: the default team, CRUD, SOUL.md, validation, roles; packs and agent hooks."""
from __future__ import annotations

import json

import pytest

from xiajiao import Pack, Persona, hookimpl
from conftest import login, make_settings, running_app

DEFAULT = [
    {"id": "butler", "name": "虾饺管家", "avatar": "🦐", "description": "虾饺团队的管家:回答问题、分派任务 / The team's butler",
     "model": "", "tools": ["memory_write", "memory_search", "rag_query", "call_agent"], "status": "online", "knowledge": True},
    {"id": "novelist", "name": "小说家", "avatar": "✍️", "description": "写小说、诗歌和故事 / Writes fiction and poems",
     "model": "", "tools": ["memory_write", "memory_search"], "status": "online", "knowledge": False},
    {"id": "editor", "name": "编辑", "avatar": "📝", "description": "审稿、润色、提出修改意见 / Reviews and polishes drafts",
     "model": "", "tools": ["memory_search", "rag_query"], "status": "online", "knowledge": True},
    {"id": "translator", "name": "翻译官", "avatar": "🌐",
     "description": "中英互译,保留语气 / Translates between Chinese and English", "model": "", "tools": [],
     "status": "online", "knowledge": False},
    {"id": "coder", "name": "代码助手", "avatar": "💻", "description": "写代码、解释代码、排查错误 / Writes and explains code",
     "model": "", "tools": ["memory_search", "rag_query", "call_agent"], "status": "online", "knowledge": False},
]


async def test_first_start_creates_the_default_team(owner, app):
    body = await (await owner.get("/api/agents")).get_json()
    assert body == {"agents": DEFAULT}  # the memory / rag tools exist: the memory and rag plugins provide them
    detail = await (await owner.get("/api/agents/novelist")).get_json()
    assert detail == {**DEFAULT[1], "soul": (app.xj.workspace("novelist") / "SOUL.md").read_text(encoding="utf-8")}
    assert detail["soul"].startswith("# 小说家 / Novelist\n\n你是「小说家」")


async def test_deleted_default_agents_are_not_recreated_on_restart(tmp_path):
    settings = make_settings(tmp_path)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        assert (await c.delete("/api/agents/coder")).status_code == 200
    async with running_app(settings) as app:
        assert [a["id"] for a in app.xj.engine.agents.all()] == ["butler", "novelist", "editor", "translator"]


async def test_create_read_update_delete(owner, app):
    resp = await owner.post("/api/agents", json={"name": "Poet", "description": "writes haiku", "tools": ["call_agent"],
                                                 "soul": "# Poet\nOnly haiku.", "model": "demo"})
    assert resp.status_code == 201
    created = await resp.get_json()
    aid = created["id"]
    assert aid.startswith("agent_")
    assert created == {"id": aid, "name": "Poet", "avatar": "🤖", "description": "writes haiku", "model": "demo",
                       "tools": ["call_agent"], "status": "online", "knowledge": False, "soul": "# Poet\nOnly haiku."}
    assert (app.xj.workspace(aid) / "SOUL.md").read_text(encoding="utf-8") == "# Poet\nOnly haiku."
    resp = await owner.put(f"/api/agents/{aid}", json={"name": "诗人", "model": "", "tools": [], "soul": "新的灵魂",
                                                       "knowledge": True})
    assert await resp.get_json() == {**created, "name": "诗人", "model": "", "tools": [], "soul": "新的灵魂",
                                     "knowledge": True}
    row = await app.xj.db.fetchone("SELECT name, tools, knowledge FROM agents WHERE id = ?", (aid,))
    assert row == {"name": "诗人", "tools": "[]", "knowledge": 1}
    manifest = json.loads((app.xj.workspace(aid) / "agent.json").read_text(encoding="utf-8"))
    assert manifest == {"name": "诗人", "avatar": "🤖", "description": "writes haiku", "model": "", "tools": [],
                        "status": "online", "knowledge": True, "config": {}}
    assert (await owner.delete(f"/api/agents/{aid}")).status_code == 200
    assert not app.xj.workspace(aid).exists()
    assert (await owner.get(f"/api/agents/{aid}")).status_code == 404


@pytest.mark.parametrize("method,path,body,status,code", [
    ("post", "/api/agents", {}, 400, "validation_error"),
    ("post", "/api/agents", {"name": ""}, 400, "validation_error"),
    ("post", "/api/agents", {"name": "a@b"}, 400, "invalid_name"),
    ("post", "/api/agents", {"name": "小说家"}, 409, "agent_name_taken"),
    ("post", "/api/agents", {"name": "X", "model": "gpt-nope"}, 400, "unknown_model"),
    ("post", "/api/agents", {"name": "X", "tools": ["no_such_tool"]}, 400, "unknown_tool"),
    ("post", "/api/agents", {"name": "X", "tools": "call_agent"}, 400, "validation_error"),
    ("post", "/api/agents", {"name": "X", "status": "asleep"}, 400, "invalid_status"),
    ("put", "/api/agents/novelist", {"name": "编辑"}, 409, "agent_name_taken"),
    ("put", "/api/agents/novelist", {"model": "nope/x"}, 400, "unknown_model"),
    ("put", "/api/agents/nobody", {"name": "Z"}, 404, "agent_not_found"),
    ("delete", "/api/agents/nobody", None, 404, "agent_not_found"),
    ("get", "/api/agents/nobody", None, 404, "agent_not_found"),
])
async def test_bad_input_is_a_clear_4xx_and_writes_nothing(owner, app, method, path, body, status, code):
    before = await app.xj.db.fetchall("SELECT * FROM agents ORDER BY id")
    kwargs = {"json": body} if body is not None else {}
    resp = await getattr(owner, method)(path, **kwargs)
    assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)
    assert await app.xj.db.fetchall("SELECT * FROM agents ORDER BY id") == before


async def test_roles(app):
    from xiajiao import auth

    anon = app.test_client()
    assert (await anon.get("/api/agents")).status_code == 401
    invite, token = await auth.create_invite(app.xj.db, created_by=await _owner(app), role="guest")
    await auth.accept_invite(app.xj.db, token, username="gus", password="guest-password-1")
    guest = app.test_client()
    await login(guest, "guest-password-1", "gus")
    assert (await guest.get("/api/agents")).status_code == 200
    assert (await guest.post("/api/agents", json={"name": "G"})).status_code == 403
    assert (await guest.put("/api/agents/coder", json={"name": "G"})).status_code == 403
    assert (await guest.delete("/api/agents/coder")).status_code == 403


async def _owner(app):
    from conftest import owner_actor

    return await owner_actor(app)


class Events:
    def __init__(self):
        self.events = []

    @hookimpl
    def on_agent_created(self, app, agent):
        self.events.append(("created", agent["id"], app.workspace(agent["id"]).is_dir()))

    @hookimpl
    def on_agent_deleted(self, app, agent):
        self.events.append(("deleted", agent["id"], (app.workspace(agent["id"]) / "SOUL.md").exists()))

    @hookimpl
    def register_packs(self, register):
        register(Pack(name="writers", personas=[Persona(id="poet", name="诗人", soul="# 诗人", aliases=["Poet"],
                                                        tools=["call_agent", "missing_tool"], model="gpt-x")]))


async def test_agent_hooks_and_a_pack_plugin(tmp_path):
    events = Events()
    async with running_app(make_settings(tmp_path), plugins=[events]) as app:
        engine = app.xj.engine
        assert [e[0] for e in events.events] == ["created"] * 5  # only the default pack is created on first start
        pack = app.xj.packs.get("writers")
        agent = await engine.agents.create_from_persona(pack.personas[0], pack.name)
        assert (agent["name"], agent["tools"], agent["model"], agent["config"], agent["pack"]) == \
            ("诗人", ["call_agent"], "", {"aliases": ["Poet"]}, "writers")
        await engine.agents.delete("poet")
    assert events.events[-2:] == [("created", "poet", True), ("deleted", "poet", True)]


async def test_tools_list_every_registered_tool_for_members(app, owner):
    from chat_helpers import user_client

    body = await (await owner.get("/api/tools")).get_json()
    names = [t["name"] for t in body["tools"]]
    assert names == sorted(app.xj.tools.names())
    assert {"call_agent", "memory_write", "memory_search", "rag_query"} <= set(names)
    write = next(t for t in body["tools"] if t["name"] == "memory_write")
    assert write["readOnly"] is False and write["mutating"] is True and write["plugin"] == "plugins.memory"
    assert write["parameters"]["type"] == "object" and write["description"]
    guest, _ = await user_client(app, "guesty", "guest")
    assert (await guest.get("/api/tools")).status_code == 403
    assert (await app.test_client().get("/api/tools")).status_code == 401
