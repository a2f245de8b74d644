"""Latency of one voice window through the voice predictor: the torch model as loaded, and the
same graph in ONNX Runtime (exported by `affectstream.export`, cached); and the cost of the
utterance heads' feature extractors, which run once per utterance (`bench_utterance_heads`)."""

from __future__ import annotations

import logging
import time

import numpy as np

from affectstream.core.stats import latency_ms, percentiles

log = logging.getLogger(__name__)


def _time(fn, x, iters: int, warmup: int = 20, cpu_clock=time.thread_time_ns) -> dict:
    """Wall-clock percentiles, and the CPU time of `cpu_clock` (the cost without other load):
    by default the calling thread's, valid with one thread, where torch and onnxruntime compute
    on the calling thread; `time.process_time_ns` counts every thread (numpy's BLAS)."""
    for _ in range(warmup):
        fn(x)
    wall, cpu = [], []
    for _ in range(iters):
        c = cpu_clock()
        t = time.perf_counter_ns()
        fn(x)
        wall.append(time.perf_counter_ns() - t)
        cpu.append(cpu_clock() - c)
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


def bench_utterance_heads(seconds=(1.0, 2.0, 4.0), iters: int = 30) -> list[dict]:
    """One row per feature extractor of the utterance heads (`models.voice.utterance`) that can
    run here and per span length: latency of reading one utterance of that many seconds.

    The input is a voiced test signal (a 150 Hz tone with harmonics, vibrato and noise), so
    openSMILE finds pitch as in speech; the Whisper encoder's cost depends on length only.
    """
    from affectstream.core.audio import MODEL_SAMPLE_RATE
    from affectstream.models.voice.utterance import FEATURE_SETS, available, extractor

    rng = np.random.default_rng(0)
    rows = []
    for features in FEATURE_SETS:
        if not available(features):
            log.warning("skipping %s: its extractor cannot run here", features)
            continue
        extract = extractor(features)
        for s in seconds:
            t = np.arange(int(s * MODEL_SAMPLE_RATE)) / MODEL_SAMPLE_RATE
            f0 = 150 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
            phase = 2 * np.pi * np.cumsum(f0) / MODEL_SAMPLE_RATE
            x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.1
            x = (x + 0.005 * rng.standard_normal(len(x))).astype(np.float32)
            timed = _time(extract, x, iters, warmup=3, cpu_clock=time.process_time_ns)
            rows.append({"features": features, "seconds": s, **timed})
    return rows
