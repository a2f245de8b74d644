"""The soak run: one stream on a loop of the media for minutes or hours, optionally with busy
processes beside it, watching what long runs break: resident memory, drops, overruns, the
estimate rate.

The scheduler degrades by skipping, never by queueing, so a loaded machine shows skipped
ticks and stale inputs, not growing memory or delay. Everything kept here is preallocated or
a counter, so the measurement itself does not grow the process.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.bench.pipeline import ResourceSampler, count_status, machine_info, pyplot, save
from affectstream.core.config import Config
from affectstream.core.labels import MODALITIES
from affectstream.core.stats import percentiles


def _hog(stop) -> None:  # pragma: no cover - runs in a child process
    """Spin on one core until told to stop."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class CpuHogs:
    """`n` processes that each keep one core busy, for as long as the context lasts."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._stop = mp.get_context("spawn").Event() if n else None
        self._procs: list = []

    def __enter__(self) -> CpuHogs:
        ctx = mp.get_context("spawn")
        for _ in range(self.n):
            p = ctx.Process(target=_hog, args=(self._stop,), daemon=True)
            p.start()
            self._procs.append(p)
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        for p in self._procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()


def soak(
    config: Config,
    media: str | Path,
    minutes: float,
    cpu_hogs: int = 0,
    sample_s: float = 5.0,
    warmup_s: float | None = None,
    transcribe: bool = True,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run the soak and return its record (see the module docstring).

    `warmup_s` (default: 10% of the run, at most 120 s) is excluded from the memory growth:
    models, caches and allocator pools settle first.
    """
    from affectstream.realtime.stream import AffectStream, Inputs

    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    seconds = minutes * 60.0
    warmup_s = min(120.0, 0.1 * seconds) if warmup_s is None else warmup_s
    rate = config.scheduler.rate_hz
    cap = int(seconds * rate * 1.1) + 100
    tick_ms = np.full(cap, np.nan)
    ages = {m: np.full(cap, np.nan) for m in MODALITIES}
    n = 0
    overruns = 0
    last_dropped: dict[str, int] = {}
    status_counts: dict[str, dict[str, int]] = {m: {} for m in MODALITIES}
    t0 = time.monotonic()
    sampler = ResourceSampler(
        sample_s, gpu=config.backend.device.startswith("cuda"), extra=lambda: {"estimates": n}
    )

    stream = AffectStream(
        config, Inputs(media=media, realtime=True, loop=True, transcribe=transcribe)
    )
    with CpuHogs(cpu_hogs), sampler:
        last_t = 0.0
        for est in stream.estimates():
            if n < cap:
                tick_ms[n] = est.stages_ms.get("total", np.nan)
                for m in MODALITIES:
                    a = est.age_ms.get(m)
                    ages[m][n] = np.nan if a is None else a
            n += 1
            overruns += int(est.overrun)
            last_dropped = est.dropped
            count_status(status_counts, est)
            last_t = est.t
            if progress is not None and n % 10 == 0:
                progress(est.t)
            if est.t >= seconds:
                stream.stop()
    memory = sampler.samples
    elapsed = time.monotonic() - t0

    after = [m for m in memory if m["t"] >= warmup_s]
    base = after[0]["rss_mb"] if after else None
    end = after[-1]["rss_mb"] if after else None
    growth = round(100.0 * (end - base) / base, 2) if base else None
    run_s = last_t if n > 1 else 0.0
    return {
        "command": "affectstream soak",
        "machine": machine_info(config),
        "media": str(media),
        "minutes": minutes,
        "cpu_hogs": cpu_hogs,
        "transcribe": transcribe,
        "warmup_s": warmup_s,
        "estimates": n,
        "stream_seconds": round(run_s, 2),
        "wall_seconds": round(elapsed, 1),
        "nominal_rate_hz": rate,
        # n estimates span n - 1 periods: the first comes at t = 0
        "estimate_rate_hz": round((n - 1) / run_s, 4) if run_s else 0.0,
        "rate_error_percent": round(100.0 * ((n - 1) / run_s - rate) / rate, 3) if run_s else None,
        "rss_mb": {
            "after_warmup": base,
            "end": end,
            "max": max((m["rss_mb"] for m in memory), default=None),
            "growth_percent_after_warmup": growth,
        },
        "tick_ms": percentiles(tick_ms[: min(n, cap)], (50, 95, 99), 3, with_max=True),
        "age_ms": {
            m: percentiles(a[: min(n, cap)], (50, 95, 99), 2, with_max=True)
            for m, a in ages.items()
        },
        "tick_overruns": overruns,
        "dropped": last_dropped,
        "status": status_counts,
        "memory": memory,
    }


def plot(result: dict[str, Any], out: str | Path) -> Path:
    """Resident memory and CPU over the run."""
    plt = pyplot()
    mem = result["memory"]
    t = [m["t"] / 60 for m in mem]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [m["rss_mb"] for m in mem], label="resident memory (MB)")
    ax.axvline(result["warmup_s"] / 60, color="grey", ls=":", label="end of warm-up")
    ax.set(xlabel="minutes", ylabel="MB")
    ax2 = ax.twinx()
    ax2.plot(t, [m["cpu_percent"] for m in mem], color="tab:orange", lw=0.7, label="CPU %")
    ax2.set_ylabel("CPU % (100 = one core)")
    ax.legend(loc="lower left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_title(
        f"soak: {Path(result['media']).name}, {result['minutes']:g} min, "
        f"{result['cpu_hogs']} CPU hogs; RSS growth after warm-up "
        f"{result['rss_mb']['growth_percent_after_warmup']}%",
        fontsize=9,
    )
    return save(fig, out)
