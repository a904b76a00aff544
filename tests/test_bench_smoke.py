"""The benchmark must not rot: its smoke mode runs every section against the real server."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from bench.runner import SECTIONS, TARGETS, lookup

ROOT = Path(__file__).resolve().parent.parent


def numbers(data, key: str = "") -> list[tuple[str, float]]:
    """Every number in a nested result with its dotted key (booleans excluded)."""
    if isinstance(data, dict):
        return [n for k, v in data.items() for n in numbers(v, f"{key}.{k}" if key else k)]
    if isinstance(data, list):
        return [n for v in data for n in numbers(v, key)]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return [(key, data)]
    return []


def test_smoke_run_reports_every_section_with_numbers(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    report = json.loads(files[0].read_text(encoding="utf-8"))
    assert report["smoke"] is True
    assert set(report["machine"]) >= {"date", "cores", "memory_gb", "python", "sqlite", "commit"}
    results = report["results"]
    assert list(results) == SECTIONS
    for name in SECTIONS:
        section = results[name]
        assert "error" not in section, f"{name}: {section.get('error')}"
        values = numbers(section)
        assert len(values) >= 5, name
        for key, v in values:
            assert math.isfinite(v), f"{name}.{key} = {v}"
            # an overhead is a difference of two measured figures and may dip below zero
            assert v >= 0 or key.startswith("overhead"), f"{name}.{key} = {v}"
    # every target's metric is present and numeric (smoke sizes are not judged)
    for section, key, *_ in TARGETS:
        value = lookup(results[section], key)
        assert isinstance(value, (int, float)), f"{section}.{key} = {value!r}"
    assert [t["met"] for t in report["targets"]] == [None] * len(TARGETS)
    # the table on stdout names every section and every target
    for name in SECTIONS:
        assert f"[{name}]" in proc.stdout
    for *_, what in TARGETS:
        assert what in proc.stdout
    # the replies really streamed: chunk frames reached the WebSocket (the 60 deltas of a 0 ms fake
    # model arrive together, and deltas closer than stream_coalesce_ms share one frame)
    assert results["message"]["frames_per_message"] >= 1
    assert results["throughput"]["one_ws"]["replies"] > 0 and results["throughput"]["ten_ws"]["replies"] > 0
    assert results["history"]["search_rare"]["hits"] >= 1
    # the default profile is the realistic one: the agents recalled memories and knowledge through the
    # OpenAI-compatible embedder of the fake model, and CPU per reply is reported
    assert report["profile"] == "realistic"
    assert results["throughput"]["one_ws"]["cpu_ms_per_reply"] > 0
    assert results["startup"]["command"] == "python run.py"
    # every server of the run reports callbacks holding its event loop over 50 ms of CPU. On a quiet machine
    # there are none; a shared CI machine has shown one of 66 ms (caches, frequency), so the test fails at
    # four times that: what it guards against is work done in the loop by mistake (a synchronous embedding,
    # a file parsed inline), which holds it for hundreds of milliseconds.
    assert report["loop_check_ms"] == 50
    held = [(int(re.search(r"for (\d+) ms of CPU", json.loads(line)["msg"]).group(1)), line)
            for line in report["slow_callbacks"]]
    assert [line for ms, line in held if ms > 200] == [], "\n".join(report["slow_callbacks"])
