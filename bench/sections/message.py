"""2. One message at a time: POST → first stream_chunk, → stream_end, → reply stored.

The fake model's own latency is measured alongside by calling it directly (same reply,
same streaming protocol, from this process), so the app's overhead is the difference of
the medians (and of the p99s). "Stored" is when the reply row reads ``status = 'done'``
in the database file itself (read through the storage layer from this process).
Every ``turns_per_channel`` messages the conversation moves to a fresh DM, so the history
sent to the model stays as short as in a typical chat.
"""
from __future__ import annotations

import time

import httpx

from ..chatclient import Socket, create_agent, create_channel, post
from ..harness import FakeModel, Server
from ..stats import summary
from xiajiao.db.driver import connect_sync


async def model_alone(base_url: str, n: int) -> dict:
    """Latency of the fake model by itself: first content chunk and end of stream."""
    first, end = [], []
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(n + 5):
            t0 = time.perf_counter()
            t_first = None
            async with client.stream("POST", base_url + "/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if t_first is None and line.startswith("data: {") and '"content"' in line:
                        t_first = time.perf_counter()
                    if line == "data: [DONE]":
                        break
            t_end = time.perf_counter()
            if i >= 5:  # the first few warm the connection
                first.append((t_first - t0) * 1000)
                end.append((t_end - t0) * 1000)
    return {"first_chunk": summary(first), "end": summary(end)}


def stored_check(data_dir):
    conn = connect_sync(data_dir / "xiajiao.db", readonly=True)

    def done(message_id: str) -> bool:
        row = conn.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
        return bool(row) and row["status"] == "done"

    return conn, done


async def run(ctx) -> dict:
    o = ctx.opts
    data_dir = ctx.tmp / "message" / "data"
    with FakeModel(o.chunks, o.delay_ms, o.first_byte_ms) as fake:
        model = await model_alone(fake.base_url, o.messages)
        server = Server(data_dir, model_url=fake.base_url, access_log=o.access_log)
        async with server:
            await server.login()
            async with server.client() as client:
                agent = await create_agent(client, "Bench")
                sock = await Socket(server).connect()
                conn, is_stored = stored_check(data_dir)
                first, end, stored, chunks_seen = [], [], [], []
                try:
                    for i in range(o.messages + 10):
                        if i % o.turns_per_channel == 0:
                            channel = await create_channel(client, f"bench dm {i}", agent_ids=[agent])
                            await sock.subscribe(channel)
                        f_start = sock.expect("stream_start", channel)
                        f_chunk = sock.expect("stream_chunk", channel)
                        f_end = sock.expect("stream_end", channel)
                        frames0 = sock.frames
                        t0 = time.perf_counter()
                        await post(client, channel, f"Message {i}: tell me about agents")
                        (_, start), (t_chunk, _), (t_end, _) = (await f_start, await f_chunk, await f_end)
                        reply_id = start["data"]["messageId"]
                        while not is_stored(reply_id):  # stream_end follows the commit; this checks it
                            time.sleep(0.0002)
                        t_stored = time.perf_counter()
                        if i >= 10:  # ten warm-up messages
                            first.append((t_chunk - t0) * 1000)
                            end.append((t_end - t0) * 1000)
                            stored.append((t_stored - t0) * 1000)
                            chunks_seen.append(sock.frames - frames0)
                finally:
                    conn.close()
                    await sock.close()
            rss = server.rss()
    app = {"first_chunk": summary(first), "stream_end": summary(end), "stored": summary(stored)}

    def over(a, b, key):
        return round(a[key] - b[key], 3)

    return {
        "messages": o.messages, "turns_per_channel": o.turns_per_channel, "chunks_per_reply": o.chunks, "chunk_delay_ms": o.delay_ms,
        "frames_per_message": round(sum(chunks_seen) / max(1, len(chunks_seen)), 1),
        "app": app, "model_alone": model,
        "overhead_first_chunk_ms": over(app["first_chunk"], model["first_chunk"], "p50"),
        "overhead_first_chunk_p99_ms": over(app["first_chunk"], model["first_chunk"], "p99"),
        "overhead_stream_end_ms": over(app["stream_end"], model["end"], "p50"),
        "overhead_stored_ms": over(app["stored"], model["end"], "p50"),
        "overhead_stored_p99_ms": over(app["stored"], model["end"], "p99"),
        # stalls show as a stream-end p99 far above its p50
        "stream_end_p99_over_p50": round(app["stream_end"]["p99"] / app["stream_end"]["p50"], 2)
        if app["stream_end"]["p50"] else None,
        "server_rss_mb": round(rss / 2**20, 1),
    }
