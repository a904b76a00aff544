"""Measure retrieval levers: each configuration (server settings) runs the whole evaluation
through a real server with the default local embedder.

    python -m bench.retrieval.levers                 every configuration of LEVERS
    python -m bench.retrieval.levers NAME ...        only these
    python -m bench.retrieval.levers --split dev     print one split (default both)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from ..harness import Server
from . import COLUMNS, evaluate

# name -> XIAJIAO_* settings, cumulative in the order the levers were tried (docs/memory-and-knowledge.md)
BASE = {"XIAJIAO_EMBEDDER": "e5-small", "XIAJIAO_RAG_HEADING_SECTIONS": "false",
        "XIAJIAO_RAG_CONTEXTUAL_CHUNKS": "false", "XIAJIAO_RAG_FUSION": "rrf", "XIAJIAO_RAG_KEYWORD_WEIGHT": "1",
        "XIAJIAO_RAG_CROSS_LANGUAGE_BOOST": "0", "XIAJIAO_RAG_VECTOR_POOL": "40"}
_H = {"XIAJIAO_RAG_HEADING_SECTIONS": "true"}
_C = {**_H, "XIAJIAO_RAG_CONTEXTUAL_CHUNKS": "true"}
_L = {**_C, "XIAJIAO_RAG_FUSION": "linear", "XIAJIAO_RAG_KEYWORD_WEIGHT": "0.05"}
_P = {**_L, "XIAJIAO_RAG_VECTOR_POOL": "300"}
LEVERS: dict[str, dict] = {
    "baseline (rrf, fixed-size parents)": {},
    "+ heading sections": _H,
    "+ contextual chunks": _C,
    "+ linear fusion (keyword 0.05)": _L,
    "+ vector pool 300": _P,
    "+ cross-language boost 0.09": {**_P, "XIAJIAO_RAG_CROSS_LANGUAGE_BOOST": "0.09"},
    # e5-small's vectors are language-neutral since its version centred-1: every row above runs on them
    "+ boost 0.06 (defaults)": {**_P, "XIAJIAO_RAG_CROSS_LANGUAGE_BOOST": "0.06"},
}


def configs(extra: list[str]) -> dict[str, dict]:
    """LEVERS, plus ad-hoc ``name=KEY=VALUE,KEY=VALUE`` configurations on top of the last lever."""
    out = dict(LEVERS)
    last = list(LEVERS.values())[-1]
    for spec in extra:
        name, _, pairs = spec.partition("=")
        out[name] = {**last, **dict(("XIAJIAO_" + p.split("=")[0].upper(), p.split("=", 1)[1])
                                    for p in pairs.split(",") if p)}
    return out


async def measure(env: dict, tmp: Path) -> dict:
    server = Server(tmp / "data", access_log=False, env={**BASE, **env})
    async with server:
        await server.login()
        return await evaluate(server)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.retrieval.levers")
    p.add_argument("names", nargs="*", help="configurations to run (default: all of LEVERS)")
    p.add_argument("--try", dest="extra", action="append", default=[], metavar="NAME=key=value,...",
                   help="an extra configuration on top of the last lever (settings without XIAJIAO_)")
    p.add_argument("--split", choices=["dev", "held-out"], help="print only this split")
    p.add_argument("--json", type=Path, help="also write every result to this file")
    args = p.parse_args()
    every = configs(args.extra)
    names = args.names or [n for n in every if n in LEVERS] + [s.partition("=")[0] for s in args.extra]
    splits = [args.split] if args.split else ["dev", "held-out"]
    results = {}
    print("| configuration | split | " + " | ".join(COLUMNS) + " | abstain | false abstain |")
    print("| --- | --- |" + " ---: |" * (len(COLUMNS) + 2))
    for name in names:
        with tempfile.TemporaryDirectory(prefix="xiajiao-levers-") as tmp:
            r = asyncio.run(measure(every[name], Path(tmp)))
        results[name] = r
        for split in splits:
            a = r[split]["all"]
            print(f"| {name} | {split} | " + " | ".join(str(a.get(c, "")) for c in COLUMNS)
                  + f" | {a.get('abstain', '')} | {a.get('false_abstain', '')} |", flush=True)
            kinds = " ".join(f"{k}:{v.get('page_r3', '-')}/{v.get('passage_r3', '-')}"
                             for k, v in r[split].items() if k != "all")
            print(f"  ({kinds})", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
