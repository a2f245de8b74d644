"""`affectstream soak` through the real CLI, short: the record a long run is judged by."""

from __future__ import annotations

import json

import pytest

from affectstream.cli.args import sample_media
from tests.conftest import affectstream


def test_soak_with_a_cpu_hog_reports_memory_rate_and_drops(tmp_path):
    """No --media: a loop of the bundled sample (every install has it)."""
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    r = affectstream(
        "soak", "--minutes", "0.1", "--cpu-hog", "1", "--sample-s", "0.5",
        "--no-transcribe", "--json", out, "--plot", png,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RSS growth after warm-up" in r.stdout
    d = json.loads(out.read_text())
    assert d["cpu_hogs"] == 1 and d["minutes"] == 0.1 and d["media"] == str(sample_media())
    # It ran its six stream seconds and degrades by skipping ticks, not by stopping: every
    # period is an estimate or a counted skip (the last tick may start late: at most one more).
    # The rate itself is the machine's: soak reports it, the test does not judge it.
    assert d["stream_seconds"] >= 6 and d["estimates"] >= 2
    periods = d["stream_seconds"] * d["nominal_rate_hz"]
    assert d["estimates"] - 1 + d["dropped"]["ticks_skipped"] <= periods + 1
    assert d["estimate_rate_hz"] == pytest.approx(
        (d["estimates"] - 1) / d["stream_seconds"], rel=0.01
    )
    want_error = 100 * (d["estimate_rate_hz"] / d["nominal_rate_hz"] - 1)
    assert d["rate_error_percent"] == pytest.approx(want_error, abs=0.01)
    assert (
        d["rss_mb"]["after_warmup"] > 100 and d["rss_mb"]["growth_percent_after_warmup"] is not None
    )
    # the sampler sampled, in order, and each sample counts the estimates so far
    memory = d["memory"]
    assert len(memory) >= 2 and all(m["rss_mb"] > 0 for m in memory)
    assert [m["t"] for m in memory] == sorted(m["t"] for m in memory)
    counts = [m["estimates"] for m in memory]
    assert counts == sorted(counts) and counts[-1] <= d["estimates"]
    assert d["tick_ms"]["p50"] <= d["tick_ms"]["p99"] <= d["tick_ms"]["max"]
    assert d["age_ms"]["face"]["p50"] is not None and d["age_ms"]["text"]["p50"] is None
    assert "ticks_skipped" in d["dropped"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_soak_usage_errors():
    r = affectstream("soak", "--minutes", "0", timeout=60)
    assert r.returncode == 2 and "--minutes" in r.stderr
