"""The whole-pipeline benchmark: media replayed at real pace through sources, VAD,
transcriber, encoders, fusion and scheduler, one or many streams in one process.

`measure(...)` returns a dict (the CLI prints its tables, writes its JSON and draws its plot):
per stage and per modality latency percentiles, estimate age, overruns, skipped ticks, drops,
CPU and resident memory (sampled by psutil), GPU memory and utilisation where a GPU is used,
and a header naming the machine, backends and versions. With several stream counts, every
count gets a row (tick p99, estimate age p99 of face and voice, estimate rate, CPU) and the
largest count whose p99 age stays within the budget is named.

Streams share one set of predictors, as server sessions do: the models are loaded once.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectstream.core.config import Config
from affectstream.core.labels import MODALITIES
from affectstream.core.machine import cpu_model
from affectstream.core.stats import percentiles
from affectstream.core.version import __version__
from affectstream.export.batching import batch_stats

Progress = Callable[[float], None]  # called with seconds of the current run done so far


@dataclass
class StreamTrace:
    """What one stream's estimates said, tick by tick (enough to summarise and plot)."""

    t: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    age_ms: dict[str, list[float | None]] = field(
        default_factory=lambda: {m: [] for m in MODALITIES}
    )
    overruns: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    status: dict[str, dict[str, int]] = field(default_factory=dict)
    faces: list[int] = field(default_factory=list)  # faces in each estimate

    def add(self, est) -> None:
        self.t.append(est.t)
        self.faces.append(len(est.faces))
        for k, v in est.stages_ms.items():
            self.stages_ms.setdefault(k, []).append(v)
        for m in MODALITIES:
            self.age_ms[m].append(est.age_ms.get(m))
        self.overruns += int(est.overrun)
        self.dropped = dict(est.dropped)
        count_status(self.status, est)


def count_status(counts: dict[str, dict[str, int]], est) -> None:
    """Add one estimate's status words (ok, stale, absent, missing, timeout, error, off) to
    per-modality counts; the reason after the colon is left out."""
    for m, s in est.status.items():
        word = s.split(":")[0]
        per = counts.setdefault(m, {})
        per[word] = per.get(word, 0) + 1


def machine_info(config: Config) -> dict[str, Any]:
    """Header: CPU model, cores, device, backend, versions of what does the work."""
    info: dict[str, Any] = {
        "affectstream": __version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": config.backend.device,
        "backend": config.backend.name,
        "threads_per_model": config.backend.threads,
    }
    for mod in ("numpy", "torch", "onnxruntime", "ctranslate2", "faster_whisper", "cv2"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if config.backend.device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


class ResourceSampler:
    """Samples the CPU % (of one core: 200 means two busy cores) and resident memory of this
    process with its children (the whisper model decodes in one: `models/stt/worker.py`)
    and, on a GPU, memory in use and utilisation, every `interval_s`, on its own thread."""

    def __init__(
        self,
        interval_s: float = 0.5,
        gpu: bool = False,
        extra: Callable[[], dict[str, Any]] | None = None,
        children: bool = True,
    ) -> None:
        """`extra`: more fields for each sample (soak adds the estimate count); `children`
        False: this process alone (a benchmark whose child is the server it measures)."""
        import os

        self.tree = ProcessTree(os.getpid(), children)
        self.interval_s = interval_s
        self.gpu = gpu
        self.extra = extra
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> ResourceSampler:
        self.tree.sample()  # the first call only starts each process's interval
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            cpu, rss = self.tree.sample()
            s = {"t": round(time.monotonic() - self._t0, 2), "cpu_percent": cpu, "rss_mb": rss}
            if self.gpu:
                s.update(_gpu_sample())
            if self.extra is not None:
                s.update(self.extra())
            self.samples.append(s)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cpu_percent": percentiles([s["cpu_percent"] for s in self.samples], (50, 95), 1),
            "rss_mb": percentiles([s["rss_mb"] for s in self.samples], (50,), 1, with_max=True),
        }
        if self.gpu:
            for key in ("gpu_memory_mb", "gpu_util_percent"):
                vals = [s[key] for s in self.samples if s.get(key) is not None]
                out[key] = percentiles(vals, (50,), 1, with_max=True)
        return out


class ProcessTree:
    """CPU % (of one core) and resident MB of a process and its children, summed, one
    sample per call (children that start later join the sum)."""

    def __init__(self, pid: int, children: bool = True) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.children = children
        self._seen: dict[int, Any] = {}

    def _procs(self) -> list:
        import psutil

        try:
            kids = self.root.children(recursive=True) if self.children else []
            procs = [self.root, *kids]
        except psutil.Error:
            return []
        for p in procs:
            if p.pid not in self._seen:
                self._seen[p.pid] = p
                with contextlib.suppress(psutil.Error):
                    p.cpu_percent(None)  # the first call only starts its interval
        return [self._seen[p.pid] for p in procs]

    def sample(self) -> tuple[float, float]:
        import psutil

        cpu = rss = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss / 2**20
        return round(cpu, 1), round(rss, 2)


