"""The command line: pick sizes, run the sections, print the table, write the JSON."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .harness import ROOT

SECTIONS = ["startup", "message", "throughput", "fanout", "history", "knowledge", "memory", "retrieval", "recall"]


@dataclass
class Options:
    """Sizes of every section (the defaults are the full benchmark)."""

    startup_runs: int = 5
    warm_starts: int = 5  # starts on the existing data folders (no first-start work)
    idle_seconds: float = 3.0
    messages: int = 200
    turns_per_channel: int = 10  # a conversation's history stays this short (a fresh DM after it)
    chunks: int = 60
    delay_ms: float = 0.0
    first_byte_ms: float = 0.0
    conversations: int = 10
    duration: float = 30.0
    fanout_clients: int = 500
    fanout_posts: int = 100
    history_messages: int = 1_000_000
    page_fetches: int = 1000
    searches: int = 50
    kb_index_kb: int = 600  # the document whose indexing time is a target
    fair_turns: int = 20  # idle chat turns timed before the ones during indexing
    kb_sizes_kb: tuple = (1024, 10 * 1024)
    kb_query_chunks: tuple = (5_000, 100_000)
    kb_count: int = 10
    kb_small_kb: int = 100
    queries: int = 200
    memories: int = 10_000
    memory_searches: int = 200
    retrieval_questions: int = 0  # 0: every question of bench/retrieval
    retrieval_embedder: str = "e5-small"
    access_log: bool = True


SMOKE = dict(startup_runs=1, warm_starts=0, idle_seconds=0.3, messages=10, duration=1.0, conversations=3, fanout_clients=20,
             fanout_posts=5, history_messages=3000, page_fetches=20, searches=3, kb_index_kb=16, fair_turns=3,
             kb_sizes_kb=(16, 48), kb_query_chunks=(150, 400), kb_count=2, kb_small_kb=8, queries=10, memories=40,
             memory_searches=10, retrieval_questions=12, retrieval_embedder="hash")

# (section, key, op, target, what); the targets of issue 13, judged on the realistic profile
TARGETS = [
    ("startup", "cold_start_ms", "<=", 450, "cold start, python run.py to first 200 (ms)"),
    ("startup", "idle_rss_mb", "<=", 60, "idle memory (MB)"),
    ("message", "overhead_first_chunk_ms", "<=", 3, "overhead to first chunk, p50 (ms)"),
    ("message", "stream_end_p99_over_p50", "<=", 3, "stream end p99 / p50 (no stalls)"),
    ("throughput", "one_ws.cpu_ms_per_reply", "<=", 5, "server CPU per reply, 1 WebSocket (ms)"),
    ("throughput", "ten_ws.cpu_ms_per_reply", "<=", 10, "server CPU per reply, 10 WebSockets (ms)"),
    ("throughput", "one_ws.replies_per_s", ">=", 200, "replies/s, 10 conversations on one WebSocket"),
    ("history", "page.p50", "<=", 2, "history page p50 at 1M messages (ms)"),
    ("history", "search_rare.p50", "<=", 2, "rare-word search p50 at 1M messages (ms)"),
    ("knowledge", "index_600kb_s", "<=", 1.5, "600 KB indexed (s)"),
    ("knowledge", "query_during_index_over_idle", "<=", 2, "query while indexing / idle, p50"),
    ("knowledge", "turn_during_index_over_idle", "<=", 2, "chat turn while indexing / idle, p50"),
    ("knowledge", "query_small.p50", "<=", 10, "query at 5k chunks, p50 (ms)"),
    ("knowledge", "query_large.p50", "<=", 40, "query at 100k chunks, p50 (ms)"),
    ("knowledge", "ten_kbs.rss_after_mb", "<=", 140, "RSS after a query to ten knowledge bases (MB)"),
    ("retrieval", "held-out.all.page_r3", ">=", 0.9, "held-out page recall@3"),
    ("retrieval", "held-out.all.passage_r3", ">=", 0.8, "held-out passage recall@3"),
    ("recall", "held-out.current_r3", ">=", 0.9, "held-out memory recall@3 of the current fact"),
]


@dataclass
class Context:
    opts: Options
    tmp: Path
    results: dict = field(default_factory=dict)


def lookup(data: dict, key: str):
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def machine() -> dict:
    from xiajiao.db import versions

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **{k: v for k, v in versions().items()},
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else ""),
    }


def verdicts(results: dict, judge: bool = True) -> list[dict]:
    """Each target with its measured value; ``met`` is None when not judged (smoke sizes, or no value)."""
    out = []
    for section, key, op, target, what in TARGETS:
        value = lookup(results.get(section, {}), key)
        met = None
        if judge and isinstance(value, (int, float)):
            met = value <= target if op == "<=" else value >= target
        out.append({"section": section, "metric": key, "what": what, "value": value, "target": f"{op} {target}",
                    "met": met})
    return out


def flatten(prefix: str, data, out: list) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(data, list) and len(data) > 8:
        out.append((prefix, f"[{len(data)} values]"))
    else:
        out.append((prefix, data))


def table(results: dict, checks: list[dict]) -> str:
    lines = []
    for section in SECTIONS:
        if section not in results:
            continue
        lines.append(f"\n[{section}]")
        render = getattr(importlib.import_module(f".sections.{section}", __package__), "render", None)
        if render is not None and "error" not in results[section]:
            lines.append(render(results[section]))
            continue
        rows: list = []
        flatten("", results[section], rows)
        width = max((len(k) for k, _ in rows), default=10)
        for k, v in rows:
            lines.append(f"  {k:<{width}}  {v}")
    lines.append("\n[targets]")
    for c in checks:
        mark = {True: "met", False: "MISSED", None: "not judged"}[c["met"]]
        lines.append(f"  {c['what']:<52} {str(c['value']):>10}  target {c['target']:<8} {mark}")
    return "\n".join(lines)


async def run_sections(opts: Options, names: list[str], tmp: Path, log=print) -> dict:
    ctx = Context(opts, tmp)
    for name in names:
        module = importlib.import_module(f".sections.{name}", __package__)
        log(f"bench: {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        try:
            ctx.results[name] = await module.run(ctx)
        except Exception as exc:  # one broken section must not hide the others' numbers
            traceback.print_exc()
            ctx.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        # other work on the machine skews the figures: keep the load average next to them
        ctx.results[name]["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        log(f"bench: {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return ctx.results


def run(opts: Options, names: list[str] | None = None, *, out_dir: Path | None = None,
        keep: bool = False) -> dict:
    """Run the benchmark; returns ``{"machine", "options", "results", "targets"}`` and writes the JSON."""
    names = names or SECTIONS
    tmp = Path(tempfile.mkdtemp(prefix="xiajiao-bench-"))
    try:
        results = asyncio.run(run_sections(opts, names, tmp))
    finally:
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    from . import harness

    smoke = opts.history_messages < Options.history_messages
    report = {"machine": machine(), "profile": harness.LOAD_PROFILE, "options": dataclasses.asdict(opts),
              "smoke": smoke, "results": results, "targets": verdicts(results, judge=not smoke),
              "loop_check_ms": harness.LOOP_CHECK_MS, "slow_callbacks": list(harness.SLOW_CALLBACKS)}
    out_dir = out_dir or ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (dt.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ".json")
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    report["path"] = str(path)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the real Xiajiao server.")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (a few seconds; what the tests run), with --loop-check 50 unless given")
    p.add_argument("--light", action="store_true",
                   help="the light profile: bare agents and the hash test embedder (default: realistic)")
    p.add_argument("--loop-check", type=float, metavar="MS",
                   help="report every callback holding a server's event loop > MS of CPU (setting loop_slow_ms)")
    p.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--out", type=Path, help="folder for the JSON (default bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run every server under pyinstrument (pip install pyinstrument); reports go to DIR")
    p.add_argument("--server-root", type=Path,
                   help="serve the code of this checkout instead of this one (to compare two commits)")
    for f in dataclasses.fields(Options):
        if f.type in ("int", "float"):
            p.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else float,
                           help=f"(default {f.default})")
        elif f.type == "tuple":
            p.add_argument("--" + f.name.replace("_", "-"), type=lambda v: tuple(int(x) for x in v.split(",")),
                           help=f"comma-separated (default {','.join(map(str, f.default))})")
    p.add_argument("--no-access-log", action="store_true", help="turn the server's per-request log line off")
    args = p.parse_args(argv)
    from . import harness

    if args.server_root:
        harness.SERVER_ROOT = args.server_root.resolve()
    if args.profile:
        harness.PROFILE_DIR = args.profile.resolve()
    if args.light:
        harness.LOAD_PROFILE = "light"
    harness.LOOP_CHECK_MS = args.loop_check if args.loop_check is not None else (50.0 if args.smoke else 0.0)
    opts = Options(**(SMOKE if args.smoke else {}))
    for f in dataclasses.fields(Options):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(opts, f.name, v)
    if args.no_access_log:
        opts.access_log = False
    names = args.only.split(",") if args.only else None
    unknown = set(names or []) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    report = run(opts, names, out_dir=args.out, keep=args.keep)
    m = report["machine"]
    print(f"Xiajiao bench {m['date']}  commit {m['commit']}  {m['cores']} cores, {m['memory_gb']} GB, "
          f"Python {m['python']}, SQLite {m['sqlite']} ({m['driver']}), sqlite-vec {m['sqlite_vec']}  "
          f"profile {report['profile']}")
    print(table(report["results"], report["targets"]))
    if report["loop_check_ms"]:
        print(f"\n[event loop] callbacks holding the loop > {report['loop_check_ms']:g} ms: "
              f"{len(report['slow_callbacks'])}")
        for line in report["slow_callbacks"]:
            print("  " + line)
    print(f"\nJSON: {report['path']}")
