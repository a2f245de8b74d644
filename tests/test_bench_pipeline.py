"""`affectstream bench pipeline` through the real CLI: tables, JSON and the plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from affectstream.cli.args import sample_media
from tests.conftest import REPO, affectstream


def test_bench_pipeline_two_stream_counts_writes_json_and_plot(tmp_path):
    """No --media: the bundled sample, looped (every install has it)."""
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "affectstream",
            "bench",
            "pipeline",
            "--seconds",
            "2",
            "--streams",
            "1,2",
            "--no-transcribe",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "stage face" in r.stdout and "streams sharing the models" in r.stdout
    d = json.loads(out.read_text())
    assert d["media"] == str(sample_media())
    m = d["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["backends"]["face"] in ("onnxruntime", "torch")
    p = d["pipeline"]
    assert {"face", "voice", "fusion", "total"} <= set(p["stages_ms"])
    for s in p["stages_ms"].values():
        assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert p["age_ms"]["face"]["p50"] is not None and 0 < p["present_fraction"]["face"] <= 1
    assert p["age_ms"]["text"]["p50"] is None  # --no-transcribe: no words
    # the counts add up: every estimate has one status per modality; the rate is the count
    # over the seconds (how high it gets is this machine's figure, not the test's)
    assert p["estimates"] >= 2 and p["estimate_rate_hz"] == pytest.approx(
        p["estimates"] / 2, abs=1e-3
    )
    assert all(sum(c.values()) == p["estimates"] for c in p["status"].values()), p["status"]
    assert p["resources"]["rss_mb"]["max"] > 100
    assert [row["streams"] for row in d["streams"]] == [1, 2]
    for row in d["streams"]:
        assert row["age_p99_ms"] > 0 and row["tick_p99_ms"] > 0 and row["cpu_percent_p50"] >= 0
    assert d["max_streams_within_budget"] in (0, 1, 2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--streams", "0"], "stream counts must be >= 1"),
        (["--seconds", "0"], "--seconds must be positive"),
        (["--media", "/nonexistent.avi"], "--media: file not found"),
    ],
)
def test_bench_pipeline_usage_errors(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "affectstream", "bench", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 2 and message in r.stderr


def test_bench_scheduler_prints_and_writes_its_cost(tmp_path):
    out = tmp_path / "s.json"
    r = affectstream("bench", "scheduler", "--ticks", "300", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "stages on worker threads" in r.stdout
    d = json.loads(out.read_text())
    w, i = d["tick_ms_workers"], d["stage_calls_ms_inline"]
    assert d["ticks"] == 300 and d["stages"] == 3
    assert 0 < i["p50"] <= i["p99"] and 0 < w["p50"] <= w["p99"]
    assert d["scheduler_ms_per_tick_p50"] == round(w["p50"] - i["p50"], 4)


def test_bench_startup_times_the_first_estimate(tmp_path):
    """No --media: it launches `run` on the bundled sample."""
    out = tmp_path / "st.json"
    r = affectstream("bench", "startup", "--runs", "1", "--no-transcribe", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "first estimate" in r.stdout
    d = json.loads(out.read_text())
    assert d["flags"] == ["--no-transcribe"] and len(d["first_estimate_s"]) == 1
    assert d["media"] == str(sample_media())
    assert d["first_estimate_s"][0] > 0
    assert d["first_estimate_s"][0] <= d["joined_s"][0]["face"] <= d["all_loaded_s"][0]
    assert "all loaded" in r.stdout and d["joined_s"][0].keys() == {"face", "voice"}


def test_resources_count_the_child_processes_of_the_benchmark():
    """The whisper model decodes in a child process; `bench pipeline`'s CPU and memory must
    count it (and `bench serve`'s clients must not count the server, their child)."""
    import os

    from affectstream.bench.pipeline import ProcessTree

    code = (
        "import sys, time; b = bytearray(300 * 2**20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "print('ok', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ok"
        _, with_child = ProcessTree(os.getpid()).sample()
        _, alone = ProcessTree(os.getpid(), children=False).sample()
        assert with_child - alone >= 250  # the child's 300 MB, touched
    finally:
        child.kill()
        child.wait()
