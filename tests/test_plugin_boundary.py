"""The plugin boundary: on_message for every stored message, decision hooks that raise deny, and the
documented facade."""
from __future__ import annotations

import asyncio
import re

from conftest import ROOT, Frames, llm_settings, login, make_channel, running_app
from fake_llm import Reply
from test_tools import Tools, turn
from xiajiao import Actor, hookimpl
import xiajiao


class Observer:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_message(self, message, channel, actor):
        self.seen.append((message["agentId"] or "user", message["content"], message["status"], channel["id"]))


async def _until(pred, timeout=10.0):
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_on_message_fires_for_agent_replies_and_chain_messages(tmp_path, fake_llm):
    observer = Observer()
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[observer]) as app:
        c = app.test_client()
        await login(c)
        dm = await make_channel(app, ["novelist"], type="dm")
        frames = Frames(app, dm["id"])
        fake_llm.script(Reply(text="a reply"))
        await c.post("/api/messages", json={"channelId": dm["id"], "content": "hello"})
        await frames.wait_for("stream_end")
        await _until(lambda: len(observer.seen) == 2)
        assert observer.seen == [("user", "hello", "done", dm["id"]), ("novelist", "a reply", "done", dm["id"])]

        observer.seen.clear()
        group = await make_channel(app, ["novelist", "editor"])
        await c.put(f"/api/channels/{group['id']}/chain", json={"agentIds": ["novelist", "editor"]})
        fake_llm.script(Reply(text="draft"), Reply(text="final"))
        await c.post("/api/chains", json={"channelId": group["id"], "input": "write"})
        await _until(lambda: len(observer.seen) == 3)
        assert observer.seen == [("user", "write", "done", group["id"]), ("novelist", "draft", "done", group["id"]),
                                 ("editor", "final", "done", group["id"])]


class BrokenPermission:
    @hookimpl
    def decide_tool_permission(self, actor, agent, tool):
        raise RuntimeError("a broken permission plugin")


async def test_a_tool_permission_plugin_that_raises_denies(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm), plugins=[Tools(), BrokenPermission()]) as app:
        await app.xj.engine.agents.update("coder", {"tools": ["shout"]})
        app.fake = fake_llm
        await turn(app, "hi", [Reply(text="ok")], actor=Actor("user_o", "owner", "o"))
    assert "tools" not in fake_llm.last.json  # without the plugin's verdict the owner would get "shout"


def test_the_facade_table_in_the_docs_lists_every_public_name():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = doc.split("## The public facade", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Za-z_]+)(?:\(|`)", section))
    assert set(xiajiao.__all__) - documented == set()


CORE_TABLES = ("agents", "users", "sessions", "api_keys", "channels", "channel_members", "messages", "messages_fts",
               "settings", "usage", "invites", "tasks")
INTERNALS = re.compile(r"\b(?:app|core|self\.app|ctx\.app)\.(?:engine|hub|gateway|db)\b")


def _core_table_sql(source: str) -> list[str]:
    tables = "|".join(CORE_TABLES)
    return re.findall(rf"(?:FROM|JOIN|INTO|UPDATE)\s+(?:{tables})\b", source)


def test_the_core_table_check_catches_what_it_should():
    assert _core_table_sql('db.fetchall("SELECT id FROM agents")') == ["FROM agents"]
    assert _core_table_sql('"... LEFT JOIN users u ON u.id = m.user_id"') == ["JOIN users"]
    assert _core_table_sql('"SELECT * FROM memories"') == []  # a plugin's own table
    assert INTERNALS.findall("await app.engine.complete(agent, x)") == ["app.engine"]
    assert INTERNALS.findall("self.app.hub.send_to_user(u)") == ["self.app.hub"]


def test_bundled_plugins_use_the_facade_not_the_cores_tables_or_engine():
    found = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        hits = _core_table_sql(source) + INTERNALS.findall(source)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}
