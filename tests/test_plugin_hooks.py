"""Plugins written against the hooks the way a third party would: each hook is used end to end."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from quart import Blueprint, jsonify

from conftest import ROOT, login, make_settings, running_app
from xiajiao import Pack, Parser, Persona, hookimpl


class Shelf:
    """A parser for ``.shelf`` files (lines of ``key=value``), a pack, a route and a command."""

    @hookimpl
    def register_parsers(self, register):
        def parse(data: bytes, filename: str) -> str:
            return "\n".join(f"{k} is {v}" for k, v in (line.split("=", 1) for line in data.decode().splitlines()
                                                        if "=" in line))

        register(Parser(name="shelf", extensions=[".shelf"], mime_types=["text/x-shelf"], parse=parse,
                        sniff=lambda data: b"=" in data[:200]))

    @hookimpl
    def register_packs(self, register):
        register(Pack(name="librarians", default=True, personas=[
            Persona(id="librarian", name="图书管理员", soul="You are a careful librarian.", avatar="📚",
                    description="Finds books")]))

    @hookimpl
    def register_routes(self, register):
        bp = Blueprint("shelf", __name__)

        @bp.get("/shelf/ping")
        async def ping():
            return jsonify({"pong": True})

        register(bp)

    @hookimpl
    def register_commands(self, register):
        register("shelf-count", lambda argv: print(f"shelves: {len(argv)}"), "Count the shelves given")


async def test_register_packs_creates_default_agents_on_first_start_only(tmp_path):
    settings = make_settings(tmp_path)
    async with running_app(settings, plugins=[Shelf()]) as app:
        c = app.test_client()
        await login(c)
        agent = (await (await c.get("/api/agents/librarian")).get_json())
        assert agent["name"] == "图书管理员" and "careful librarian" in agent["soul"]
        assert (app.xj.workspace("librarian") / "SOUL.md").read_text(encoding="utf-8").strip() == \
            "You are a careful librarian."
        assert (await c.delete("/api/agents/librarian")).status_code == 200
    async with running_app(settings, plugins=[Shelf()]) as app:
        c = app.test_client()
        await login(c)
        assert (await c.get("/api/agents/librarian")).status_code == 404  # not re-created


async def test_register_routes_serves_a_plugin_blueprint(tmp_path):
    async with running_app(make_settings(tmp_path), plugins=[Shelf()]) as app:
        resp = await app.test_client().get("/shelf/ping")
        assert resp.status_code == 200 and await resp.get_json() == {"pong": True}
        plugins = app.xj.plugins.describe(app.xj.registries)
    mine = [p for p in plugins if p["source"] == "test"]
    assert len(mine) == 1 and mine[0]["registered"] == {"packs": ["librarians"], "parsers": ["shelf"],
                                                        "routes": ["shelf"], "commands": ["shelf-count"]}


async def test_register_parsers_indexes_a_new_file_type(tmp_path):
    async with running_app(make_settings(tmp_path), plugins=[Shelf()]) as app:
        c = app.test_client()
        await login(c)
        from quart.datastructures import FileStorage
        import io
        files = {"file": FileStorage(io.BytesIO(b"atlas=blue shelf\nnovel=red shelf\n"), filename="home.shelf",
                                     content_type="text/x-shelf")}
        resp = await c.post("/api/rag/upload", form={"agentId": "librarian"}, files=files)
        assert resp.status_code == 202, await resp.get_data(as_text=True)
        doc_id = (await resp.get_json())["documentId"]
        for _ in range(200):
            doc = (await (await c.get(f"/api/rag/documents/{doc_id}?agentId=librarian")).get_json())["document"]
            if doc["status"] in ("ready", "failed"):
                break
            await asyncio.sleep(0.02)
        assert doc["status"] == "ready", doc
        res = await (await c.post("/api/rag/query", json={"agentId": "librarian", "query": "atlas", "topK": 3})).get_json()
        assert res["results"] and "atlas is blue shelf" in res["results"][0]["text"]


def test_register_commands_adds_a_cli_command(tmp_path):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "shelfcmd.py").write_text(
        "from xiajiao import hookimpl\n"
        "@hookimpl\n"
        "def register_commands(register):\n"
        "    register('shelf-count', lambda argv: print(f'shelves: {len(argv)}'), 'Count the shelves given')\n")
    env = {**os.environ, "XIAJIAO_PLUGINS_DIR": str(plugin), "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false"}
    res = subprocess.run([sys.executable, "-m", "xiajiao.cli", "shelf-count", "a", "b", "c"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "shelves: 3"
    helptext = subprocess.run([sys.executable, "-m", "xiajiao.cli", "--help"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60).stdout
    assert "shelf-count" in helptext and "Count the shelves given" in helptext


class NoSecretChannels:
    """Denies reading any channel whose name starts with 'secret', even to the owner."""

    @hookimpl
    def authorize(self, actor, action, resource):
        if action.startswith("channel.") and str(resource.get("name", "")).startswith("secret"):
            return False
        return None


async def test_authorize_hook_can_deny_what_the_built_in_rules_allow(tmp_path):
    async with running_app(make_settings(tmp_path), plugins=[NoSecretChannels()]) as app:
        c = app.test_client()
        await login(c)
        agents = (await (await c.get("/api/agents")).get_json())["agents"]
        secret = await (await c.post("/api/channels", json={"name": "secret plans", "type": "group",
                                                            "agentIds": [agents[0]["id"]]})).get_json()
        open_ = await (await c.post("/api/channels", json={"name": "lobby", "type": "group",
                                                           "agentIds": [agents[0]["id"]]})).get_json()
        sid, oid = secret["id"], open_["id"]
        assert (await c.get(f"/api/messages?channelId={sid}")).status_code == 404
        assert (await c.get(f"/api/messages?channelId={oid}")).status_code == 200
        resp = await c.post("/api/messages", json={"channelId": sid, "content": "hi", "type": "text"})
        assert resp.status_code == 404
        assert await app.xj.db.fetchval("SELECT COUNT(*) FROM messages WHERE channel_id = ?", (sid,)) == 0


async def test_on_agent_deleted_sees_the_agent_before_its_folder_goes(tmp_path):
    seen = []

    class Watcher:
        @hookimpl
        def on_agent_deleted(self, app, agent):
            seen.append((agent["id"], (app.workspace(agent["id"]) / "SOUL.md").exists()))

    async with running_app(make_settings(tmp_path), plugins=[Watcher()]) as app:
        c = app.test_client()
        await login(c)
        created = await (await c.post("/api/agents", json={"name": "Temp", "soul": "temporary"})).get_json()
        agent_id = created["id"]
        assert (await c.delete(f"/api/agents/{agent_id}")).status_code == 200
        assert not app.xj.workspace(agent_id).exists()
    assert seen == [(agent_id, True)]
