"""The transcriber thread over a SampleRing fed like a microphone, and `affectstream transcribe`."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import MEDIA

from affectstream.cli.main import main
from affectstream.core.clock import now_ns
from affectstream.core.config import TranscriberConfig
from affectstream.core.ringbuffer import RingBuffer, SampleRing
from affectstream.models.stt.wer import read_transcripts, word_errors
from affectstream.realtime.sources.array_replay import ArrayReplay, join_with_pauses, load_audio
from affectstream.realtime.sources.base import SourceError, SourceState
from affectstream.realtime.transcriber import Transcriber

SPEECH = MEDIA / "speech"
LIBRIVOX = SPEECH / "librivox"


@pytest.fixture(scope="module")
def decoder():
    from affectstream.realtime.transcriber import load_decoder

    return load_decoder(TranscriberConfig())


def librivox(name: str) -> np.ndarray:
    return load_audio(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav")


@pytest.mark.realtime
def test_thread_transcribes_speech_paced_like_a_microphone(decoder):
    """Real-time replay: right words, word times on the stream clock, each word final once."""
    audio, _ = join_with_pauses([librivox("0880")], 1.0)
    ring = SampleRing(30.0, 16000)
    segs: RingBuffer = RingBuffer(512, "transcript")
    tr = Transcriber(ring, TranscriberConfig(), decoder=decoder, segments=segs)
    replay = ArrayReplay(audio, ring)
    reader = segs.reader()
    seen = []
    with tr:
        t_start = now_ns()
        replay.start()
        active = False
        while not replay.join(0.02):
            active = active or tr.speech_active
            seen += [s.item for s in reader.read_new()]
        assert tr.drain(30.0)
    seen += [s.item for s in reader.read_new()]
    assert tr.status.state is SourceState.FINISHED and active

    finals = [s for s in seen if s.final]
    words = [w for s in finals for w in s.words]
    text = " ".join(w.text for w in words)
    assert word_errors("he was not an ill disposed young man", text).wer <= 0.25
    # stream clock: word times lie within the replay, in order, never repeated
    t0, t_end = replay.t0_ns, replay.t0_ns + int(len(audio) * 1e9 / 16000)
    assert t_start <= t0 <= words[0].start_ns
    for a, b in zip(words, words[1:], strict=False):
        assert a.start_ns <= a.end_ns <= b.start_ns
    assert words[-1].end_ns <= t_end
    # a word is committed after it was spoken
    assert all(s.emitted_ns >= s.words[-1].end_ns for s in finals)
    # the estimate's transcript: the committed words of the last seconds, nothing later
    assert tr.recent_text(now_ns(), 30.0) == " ".join(s.text for s in finals)
    assert tr.recent_text(words[-1].end_ns + int(60e9), 8.0) == ""
    assert tr.last_word_ns == words[-1].end_ns
    assert not tr.speech_active
    assert tr.snapshot().stats["skips"] == 0


@pytest.mark.realtime
class SlowDecoder:
    """The real decoder, each `decode` taking at least `delay_s` more: a CPU that is too slow."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s, self.calls = inner, delay_s, 0

    def decode(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.delay_s)
        return self.inner.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_backlog_is_bounded_when_fed_faster_than_it_can_go(decoder):
    """Audio at 8x real time: the thread skips ahead, counts it, and keeps working.

    However fast this CPU, each decode takes 0.5 s or more (SlowDecoder), in which the 8x
    replay writes 4 s of audio: beyond the 1.5 s backlog limit at the next read.
    """
    refs = read_transcripts(LIBRIVOX / "transcription")
    ids = sorted(refs)
    audio, _ = join_with_pauses([load_audio(LIBRIVOX / f"{i}.wav") for i in ids], 1.0)
    ring = SampleRing(30.0, 16000)
    cfg = TranscriberConfig(max_backlog_s=1.5)
    slow = SlowDecoder(decoder, delay_s=0.5)
    tr = Transcriber(ring, cfg, decoder=slow)
    replay = ArrayReplay(audio, ring, speed=8.0)
    with tr:
        replay.start()
        replay.join()
        assert tr.drain(30.0)
    stats = tr.snapshot().stats
    assert stats["skips"] >= 1 and stats["skipped_s"] >= 1.5
    assert stats["skipped_s"] < len(audio) / 16000
    # every sample was either transcribed or counted as skipped
    assert stats["audio_s"] + stats["skipped_s"] == pytest.approx(len(audio) / 16000, abs=0.05)
    assert tr.status.state is SourceState.FINISHED
    assert tr.counters()["transcriber_skips"] == stats["skips"]
    assert slow.calls >= 1  # it did decode: skipping is not all it did