def _gpu_sample() -> dict[str, float | None]:
    import torch

    out: dict[str, float | None] = {
        "gpu_memory_mb": torch.cuda.memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
        "gpu_util_percent": None,
    }
    with contextlib.suppress(Exception):  # utilisation needs pynvml; optional
        out["gpu_util_percent"] = float(torch.cuda.utilization())
    return out


def run_streams(
    config: Config,
    media: str | Path,
    n: int,
    seconds: float,
    predictors: dict[str, Any] | None = None,
    progress: Progress | None = None,
    transcribe: bool = True,
    video: str | Path | None = None,
) -> tuple[list[StreamTrace], dict[str, Any], dict[str, Any]]:
    """`n` streams on `media` (looped) at real pace for `seconds`, sharing `predictors`
    (filled on first use); `video`, when given, replaces the media's video. Returns (traces,
    resources, predictors)."""
    from affectstream.realtime.stream import AffectStream, Inputs

    predictors = {} if predictors is None else predictors
    inputs = Inputs(media=media, realtime=True, loop=True, transcribe=transcribe)
    if video is not None:
        inputs = Inputs(video=video, audio=media, realtime=True, loop=True, transcribe=transcribe)
    streams = []
    for _ in range(n):
        streams.append(AffectStream(config, inputs, predictors=predictors))
        streams[-1].wait_models()  # open once, in the first stream; the others share them
        predictors.update(streams[-1].predictors)
    traces = [StreamTrace() for _ in streams]
    errors: list[BaseException] = []

    def consume(stream, trace: StreamTrace) -> None:
        try:
            for est in stream.estimates():
                trace.add(est)
                if est.t >= seconds:
                    stream.stop()
        except BaseException as e:  # reported after the run, in the caller's thread
            errors.append(e)
            stream.stop()

    gpu = config.backend.device.startswith("cuda")
    with ResourceSampler(gpu=gpu) as sampler:
        threads = [
            threading.Thread(target=consume, args=(s, tr), name=f"bench-stream-{i}", daemon=True)
            for i, (s, tr) in enumerate(zip(streams, traces, strict=True))
        ]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            time.sleep(0.25)
            if progress is not None:
                progress(min(seconds, time.monotonic() - t0))
            if time.monotonic() - t0 > seconds + 60:  # a stream that never ends: stop all
                for s in streams:
                    s.stop()
        for th in threads:
            th.join(timeout=10.0)
    if errors:
        raise errors[0]
    return traces, sampler.summary() | {"samples": sampler.samples}, predictors


def summarize(traces: Sequence[StreamTrace], seconds: float) -> dict[str, Any]:
    """Percentiles over every estimate of every stream, and the counts that went wrong."""
    stages: dict[str, list[float]] = {}
    ages: dict[str, list[float | None]] = {m: [] for m in MODALITIES}
    for tr in traces:
        for k, v in tr.stages_ms.items():
            stages.setdefault(k, []).extend(v)
        for m in MODALITIES:
            ages[m].extend(tr.age_ms[m])
    dropped: dict[str, int] = {}
    for tr in traces:
        for k, v in tr.dropped.items():
            dropped[k] = dropped.get(k, 0) + int(v)
    estimates = sum(len(tr.t) for tr in traces)
    return {
        "estimates": estimates,
        "estimate_rate_hz": round(estimates / max(1, len(traces)) / seconds, 3),
        "stages_ms": {k: percentiles(v, (50, 95, 99), 3, with_max=True) for k, v in stages.items()},
        "age_ms": {m: percentiles(ages[m], (50, 95, 99), 2, with_max=True) for m in MODALITIES},
        "present_fraction": {
            m: round(sum(a is not None for a in ages[m]) / max(1, len(ages[m])), 4)
            for m in MODALITIES
        },
        "tick_overruns": sum(tr.overruns for tr in traces),
        "ticks_skipped": dropped.get("ticks_skipped", 0),
        "dropped": dropped,
        "status": _merge_status(traces),
    }


