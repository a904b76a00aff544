"""Time the indexing of a folder of Markdown pages with the default local embedder, through the real
server: every page uploaded at once to a fresh agent (``POST /api/rag/upload``), then polled until
all are ``ready``.

    python -m bench.retrieval.indexing [FOLDER] [--embedder e5-small]

FOLDER defaults to XIAJIAO_BENCH_CORPUS, else the test suite's bilingual pages; the figures in
docs/benchmarks.md name the 54-page product corpus (about 530 KB) through that variable.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import psutil

from ..corpus import corpus_dir
from ..harness import Server

DEFAULT = corpus_dir()


async def measure(folder: Path, embedder: str, tmp: Path) -> dict:
    from ..chatclient import create_agent

    pages = sorted(folder.rglob("*.md"))
    server = Server(tmp / "data", access_log=False, env={"XIAJIAO_EMBEDDER": embedder})
    async with server:
        await server.login()
        async with server.client() as client:
            agent_id = await create_agent(client, "Indexing", model=None, seed=False)
            # the model loads on first use: one tiny query first, so the figure is indexing alone
            await client.post("/api/rag/query", json={"agentId": agent_id, "query": "warm up", "topK": 1})
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            ids = []
            for p in pages:
                r = await client.post("/api/rag/upload", data={"agentId": agent_id},
                                      files={"file": (p.name, p.read_bytes(), "text/markdown")})
                r.raise_for_status()
                ids.append(r.json()["documentId"])
            uploaded = time.perf_counter() - t0
            pending, chunks = set(ids), 0
            while pending:
                docs = (await client.get("/api/rag/documents", params={"agentId": agent_id})).json()["documents"]
                done = {d["id"]: d for d in docs if d["id"] in pending and d["status"] in ("ready", "failed")}
                failed = [d for d in done.values() if d["status"] == "failed"]
                if failed:
                    raise RuntimeError(f"indexing failed: {failed[0]}")
                chunks += sum(d["chunks"] for d in done.values())
                pending -= set(done)
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - t0
            cpu = server.cpu_seconds() - cpu0
    size = sum(p.stat().st_size for p in pages)
    return {"pages": len(pages), "bytes": size, "chunks": chunks, "embedder": embedder,
            "uploaded_s": round(uploaded, 2), "indexed_s": round(seconds, 2), "server_cpu_s": round(cpu, 2),
            "chunks_per_s": round(chunks / seconds, 1), "cores": os.cpu_count(),
            "loadavg_1m": round(psutil.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.retrieval.indexing")
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--embedder", default="e5-small")
    args = p.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder} is not a folder of Markdown pages")
    with tempfile.TemporaryDirectory(prefix="xiajiao-indexing-") as tmp:
        print(json.dumps(asyncio.run(measure(args.folder, args.embedder, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
