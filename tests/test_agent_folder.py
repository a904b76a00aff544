"""An agent is a folder: copying data/workspaces/<id>/ into another installation and registering it
brings its persona, settings, memories and knowledge along."""
from __future__ import annotations

import asyncio
import io
import shutil

from quart.datastructures import FileStorage

from conftest import login, make_settings, running_app

DOC = ("# 部署指南\n\n虾饺的部署流程非常简单:安装 Python 3.11,然后运行 python run.py。"
       "The server listens on port 18800 and keeps its data in the data folder.\n")


async def wait_ready(client, agent_id, doc_id):
    for _ in range(500):
        body = await (await client.get(f"/api/rag/documents/{doc_id}?agentId={agent_id}")).get_json()
        if body["document"]["status"] in ("ready", "failed"):
            return body["document"]
        await asyncio.sleep(0.01)
    raise AssertionError("document never finished")


async def test_a_copied_agent_folder_registers_with_persona_memories_and_knowledge(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    async with running_app(make_settings(first, embedder="hash")) as app:
        c = app.test_client()
        await login(c)
        agent = await (await c.post("/api/agents", json={
            "name": "档案员", "avatar": "🗂", "description": "Keeps the archive", "tools": ["memory_search", "rag_query"],
            "soul": "# 档案员\n你只根据档案回答。", "knowledge": True})).get_json()
        aid = agent["id"]
        resp = await c.post(f"/api/agents/{aid}/memories", json={"content": "The archive moved to room 301"})
        assert resp.status_code == 201, await resp.get_data(as_text=True)
        files = {"file": FileStorage(io.BytesIO(DOC.encode()), filename="deploy.md", content_type="text/markdown")}
        doc_id = (await (await c.post("/api/rag/upload", form={"agentId": aid}, files=files)).get_json())["documentId"]
        assert (await wait_ready(c, aid, doc_id))["status"] == "ready"
        folder = app.xj.workspace(aid)
    await asyncio.sleep(0)  # the app has closed its databases
    shutil.copytree(folder, second / "data" / "workspaces" / aid)

    async with running_app(make_settings(second, embedder="hash")) as app:
        c = app.test_client()
        await login(c)
        assert (await c.get(f"/api/agents/{aid}")).status_code == 404  # not known until registered
        resp = await c.post("/api/agents/register", json={"id": aid})
        assert resp.status_code == 201, await resp.get_data(as_text=True)
        assert await resp.get_json() == {
            "id": aid, "name": "档案员", "avatar": "🗂", "description": "Keeps the archive", "model": "",
            "tools": ["memory_search", "rag_query"], "status": "online", "knowledge": True,
            "soul": "# 档案员\n你只根据档案回答。"}
        memories = (await (await c.get(f"/api/agents/{aid}/memories?q=archive")).get_json())["memories"]
        assert [m["content"] for m in memories] == ["The archive moved to room 301"]
        docs = (await (await c.get(f"/api/rag/documents?agentId={aid}")).get_json())["documents"]
        assert [(d["name"], d["status"]) for d in docs] == [("deploy.md", "ready")]
        hits = (await (await c.post("/api/rag/query", json={"agentId": aid, "query": "部署", "topK": 3})).get_json())
        assert hits["results"] and "部署流程" in hits["results"][0]["text"]
        again = await c.post("/api/agents/register", json={"id": aid})
        assert again.status_code == 409 and (await again.get_json())["code"] == "agent_exists"


async def test_registering_a_bad_folder_is_refused_and_writes_nothing(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash")) as app:
        c = app.test_client()
        await login(c)
        broken = app.xj.workspace("broken_agent")
        broken.mkdir(parents=True)
        (broken / "SOUL.md").write_text("soul", encoding="utf-8")
        (broken / "agent.json").write_text("{not json", encoding="utf-8")
        cases = [({"id": "nobody_here"}, 404, "agent_folder_not_found"),
                 ({"id": "../etc"}, 400, "invalid_agent_id"),
                 ({"id": "broken_agent"}, 400, "invalid_manifest"),
                 ({}, 400, "validation_error")]
        for body, status, code in cases:
            resp = await c.post("/api/agents/register", json=body)
            assert (resp.status_code, (await resp.get_json())["code"]) == (status, code)
        assert await app.xj.db.fetchval("SELECT COUNT(*) FROM agents WHERE id IN ('broken_agent', 'nobody_here')") == 0
