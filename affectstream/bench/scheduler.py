"""What the scheduler itself costs per tick: stages that return at once, run through the
stage worker threads (as the runtime runs them) and called inline, on the media clock."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from affectstream.core.config import SchedulerConfig
from affectstream.core.labels import LABELS
from affectstream.core.stats import percentiles
from affectstream.realtime.scheduler import Pipeline, run_stepped
from affectstream.realtime.stages.base import ModalityResult, Stage

_UNIFORM = np.full(len(LABELS), 1.0 / len(LABELS), np.float32)


class _Instant(Stage):
    """A stage whose work is nothing: what is left of a tick is the scheduler's own cost."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, now_ns: int) -> ModalityResult:
        return ModalityResult(_UNIFORM, t_ns=now_ns, confidence=0.5)


def measure(ticks: int = 3000, stages: int = 3, warmup: int = 100) -> dict[str, Any]:
    """Tick time through the workers, and the same stages called inline, in ms."""
    names = ["face", "voice", "text"][:stages] + [f"stage{i}" for i in range(stages - 3)]
    p = Pipeline([_Instant(n) for n in names], SchedulerConfig(rate_hz=10))
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= ticks + warmup))
    p.close()
    workers = [e.stages_ms["total"] for e in ests[warmup:]]
    inline_stages = [_Instant(n) for n in names]
    inline = []
    for _ in range(ticks):
        t0 = time.perf_counter_ns()
        for s in inline_stages:
            s.run(t0)
        inline.append((time.perf_counter_ns() - t0) / 1e6)
    w = percentiles(workers, (50, 99), 4)
    i = percentiles(inline, (50, 99), 4)
    return {
        "command": "affectstream bench scheduler",
        "ticks": ticks,
        "stages": stages,
        "tick_ms_workers": w,
        "stage_calls_ms_inline": i,
        # threads, status, fusion and the estimate: all a tick costs beyond the stages' work
        "scheduler_ms_per_tick_p50": round(w["p50"] - i["p50"], 4),
    }
