"""The whole pipeline with 1, 2 and 4 faces in view (`bench pipeline --faces 1,2,4`).

The media's video is tiled into a new file, 1, 2 (side by side) or 4 (two by two) copies of
each frame, so every face is as large as in the media and the face stage follows n times its
faces; its audio is the media's own. Each count runs one stream at real pace, as `bench
pipeline` runs it: the face stage's time per frame, the tick's, and the face's estimate age.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from affectstream.bench.face import tile_frames
from affectstream.bench.pipeline import run_streams, summarize
from affectstream.core.config import Config


def tiled_video(media: str | Path, n: int, out: Path, seconds: float = 20.0) -> Path:
    """The first `seconds` of `media`'s video, each frame tiled `n` times, as an MJPG AVI."""
    cap = cv2.VideoCapture(str(media))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    try:
        for _ in range(int(seconds * fps)):
            ok, frame = cap.read()
            if not ok:
                break
            tiled = tile_frames(frame, n)
            if writer is None:
                h, w = tiled.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
            writer.write(tiled)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"no video frames in {media}")
    return out


def measure_faces(
    config: Config,
    media: str | Path,
    seconds: float,
    counts: Sequence[int] = (1, 2, 4),
    transcribe: bool = True,
    predictors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per count of faces in view: face stage and tick ms (p50/p95/p99), face age, and how
    many faces the estimates held."""
    out: dict[str, Any] = {}
    predictors = {} if predictors is None else predictors
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            video = tiled_video(media, n, Path(tmp) / f"faces{n}.avi")
            traces, resources, predictors = run_streams(
                config, media, 1, seconds, predictors, None, transcribe, video=video
            )
            s = summarize(traces, seconds)
            faces = [k for tr in traces for k in tr.faces]
            out[str(n)] = {
                "face_stage_ms": s["stages_ms"].get("face"),
                "tick_ms": s["stages_ms"].get("total"),
                "face_age_ms": s["age_ms"]["face"],
                "face_present": s["present_fraction"]["face"],
                "mean_faces": round(float(np.mean(faces)), 3) if faces else 0.0,
                "tick_overruns": s["tick_overruns"],
                "cpu_percent_p50": resources["cpu_percent"]["p50"],
            }
    return out


def faces_table(faces: dict[str, Any]):
    from rich.table import Table

    t = Table(title="faces in view (the video tiled): face stage and tick per frame")
    cols = ("faces", "mean faces", "face p50", "face p95", "face p99", "tick p99", "face age p99")
    for c in cols:
        t.add_column(c, justify="right")
    for n, r in faces.items():
        fs, tk, age = r["face_stage_ms"] or {}, r["tick_ms"] or {}, r["face_age_ms"]
        t.add_row(
            n,
            f"{r['mean_faces']:.2f}",
            *(_fmt(fs.get(k)) for k in ("p50", "p95", "p99")),
            _fmt(tk.get("p99")),
            _fmt(age.get("p99")),
        )
    return t


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
