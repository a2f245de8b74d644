"""`affectstream bench serve` through the CLI: a real server process, real websocket clients
pushing the bundled clip at real pace, and the figures it reports (no timing is asserted:
what is checked is that each session was served and every field is there)."""

from __future__ import annotations

import json

import pytest

from affectstream.core.labels import MODALITIES
from tests.conftest import affectstream


@pytest.mark.slow
def test_bench_serve_reports_each_session_count(tmp_path):
    out, png = tmp_path / "serve.json", tmp_path / "serve.png"
    batch_on = tmp_path / "batch-on.yaml"  # on a CPU the server batches only when asked
    batch_on.write_text("batch:\n  enabled: true\n")
    r = affectstream(
        "bench",
        "serve",
        "--sessions",
        "1,2",
        "--seconds",
        "4",
        "--no-transcribe",
        "--config",
        batch_on,
        "--json",
        out,
        "--plot",
        png,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "largest within it" in r.stdout and png.stat().st_size > 0
    result = json.loads(out.read_text())
    assert [run["sessions"] for run in result["runs"]] == [1, 2]
    assert result["max_sessions_within_budget"] in (0, 1, 2)
    for run in result["runs"]:
        o = run["overall"]
        assert run["client_failures"] == [] and o["errors"] == {}
        assert len(run["per_session"]) == run["sessions"]
        assert all(s["estimates"] > 0 and s["close"][0] == 1000 for s in run["per_session"])
        assert set(o["age_ms"]) == set(MODALITIES)
        assert o["age_ms"]["face"]["p99"] is not None  # the clip's face reached the server
        assert o["connect_to_first_estimate_s"]["max"] is not None
        assert run["resources"]["server_rss_mb"]["max"] > 0
        assert {"face", "voice", "fusion"} <= set(o["batches"])
    # two sessions on one server: the shared face model answered both in fewer calls
    two = result["runs"][1]["overall"]["batches"]["face"]
    assert two["requests"] > two["calls"], two
