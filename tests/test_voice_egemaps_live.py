"""The eGeMAPS branch in the live voice stage (`voice.egemaps`): real speech, the real Silero
VAD, the shipped voice predictor and its eGeMAPS head, openSMILE on the reader's worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from affectstream.core.ringbuffer import SampleRing
from tests.conftest import require_module

RAVDESS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ravdess_speech"
needs_data = pytest.mark.skipif(not RAVDESS.is_dir(), reason="needs ../shared/data")
SR = 16000
TICK = SR // 10  # 0.1 s of audio per tick


def _speech(actor: int, emotion: int) -> np.ndarray:
    from affectstream.models.voice.data import load_audio

    (f,) = sorted(RAVDESS.glob(f"Actor_{actor:02d}/03-01-{emotion:02d}-02-01-01-{actor:02d}.flac"))
    return load_audio(f, SR)


@pytest.fixture(scope="module")
def predictor():
    require_module("opensmile")
    from affectstream.export.predictors import open_eval_predictor

    p = open_eval_predictor("voice", "onnxruntime", threads=1)
    assert "eGeMAPSv02" in p.utterance_heads  # the shipped voice.egemaps.npz beside voice.pt
    return p


@needs_data
def test_the_stage_mixes_each_utterance_s_egemaps_reading_as_eval_voice_does(predictor):
    from affectstream.models.stt.vad import VoiceActivity
    from affectstream.realtime.stages.base import ABSENT
    from affectstream.realtime.stages.voice import VoiceStage

    quiet = np.zeros(SR, np.float32)
    first, second = _speech(17, 5), _speech(18, 3)  # angry, then happy, 1 s of silence between
    audio = np.concatenate([quiet, first, quiet, quiet, second, quiet])
    ring, plain_ring = SampleRing(30.0, SR), SampleRing(30.0, SR)
    stage = VoiceStage(ring, VoiceActivity(), predictor, window_s=2.0, session_norm=True,
                       utterance=("eGeMAPSv02",))
    plain = VoiceStage(plain_ring, VoiceActivity(), predictor, window_s=2.0, session_norm=True)
    ticks, mixed = [], 0
    for i in range(0, len(audio) - TICK + 1, TICK):
        ring.write(audio[i:i + TICK], i)
        plain_ring.write(audio[i:i + TICK], i)
        r, cnn = stage.run(i), plain.run(i)
        (eg,) = stage._readers  # the shipped head is beside the shipped weights
        if r is not None and r is not ABSENT:
            # the same tick without the branch is the CNN path; with it, the mix
            want = eg.head.fuse(cnn.probs[None], eg.reading)[0]
            np.testing.assert_allclose(r.probs, want, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(r.embedding, cnn.embedding)  # the encoder's
            mixed += eg.reading is not None and not np.allclose(r.probs, cnn.probs)
        ticks.append((i / SR, r, eg.norm.seconds))
        eg.wait()  # each job applied before the next tick: a repeatable test
    assert mixed > 5
    voiced = [(t, r) for t, r, _ in ticks if r is not None and r is not ABSENT]
    assert voiced, "the VAD heard no speech"
    read = [(t, r) for t, r in voiced if r.info["egemaps_s"] > 0]
    # an utterance is read from its first second on; before that the CNN path alone
    assert read and all(r.info["egemaps_s"] >= 1.0 for _, r in read)
    starts = [t for t, r in voiced if r.info["egemaps_s"] == 0]
    assert starts and min(starts) < min(t for t, _ in read)
    # each utterance joins the session once, when it ends (not once per reading)
    session = [s for _, _, s in ticks]
    grew = [b - a for a, b in zip(session, session[1:], strict=False) if b - a > 0]
    assert len(grew) == 2, grew
    assert all(1.0 <= g <= 4.0 for g in grew)
    # the second utterance starts without the first one's reading
    gap = 1 + len(first) / SR + 1  # within the 2 s of silence between the two
    second = [(t, r) for t, r in voiced if t > gap]
    assert second and second[0][1].info["egemaps_s"] == 0
    first_read = next(t for t, r in second if r.info["egemaps_s"] > 0)
    assert first_read - second[0][0] >= 0.6  # about a second of it heard first


class _Head:
    """A stand-in head whose reading is the features themselves (7 of them)."""

    strength_s = 10.0
    fuse_weight = 0.5
    features = "seven test features"

    def new_session(self):
        from affectstream.models.voice.session import SpeakerNorm

        return SpeakerNorm(np.zeros(7), np.ones(7), self.strength_s)

    def add(self, norm, f, seconds):
        norm.update(np.asarray(f, np.float64).reshape(1, -1), seconds)

    def read(self, norm, f):
        return np.asarray(f, np.float32).reshape(1, -1)


def test_a_late_reading_never_lands_on_the_next_utterance_and_a_failed_span_is_skipped(caplog):
    import threading

    from affectstream.realtime.stages.utterance_reader import UtteranceReader

    gate = threading.Event()
    calls = []

    def extract(x):
        calls.append(len(x))
        if len(calls) == 1:
            gate.wait(5)  # the first reading is slow
        if len(calls) == 3:
            raise RuntimeError("openSMILE could not read it")
        return np.full(7, 1.0)

    ring = SampleRing(30.0, SR)
    loud = np.sin(np.arange(SR) * 0.05).astype(np.float32)
    eg = UtteranceReader(ring, _Head(), extract=extract)
    ring.write(np.concatenate([loud, loud]), 0)  # 2 s of an utterance
    eg.speech(0)
    assert len(calls) <= 1 and eg.reading is None
    eg.silence()  # it ends while its reading is still being made
    ring.write(np.concatenate([loud, loud]), 1)
    eg.speech(2 * SR)  # the next one begins (its read waits: one read in flight at most)
    gate.set()
    eg.wait()
    assert eg.reading is None  # the late read belonged to the first utterance
    assert eg.norm.seconds == pytest.approx(2.0, abs=0.01)  # the first joined the session once
    with caplog.at_level(logging.WARNING):
        eg.silence()  # the second's session job fails: logged, skipped
        eg.wait()
    assert "failed" in caplog.text and eg.norm.seconds == pytest.approx(2.0, abs=0.01)


def test_the_branch_on_without_opensmile_stops_the_stream_before_it_opens(monkeypatch):
    from affectstream.core.config import Config
    from affectstream.core.errors import SetupError
    from affectstream.models.voice import egemaps
    from affectstream.realtime.stream import AffectStream, Inputs

    monkeypatch.setattr(egemaps, "available", lambda: False)
    config = Config()
    config.voice.egemaps = True
    with pytest.raises(SetupError, match=r"voice.egemaps: .*opensmile.*affectstream\[egemaps\]"):
        AffectStream(config, Inputs(push_video=True, push_audio=True))


@needs_data
def test_affectstream_run_with_voice_egemaps_on_mixes_it_in(tmp_path, predictor):
    """What a user types: `affectstream run --audio FILE --fast --config C` with `voice.egemaps:
    true`, against the same run without it, tick for tick on the media clock. A reading lands
    when openSMILE is done (about 40 ms), so on a fast replay it covers fewer ticks than live."""
    import json

    import soundfile as sf
    import yaml

    from affectstream.core.config import default_config_path
    from tests.conftest import affectstream

    quiet = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([quiet, _speech(19, 5), quiet, _speech(20, 4), quiet])
    sf.write(tmp_path / "speech.wav", audio, SR)
    config = yaml.safe_load(default_config_path().read_text())
    config["voice"]["egemaps"] = True
    (tmp_path / "eg.yaml").write_text(yaml.safe_dump(config))

    def run(name, *extra):
        out = tmp_path / f"{name}.jsonl"
        r = affectstream("run", "--audio", tmp_path / "speech.wav", "--fast", "--out", out, *extra)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line)["modalities"].get("voice") for line in out.read_text().split("\n")
                if line]
        return [v and v["probs"] for v in rows]  # the voice stage's own output

    off = run("off")
    on = run("on", "--config", tmp_path / "eg.yaml")
    pairs = [(a, b) for a, b in zip(off, on, strict=False) if a and b]
    assert len(pairs) > 30
    assert pairs[0][0] == pairs[0][1]  # the first tick: nothing read yet
    differ = sum(a != b for a, b in pairs)
    assert differ >= 5, f"eGeMAPS mixed into {differ} of {len(pairs)} voice ticks"


def test_weights_without_an_egemaps_head_say_so_once_and_read_the_cnn_path(caplog):
    from affectstream.realtime.stages.voice import VoiceStage

    class Vad:
        gaps = 0

        def update(self, ring):
            pass

        def is_speech(self, ms):
            return True

        def speech_prob(self, ms):
            return 1.0

    class Plain:  # a voice predictor without an eGeMAPS head (a user's own weights)
        def predict(self, x):
            return np.full((1, 7), 1 / 7, np.float32), np.zeros((1, 4), np.float32)

    ring = SampleRing(10.0, SR)
    stage = VoiceStage(ring, Vad(), Plain(), utterance=("eGeMAPSv02",))
    with caplog.at_level(logging.WARNING):
        for t in range(20):
            ring.write(np.full(TICK, 0.1, np.float32), t)
            r = stage.run(t)
            np.testing.assert_allclose(r.probs, 1 / 7)
            assert "egemaps_s" not in r.info
    assert caplog.text.count("no eGeMAPSv02 head") == 1


def test_an_utterance_heard_before_a_reset_never_joins_the_new_session():
    import threading

    from affectstream.realtime.stages.utterance_reader import UtteranceReader

    gate = threading.Event()

    def extract(x):
        gate.wait(5)
        return np.full(7, 1.0)

    ring = SampleRing(30.0, SR)
    eg = UtteranceReader(ring, _Head(), every_s=10.0, extract=extract)  # no reads, sessions only
    ring.write(np.sin(np.arange(2 * SR) * 0.05).astype(np.float32), 0)
    eg.speech(0)
    eg.silence()  # its session job waits on the gate
    old = eg.norm
    eg.reset_session()  # a new speaker, before the old utterance was read
    gate.set()
    eg.wait()
    assert eg.norm.seconds == 0.0 and old.seconds == pytest.approx(2.0, abs=0.01)
