"""5. History and search at scale: one channel of bulk-loaded messages.

Pages (50 messages, ``before=`` a random message, i.e. deep in history) and full-text
searches are timed twice: through HTTP on the real server (what a client sees), and at the
storage level (the chat core's own functions, in this process) to show where the time goes.
"""
from __future__ import annotations

import time

from ..harness import Server
from ..load import RARE_WORD, load_messages, main_db
from ..rawhttp import RawClient
from ..stats import summary

COMMON, CHINESE = "the", "部署"


async def _storage(ctx, data_dir, channel_id, ids) -> dict:
    from xiajiao import chat

    if not hasattr(chat, "list_messages"):
        return {"skipped": "xiajiao.chat has no list_messages yet"}
    db = main_db(data_dir)
    await db.open()
    try:
        pages = []
        for i in range(ctx.opts.page_fetches):
            t = time.perf_counter()
            page = await chat.list_messages(db, channel_id, limit=50, before=ids[i % len(ids)])
            pages.append((time.perf_counter() - t) * 1000)
            assert page, "empty page"
        out = {"page": summary(pages)}
        for label, q in (("rare", RARE_WORD), ("common", COMMON), ("chinese", CHINESE)):
            if not hasattr(chat, "search_messages"):
                break
            times = []
            for _ in range(ctx.opts.searches):
                t = time.perf_counter()
                await chat.search_messages(db, q, reader_id=None, limit=20)
                times.append((time.perf_counter() - t) * 1000)
            out[f"search_{label}"] = summary(times)
    finally:
        await db.close()
    return out


async def _timed_get(client: RawClient, url, params) -> tuple[float, dict]:
    t = time.perf_counter()
    status, body = await client.get(url, params=params)
    ms = (time.perf_counter() - t) * 1000
    if status != 200:
        raise RuntimeError(f"GET {url} {params}: {status} {body}")
    return ms, body


async def run(ctx) -> dict:
    n = ctx.opts.history_messages
    data_dir = ctx.tmp / "history" / "data"
    loaded = await load_messages(data_dir, n, sample_every=max(60, n // 2000))
    channel_id, ids = loaded["channel_id"], loaded["sample_ids"]
    out = {"messages": n, "bulk_load_s": round(loaded["seconds"], 1),
           "db_mb": round(sum(p.stat().st_size for p in data_dir.glob("xiajiao.db*")) / 2**20, 1)}
    out["storage"] = await _storage(ctx, data_dir, channel_id, ids)
    server = Server(data_dir, access_log=ctx.opts.access_log)
    async with server:
        await server.login()
        client = RawClient("127.0.0.1", server.port, server.cookies)
        try:
            for _ in range(20):  # warm the connection pool and the server's caches
                await client.get("/api/messages", params={"channelId": channel_id, "limit": 50})
            latest, deep = [], []
            for i in range(ctx.opts.page_fetches):
                ms, body = await _timed_get(client, "/api/messages",
                                            {"channelId": channel_id, "limit": 50, "before": ids[i % len(ids)]})
                assert len(body["messages"]) == 50, body
                deep.append(ms)
                if i % 5 == 0:
                    ms, body = await _timed_get(client, "/api/messages", {"channelId": channel_id, "limit": 50})
                    assert len(body["messages"]) == 50
                    latest.append(ms)
            out["page"] = summary(deep)
            out["page_latest"] = summary(latest)
            for label, q in (("rare", RARE_WORD), ("common", COMMON), ("chinese", CHINESE)):
                times, hits = [], 0
                for _ in range(ctx.opts.searches):
                    ms, body = await _timed_get(client, "/api/messages/search", {"q": q, "limit": 20})
                    times.append(ms)
                    hits = len(body["results"])
                out[f"search_{label}"] = {**summary(times), "hits": hits}
        finally:
            await client.close()
        out["server_rss_mb"] = round(server.rss() / 2**20, 1)
    return out
