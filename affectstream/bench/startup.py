"""Time from launching `affectstream run` to its first estimate on stdout."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def first_estimate_s(
    media: str | Path, extra: Sequence[str] = (), timeout_s: float = 120.0
) -> float:
    """Seconds from starting `python -m affectstream run --media FILE` to its first line."""
    cmd = [sys.executable, "-m", "affectstream", "run", "--media", str(media), "--quiet", *extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        took = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait(timeout_s)
    if not line.startswith("{"):
        raise RuntimeError(f"affectstream run gave no estimate ({' '.join(cmd)})")
    return took


def measure(media: str | Path, runs: int = 3, extra: Sequence[str] = ()) -> dict[str, Any]:
    """`runs` launches back to back: the first may measure the backends (`auto`) and fill
    the caches; the later ones show a start on a machine that has run it before."""
    times = [round(first_estimate_s(media, extra), 3) for _ in range(runs)]
    return {
        "command": "affectstream bench startup",
        "media": str(media),
        "flags": list(extra),
        "first_estimate_s": times,
    }
