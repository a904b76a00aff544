"""The fake OpenAI-compatible model, served in its own process for the benchmarks.

Run as ``python -m bench.fakemodel --chunks 60 --delay-ms 0 --first-byte-ms 0``; it prints
``PORT <n>`` once it accepts connections and serves until stdin closes. Its own process keeps
its CPU time off the server's event loop and off the load generator's (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_llm import FakeLLM, Reply  # noqa: E402  (tests/fake_llm.py is the project's fake model)

REPLY_WORDS = ("Sure, here is a short answer about agents, memory and knowledge bases. " * 8).split()


def reply_text(chunks: int) -> str:
    words = (REPLY_WORDS * (chunks // len(REPLY_WORDS) + 1))[:max(chunks, 1)]
    return " ".join(words)


async def serve(chunks: int, delay: float, first_byte: float) -> None:
    fake = FakeLLM(default_chunks=chunks)
    text = reply_text(chunks)

    def respond(req):
        if len(fake.requests) > 1000:  # keep the record short: benchmarks send many thousands
            del fake.requests[:-10]
        return Reply(text=text, chunks=chunks, delay=delay, first_byte_delay=first_byte)

    fake.responder = respond
    await fake.start()
    print(f"PORT {fake.port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await fake.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--chunks", type=int, default=60)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--first-byte-ms", type=float, default=0.0)
    a = p.parse_args()
    asyncio.run(serve(a.chunks, a.delay_ms / 1000, a.first_byte_ms / 1000))


if __name__ == "__main__":
    main()
