"""Face benchmark: model latency per face, and the whole face path per video frame against a
`fer`-like baseline measured in the same run on the same frames.

(a) One face, batch 1: `FacePredictor.predict` (what the runtime stage calls) on PyTorch (BN
    folded, channels-last), on the same module exported to ONNX and run by ONNX Runtime on the
    CPU, and on the shipped int8 model.
(b) Per frame on a video (the CLI's default: Megamind.avi): the runtime's own path, i.e. the
    detector `face.detector` names (BlazeFace by default) every `detect_every` frames, template
    tracking in between, every face's crop through the predictor the face stage opens from the
    config (on a CPU the shipped int8 ONNX model), vs the baseline of the `fer` package's
    default detector (Haar `detectMultiScale` on the full-size grayscale frame, every frame,
    scale 1.1, 5 neighbours, 50 px minimum) plus the same predictor. The two alternate over
    several passes so that load from other processes hits both alike. Frames are decoded
    before timing; timings use the monotonic perf counter.
(c) The same runtime path with 1, 2 and 4 faces in view: the video tiled side by side (2) and
    two by two (4), so each face is as large as in the video.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from affectstream.core.config import FaceConfig, load_config
from affectstream.core.stats import latency_ms, percentiles
from affectstream.export.predictors import module_predictor, open_predictor
from affectstream.models.face.detect import CASCADE, FaceTracker, crop_face, load_cascade
from affectstream.models.face.encoder import FaceEncoder
from affectstream.models.face.predictor import INPUT, LOGITS, to_input

log = logging.getLogger(__name__)


def _stats(ms: list[float]) -> dict:
    """core.stats.latency_ms, with the count as `n` (the key of the recorded results) and the
    mean and minimum."""
    a = np.asarray(ms, dtype=np.float64)
    return {
        "n": int(a.size),
        **latency_ms(a),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
    }


def _time_calls(fn, iters: int, warmup: int = 20) -> dict:
    """Wall time per call, plus the process CPU time per call: on a shared, oversubscribed
    machine the CPU time shows the work itself, the wall time what a caller waited."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    out = _stats(wall)
    out["cpu_median_ms"] = percentiles(cpu, (50,), 3)["p50"]
    return out


def read_frames(path: Path, limit: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while not limit or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def _onnx_predictor(encoder: FaceEncoder, threads: int):
    """The predictor on the exported encoder in ONNX Runtime, or None when ONNX Runtime or the
    exporter is unavailable."""
    from affectstream.export.base import BackendError
    from affectstream.export.predictors import open_eval_predictor

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "face.onnx"
        try:
            encoder.export_onnx(path)
        except Exception as e:  # exporter missing or broken: bench the rest
            log.warning("ONNX export failed, skipping onnxruntime: %s", e)
            return None
        try:
            return open_eval_predictor("face", onnx_file=path, threads=threads)
        except BackendError as e:  # onnxruntime not installed
            log.warning("skipping onnxruntime: %s", e)
            return None


def _int8_predictor(threads: int):
    """The predictor on the shipped int8 model (quantize.py), if it and ONNX Runtime are there."""
    from affectstream.export.base import BackendError
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.face.quantize import default_int8_path

    path = default_int8_path()
    if not path.exists():
        return None
    try:
        return open_eval_predictor("face", onnx_file=path, threads=threads)
    except BackendError as e:
        log.warning("skipping onnxruntime-int8: %s", e)
        return None


class _Baseline:
    """`fer`'s default face path: full-frame Haar every frame, largest face, 48x48 crop."""

    def __init__(self):
        self.cascade = load_cascade(CASCADE)

    def process(self, image_bgr: np.ndarray) -> np.ndarray | None:
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        faces = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50)
        )
        if len(faces) == 0:
            return None
        box = max(faces, key=lambda f: f[2] * f[3])
        return crop_face(gray, tuple(float(v) for v in box), scale=1.0)