def _merge_status(traces: Sequence[StreamTrace]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tr in traces:
        for m, counts in tr.status.items():
            dst = out.setdefault(m, {})
            for k, v in counts.items():
                dst[k] = dst.get(k, 0) + v
    return out


# Modalities whose age the budget bounds. A text result is as old as the utterance it read
# (seconds: words are committed when a phrase ends), so its age measures speech, not the tick.
BUDGET_MODALITIES = ("face", "voice")


def worst_age_p99(summary: dict[str, Any]) -> float | None:
    """The largest p99 estimate age over face and voice (when they were ever present)."""
    ages = summary["age_ms"]
    vals = [ages[m]["p99"] for m in BUDGET_MODALITIES if ages[m]["p99"] is not None]
    return max(vals) if vals else None


def measure(
    config: Config,
    media: str | Path,
    seconds: float,
    streams: Sequence[int] = (1,),
    budget_ms: float = 150.0,
    transcribe: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run every stream count in `streams` for `seconds` each; see the module docstring.

    `progress(n, seconds_done)` is called while the run with `n` streams goes on.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if not streams or any(n < 1 for n in streams):
        raise ValueError(f"stream counts must be >= 1, got {list(streams)}")
    media = Path(media)
    result: dict[str, Any] = {
        "command": "affectstream bench pipeline",
        "machine": machine_info(config),
        "media": str(media),
        "seconds": seconds,
        "rate_hz": config.scheduler.rate_hz,
        "budget_ms": budget_ms,
        "transcribe": transcribe,
    }
    predictors: dict[str, Any] = {}
    rows = []
    for n in streams:
        cb = (lambda s, n=n: progress(n, s)) if progress is not None else None
        for stats in batch_stats(predictors).values():  # each stream count counts its own
            stats.clear()
        traces, resources, predictors = run_streams(
            config, media, n, seconds, predictors, cb, transcribe
        )
        summary = summarize(traces, seconds)
        summary["batches"] = {m: s.summary() for m, s in batch_stats(predictors).items()}
        if "backends" not in result["machine"]:
            result["machine"]["backends"] = {
                name: getattr(getattr(p, "backend", None), "name", None)
                for name, p in predictors.items()
            }
        if n == streams[0]:
            result["pipeline"] = summary | {
                "resources": {k: v for k, v in resources.items() if k != "samples"}
            }
            result["trace"] = {  # stream 0, for the plot
                "t": traces[0].t,
                "stages_ms": traces[0].stages_ms,
                "age_ms": traces[0].age_ms,
                "resources": resources["samples"],
            }
        rows.append(
            {
                "streams": n,
                "tick_p99_ms": summary["stages_ms"].get("total", {}).get("p99"),
                "age_p99_ms": worst_age_p99(summary),
                "estimate_rate_hz": summary["estimate_rate_hz"],
                "cpu_percent_p50": resources["cpu_percent"]["p50"],
                "rss_mb_max": resources["rss_mb"]["max"],
                "tick_overruns": summary["tick_overruns"],
                "ticks_skipped": summary["ticks_skipped"],
                "batches": summary["batches"],
            }
        )
    within = [
        r["streams"] for r in rows if r["age_p99_ms"] is not None and r["age_p99_ms"] <= budget_ms
    ]
    result["streams"] = rows
    result["max_streams_within_budget"] = max(within) if within else 0
    return result


def plot(result: dict[str, Any], out: str | Path) -> Path:
    """Latency over time (stream 0 of the first run) and the CDF of each stage's time."""
    import numpy as np

    plt = pyplot()
    tr = result["trace"]
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(13, 4.8))
    t = np.asarray(tr["t"])
    for m, ages in tr["age_ms"].items():
        y = np.asarray([np.nan if a is None else a for a in ages], dtype=float)
        if np.isfinite(y).any():
            ax_t.plot(t, y, lw=0.8, label=f"{m} age")
    ax_t.plot(t, tr["stages_ms"].get("total", []), lw=0.8, color="k", label="tick work")
    ax_t.set(xlabel="stream time (s)", ylabel="ms", title="latency over time (stream 0)")
    ax_t.set_yscale("log")
    ax_t.legend(fontsize=8)
    for k, v in tr["stages_ms"].items():
        a = np.sort(np.asarray(v, dtype=float))
        if a.size and k != "total":
            ax_c.plot(a, np.arange(1, a.size + 1) / a.size, label=k)
    ax_c.set(xlabel="stage time (ms)", ylabel="fraction of ticks", title="CDF per stage")
    ax_c.set_xscale("symlog", linthresh=0.1)
    ax_c.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(
        f"bench pipeline: {Path(result['media']).name}, {result['seconds']:g} s, "
        f"{m['cpu']} ({m['cores']} cores), backend {m['backend']} on {m['device']}",
        fontsize=9,
    )
    return save(fig, out)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or an ImportError saying what to
    install (matplotlib is the `plot` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path) -> Path:
    """Lay out, write the PNG (parent folders made) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
