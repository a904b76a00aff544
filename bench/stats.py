"""Small statistics helpers (milliseconds in, milliseconds out)."""
from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict:
    """p50, p99, mean and count of a series, rounded for the report."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "mean": None}
    return {"n": len(values), "p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3),
            "mean": round(sum(values) / len(values), 3)}


def mb(nbytes: float) -> float:
    return round(nbytes / (1024 * 1024), 1)
