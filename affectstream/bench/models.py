"""Latency and throughput of the models per backend and batch size, and of batched ticks.

Two measurements, both wall-clock with `perf_counter_ns` around complete calls (inputs from
host memory, outputs back on the host, GPU synchronised):

- `bench_models`: each model x backend x batch size: median and p99 latency, items/s.
- `bench_streams`: N simulated 10 Hz streams whose per-tick inputs (one face crop, one 2 s
  voice window, one utterance and its context) are batched into one call per encoder per
  tick; p50/p99 of the whole tick, and the most streams whose p99 tick fits the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from affectstream.core.stats import latency_ms
from affectstream.export import registry
from affectstream.export.base import Backend, BackendError, DimRange

log = logging.getLogger(__name__)


@dataclass
class BenchOptions:
    """What to measure; echoed into the JSON result.

    Attributes:
        models: registry names.
        backends: torch, onnxruntime, tensorrt.
        batches: batch sizes for the per-model table.
        device: "cpu" or "cuda".
        threads: CPU threads for torch and ONNX Runtime.
        iters, warmup: timed and untimed calls per row.
        torch_modes: on CUDA, which PyTorch variants to run: "fp32" (eager),
            "fp16" (eager), "fp16+graphs" (FP16 with CUDA graphs).
        streams: stream counts for the batched-tick benchmark (empty: skip it).
        search: also bisect for the largest stream count meeting the budget.
        tick_backend: on CPU, the backend the batched ticks use (CUDA: torch FP16 + graphs).
        tick_budget_ms: the p99 budget of one batched tick.
        ticks: ticks timed per stream count.
        max_streams: where the search stops (CUDA; on CPU the exported batch maximum).
    """

    models: list[str] = field(default_factory=lambda: ["face", "voice", "text"])
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    device: str = "cpu"
    threads: int = 1
    iters: int = 50
    warmup: int = 5
    onnx_dir: str | None = None
    torch_modes: list[str] = field(default_factory=lambda: ["fp32", "fp16", "fp16+graphs"])
    streams: list[int] = field(default_factory=list)
    search: bool = False
    tick_backend: str = "onnxruntime"
    tick_budget_ms: float = 50.0
    ticks: int = 50
    max_streams: int = 4096


def stats_ms(times_ns: Sequence[int]) -> dict[str, float]:
    """core.stats.latency_ms of times in ns, with the mean and minimum."""
    a = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {
        **latency_ms(a),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
    }


def machine_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["compute_capability"] = list(torch.cuda.get_device_capability(0))
        info["cuda"] = torch.version.cuda
    return info


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _variants(backend: str, opts: BenchOptions) -> list[tuple[str, dict]]:
    """(label, open_backend options) for one backend on the chosen device."""
    if opts.device != "cuda":
        return [(backend, {"fp16": False, "cuda_graphs": False})]
    if backend == "torch":
        table = {
            "fp32": {"fp16": False, "cuda_graphs": False},
            "fp16": {"fp16": True, "cuda_graphs": False},
            "fp16+graphs": {"fp16": True, "cuda_graphs": True},
        }
        return [(f"torch[{m}]", table[m]) for m in opts.torch_modes]
    if backend == "tensorrt":
        return [("tensorrt[fp16]", {"fp16": True, "cuda_graphs": False})]
    return [(backend, {"fp16": False, "cuda_graphs": False})]


def _open(model: str, backend: str, opts: BenchOptions, extra: dict) -> Backend:
    from affectstream.export.select import open_backend

    return open_backend(
        model, backend, onnx_dir=opts.onnx_dir, threads=opts.threads, device=opts.device, **extra
    )


def time_interleaved(
    backends: dict[str, Backend], feed: dict, warmup: int, iters: int
) -> dict[str, list[int]]:
    """Per backend, `iters` timed calls, taken in turn (a, b, a, b, ...) so that the load of
    a shared machine falls on every backend alike."""
    for b in backends.values():
        for _ in range(warmup):
            b.infer(feed)
    times: dict[str, list[int]] = {k: [] for k in backends}
    for _ in range(iters):
        for label, b in backends.items():
            t0 = time.perf_counter_ns()
            b.infer(feed)
            times[label].append(time.perf_counter_ns() - t0)
    return times


def bench_models(opts: BenchOptions) -> tuple[list[dict], dict[str, str]]:
    """Rows (model, backend, batch, latency stats, items/s) and {what: why} for skipped ones.

    All backends of a model are open together and timed in turn, call by call.
    """
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    for model in opts.models:
        entry = registry.get(model)
        opened: dict[str, Backend] = {}
        for backend in opts.backends:
            for label, extra in _variants(backend, opts):
                try:
                    opened[label] = _open(model, backend, opts, extra)
                except (BackendError, FileNotFoundError) as e:
                    skipped[f"{model}/{label}"] = str(e)
                    log.warning("skip %s/%s: %s", model, label, e)
        if not opened:
            continue
        sig = next(iter(opened.values())).signature
        try:
            for batch in opts.batches:
                feed = entry.example({"batch": batch}, np.random.default_rng(0), sig)
                times = time_interleaved(opened, feed, opts.warmup, opts.iters)
                for label, b in opened.items():
                    st = stats_ms(times[label])
                    rows.append(
                        {
                            "model": model,
                            "backend": label,
                            "device": opts.device,
                            "batch": batch,
                            "sizes": {k: int(v.shape[1]) for k, v in feed.items() if v.ndim == 2},
                            **st,
                            "items_per_s": batch / (st["median_ms"] / 1e3),
                            "backend_info": b.describe(),
                        }
                    )
        finally:
            for b in opened.values():
                b.close()
    return rows, skipped


# -- batched ticks -------------------------------------------------------------------------
class _Tick:
    """One batched tick of all encoders for `n` streams on one device."""

    def __init__(self, models: list[str], n: int, opts: BenchOptions) -> None:
        self.n = n
        self.opts = opts
        self.parts = []  # (entry, runner-or-backend, host feed, sizes)
        rng = np.random.default_rng(0)
        for model in models:
            entry = registry.get(model)
            built = entry.build(None)
            sig = built.signature
            if opts.device == "cuda":  # the CUDA path is not bound by the exported range
                batch = DimRange(1, sig.dims["batch"].opt, max(n, sig.dims["batch"].max))
                sig = dataclasses.replace(sig, dims={**sig.dims, "batch": batch})
            feed = entry.example({"batch": n}, rng, sig)
            sizes = sig.check(feed)
            if opts.device == "cuda":
                import torch

                from affectstream.export.cuda import CudaRunner

                runner = CudaRunner(
                    entry.to_fp16(built.module),
                    sig,
                    "cuda",
                    fp16=True,
                    graphs=True,
                    paddable=entry.paddable,
                )
                pinned = {k: torch.from_numpy(v).pin_memory() for k, v in feed.items()}
                dev = {k: v.to("cuda") for k, v in pinned.items()}
                self.parts.append((entry, runner, pinned, dev, sizes))
            else:
                b = _open(model, opts.tick_backend, opts, {"fp16": False, "cuda_graphs": False})
                self.parts.append((entry, b, feed, None, sizes))

    def run(self) -> None:
        if self.opts.device != "cuda":
            for _, b, feed, _, _ in self.parts:
                b.infer(feed)
            return
        import torch

        from affectstream.export.cuda import run_concurrently

        for _, _, pinned, dev, _ in self.parts:  # host -> device, as a live tick would
            for k in pinned:
                dev[k].copy_(pinned[k], non_blocking=True)
        outs = run_concurrently([(r, dev, sizes) for _, r, _, dev, sizes in self.parts])
        for out in outs:  # device -> host: the fusion/estimate step reads them there
            for o in out:
                o.to("cpu", non_blocking=False)
        torch.cuda.synchronize()

    def close(self) -> None:
        for _, b, *_ in self.parts:
            if isinstance(b, Backend):
                b.close()


def _tick_stats(models: list[str], n: int, opts: BenchOptions) -> dict:
    tick = _Tick(models, n, opts)
    try:
        for _ in range(opts.warmup):
            tick.run()
        times = []
        for _ in range(opts.ticks):
            t0 = time.perf_counter_ns()
            tick.run()
            times.append(time.perf_counter_ns() - t0)
    finally:
        tick.close()
    st = stats_ms(times)
    st.update(streams=n, meets_budget=st["p99_ms"] <= opts.tick_budget_ms)
    return st


def bench_streams(opts: BenchOptions) -> dict[str, Any]:
    """Batched-tick latency for each stream count; the largest count within the budget."""
    models = [registry.get(m).name for m in opts.models]  # unknown names fail here
    cap = opts.max_streams if opts.device == "cuda" else registry.BATCH.max
    rows = [_tick_stats(models, n, opts) for n in sorted(opts.streams)]
    ok = [r["streams"] for r in rows if r["meets_budget"]]
    best = max(ok) if ok else 0
    if opts.search and ok:
        failing = [r["streams"] for r in rows if not r["meets_budget"] and r["streams"] > best]
        hi = min(failing) if failing else None
        lo = best
        if hi is None:  # grow until the budget breaks (or the search's cap)
            while lo < cap:
                n = min(lo * 2, cap)
                r = _tick_stats(models, n, opts)
                rows.append(r)
                if not r["meets_budget"]:
                    hi = n
                    break
                lo = n
        while hi is not None and hi - lo > max(8, lo // 16):
            n = (lo + hi) // 2
            r = _tick_stats(models, n, opts)
            rows.append(r)
            lo, hi = (n, hi) if r["meets_budget"] else (lo, n)
        best = lo
    return {
        "models": models,
        "rate_hz": 10.0,
        "tick_budget_ms": opts.tick_budget_ms,
        "rows": sorted(rows, key=lambda r: r["streams"]),
        "max_streams_within_budget": best,
        # the search stops at `cap`: "cap within budget" means "at least cap"
        "search_cap": cap,
        "capped": best >= cap,
        "capacity_note": (
            "a stream needs one tick per 100 ms; a p99 tick within the budget leaves the rest "
            "of the period for capture, fusion and output"
        ),
    }


def run_all(opts: BenchOptions) -> dict[str, Any]:
    result: dict[str, Any] = {
        "options": asdict(opts),
        "machine": machine_info(opts.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if opts.batches:
        result["models"], result["skipped"] = bench_models(opts)
    if opts.streams:
        result["streams"] = bench_streams(opts)
    return result
