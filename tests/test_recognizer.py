"""`Recognizer`, the embedding API: host pushes on the host's clock, the three ways estimates
arrive, files that end by themselves, clear errors, and the README's example, on real media."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest
from audio_fixtures import read_speech, speech_files
from conftest import REPO

from affectstream import Recognizer, load_config
from affectstream.core.config import ConfigError
from affectstream.realtime.recognizer import HostClock
from affectstream.realtime.sources.base import SourceError
from affectstream.realtime.sources.push_transcript import PushTranscript

FPS = 24  # Megamind.avi runs at 23.976 frames a second


@pytest.fixture(scope="module")
def predictors():
    """The face, voice and text models, opened once and shared by every recognizer here."""
    from affectstream.export.predictors import open_predictor

    config = load_config()
    return {name: open_predictor(name, config) for name in ("face", "voice", "text")}


@pytest.fixture(scope="module")
def frames(megamind):
    import cv2

    cap = cv2.VideoCapture(str(megamind))
    out = []
    while len(out) < 4 * FPS:
        ok, frame = cap.read()
        assert ok, "Megamind.avi ended early"
        out.append(frame)
    cap.release()
    return out


@pytest.fixture(scope="module")
def speech16():
    return read_speech(speech_files()[0], dtype="int16")  # 7.1 s of speech, 16 kHz int16


def feed(rec, frames, speech16, seconds, host_t0=5000.0, video_lag_s=0.0):
    """Push frames and the audio since the previous frame at real pace, stamped on a host
    clock that starts at `host_t0`. The frames are stamped `video_lag_s` before they are
    pushed once that much time has passed (until then with the first frame's time, so times
    never go back). Audio is int16 for the first half, float32 for the second. Returns the
    host times of the frames."""
    step = 16000 // FPS
    start, times = time.monotonic(), []
    for i in range(1, int(seconds * FPS)):
        e = i / FPS
        time.sleep(max(0.0, start + e - time.monotonic()))
        t = host_t0 + max(1 / FPS, e - video_lag_s)  # the first one is aligned with "now"
        rec.push_video(frames[i % len(frames)], t=t)
        pcm = speech16[(i - 1) * step : i * step]
        if e > seconds / 2:
            pcm = pcm.astype(np.float32) / 32768
        rec.push_audio(pcm, 16000, t=host_t0 + e - 1 / FPS)
        times.append(t)
    return times


def test_pushed_frames_and_audio_give_face_and_voice_on_the_host_clock(
    predictors, frames, speech16
):
    rec = Recognizer(push=True, transcribe=False, predictors=predictors)
    assert rec.latest() is None  # before the first tick
    got, boom = [], []

    def bad(est):
        boom.append(est)
        raise RuntimeError("a broken host callback")

    rec.on_estimate(got.append)
    rec.on_estimate(bad)
    with rec:
        times = feed(rec, frames, speech16, seconds=3.5, video_lag_s=0.4)
        newest = rec.stream.video_ring.newest()
        late = [e for e in got if e.t > 2.0]
    # host times are mapped with one offset: exact, frame by frame
    assert newest.t_ns == round(times[-1] * 1e9) + rec.clock.offset_ns
    # int16 and float32 both reached the ring: 16 kHz in, nothing dropped
    src = rec.stream.audio_source
    assert src.pushed_samples == (len(times)) * (16000 // FPS) and src.dropped_samples == 0
    assert late  # how many came in the last 1.5 s is this machine's figure, not the test's
    assert all(e.present["face"] and e.present["voice"] for e in late[-5:])
    # the frames were stamped 0.4 s before they were pushed: the face is that old (less the
    # jitter of the push that fixed the offset), so stale (stale_ms 300), with its age
    assert all(e.status["face"] == "stale" and e.age_ms["face"] > 300 for e in late[-5:])
    # callbacks: every estimate, in order; a raising one is counted, not fatal
    assert len(got) == rec.count and len(boom) == rec.count and rec.callback_errors == rec.count
    assert [e.tick for e in got] == sorted(e.tick for e in got)
    assert rec.latest() is got[-1]  # the newest
    assert not rec._thread.is_alive()


def test_pushed_words_are_the_text_modality_and_our_transcriber_is_off(predictors):
    rec = Recognizer(push=True, push_transcript=True, predictors=predictors)
    assert rec.stream.transcriber is None
    assert isinstance(rec.stream.words, PushTranscript)
    with rec:
        assert not any(t.name == "affectstream-transcriber" for t in threading.enumerate())
        now = time.monotonic()
        rec.push_transcript("I can't believe it, this is wonderful news!", now - 1.2, now)
        with pytest.raises(ValueError, match="end .* before start"):
            rec.push_transcript("backwards", now + 1.0, now + 0.5)
        with pytest.raises(ValueError, match="text must be a str"):
            rec.push_transcript(b"bytes", now, now + 0.1)
        seen = []
        for est in rec:
            seen.append(est)
            if est.present["text"] or len(seen) > 50:
                break
    est = seen[-1]
    assert est.present["text"] and est.status["text"] == "ok"
    assert "wonderful news!" in est.transcript
    # the end of the words was the first host time: "now" then, so the age is how long ago:
    # more than nothing, and no more than the time since the push
    assert 0 < est.age_ms["text"] <= (time.monotonic() - now) * 1e3 + 1
    assert est.status["face"].startswith("missing") and not est.present["voice"]


def test_async_for_does_not_block_the_event_loop(predictors, frames):
    async def main():
        with Recognizer(push=True, transcribe=False, predictors=predictors) as rec:

            async def pusher():  # runs on the same loop as the `async for` below
                for i in range(3 * FPS):
                    rec.push_video(frames[i], t=time.monotonic())
                    await asyncio.sleep(1 / FPS)

            task = asyncio.create_task(pusher())
            seen = []
            async for est in rec:
                seen.append(est)
                if est.t > 2.5:
                    break
            await task
        return seen

    seen = asyncio.run(main())
    # the pusher ran meanwhile, on the same loop: its frames reached the estimates
    assert [e.t for e in seen] == sorted(e.t for e in seen)
    assert any(e.present["face"] for e in seen), [e.status["face"] for e in seen]


def test_a_file_ends_the_iteration_by_itself(predictors, megamind):
    with Recognizer(media=megamind, realtime=False, transcribe=False, predictors=predictors) as rec:
        ests = list(rec)
    # the file is 11.3 s long: every 0.1 s of it a tick or a counted skip
    assert ests[-1].t >= 11.0 and len(ests) + ests[-1].dropped["ticks_skipped"] >= 110
    assert [e.tick for e in ests] == list(range(len(ests)))  # every tick, none dropped
    assert rec.dropped == 0 and rec.latest() is ests[-1]
    assert sum(e.present["face"] for e in ests) > len(ests) / 2
    assert not rec._thread.is_alive()


def test_the_queue_is_bounded_and_counts_what_it_dropped(predictors, megamind):
    with Recognizer(
        media=megamind, realtime=False, transcribe=False, queue_size=8, predictors=predictors
    ) as rec:
        rec._thread.join(60)  # nobody reads while the whole file is replayed
        ests = list(rec)
    assert len(ests) == 8 and rec.dropped == rec.count - 8
    assert ests[-1] is rec.latest()


def test_bad_pushes_raise_clear_errors(predictors, frames):
    rec = Recognizer(push=True, transcribe=False, predictors=predictors)
    frame = frames[0]
    with pytest.raises(RuntimeError, match="not started"):
        rec.push_video(frame)
    with rec:
        with pytest.raises(ValueError, match="numpy array, got list"):
            rec.push_video(frame.tolist())
        with pytest.raises(ValueError, match="uint8 BGR, got dtype float32"):
            rec.push_video(frame.astype(np.float32))
        with pytest.raises(ValueError, match=r"\(H, W, 3\) BGR or \(H, W\), got \(528, 720, 4\)"):
            rec.push_video(np.zeros((528, 720, 4), np.uint8))
        with pytest.raises(ValueError, match="int16 or float32, got dtype int32"):
            rec.push_audio(np.zeros(160, np.int32), 16000)
        with pytest.raises(ValueError, match=r"got shape \(2, 1600\) \(channels first"):
            rec.push_audio(np.zeros((2, 1600), np.float32), 16000)
        with pytest.raises(ValueError, match=r"got shape \(4, 4, 4\)"):
            rec.push_audio(np.zeros((4, 4, 4), np.float32), 16000)
        with pytest.raises(ValueError, match="peak of 12000.*pass int16"):
            rec.push_audio(np.full(160, 12000.0, np.float32), 16000)
        with pytest.raises(ValueError, match="NaN"):
            rec.push_audio(np.full(160, np.nan, np.float32), 16000)
        with pytest.raises(ValueError, match="sample_rate must be an int"):
            rec.push_audio(np.zeros(160, np.int16), "16k")
        with pytest.raises(ValueError, match="sample_rate must be positive"):
            rec.push_audio(np.zeros(160, np.int16), 0)
        with pytest.raises(ValueError, match="t must be a finite number"):
            rec.push_video(frame, t=float("nan"))
        rec.push_video(frame, t=100.0)
        rec.push_video(frame, t=99.98)  # within the 50 ms tolerance: jitter is fine
        with pytest.raises(ValueError, match=r"push_video: t=99\.000 s is 1\.000 s before"):
            rec.push_video(frame, t=99.0)
        rec.push_audio(np.zeros(160, np.int16), 16000, t=99.0)  # each input has its own order
        with pytest.raises(RuntimeError, match="push_transcript=True"):
            rec.push_transcript("hello", 100.0, 100.5)


def test_close_is_idempotent_joins_the_thread_and_refuses_later_use(predictors, frames):
    rec = Recognizer(push=True, transcribe=False, predictors=predictors)
    with rec:
        thread = rec._thread
        assert rec.running and thread.is_alive()
        rec.push_video(frames[0])
    assert not thread.is_alive() and not rec.running  # __exit__ joined it
    rec.close()  # again: nothing happens
    rec.close()
    list(rec)  # iteration of a closed one yields what was queued, then ends
    assert list(rec) == []
    with pytest.raises(RuntimeError, match="closed"):
        rec.push_video(frames[0])
    with pytest.raises(RuntimeError, match="closed"):
        rec.start()
    never = Recognizer(push=True, transcribe=False, predictors=predictors)
    never.close()  # never started: the stream is released, no thread
    never.close()
    assert never._thread is None and not never.running


def test_construction_errors_raise_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match="no input"):
        Recognizer()
    with pytest.raises(SourceError, match="missing.avi"):
        Recognizer(media=tmp_path / "missing.avi")
    with pytest.raises(ConfigError, match="not found"):
        Recognizer(config=tmp_path / "missing.yaml", push=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheduler:\n  rate_hzz: 5\n")
    with pytest.raises(ConfigError, match="rate_hzz"):
        Recognizer(config=bad, push=True)
    with pytest.raises(TypeError, match="config must be"):
        Recognizer(config=42, push=True)
    with pytest.raises(ValueError, match="camera= takes True or an index"):
        Recognizer(camera="front")
    with pytest.raises(ValueError, match="queue_size must be positive"):
        Recognizer(push=True, queue_size=0)


def test_host_clock_aligns_the_first_time_and_keeps_offsets():
    clock = HostClock(tolerance_s=0.05, clock=lambda: 7_000_000_000)
    assert clock.offset_ns is None
    assert clock.to_stream_ns(123.0, "video") == 7_000_000_000  # the first: "now"
    assert clock.to_stream_ns(123.25, "audio") == 7_250_000_000  # later: their offsets
    assert clock.to_stream_ns(124.0, "video") == 8_000_000_000
    assert clock.to_stream_ns(123.96, "video") == 7_960_000_000  # 40 ms back: tolerated
    with pytest.raises(ValueError, match=r"video: t=123\.500 s is 0\.500 s before"):
        clock.to_stream_ns(123.5, "video")
    with pytest.raises(ValueError, match="finite number of seconds"):
        clock.to_stream_ns("1.0", "video")
    words = HostClock(clock=lambda: 7_000_000_000)
    assert words.to_stream_ns(50.0, "words", span_s=1.5) == 5_500_000_000  # the end is "now"
    real = HostClock()
    before = time.monotonic_ns()
    ns = real.to_stream_ns(time.monotonic() + 1000.0, "video")  # any clock: aligned with now
    assert before <= ns <= time.monotonic_ns()


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use it as a library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the library section has one example, and this test runs it"
    return blocks[0]


def test_the_readme_library_example_runs(monkeypatch, capsys, megamind):
    code = readme_example()
    assert "with Recognizer(push=True) as rec:" in code
    for path in re.findall(r'"(\.\./shared/[^"]+)"', code):
        if not (REPO / path).exists():
            pytest.skip(f"test media missing: {path}")
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    # one line per estimate, in time order (how many in its 4 s is this machine's figure); the
    # face was seen and the voice judged
    times = [float(line.split()[0]) for line in lines]
    assert len(times) >= 2 and times == sorted(times)
    assert any("'face': 'ok'" in line for line in lines), lines[-5:]
    assert any("'voice': 'ok'" in line or "'voice': 'absent'" in line for line in lines)
