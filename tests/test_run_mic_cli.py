"""`affectstream run --mic` through the real CLI, on a PulseAudio virtual microphone.

The `pulse_mic` fixture starts a private PulseAudio daemon whose default source is a
module-pipe-source, and points PULSE_SERVER / PULSE_SOURCE at it; the CLI subprocess inherits
them, so PortAudio's default input (ALSA `default` -> PulseAudio) and its device 0 (ALSA
`pulse`) both capture what the test feeds: read speech from ../shared/media/speech, with
silence between the recordings. Skipped, with the reason, only where PulseAudio cannot start.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from audio_fixtures import (  # noqa: F401 (pulse_mic_fixture: the pulse_mic fixture)
    pulse_mic_fixture,
    read_speech,
    speech_files,
)

from tests.conftest import REPO


def speech_program(silence_s: float = 2.0) -> np.ndarray:
    """Silence, then the two shortest recordings (3 s each) twice, each followed by silence:
    about 20 s, so the CLI hears speech, a silence and speech again whenever it opens."""
    sil = np.zeros(int(silence_s * 16000), dtype=np.float32)
    short = sorted((read_speech(f) for f in speech_files()), key=len)[:2]
    parts = [sil[:16000]]
    for x in short + short:
        parts += [x, sil]
    return np.concatenate(parts)


@pytest.mark.slow
@pytest.mark.parametrize("device", [[], ["0"]], ids=["default-device", "device-0"])
def test_run_mic_hears_the_speech(pulse_mic, tmp_path, device):
    """`run --mic` (default device) and `run --mic 0` capture; voice shows up with speech."""
    import sounddevice as sd

    if device:
        name = sd.query_devices(int(device[0]))["name"]
        if sd.query_devices(int(device[0]))["max_input_channels"] < 1:
            pytest.skip(f"device 0 ({name}) is not an input here")
    out = tmp_path / "est.jsonl"
    x = speech_program()
    pulse_mic.feed(x)  # real time from now on: the CLI hears what plays once it opened
    cmd = [sys.executable, "-m", "affectstream", "run", "--mic", *device]
    cmd += ["--no-video", "--no-transcribe", "--duration", "9", "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    pulse_mic.stop_feed()
    assert r.returncode == 0, r.stderr[-2000:]
    ests = [json.loads(line) for line in out.read_text().splitlines()]
    # it ran its 9 s of stream time, tick after tick (how many ticks is this machine's figure)
    assert ests and ests[-1]["t"] >= 9 and [d["t"] for d in ests] == sorted(d["t"] for d in ests)
    voice = [d["present"]["voice"] for d in ests]
    assert not any(d["present"]["face"] for d in ests)
    trace = "".join("V" if v else "." for v in voice)
    # the speech was heard (voice present for a good part of it), and so were the silences
    # between the recordings: voice comes, goes and comes again, as in what was fed; the
    # longest stretch is 2 s of stream time (20 ticks when none is skipped)
    assert np.mean(voice) > 0.3, trace
    runs, start = [], None
    for d in [*ests, {"present": {"voice": False}}]:
        if d["present"]["voice"] and start is None:
            start = last = d["t"]
        elif d["present"]["voice"]:
            last = d["t"]
        elif start is not None:
            runs.append(last - start)
            start = None
    assert len(runs) >= 2 and max(runs) >= 1.9, trace
    assert any(d["emotion"] for d in ests if d["present"]["voice"])
