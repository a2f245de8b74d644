"""Faults injected into the real runtime: real media, real models, one part made to fail.

In each case the stream goes on, the affected modality is missing or stale with the reason in
the estimate's `status`, and it recovers when the fault clears. (The output side, a full disk
or a closed pipe, is in test_run_output.py; pushed-data faults of the server in
test_server.py.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import (  # noqa: F401 (pulse_mic_fixture: the pulse_mic fixture)
    pulse_mic_fixture,
    read_speech,
    speech_files,
)

from affectstream import AffectStream, Inputs, load_config
from affectstream.export.predictors import open_predictor
from tests.conftest import REPO


class FaultyPredictor:
    """The real predictor, made to raise, give NaN or hang on the calls `plan` names."""

    def __init__(self, inner, plan: dict[int, str]) -> None:
        self.inner, self.plan, self.calls = inner, plan, 0
        self.armed = False  # warm-up calls do not count
        self.release = threading.Event()

    def predict(self, *args, **kwargs):
        if not self.armed:
            return self.inner.predict(*args, **kwargs)
        k, self.calls = self.calls, self.calls + 1
        what = self.plan.get(k)
        if what == "raise":
            raise RuntimeError("injected encoder failure")
        if what == "hang":
            self.release.wait(3.0)
        probs, emb = self.inner.predict(*args, **kwargs)
        if what == "nan":
            probs = np.full_like(probs, np.nan)
        return probs, emb

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _statuses(ests, modality):
    return [e.status[modality] for e in ests]


def test_face_encoder_that_raises_gives_nan_or_hangs(megamind):
    config = load_config()
    plan = {5: "raise", 6: "raise", 15: "nan", 25: "hang"}
    face = FaultyPredictor(open_predictor("face", config), plan)
    stream = AffectStream(
        config, Inputs(media=megamind, realtime=False, transcribe=False), {"face": face}
    )
    face.armed = True
    ests = []
    for est in stream.estimates():
        ests.append(est)
        if est.status["face"].startswith("timeout") and est.tick > 0:
            face.release.set()  # the hung call answers once the tick has moved on
        if est.t >= 8.0:
            stream.stop()
    status = _statuses(ests, "face")
    assert "error: RuntimeError: injected encoder failure" in status
    assert any(s.startswith("error: non-finite output") for s in status)
    assert any(s.startswith("timeout") for s in status), status
    for e in ests:
        assert np.all(np.isfinite(e.probs))  # no NaN ever reaches an estimate
        if e.status["face"].startswith("error"):
            assert not e.present["face"]
    assert sum(e.present["voice"] for e in ests) > len(ests) / 2  # the voice went on
    assert all(s == "ok" for s in status[-10:]), status[-10:]  # recovered
    last = ests[-1].dropped
    assert last["face_errors"] == 3 and last["face_timeouts"] >= 1


class FlakyDecoder:
    """The real whisper decoder; the decodes `fail` names raise, `stall_s` delays the first."""

    def __init__(self, inner, fail=(), stall_s: float = 0.0) -> None:
        self.inner, self.fail, self.stall_s, self.calls = inner, set(fail), stall_s, 0

    def decode(self, *args, **kwargs):
        k, self.calls = self.calls, self.calls + 1
        if k in self.fail:
            raise RuntimeError("injected decoder failure")
        if k == 0 and self.stall_s:
            time.sleep(self.stall_s)
        return self.inner.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def three_utterances(tmp_path_factory):
    """Three read sentences with 2 s of silence after each, as one 16 kHz WAV."""
    sil = np.zeros(32000, np.float32)
    short = sorted((read_speech(f) for f in speech_files()), key=len)[:3]
    x = np.concatenate([sil[:8000]] + [p for s in short for p in (s, sil)])
    path = tmp_path_factory.mktemp("speech") / "three.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    return path


def test_transcriber_that_raises_drops_one_utterance_and_goes_on(three_utterances):
    config = load_config()
    stream = AffectStream(config, Inputs(audio=three_utterances, realtime=False))
    flaky = FlakyDecoder(stream.transcriber.decoder, fail={0, 1})
    stream.transcriber.decoder = flaky
    ests = list(stream.estimates())
    status = _statuses(ests, "text")
    failed = [i for i, s in enumerate(status) if "transcriber error: RuntimeError" in s]
    assert failed, status
    assert not any(ests[i].present["text"] for i in failed)
    later = [e for e in ests[failed[-1] + 1 :] if e.present["text"]]
    assert later, "no words after the failure"  # the next utterances were transcribed
    assert ests[-1].dropped["transcriber_errors"] >= 1
    assert stream.transcriber.status.state.value == "finished"
    assert ests[-1].transcript.strip()


@pytest.mark.realtime
def test_transcriber_that_stalls_is_reported_while_the_tick_goes_on(three_utterances):
    config = load_config()
    stream = AffectStream(config, Inputs(audio=three_utterances, realtime=True))
    assert stream.wait_models(60)  # a live stream opens whisper in the background
    stream.transcriber.decoder = FlakyDecoder(stream.transcriber.decoder, stall_s=2.5)
    stream.transcriber.stall_s = 1.0
    ests = []
    for est in stream.estimates():
        ests.append(est)
        if est.t >= 9.0:
            stream.stop()
    status = _statuses(ests, "text")
    stalled = [i for i, s in enumerate(status) if "transcriber stalled" in s]
    assert stalled, status
    during = ests[stalled[0] : stalled[-1] + 1]
    assert all(e.present["voice"] or e.status["voice"] != "ok" for e in during)
    # the tick went on: tick after tick reported the stall, in order, rather than one tick
    # waiting it out (how regular the ticks are is this machine's figure, not the test's)
    assert len(during) >= 2 and all(np.diff([e.t for e in ests]) > 0)
    assert any(e.present["text"] for e in ests[stalled[-1] :]), status  # words came later


class FileCamera:
    """A capture that plays a real video file as a camera would, then stops delivering
    (read fails) after `frames` frames, like an unplugged webcam."""

    def __init__(self, path, frames: int) -> None:
        import cv2

        self.cap, self.left = cv2.VideoCapture(str(path)), frames

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(1 / 24)
        return self.cap.read()

    def release(self):
        self.cap.release()

    def set(self, *args):
        return True

    def get(self, *args):
        return 0.0


def test_camera_that_stops_and_comes_back(megamind):
    config = load_config()
    config.video.reconnect_initial_s = 1.5
    config.video.reconnect_max_s = 1.5
    config.face.enabled = True
    from affectstream.realtime.sources import video

    captures = iter([FileCamera(megamind, 36), None, FileCamera(megamind, 1000)])
    real_open = video.CameraSource._open_capture
    video.CameraSource._open_capture = lambda self: next(captures)
    try:
        stream = AffectStream(config, Inputs(camera=0, no_audio=True))
        ests = []
        for est in stream.estimates():
            ests.append(est)
            if est.t >= 7.0:
                stream.stop()
    finally:
        video.CameraSource._open_capture = real_open
    status = _statuses(ests, "face")
    present = [e.present["face"] for e in ests]
    gone = [i for i, s in enumerate(status) if s.startswith("missing: camera reconnecting")]
    assert gone, status
    assert any(present[: gone[0]]), status  # the face was seen before the camera went
    # its last result went stale with the reason, then missing with it
    assert any(s.startswith("stale: camera reconnecting") for s in status[: gone[0]]), status
    assert not any(present[i] for i in gone)
    assert any(present[gone[-1] :]) and status[-1] == "ok", status  # and back after


def test_corrupt_or_truncated_weights_are_one_line_naming_the_file(tmp_path, megamind):
    from affectstream.export.predictors import weights_dir

    for model, name in (("face", "face.pt"), ("voice", "voice.pt"), ("text", "text.safetensors")):
        src = (weights_dir() / name).read_bytes()
        bad = tmp_path / f"cut-{name}"
        bad.write_bytes(src[: len(src) // 3])
        cfg = tmp_path / f"{model}.yaml"
        cfg.write_text(f"{model}:\n  weights: {bad}\n")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "affectstream",
                "run",
                "--media",
                str(megamind),
                "--fast",
                "--config",
                str(cfg),
                "--duration",
                "1",
                "--backend",
                "torch",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (model, r.stderr[-1500:])
        assert "Traceback" not in r.stderr, (model, r.stderr[-1500:])
        assert lines[-1].startswith("affectstream: error:") and str(bad) in lines[-1], lines[-1]


def test_microphone_that_vanishes_and_comes_back(pulse_mic):
    """The PulseAudio server behind the microphone dies mid-run and is started again: the
    voice goes missing with the reason, the stream ticks on, and the voice comes back."""
    config = load_config()
    config.audio.reconnect_initial_s = 0.2
    config.audio.reconnect_max_s = 0.4
    config.audio.stall_timeout_s = 1.0
    stream = AffectStream(
        config, Inputs(use_mic=True, mic="pulse", transcribe=False, no_video=True)
    )
    speech = sorted((read_speech(f) for f in speech_files()), key=len)[0]  # 3 s
    ests: list = []
    phase = {"killed": None, "back": None}

    def drive():
        pulse_mic.feed(speech)
        time.sleep(3.5)
        pulse_mic.kill()
        phase["killed"] = len(ests)
        time.sleep(2.5)
        pulse_mic.start()
        time.sleep(1.0)
        phase["back"] = len(ests)
        pulse_mic.feed(np.concatenate([speech, speech]))

    driver = threading.Thread(target=drive, daemon=True)
    for est in stream.estimates():
        ests.append(est)
        if est.tick == 0:
            driver.start()
        if est.t >= 14.0:
            stream.stop()
    driver.join(10)
    status = _statuses(ests, "voice")
    k, b = phase["killed"], phase["back"]
    assert any(e.present["voice"] for e in ests[:k]), status[:k]
    gone = [s for s in status[k:b] if s.startswith("missing: microphone reconnecting")]
    assert gone, status[k:b]
    assert any(e.present["voice"] for e in ests[b:]), status[b:]  # it came back
    # the tick never waited for the device: tick after tick said it was gone, in order
    assert len(gone) >= 2 and all(np.diff([e.t for e in ests]) > 0)
