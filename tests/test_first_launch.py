"""A first launch on a fresh machine is as good as the second: nothing is exported, compiled
or measured while the stream runs (issue 20: the first `run --sample` once lost its words
entirely while three models were exported on the live path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from affectstream.core.labels import MODALITIES
from tests.conftest import REPO


def launch(cache, out) -> subprocess.CompletedProcess:
    """`affectstream run --sample` at real pace, as a newcomer types it, with `cache` as
    affectstream's cache folder and an empty XDG cache beside it (ONNX Runtime keeps a
    telemetry id there)."""
    xdg = cache.parent / "xdg"
    env = dict(os.environ, AFFECTSTREAM_CACHE=str(cache), XDG_CACHE_HOME=str(xdg))
    return subprocess.run(
        [sys.executable, "-m", "affectstream", "-v", "run", "--sample", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


def presence(path) -> dict[str, float]:
    ticks = [json.loads(line) for line in path.read_text().splitlines()]
    assert ticks, "no estimates"
    return {m: float(np.mean([t["present"][m] for t in ticks])) for m in MODALITIES}


@pytest.mark.slow
@pytest.mark.realtime
def test_the_first_launch_is_as_good_as_the_second(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    first = launch(cache, tmp_path / "first.jsonl")
    assert first.returncode == 0, first.stderr[-3000:]
    # Nothing was exported or measured into the cache on the way: what the default path runs
    # shipped ready.
    written = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert written == [], written
    assert "exporting" not in first.stderr, first.stderr[-3000:]
    assert "runs on onnxruntime" in first.stderr  # the shipped ONNX files, not a fallback
    second = launch(cache, tmp_path / "second.jsonl")
    assert second.returncode == 0, second.stderr[-3000:]
    got, again = presence(tmp_path / "first.jsonl"), presence(tmp_path / "second.jsonl")
    for m in MODALITIES:
        assert again[m] > 0, (m, again)  # the clip has a face, a voice and words
        # Two real-time runs differ by chance: on a loaded 2-core machine the words were
        # present on 0.824 of one launch's ticks and 0.880 of the next (CI rehearsal,
        # 2026-12-07). The failure this guards against lost them all (0.0).
        assert got[m] >= again[m] - 0.15, f"{m}: first launch {got}, second {again}"
