"""`affectstream soak` through the real CLI, short: the record a long run is judged by."""

from __future__ import annotations

import json

from tests.conftest import affectstream


def test_soak_with_a_cpu_hog_reports_memory_rate_and_drops(megamind, tmp_path):
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    r = affectstream(
        "soak", "--media", megamind, "--minutes", "0.1", "--cpu-hog", "1", "--sample-s", "0.5",
        "--no-transcribe", "--json", out, "--plot", png,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RSS growth after warm-up" in r.stdout
    d = json.loads(out.read_text())
    assert d["cpu_hogs"] == 1 and d["minutes"] == 0.1
    assert d["estimates"] >= 40  # 6 s at 10 Hz: it degrades by skipping, not by stopping
    assert abs(d["rate_error_percent"]) < 10
    assert (
        d["rss_mb"]["after_warmup"] > 100 and d["rss_mb"]["growth_percent_after_warmup"] is not None
    )
    assert len(d["memory"]) >= 5 and all(m["rss_mb"] > 0 for m in d["memory"])
    assert d["tick_ms"]["p50"] <= d["tick_ms"]["p99"] <= d["tick_ms"]["max"]
    assert d["age_ms"]["face"]["p50"] is not None and d["age_ms"]["text"]["p50"] is None
    assert "ticks_skipped" in d["dropped"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_soak_usage_errors():
    r = affectstream("soak", "--minutes", "0", timeout=60)
    assert r.returncode == 2 and "--minutes" in r.stderr
