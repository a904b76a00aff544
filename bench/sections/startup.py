"""1. Cold start to the first 200 on /health, and resident memory when idle.

The realistic profile starts the server exactly as the README says, ``python run.py`` with the
interpreter the virtual environment was made from (run.py finds .venv ready and hands over to it);
the light profile runs ``python -m xiajiao.cli serve`` inside the virtual environment.
"""
from __future__ import annotations

import asyncio
import statistics

from ..harness import Server, realistic
from ..stats import mb


async def run(ctx) -> dict:
    starts, rss = [], []
    for i in range(ctx.opts.startup_runs):
        # each start is a fresh data folder: the first start also creates and migrates the database
        server = Server(ctx.tmp / f"startup-{i}" / "data", access_log=ctx.opts.access_log, via_run_py=realistic())
        try:
            starts.append(await server.start())
            await asyncio.sleep(ctx.opts.idle_seconds)
            rss.append(server.rss())
        finally:
            server.stop()
    warm = []
    for i in range(min(ctx.opts.warm_starts, ctx.opts.startup_runs)):  # again on the now existing databases
        server = Server(ctx.tmp / f"startup-{i}" / "data", access_log=ctx.opts.access_log, via_run_py=realistic())
        try:
            warm.append(await server.start())
        finally:
            server.stop()
    return {
        "command": "python run.py" if realistic() else "python -m xiajiao.cli serve",
        "cold_start_ms": round(statistics.median(starts), 1),
        **({"cold_start_existing_data_ms": round(statistics.median(warm), 1)} if warm else {}),
        "cold_start_runs_ms": [round(s, 1) for s in starts],
        "idle_rss_mb": mb(statistics.median(rss)),
    }
