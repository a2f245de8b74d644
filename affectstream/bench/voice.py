"""Latency of one voice window through the voice predictor: the torch model as loaded, and the
same graph in ONNX Runtime (exported by `affectstream.export`, cached)."""

from __future__ import annotations

import logging
import time

import numpy as np

from affectstream.core.stats import latency_ms, percentiles

log = logging.getLogger(__name__)


def _time(fn, x, iters: int, warmup: int = 20) -> dict:
    """Wall-clock percentiles, and the calling thread's CPU time (the cost without other load;
    valid with one thread, where torch and onnxruntime compute on the calling thread)."""
    for _ in range(warmup):
        fn(x)
    wall, cpu = [], []
    for _ in range(iters):
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        fn(x)
        wall.append(time.perf_counter_ns() - t)
        cpu.append(time.thread_time_ns() - c)
    ms = np.asarray(wall, dtype=np.float64) / 1e6
    return {
        **latency_ms(ms),
        "mean_ms": round(float(ms.mean()), 3),
        "cpu_median_ms": percentiles(np.asarray(cpu, dtype=np.float64) / 1e6, (50,), 3)["p50"],
    }


def bench_encoder(
    weights: str | None = None, threads: int = 1, iters: int = 200, onnx: bool = True
) -> list[dict]:
    """One row per backend: window length, latency percentiles, max prob. difference to torch.

    Every row times `VoicePredictor.predict`, what the runtime stage calls, on one window.
    """
    import torch

    from affectstream.export.base import BackendError
    from affectstream.export.predictors import module_predictor, open_eval_predictor
    from affectstream.models.voice.encoder import VoiceEncoder

    enc = VoiceEncoder.load(weights, threads=threads)
    torch.set_num_threads(threads)
    ref_pred = module_predictor("voice", enc.model, threads, weights)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(enc.window_samples)).astype(np.float32)
    ref, _ = ref_pred.predict(x)
    base = {"window_s": enc.window_samples / enc.sample_rate, "members": len(enc.model.members)}
    rows = [{"backend": "torch", **base, **_time(ref_pred.predict, x, iters), "max_abs_diff": 0.0}]
    if onnx:
        try:
            ort = open_eval_predictor("voice", "onnxruntime", weights=weights, threads=threads)
        except BackendError as e:
            log.warning("skipping the onnxruntime row: %s", e)
            return rows
        p, _ = ort.predict(x)
        rows.append(
            {
                "backend": "onnxruntime",
                **base,
                **_time(ort.predict, x, iters),
                "max_abs_diff": float(np.abs(p - ref).max()),
            }
        )
    return rows
