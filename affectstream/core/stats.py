"""Latency statistics, computed one way for every summary, benchmark and report."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class BatchStats:
    """Sizes of the calls a shared model made and how long requests waited for them
    (bounded history): the batchers of `export.batching` and the shared whisper model of
    `models.stt.shared` keep one each."""

    keep: int = 4096
    requests: int = 0
    calls: int = 0
    sizes: deque = field(default_factory=deque)
    waits_ms: deque = field(default_factory=deque)
    # why each batch stopped waiting: all_in (every active stream asked), full, deadline,
    # window (the others did not come in time)
    cut_by: dict[str, int] = field(default_factory=dict)

    def add(self, size: int, waits_ms: Sequence[float]) -> None:
        self.calls += 1
        self.requests += size
        for q, values in ((self.sizes, [size]), (self.waits_ms, waits_ms)):
            q.extend(values)
            while len(q) > self.keep:
                q.popleft()

    def clear(self) -> None:
        self.requests = self.calls = 0
        self.sizes.clear()
        self.waits_ms.clear()
        self.cut_by.clear()

    def summary(self) -> dict[str, Any]:
        sizes = list(self.sizes)
        hist: dict[str, int] = {}
        for s in sizes:
            hist[str(s)] = hist.get(str(s), 0) + 1
        return {
            "requests": self.requests,
            "calls": self.calls,
            "mean_batch": round(float(np.mean(sizes)), 3) if sizes else None,
            "max_batch": max(sizes) if sizes else None,
            "batch_sizes": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
            "wait_ms": percentiles(list(self.waits_ms), with_max=True),
            "cut_by": dict(self.cut_by),
        }