def run_face_bench(
    video: Path,
    threads: int = 1,
    iters: int = 300,
    weights: str | None = None,
    passes: int = 2,
    config: FaceConfig | None = None,
    frames: int = 0,
) -> dict:
    """Measure and return the results as a JSON-ready dict (see module docstring)."""
    import torch

    if iters < 1 or passes < 1:
        raise ValueError("iters and passes must be >= 1")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    cfg = config or FaceConfig()
    encoder = FaceEncoder.load(weights)
    predictor = module_predictor("face", encoder.model, threads=threads)  # PyTorch reference
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (1, 48, 48), dtype=np.uint8)

    # each row times the predictor the runtime stage runs (pre-processing + model + softmax)
    model = {"torch": _time_calls(lambda: predictor.predict(crop), iters)}
    ort = _onnx_predictor(encoder, threads)
    if ort is not None:
        model["onnxruntime"] = _time_calls(lambda: ort.predict(crop), iters)
        # same input, same answer: the exported graph is the module
        feed = {INPUT: to_input(crop)}
        ref = predictor.backend.infer(feed)[LOGITS]
        model["onnxruntime"]["max_abs_diff_logits"] = float(
            np.abs(ort.backend.infer(feed)[LOGITS] - ref).max()
        )
    int8 = _int8_predictor(threads)
    if int8 is not None:
        model["onnxruntime-int8"] = _time_calls(lambda: int8.predict(crop), iters)

    n_frames = frames
    frames = read_frames(video, n_frames)
    if not frames:
        raise ValueError(f"no frames decoded from {video}")
    # the runtime's own path: the predictor the face stage opens from the config (on a CPU,
    # the shipped int8 model in ONNX Runtime), every face's crop in one batch
    run_cfg = load_config()
    run_cfg.face = cfg
    run_cfg.backend.threads = threads
    runtime = open_predictor("face", run_cfg)
    ours_ms, base_ms = [], []
    ours_found = base_found = 0
    counts = {"detect": 0, "track": 0}
    baseline = _Baseline()
    for _ in range(passes):
        tracker = FaceTracker(cfg)
        for frame in frames:
            t0 = time.perf_counter_ns()
            faces = tracker.process_all(frame)
            if faces:
                runtime.predict(np.stack([f.image for f in faces]))
            ours_ms.append((time.perf_counter_ns() - t0) / 1e6)
            if faces:
                ours_found += 1
                counts[max(faces, key=lambda f: f.box[2] * f.box[3]).source] += 1
        for frame in frames:
            t0 = time.perf_counter_ns()
            c = baseline.process(frame)
            if c is not None:
                runtime.predict(c[None])
            base_ms.append((time.perf_counter_ns() - t0) / 1e6)
            base_found += c is not None
    ours, base = _stats(ours_ms), _stats(base_ms)
    n = len(frames) * passes
    ours["face_found_frac"] = round(ours_found / n, 3)
    ours["detect_frames"], ours["track_frames"] = counts["detect"], counts["track"]
    base["face_found_frac"] = round(base_found / n, 3)
    h, w = frames[0].shape[:2]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        },
        "threads": threads,
        "versions": {"torch": str(torch.__version__), "opencv": cv2.__version__},
        "model_per_face_batch1": model,
        "runtime_model": runtime.describe(),
        "frame": {
            "video": str(video),
            "frames": len(frames),
            "passes": passes,
            "size": [w, h],
            "config": {
                "detector": cfg.detector,
                "detect_width": cfg.detect_width,
                "detect_every": cfg.detect_every,
            },
            "ours": ours,
            "fer_like_baseline": base,
            "median_ratio_ours_to_baseline": round(ours["median_ms"] / base["median_ms"], 4),
            "mean_ratio_ours_to_baseline": round(ours["mean_ms"] / base["mean_ms"], 4),
        },
        "faces_in_view": _faces_in_view(frames, cfg, runtime, passes),
    }


