"""Time from launching `affectstream run` to its first estimate on stdout, and to the first
estimate in which each modality has joined (models load in the background: a modality's
status is `loading` until its model is open)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from affectstream.core.labels import MODALITIES


def launch(
    media: str | Path, extra: Sequence[str] = (), timeout_s: float = 120.0
) -> dict[str, Any]:
    """One launch of `python -m affectstream run --media FILE`, read until every model is
    open. Seconds from launch to: the first estimate (`first_estimate_s`), the first one whose
    status is no longer `loading` for each modality the run has (`joined_s`: face, voice,
    text), and the first with none loading (`all_loaded_s`)."""
    cmd = [sys.executable, "-m", "affectstream", "run", "--media", str(media), "--quiet", *extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first: float | None = None
    loaded: float | None = None  # None: the run ended (or timed out) with a model loading
    joined: dict[str, float] = {}
    try:
        for line in proc.stdout:
            took = time.monotonic() - t0
            if not line.startswith("{"):
                break
            first = took if first is None else first
            status = json.loads(line)["status"]
            for m in MODALITIES:
                if status[m] not in ("loading", "off"):
                    joined.setdefault(m, took)
            if "loading" not in status.values():
                loaded = took
                break
            if took > timeout_s:
                break
    finally:
        proc.kill()
        proc.wait(timeout_s)
    if first is None:
        raise RuntimeError(f"affectstream run gave no estimate ({' '.join(cmd)})")
    return {
        "first_estimate_s": round(first, 3),
        "joined_s": {m: round(s, 3) for m, s in joined.items()},
        "all_loaded_s": None if loaded is None else round(loaded, 3),
    }


def measure(media: str | Path, runs: int = 3, extra: Sequence[str] = ()) -> dict[str, Any]:
    """`runs` launches back to back: the first may measure the backends (`auto`) and fill
    the caches; the later ones show a start on a machine that has run it before."""
    launches = [launch(media, extra) for _ in range(runs)]
    return {
        "command": "affectstream bench startup",
        "media": str(media),
        "flags": list(extra),
        "first_estimate_s": [r["first_estimate_s"] for r in launches],
        "all_loaded_s": [r["all_loaded_s"] for r in launches],
        "joined_s": [r["joined_s"] for r in launches],
    }
