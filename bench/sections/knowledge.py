"""6. Knowledge (RAG) with the test embedder (``XIAJIAO_EMBEDDER=hash``).

Indexing time is upload → the document reads ``ready`` (the upload answers 202 and indexing
runs in the background; we poll the document). Queries go through ``POST /api/rag/query``.
Memory: the server is restarted on the ten small knowledge bases, its RSS read when idle,
then after one query to each of them (which opens its rag.db and vector index).
"""
from __future__ import annotations

import asyncio
import time

from ..chatclient import create_agent
from ..corpus import TextMaker
from ..harness import Server
from ..stats import summary


async def upload(client, agent_id: str, name: str, text: str) -> dict:
    """Upload and wait until indexed; returns the document with the seconds it took."""
    data = text.encode("utf-8")
    t0 = time.perf_counter()
    r = await client.post("/api/rag/upload", data={"agentId": agent_id},
                          files={"file": (name, data, "text/markdown")})
    if r.status_code not in (200, 201, 202):
        raise RuntimeError(f"upload: {r.status_code} {r.text}")
    doc_id = r.json()["documentId"]
    while True:
        d = await client.get(f"/api/rag/documents/{doc_id}", params={"agentId": agent_id})
        d.raise_for_status()
        doc = d.json().get("document", d.json())
        if doc["status"] in ("ready", "failed"):
            break
        await asyncio.sleep(0.01)
    if doc["status"] != "ready":
        raise RuntimeError(f"indexing failed: {doc}")
    return {**doc, "seconds": time.perf_counter() - t0, "bytes": len(data)}


async def fill(client, agent_id: str, text: TextMaker, kb: int, target_chunks: int) -> tuple[float, int, int]:
    """First a ``kb`` KB document (timed), then more until the base holds ``target_chunks`` chunks."""
    first = await upload(client, agent_id, f"doc-{kb}kb.md", text.document(kb * 1024))
    chunks = first["chunks"]
    per_chunk = first["bytes"] / max(1, first["chunks"])
    n = 0
    while chunks < target_chunks:
        size = int(min(8 * 2**20, (target_chunks - chunks) * per_chunk * 1.02 + 1024))
        doc = await upload(client, agent_id, f"more-{n}.md", text.document(size))
        chunks += doc["chunks"]
        n += 1
    return first["seconds"], first["chunks"], chunks


async def queries(client, agent_id: str, text: TextMaker, n: int) -> dict:
    times = []
    for i in range(n + 5):
        words = text.message().split()
        q = " ".join(words[:6]) if len(words) > 1 else words[0][:12]
        t0 = time.perf_counter()
        r = await client.post("/api/rag/query", json={"agentId": agent_id, "query": q, "topK": 5})
        ms = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        if i >= 5:
            times.append(ms)
    return summary(times)


async def run(ctx) -> dict:
    o = ctx.opts
    text = TextMaker(seed=5)
    data_dir = ctx.tmp / "knowledge" / "data"
    out: dict = {}
    server = Server(data_dir, access_log=o.access_log)
    ten = []
    async with server:
        await server.login()
        async with server.client() as client:
            small, large = await create_agent(client, "KB small", model=None), await create_agent(client, "KB large", model=None)
            s, c, total = await fill(client, small, text, o.kb_sizes_kb[0], o.kb_query_chunks[0])
            out.update(index_1mb_s=round(s, 2), chunks_1mb=c, kb_small_kb=o.kb_sizes_kb[0])
            out["query_small"] = {"chunks": total, **await queries(client, small, text, o.queries)}
            s, c, total = await fill(client, large, text, o.kb_sizes_kb[1], o.kb_query_chunks[1])
            out.update(index_10mb_s=round(s, 2), chunks_10mb=c, kb_large_kb=o.kb_sizes_kb[1])
            out["query_large"] = {"chunks": total, **await queries(client, large, text, o.queries)}
            for i in range(o.kb_count):
                agent = await create_agent(client, f"KB {i}", model=None)
                await upload(client, agent, "notes.md", text.document(o.kb_small_kb * 1024))
                ten.append(agent)
    server = Server(data_dir, access_log=o.access_log)
    async with server:
        await server.login()
        await asyncio.sleep(o.idle_seconds)
        before = server.rss()
        async with server.client() as client:
            for agent in ten:
                r = await client.post("/api/rag/query", json={"agentId": agent, "query": "deploy 部署", "topK": 5})
                r.raise_for_status()
        after = server.rss()
    out["ten_kbs"] = {"kbs": o.kb_count, "kb_kb": o.kb_small_kb, "rss_before_mb": round(before / 2**20, 1),
                      "rss_after_mb": round(after / 2**20, 1)}
    return out
