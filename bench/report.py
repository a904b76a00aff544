"""Render a results JSON as Markdown for docs/benchmarks.md: ``python -m bench.report <file.json>``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .runner import SECTIONS, flatten


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Measured {m['date']} at commit `{m['commit']}`: {m['cores']} cores, {m['memory_gb']} GB RAM, "
           f"Python {m['python']}, SQLite {m['sqlite']} ({m['driver']}), sqlite-vec {m['sqlite_vec']}.", "",
           "| Target | Measured | Target | |", "| --- | ---: | ---: | --- |"]
    for t in report["targets"]:
        mark = {True: "met", False: "**missed**", None: "not judged"}[t["met"]]
        out.append(f"| {t['what']} | {t['value']} | {t['target']} | {mark} |")
    for name in SECTIONS:
        section = report["results"].get(name)
        if section is None:
            continue
        rows: list = []
        flatten("", section, rows)
        out += ["", f"**{name}**", "", "| Metric | Value |", "| --- | ---: |"]
        out += [f"| {k} | {v} |" for k, v in rows if not k.endswith(".n") and not k.endswith(".mean")]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
