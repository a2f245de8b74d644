"""Voice activity on real read speech joined with silence (Silero VAD from faster-whisper)."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import read_speech, speech_files, speech_with_silence

from affectstream.core.ringbuffer import SampleRing
from affectstream.models.stt.vad import FRAME, VoiceActivity

MS = 1_000_000


@pytest.fixture(scope="module")
def joined():
    return speech_with_silence(n_files=3, silence_s=1.0)  # sil, speech, sil, speech, sil, ...


def test_incremental_feeding_matches_the_whole_recording_at_once(joined):
    from faster_whisper.vad import get_vad_model

    audio, _ = joined
    audio = audio[: len(audio) // FRAME * FRAME]
    reference = np.asarray(get_vad_model()(audio)).reshape(-1)  # faster-whisper, one call
    vad = VoiceActivity()
    rng = np.random.default_rng(0)
    i = 0
    while i < len(audio):  # ragged pieces, as ticks deliver them
        n = int(rng.integers(1, 3000))
        vad.feed(audio[i : i + n], t_ns=i * 62_500)
        i += n
    times, probs = vad.frame_probs()
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    np.testing.assert_array_equal(times, np.arange(len(reference)) * 32 * MS)
    assert vad.gaps == 0


def test_speech_is_found_in_speech_and_not_in_silence(joined):
    audio, spans = joined
    vad = VoiceActivity(min_silence_ms=300)
    for i in range(0, len(audio), 1600):  # 100 ms ticks
        vad.feed(audio[i : i + 1600], t_ns=i * 62_500)
    segs = vad.segments()
    assert len(segs) == len(spans), segs
    for seg, (s0, s1) in zip(segs, spans, strict=True):
        # each detected segment lies inside its file (which starts and ends with a breath)
        assert s0 * 1e9 - 100 * MS <= seg.start_ns < seg.end_ns <= s1 * 1e9 + 400 * MS
        assert (seg.end_ns - seg.start_ns) > 0.6 * (s1 - s0) * 1e9  # and covers most of it
    times, probs = vad.frame_probs()
    in_silence = np.ones(len(times), bool)
    for s0, s1 in spans:
        in_silence &= ~((times >= (s0 - 0.1) * 1e9) & (times < (s1 + 0.4) * 1e9))
    assert in_silence.sum() > 40  # about 2 s of the silences are checked
    assert probs[in_silence].max() < 0.5, "speech found in digital silence"


def test_questions_about_the_last_milliseconds():
    x = read_speech(speech_files()[0])
    vad = VoiceActivity()
    assert not vad.is_speech() and vad.speech_prob() == 0.0 and vad.processed_until_ns is None
    vad.feed(x, t_ns=0)
    assert vad.is_speech(last_ms=2000) and vad.speech_prob(last_ms=2000) > 0.9
    assert vad.speech_fraction(last_ms=len(x) / 16) > 0.5
    vad.feed(np.zeros(32000, np.float32), t_ns=len(x) * 62_500)  # then 2 s of silence
    assert not vad.in_speech
    assert not vad.is_speech(last_ms=1000)  # the voice is absent, not "neutral"
    assert vad.speech_prob(last_ms=1000) < 0.1
    assert vad.is_speech(last_ms=3000)  # the speech before it is still in a longer window
    assert vad.segments()[-1].end_ns == vad.last_speech_ns <= len(x) * 62_500 + 64 * MS


def test_update_from_a_ring_reads_only_new_samples_and_survives_overruns():
    x = read_speech(speech_files()[1])
    ring = SampleRing(1.0, 16000)
    vad = VoiceActivity()
    done = 0
    for i in range(0, 16000, 320):  # a mic writing 20 ms blocks, the scheduler ticking
        ring.write(x[i : i + 320], t_ns=i * 62_500)
        done += vad.update(ring)
    assert done == 16000 // FRAME and vad.gaps == 0
    for i in range(16000, 40000, 320):  # 1.5 s with no tick: more than the ring holds
        ring.write(x[i : i + 320], t_ns=i * 62_500)
    vad.update(ring)
    assert vad.gaps == 1  # counted, state restarted, and it goes on
    assert vad.processed_until_ns == pytest.approx(40000 * 62_500, abs=32 * MS)


def test_a_time_jump_in_fed_audio_restarts_the_state():
    vad = VoiceActivity()
    vad.feed(np.zeros(1000, np.float32), t_ns=0)
    vad.feed(np.zeros(1000, np.float32), t_ns=1000 * 62_500)  # contiguous
    assert vad.gaps == 0
    vad.feed(np.zeros(1000, np.float32), t_ns=5_000 * MS)  # 5 s later
    assert vad.gaps == 1


def test_only_16k_is_accepted():
    with pytest.raises(ValueError, match="16000"):
        VoiceActivity(sample_rate=8000)


# -- one pass per stream: the voice stage and the transcriber share the frames ---------------
class _CountingSession:
    """Wraps the Silero ONNX session and records how many frames each run evaluates."""

    def __init__(self, session, runs: list[int]) -> None:
        self.session, self.runs = session, runs

    def run(self, names, feeds):
        self.runs.append(len(feeds["input"]))
        return self.session.run(names, feeds)


@pytest.fixture
def silero_runs(monkeypatch):
    """Frames per Silero model call; faster-whisper's own VAD must not run at all."""
    import faster_whisper.vad

    from affectstream.models.stt import vad as vad_module

    runs: list[int] = []
    real = vad_module.silero_session
    monkeypatch.setattr(
        vad_module, "silero_session", lambda path=None: _CountingSession(real(path), runs)
    )

    def forbidden(*args, **kwargs):
        raise AssertionError("a second Silero VAD (faster-whisper's) ran")

    monkeypatch.setattr(faster_whisper.vad.SileroVADModel, "__call__", forbidden)
    return runs


