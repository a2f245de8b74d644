"""Latency of one voice window: the torch model as loaded, and the same graph in onnxruntime."""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np

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
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "cpu_median_ms": float(np.median(np.asarray(cpu, dtype=np.float64) / 1e6)),
    }


def export_onnx(model, window_samples: int) -> bytes:
    """The whole model (front end included) as ONNX bytes, batch and length dynamic."""
    import torch

    x = torch.zeros(1, window_samples)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            input_names=["samples"],
            output_names=["log_probs", "embedding"],
            dynamic_axes={
                "samples": {0: "batch", 1: "n"},
                "log_probs": {0: "batch"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def bench_encoder(
    weights: str | None = None, threads: int = 1, iters: int = 200, onnx: bool = True
) -> list[dict]:
    """One row per backend: window length, latency percentiles, max prob. difference to torch."""
    import torch

    from affectstream.models.voice.encoder import VoiceEncoder

    enc = VoiceEncoder.load(weights, threads=threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(enc.window_samples)).astype(np.float32)
    ref, _ = enc.predict(x)
    rows = [
        {
            "backend": "torch",
            "window_s": enc.window_samples / enc.sample_rate,
            "members": len(enc.model.members),
            **_time(enc.predict, x, iters),
            "max_abs_diff": 0.0,
        }
    ]
    if onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime not installed: skipping its row")
            return rows
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            export_onnx(enc.model, enc.window_samples), so, providers=["CPUExecutionProvider"]
        )

        def run(v):
            return sess.run(None, {"samples": v[None]})

        p = np.exp(run(x)[0])
        rows.append(
            {
                "backend": "onnxruntime",
                "window_s": enc.window_samples / enc.sample_rate,
                "members": len(enc.model.members),
                **_time(run, x, iters),
                "max_abs_diff": float(np.abs(p - ref).max()),
            }
        )
    return rows
