"""The end-of-run summary: counts, age percentiles per modality, stage times, overruns, drops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from affectstream.core.jsonio import write_json
from affectstream.core.labels import MODALITIES
from affectstream.core.messages import Estimate
from affectstream.core.stats import percentiles


@dataclass
class RunSummary:
    """Accumulates estimates as they stream past; `table()` and `to_dict()` at the end."""

    count: int = 0
    ages: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODALITIES})
    stages: dict[str, list[float]] = field(default_factory=dict)
    overruns: int = 0
    last_dropped: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def add(self, est: Estimate) -> None:
        self.count += 1
        for m in MODALITIES:
            a = est.age_ms.get(m)
            if a is not None:
                self.ages[m].append(a)
        for k, v in est.stages_ms.items():
            self.stages.setdefault(k, []).append(v)
        self.overruns += int(est.overrun)
        self.last_dropped = dict(est.dropped)

    def to_dict(self) -> dict:
        return {
            "estimates": self.count,
            "present_fraction": {
                m: round(len(self.ages[m]) / self.count, 4) if self.count else 0.0
                for m in MODALITIES
            },
            "age_ms": {m: percentiles(self.ages[m]) for m in MODALITIES},
            "stages_ms": {k: percentiles(v) for k, v in self.stages.items()},
            "overruns": self.overruns,
            "dropped": self.last_dropped,
            **self.extra,
        }

    def table(self):
        from rich.table import Table

        d = self.to_dict()
        t = Table(
            title=f"affectstream run: {self.count} estimates, {self.overruns} overruns (times in ms)"
        )
        for col in ("modality", "present", "age p50", "age p95", "age p99", "work p50", "work p99"):
            t.add_column(col, justify="right" if col != "modality" else "left")
        for m in MODALITIES:
            a = d["age_ms"][m]
            s = d["stages_ms"].get(m, {})
            t.add_row(
                m,
                f"{d['present_fraction'][m]:.0%}",
                *(_fmt(a[p]) for p in ("p50", "p95", "p99")),
                _fmt(s.get("p50")),
                _fmt(s.get("p99")),
            )
        tot = d["stages_ms"].get("total", {})
        t.add_row("tick", "", "", "", "", _fmt(tot.get("p50")), _fmt(tot.get("p99")))
        nonzero = {k: v for k, v in d["dropped"].items() if v}
        t.caption = "drops: " + (", ".join(f"{k}={v}" for k, v in nonzero.items()) or "none")
        return t

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
