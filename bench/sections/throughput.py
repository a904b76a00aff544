"""3. Throughput, closed loop: each conversation posts, waits for its stream_end, posts again.

Two shapes: ten conversations (DM channels) multiplexed over ONE WebSocket, and ten
clients each with its own WebSocket and channel. Reported: replies/s, POST → stream_end
latency, server memory at the end, and the CPU seconds each process used (server, fake
model, this load generator) — the three share the machine's cores.
"""
from __future__ import annotations

import asyncio
import os
import time

import psutil

from ..chatclient import Socket, create_agent, create_channel, post
from ..harness import FakeModel, Server
from ..stats import summary


async def _loop(client, sock: Socket, agent: str, deadline: float, latencies: list, warm_until: float,
                turns: int) -> None:
    i = 0
    while time.perf_counter() < deadline:
        if i % turns == 0:  # a fresh DM every few turns: histories stay chat-sized
            channel = await create_channel(client, f"conversation {i}", agent_ids=[agent])
            await sock.subscribe(channel)
        f_end = sock.expect("stream_end", channel)
        t0 = time.perf_counter()
        await post(client, channel, f"Question {i} about memory and tools")
        t_end, _ = await asyncio.wait_for(f_end, 60)
        if t0 >= warm_until and t_end <= deadline:
            latencies.append((t_end - t0) * 1000)
        i += 1


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _shape(server: Server, fake: FakeModel, client, agent: str, shared: bool, o) -> dict:
    if shared:
        socks = [await Socket(server).connect()] * o.conversations
    else:
        socks = [await Socket(server).connect() for _ in range(o.conversations)]
    warm = min(2.0, o.duration / 4)
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + warm + o.duration
    marks: list[tuple] = []

    async def sample() -> None:  # CPU of the three processes at the start and the end of the measured window
        for until in (start + warm, deadline):
            await asyncio.sleep(max(0.0, until - time.perf_counter()))
            marks.append((server.cpu_seconds(), _cpu(fake.proc.pid), _cpu(os.getpid())))

    sampler = asyncio.ensure_future(sample())
    await asyncio.gather(*(_loop(client, s, agent, deadline, latencies, start + warm, o.turns_per_channel)
                           for s in socks))
    await sampler
    cpu0, cpu1 = marks
    for s in set(socks):
        await s.close()
    return {
        "conversations": o.conversations, "turns_per_channel": o.turns_per_channel, "seconds": o.duration, "replies": len(latencies),
        "replies_per_s": round(len(latencies) / o.duration, 1),
        "latency": summary(latencies),
        "server_rss_mb": round(server.rss() / 2**20, 1),
        "cpu_ms_per_reply": round((cpu1[0] - cpu0[0]) * 1000 / max(1, len(latencies)), 2),
        "cpu_s": {"server": round(cpu1[0] - cpu0[0], 1), "fake_model": round(cpu1[1] - cpu0[1], 1),
                  "load_generator": round(cpu1[2] - cpu0[2], 1)},
    }


async def run(ctx) -> dict:
    o = ctx.opts
    with FakeModel(o.chunks, o.delay_ms, o.first_byte_ms) as fake:
        server = Server(ctx.tmp / "throughput" / "data", model_url=fake.base_url, access_log=o.access_log)
        async with server:
            await server.login()
            async with server.client() as client:
                agent = await create_agent(client, "Bench")
                result = {"one_ws": await _shape(server, fake, client, agent, True, o),
                          "ten_ws": await _shape(server, fake, client, agent, False, o)}
    return result
