"""4. Fan-out: many clients subscribed to one channel; POST → the last client received it.

All clients are WebSockets of this one process (the server sees as many connections).
The channel is a group without agents, so the message frame is the only traffic.
A frame's arrival is stamped when this process reads it, so the figure includes the
client side's own time to read 500 frames (an upper bound of the server's part).
"""
from __future__ import annotations

import asyncio
import time

from ..chatclient import Socket, create_channel, post
from ..harness import Server
from ..stats import summary


async def run(ctx) -> dict:
    o = ctx.opts
    server = Server(ctx.tmp / "fanout" / "data", access_log=o.access_log)
    async with server:
        await server.login()
        async with server.client() as client:
            channel = await create_channel(client, "fan-out", type="group")
            socks = []
            t = time.perf_counter()
            for i in range(0, o.fanout_clients, 50):
                batch = await asyncio.gather(*(Socket(server).connect() for _ in range(min(50, o.fanout_clients - i))))
                await asyncio.gather(*(s.subscribe(channel) for s in batch))
                socks.extend(batch)
            connect_s = time.perf_counter() - t
            rss_connected = server.rss()
            first, last = [], []
            for i in range(o.fanout_posts + 3):
                futs = [s.expect("message", channel) for s in socks]
                t0 = time.perf_counter()
                await post(client, channel, f"Announcement {i} to everyone")
                arrivals = [a for a, _ in await asyncio.gather(*futs)]
                if i >= 3:
                    first.append((min(arrivals) - t0) * 1000)
                    last.append((max(arrivals) - t0) * 1000)
            await asyncio.gather(*(s.close() for s in socks))
    return {"clients": o.fanout_clients, "posts": o.fanout_posts, "connect_and_subscribe_s": round(connect_s, 2),
            "first_client": summary(first), "last_client": summary(last),
            "server_rss_mb_connected": round(rss_connected / 2**20, 1)}
