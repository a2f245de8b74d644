"""`affectstream devices`: lists what it finds, says so when there is nothing, never crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from audio_fixtures import pulse_mic_fixture  # noqa: F401 (the pulse_mic fixture)

from affectstream.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def test_devices_command_runs_on_this_machine():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    r = subprocess.run(
        [sys.executable, "-m", "affectstream", "devices", "--camera-timeout", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Audio inputs" in r.stdout or "No audio input devices" in r.stdout
    assert "Cameras" in r.stdout or "No cameras opened at indexes 0-3" in r.stdout


def test_devices_json_lists_the_pulseaudio_microphone(pulse_mic, capsys):
    assert main(["devices", "--json", "--cameras", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    mics = {d["name"]: d for d in out["microphones"]}
    assert "pulse" in mics, out
    assert mics["pulse"]["channels"] >= 1 and mics["pulse"]["default_rate"] > 0
    assert mics["pulse"]["hostapi"] == "ALSA"
    assert set(out) == {"microphones", "microphones_note", "cameras", "cameras_timed_out"}
