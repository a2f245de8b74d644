"""Latency statistics, computed one way for every summary, benchmark and report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def percentiles(
    values: Iterable[float],
    qs: Sequence[float] = (50, 95, 99),
    digits: int = 2,
    with_max: bool = False,
) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} (and "max"), rounded; None for each when empty.

    NaN and None values are left out: a modality that was absent has no age to count.
    """
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    keys = [f"p{q:g}" for q in qs] + (["max"] if with_max else [])
    if a.size == 0:
        return dict.fromkeys(keys)
    out = {f"p{q:g}": round(float(np.percentile(a, q)), digits) for q in qs}
    if with_max:
        out["max"] = round(float(a.max()), digits)
    return out


def latency_ms(samples_ms: Iterable[float], digits: int = 3) -> dict[str, float | int]:
    """The per-call latency record the benchmarks print: calls, median, p95, p99, max (ms)."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    p = percentiles(a, (50, 95, 99), digits, with_max=True)
    return {
        "calls": int(a.size),
        "median_ms": p["p50"],
        "p95_ms": p["p95"],
        "p99_ms": p["p99"],
        "max_ms": p["max"],
    }