def tile_frames(frame: np.ndarray, n: int) -> np.ndarray:
    """`n` (1, 2 or 4) copies of `frame`: as it is, side by side, or two by two, so that the
    face path sees n faces where the video has one, each as large as in the video."""
    if n == 1:
        return frame
    row = np.hstack([frame, frame])
    if n == 2:
        return row
    if n == 4:
        return np.vstack([row, row])
    raise ValueError(f"faces in view: 1, 2 or 4, not {n}")


def _faces_in_view(frames, cfg: FaceConfig, runtime, passes: int, counts=(1, 2, 4)) -> dict:
    """The runtime's face path per frame (detect or track every face, one batch through the
    model) on the video tiled to show 1, 2 and 4 faces; the counts alternate per pass."""
    out = {n: {"ms": [], "faces": []} for n in counts}
    tiled = {n: [tile_frames(f, n) for f in frames] for n in counts}
    for _ in range(passes):
        for n in counts:
            tracker = FaceTracker(cfg)
            for frame in tiled[n]:
                t0 = time.perf_counter_ns()
                faces = tracker.process_all(frame)
                if faces:
                    runtime.predict(np.stack([f.image for f in faces]))
                out[n]["ms"].append((time.perf_counter_ns() - t0) / 1e6)
                out[n]["faces"].append(len(faces))
    h, w = frames[0].shape[:2]
    return {
        str(n): {
            **_stats(v["ms"]),
            "frame_size": [w * (1 if n == 1 else 2), h * (2 if n == 4 else 1)],
            "mean_faces": round(float(np.mean(v["faces"])), 3),
        }
        for n, v in out.items()
    }


def print_bench(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"face model, one face, batch 1, {result['threads']} thread(s)")
    for c in ("backend", "median ms", "p95 ms", "p99 ms", "mean ms", "min ms", "CPU ms (median)"):
        t.add_column(c, justify="left" if c == "backend" else "right", no_wrap=c == "backend")
    for name, s in result["model_per_face_batch1"].items():
        t.add_row(
            name,
            *(f"{s[k]:.2f}" for k in ("median_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms")),
            f"{s['cpu_median_ms']:.2f}",
        )
    console.print(t)
    fr = result["frame"]
    t = Table(
        title=f"face path per frame: {Path(fr['video']).name} {fr['size'][0]}x{fr['size'][1]}, "
        f"{fr['frames']} frames x {fr['passes']} passes"
    )
    for c in ("pipeline", "median ms", "p95 ms", "mean ms", "face found"):
        t.add_column(c, justify="left" if c == "pipeline" else "right")
    for name, key in (
        ("ours (detect+track+crops+int8 net)", "ours"),
        ("fer-like (full Haar+same net)", "fer_like_baseline"),
    ):
        s = fr[key]
        t.add_row(
            name,
            f"{s['median_ms']:.2f}",
            f"{s['p95_ms']:.2f}",
            f"{s['mean_ms']:.2f}",
            f"{s['face_found_frac']:.1%}",
        )
    console.print(t)
    t = Table(
        title=f"face path per frame with 1, 2 and 4 faces in view ({fr['config']['detector']})"
    )
    for c in ("faces in view", "frame", "median ms", "p95 ms", "mean ms", "faces found"):
        t.add_column(c, justify="right")
    for n, v in result["faces_in_view"].items():
        t.add_row(
            n,
            "x".join(map(str, v["frame_size"])),
            f"{v['median_ms']:.2f}",
            f"{v['p95_ms']:.2f}",
            f"{v['mean_ms']:.2f}",
            f"{v['mean_faces']:.2f}",
        )
    console.print(t)
    console.print(
        f"ours / baseline: median {fr['median_ratio_ours_to_baseline']:.3f}, "
        f"mean {fr['mean_ratio_ours_to_baseline']:.3f}  (load avg at start "
        f"{result['machine']['load_avg_at_start']})"
    )
