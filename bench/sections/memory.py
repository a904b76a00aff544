"""7. Agent memory: write memories one by one through the API, then search them.

In the realistic profile every write and search embeds through the fake model's /v1/embeddings.
"""
from __future__ import annotations

import time

from ..chatclient import create_agent
from ..corpus import TextMaker
from ..harness import FakeModel, Server
from ..stats import summary


async def run(ctx) -> dict:
    text = TextMaker(seed=9)
    with FakeModel() as fake:
        return await _run(ctx, fake, text)


async def _run(ctx, fake, text) -> dict:
    o = ctx.opts
    server = Server(ctx.tmp / "memory" / "data", embed_url=fake.base_url, access_log=o.access_log)
    async with server:
        await server.login()
        async with server.client() as client:
            agent = await create_agent(client, "Rememberer", model=None, seed=False)
            writes, statuses = [], {}
            t_all = time.perf_counter()
            for i in range(o.memories):
                content = f"{text.message()} (note {i})"
                t0 = time.perf_counter()
                r = await client.post(f"/api/agents/{agent}/memories", json={"content": content[:1000]})
                writes.append((time.perf_counter() - t0) * 1000)
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"memory write: {r.status_code} {r.text}")
                status = r.json().get("status", "?")
                statuses[status] = statuses.get(status, 0) + 1
            total_s = time.perf_counter() - t_all
            searches = []
            for i in range(o.memory_searches + 5):
                q = " ".join(text.message().split()[:5])
                t0 = time.perf_counter()
                r = await client.get(f"/api/agents/{agent}/memories", params={"q": q, "limit": 10})
                ms = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                if i >= 5:
                    searches.append(ms)
        rss = server.rss()
    return {"memories": o.memories, "statuses": statuses, "write": summary(writes),
            "writes_per_s": round(o.memories / total_s, 1), "search": summary(searches),
            "server_rss_mb": round(rss / 2**20, 1)}
