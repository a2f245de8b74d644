"""`affectstream run` when its output cannot take more: a full disk, a closed pipe.

Each ends with one line on stderr naming the output and the cause, a non-zero exit, no
traceback, and every estimate written before the failure intact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

FULL = Path("/dev/full")


def _cmd(megamind, *extra):
    return [
        sys.executable,
        "-m",
        "affectstream",
        "run",
        "--video",
        str(megamind),
        "--fast",
        "--no-transcribe",
        "--quiet",
        *extra,
    ]


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
def test_out_on_a_full_disk_is_one_line_and_a_nonzero_exit(megamind):
    r = subprocess.run(
        _cmd(megamind, "--duration", "2", "--out", FULL),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("affectstream: error: --out /dev/full: No space left on device")


def test_closed_pipe_keeps_what_was_read_and_exits_nonzero(megamind):
    proc = subprocess.Popen(
        _cmd(megamind, "--duration", "30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    got = [json.loads(proc.stdout.readline()) for _ in range(3)]
    proc.stdout.close()  # the reader goes away mid-run, like `| head -3`
    err = proc.stderr.read()
    rc = proc.wait(timeout=300)
    assert [e["tick"] for e in got] == [0, 1, 2]
    assert rc != 0
    assert "Traceback" not in err, err
    assert "stdout: the reader closed the pipe" in err.strip().splitlines()[-1]
