"""CPU per streamed reply of the OpenAI-compatible provider alone, against the fake model.

``python -m bench.provider_stream [--provider FILE] [--replies 600] [--concurrency 1,10]``
streams replies (60 chunks, 0 ms, like the throughput section) through ``OpenAIProvider.stream``
in this process and reports this process's CPU (user + system) per reply. ``--provider`` loads the
provider module from another file (e.g. an older commit's ``plugins/provider_openai.py``), so two
versions compare on the same load; the fake model runs in its own process, off this CPU count.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import FakeModel  # noqa: E402
from xiajiao import ChatMessage, ChatRequest, ProviderConfig, Timeouts  # noqa: E402

TIMEOUTS = Timeouts(connect=5, first_token=5, idle=5)


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"provider_under_test_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


async def measure(module, base_url: str, replies: int, concurrency: int) -> dict:
    provider = module.OpenAIProvider(ProviderConfig(id="o", kind="openai", base_url=base_url, api_key="sk-bench"))
    history = [ChatMessage("system", "You are a helpful agent. " * 40)] + [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"message {i} about memory and tools " * 6) for i in range(8)]
    request = ChatRequest(model="fake-model", messages=history)

    async def one() -> int:
        return len([e async for e in provider.stream(request, timeouts=TIMEOUTS)])

    for _ in range(20):  # warm: connections, caches
        await one()
    left = replies

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await provider.aclose()
    return {"concurrency": concurrency, "replies": replies, "cpu_ms_per_reply": round(cpu * 1000 / replies, 3),
            "replies_per_s": round(replies / wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--provider", type=Path, default=ROOT / "plugins" / "provider_openai.py")
    p.add_argument("--replies", type=int, default=600)
    p.add_argument("--concurrency", default="1,10")
    p.add_argument("--chunks", type=int, default=60)
    a = p.parse_args()
    module = load(a.provider)
    with FakeModel(a.chunks) as fake:
        for c in (int(x) for x in a.concurrency.split(",")):
            row = asyncio.run(measure(module, fake.base_url, a.replies, c))
            row.update(provider=str(a.provider), loadavg_1m=round(os.getloadavg()[0], 2))
            print(json.dumps(row))


if __name__ == "__main__":
    main()