def test_one_vad_pass_per_tick_serves_the_voice_stage_and_the_transcriber(silero_runs):
    """`run --fast` on speech: each tick evaluates exactly the new whole frames, once."""
    from conftest import MEDIA

    from affectstream.core.config import load_config
    from affectstream.models.stt.wer import word_errors
    from affectstream.realtime.stream import AffectStream, Inputs

    wav = MEDIA / "speech" / "cards" / "005.wav"
    stream = AffectStream(load_config(), Inputs(audio=wav, no_video=True, realtime=False))
    assert stream.transcriber is not None and stream.transcriber.vad is not None
    voice = [s for s in stream.stages if s.name == "voice"]
    assert voice and voice[0].vad is stream.transcriber.vad  # one VAD for both readers
    silero_runs.clear()  # warm-up calls of the encoders do not touch the VAD, but be sure
    per_tick, present, last = [], [], None
    for est in stream.estimates():
        per_tick.append((stream.audio_ring.written, sum(silero_runs)))
        present.append(est.present["voice"])
        last = est
    written = stream.audio_ring.written
    assert written > 3 * 16000
    # after every tick the frames evaluated are the whole frames written so far: not twice
    for n_written, n_frames in per_tick:
        assert n_frames == n_written // FRAME
    assert sum(silero_runs) == written // FRAME
    # and both readers were served: the voice was present, the words were transcribed
    assert any(present) and not present[0]
    text = last.transcript
    assert word_errors("eight of spades four of clubs seven of hearts", text).wer <= 0.25


def test_threads_share_one_vad_pass(silero_runs):
    """The transcriber thread and a scheduler-like caller update one VAD: each frame once."""
    from conftest import MEDIA

    from affectstream.core.config import TranscriberConfig
    from affectstream.models.stt.wer import word_errors
    from affectstream.realtime.sources.array_replay import ArrayReplay, load_audio
    from affectstream.realtime.transcriber import Transcriber, load_decoder

    audio = load_audio(MEDIA / "speech" / "goforward.raw")
    ring = SampleRing(30.0, 16000)
    vad = VoiceActivity()
    cfg = TranscriberConfig(max_backlog_s=30.0)
    tr = Transcriber(ring, cfg, decoder=load_decoder(cfg), from_start=True, vad=vad)
    replay = ArrayReplay(audio, ring, speed=2.0)
    heard = False
    with tr:
        replay.start()
        while not replay.join(0.01):  # the scheduler's ticks, racing the transcriber thread
            vad.update(ring)
            heard = heard or vad.is_speech()
        assert tr.drain(30.0)
    vad.update(ring)
    assert heard and vad.gaps == 0
    assert sum(silero_runs) == vad.frames == len(audio) // FRAME
    text = tr.recent_text(ring.time_of(ring.written), 30.0)
    assert word_errors("go forward ten meters", text).wer == 0.0
