"""The prepared GPU run of the batching (scripts/gpu-batching.sh) works: CI runs it on the CPU
with tiny sizes, so the day a GPU is lent, one command measures it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_gpu_script_runs_end_to_end_on_the_cpu(tmp_path):
    batch_on = tmp_path / "batch-on.yaml"
    batch_on.write_text("batch:\n  enabled: true\n")  # the default on a GPU, not on a CPU
    env = dict(
        os.environ,
        CONFIG=str(batch_on),
        OUT=str(tmp_path),
        DEVICE="cpu",
        SECONDS_PER_RUN="3",
        STREAMS="1,2",
        SESSIONS="1",
    )
    r = subprocess.run(
        ["bash", "scripts/gpu-batching.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pipeline = json.loads((tmp_path / "pipeline.json").read_text())
    assert [row["streams"] for row in pipeline["streams"]] == [1, 2]
    assert pipeline["streams"][1]["batches"]["face"]["requests"] > 0
    serve = json.loads((tmp_path / "serve.json").read_text())
    assert [run["sessions"] for run in serve["runs"]] == [1]
    for name in ("pipeline.png", "serve.png", "machine.txt"):
        assert (tmp_path / name).stat().st_size > 0
