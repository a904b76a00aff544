"""6. Knowledge (RAG): indexing, queries, fairness while indexing, memory.

The realistic profile embeds through the fake model's /v1/embeddings (the light one with the
hash test embedder). Indexing time is upload → the document reads ``ready`` (the upload answers
202 and indexing runs in the background; we poll the document). Queries go through
``POST /api/rag/query``. Fairness: while the large document indexes, knowledge queries (another
agent) and chat turns (a third agent, with recall) are timed against their idle latency.
Memory: the server is restarted on the ten small knowledge bases, its RSS read when idle,
then after one query to each of them (which opens its rag.db and vector index).
"""
from __future__ import annotations

import asyncio
import time

from ..chatclient import Socket, create_agent, create_channel, post, upload_document
from ..corpus import TextMaker
from ..harness import FakeModel, Server
from ..stats import summary


async def upload(client, agent_id: str, name: str, text: str) -> dict:
    """Upload and wait until indexed; returns the document with the seconds it took."""
    return await upload_document(client, agent_id, name, text)


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


async def one_query(client, agent_id: str, text: TextMaker) -> float:
    words = text.message().split()
    q = " ".join(words[:6]) if len(words) > 1 else words[0][:12]
    t0 = time.perf_counter()
    r = await client.post("/api/rag/query", json={"agentId": agent_id, "query": q, "topK": 5})
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return ms


async def queries(client, agent_id: str, text: TextMaker, n: int) -> dict:
    times = [await one_query(client, agent_id, text) for _ in range(n + 5)]
    return summary(times[5:])


class Talk:
    """Timed chat turns (POST → stream_end) with one agent, a fresh DM every ten."""

    def __init__(self, client, sock: Socket, agent_id: str):
        self.client, self.sock, self.agent_id, self.n, self.channel = client, sock, agent_id, 0, None

    async def turn(self) -> float:
        if self.n % 10 == 0:
            self.channel = await create_channel(self.client, f"talk {self.n}", agent_ids=[self.agent_id])
            await self.sock.subscribe(self.channel)
        self.n += 1
        f_end = self.sock.expect("stream_end", self.channel)
        t0 = time.perf_counter()
        await post(self.client, self.channel, f"Question {self.n}: what does the handbook say about deploying?")
        t_end, _ = await asyncio.wait_for(f_end, 60)
        return (t_end - t0) * 1000


async def during_indexing(client, talk: Talk, busy: str, text: TextMaker, name: str, size: int) -> dict:
    """Upload a large document to ``busy`` and, until it is ready, alternate queries and turns of others."""
    doc = await upload_document(client, talk.agent_id, name, text.document(size), wait=False)
    q_times, t_times = [], []
    while True:
        q_times.append(await one_query(client, busy, text))
        t_times.append(await talk.turn())
        d = await client.get(f"/api/rag/documents/{doc['id']}", params={"agentId": talk.agent_id})
        d.raise_for_status()
        doc = d.json()["document"]
        if doc["status"] != "processing" and doc["status"] != "queued":
            break
    if doc["status"] != "ready":
        raise RuntimeError(f"indexing failed: {doc}")
    return {"query": summary(q_times), "turn": summary(t_times), "chunks": doc["chunks"]}


async def run(ctx) -> dict:
    with FakeModel(ctx.opts.chunks) as fake:
        return await _run(ctx, fake)


async def _run(ctx, fake) -> dict:
    o = ctx.opts
    text = TextMaker(seed=5)
    data_dir = ctx.tmp / "knowledge" / "data"
    out: dict = {}
    server = Server(data_dir, model_url=fake.base_url, access_log=o.access_log)
    ten = []
    async with server:
        await server.login()
        async with server.client() as client:
            kb = lambda name: create_agent(client, name, model=None, seed=False)  # noqa: E731
            small, large, mid = await kb("KB small"), await kb("KB large"), await kb("KB 600")
            doc = await upload(client, mid, "doc-600kb.md", text.document(o.kb_index_kb * 1024))
            out.update(index_600kb_s=round(doc["seconds"], 2), chunks_600kb=doc["chunks"], kb_index_kb=o.kb_index_kb)
            s, c, total = await fill(client, small, text, o.kb_sizes_kb[0], o.kb_query_chunks[0])
            out.update(index_1mb_s=round(s, 2), chunks_1mb=c, kb_small_kb=o.kb_sizes_kb[0])
            out["query_small"] = {"chunks": total, **await queries(client, small, text, o.queries)}
            # fairness: the idle latency of a query (above) and of a turn, then both while a large document indexes
            talk = Talk(client, await Socket(server).connect(), await create_agent(client, "Talker"))
            turns = [await talk.turn() for _ in range(o.fair_turns + 3)][3:]
            out["turn_idle"] = summary(turns)
            busy = await during_indexing(client, talk, small, text, f"doc-{o.kb_sizes_kb[1]}kb-fair.md",
                                         o.kb_sizes_kb[1] * 1024)
            out["query_during_index"], out["turn_during_index"] = busy["query"], busy["turn"]
            out["query_during_index_over_idle"] = round(busy["query"]["p50"] / out["query_small"]["p50"], 2)
            out["turn_during_index_over_idle"] = round(busy["turn"]["p50"] / out["turn_idle"]["p50"], 2)
            await talk.sock.close()
            s, c, total = await fill(client, large, text, o.kb_sizes_kb[1], o.kb_query_chunks[1])
            out.update(index_10mb_s=round(s, 2), chunks_10mb=c, kb_large_kb=o.kb_sizes_kb[1])
            out["query_large"] = {"chunks": total, **await queries(client, large, text, o.queries)}
            for i in range(o.kb_count):
                agent = await kb(f"KB {i}")
                await upload(client, agent, "notes.md", text.document(o.kb_small_kb * 1024))
                ten.append(agent)
    server = Server(data_dir, model_url=fake.base_url, access_log=o.access_log)
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