def test_thread_over_audio_already_in_the_ring(decoder):
    """A ring written in one go (media clock) with from_start: same words as paced."""
    audio = load_audio(SPEECH / "goforward.raw")
    ring = SampleRing(30.0, 16000)
    ArrayReplay(audio, ring).write_all(t0_ns=0)
    tr = Transcriber(ring, TranscriberConfig(max_backlog_s=10.0), decoder=decoder, from_start=True)
    tr.start()
    assert tr.drain(30.0)
    text = tr.recent_text(int(len(audio) * 1e9 / 16000), 10.0)
    assert word_errors("go forward ten meters", text).wer == 0.0


def test_missing_model_fails_in_the_caller(tmp_path):
    ring = SampleRing(1.0, 16000)
    tr = Transcriber(ring, TranscriberConfig(model=str(tmp_path / "nothing")))
    with pytest.raises(SourceError, match="speech model folder not found"):
        tr.start()
    with pytest.raises(ValueError, match="16000 Hz"):
        Transcriber(SampleRing(1.0, 8000))


def test_transcribe_cli_prints_committed_segments(capsys, tmp_path):
    out = tmp_path / "t.json"
    assert main(["transcribe", str(SPEECH / "goforward.raw"), "--fast", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("[") and "(latency " in line for line in lines)
    printed = " ".join(line.split("] ", 1)[1].split("  (latency")[0] for line in lines)
    assert word_errors("go forward ten meters", printed).wer == 0.0
    data = json.loads(out.read_text())
    finals = [s for s in data["segments"] if s["final"]]
    assert " ".join(s["text"] for s in finals) == printed
    assert all(s["latency_ms"] > 0 for s in finals)
    assert 0.0 <= finals[0]["start_s"] < finals[-1]["end_s"] <= 2.8


def test_transcribe_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["transcribe", str(tmp_path / "none.wav"), "--fast"]) == 2
    assert "audio file not found" in capsys.readouterr().err
    wav = SPEECH / "cards" / "001.wav"
    assert main(["transcribe", str(wav), "--fast", "--model", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "speech model folder not found" in err and len(err.strip().splitlines()) == 1


def test_stepped_mode_on_the_media_clock_finishes_when_the_file_ends(decoder):
    """The fast replay of `affectstream run --fast`: the stream steps the transcriber per tick.

    cards/005.wav stops right after its last word, so the open utterance must be ended by
    the "no audio at all for end_silence_s" rule, not by silence in the audio.
    """
    from affectstream.realtime.sources.audio_file import AudioFileSource

    ring = SampleRing(30.0, 16000)
    src = AudioFileSource(SPEECH / "cards" / "005.wav", ring, realtime=False)
    tr = Transcriber(ring, TranscriberConfig(), decoder=decoder, stepped=True)
    start = now_ns()
    src.begin(start)
    tr.start()
    assert tr.status.state is SourceState.RUNNING and tr._thread is None
    t = start
    for _ in range(200):  # 20 s of media time at most
        t += 100_000_000
        src.read_until(t)
        tr.step(t)
        if src.done and tr.idle():
            break
    assert src.done and tr.idle() and not tr.speech_active
    text = tr.recent_text(t, 30.0)
    assert word_errors("eight of spades four of clubs seven of hearts", text).wer <= 0.25
    # emission is stamped with the tick's media time, after the word ended
    finals = [s.item for s in tr.segments.latest(256) if s.item.final]
    assert all(start <= s.words[-1].end_ns <= s.emitted_ns <= t for s in finals)
