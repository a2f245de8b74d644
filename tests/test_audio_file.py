"""Audio file replay: WAV, FLAC at another rate and layout, the audio track of a video, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from audio_fixtures import MEDIA, cards, fft_resample, lag_of, read_speech, speech_files

from affectstream.core.clock import now_ns
from affectstream.core.config import AudioConfig
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.audio_file import AudioFileSource
from affectstream.realtime.sources.base import SourceError, SourceState

BLOCK_NS = 20_000_000  # audio.block_ms = 20 at 16 kHz: 320 samples


def test_stepped_replay_writes_the_file_exactly_on_the_media_clock():
    path = speech_files()[1]
    x = read_speech(path)
    ring = SampleRing(30, 16000)
    src = AudioFileSource(path, ring, realtime=False)
    src.begin(start_ns=1_000)
    assert (src.codec, src.file_rate, src.file_channels) == ("pcm_s16le", 16000, 1)
    assert src.read_until(1_000 + BLOCK_NS - 1) == 0  # block 0 is not complete before 20 ms
    assert src.read_until(1_000 + BLOCK_NS) == 320
    assert ring.time_of(0) == 1_000
    assert src.read_until(1_000 + 1_000_000_000) == 16000 - 320  # the first second
    assert ring.time_of(16000) == 1_000 + 1_000_000_000
    while not src.done:
        src.read_until(10**15)
    assert src.status.state is SourceState.FINISHED
    y, first = ring.read(0, ring.written)
    assert first == 0
    np.testing.assert_array_equal(y, x)  # every sample, in order, once
    assert ring.time_of(len(x) - 1) == 1_000 + (len(x) - 1) * 62_500
    assert src.read_until(10**15) == 0  # finished stays finished


def test_flac_at_44k_stereo_is_mixed_and_resampled(tmp_path):
    import soundfile as sf

    x = read_speech(speech_files()[0])
    at44 = fft_resample(x, 16000, 44100)
    stereo = np.stack([at44, 0.5 * at44], axis=1)  # the mono mix is 0.75 * x
    path = tmp_path / "speech44k.flac"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    ring = SampleRing(30, 16000)
    src = AudioFileSource(path, ring, realtime=False).begin(0)
    assert (src.file_rate, src.file_channels) == (44100, 2)
    while not src.done:
        src.read_until(10**15)
    y, _ = ring.read(0, ring.written)
    assert abs(len(y) - len(x)) <= 1
    lag, peak = lag_of(y, x)
    assert lag == 0 and peak > 0.999
    gain = np.dot(y[: len(x)], x[: len(y)]) / np.dot(x, x)
    assert gain == pytest.approx(0.75, abs=0.01)


def test_audio_track_of_a_video_decodes_past_a_damaged_packet(megamind):
    ring = SampleRing(30, 16000)
    src = AudioFileSource(megamind, ring, realtime=False).begin(0)
    assert (src.codec, src.file_rate, src.file_channels) == ("ac3", 48000, 2)
    while not src.done:
        src.read_until(10**15)
    assert src.decode_errors == 1  # this file's first AC-3 packet is cut
    # 351 frames of 1536 samples at 48 kHz = 11.232 s, as 16 kHz samples
    assert ring.written == pytest.approx(11.232 * 16000, abs=2)
    y, _ = ring.read(0, ring.written)
    assert np.sqrt(np.mean(y**2)) > 0.01  # a soundtrack, not silence


def test_realtime_replay_is_paced_by_the_monotonic_clock():
    path = cards()[0]  # 1.10 s
    x = read_speech(path)
    ring = SampleRing(30, 16000)
    src = AudioFileSource(path, ring, config=AudioConfig(block_ms=10.0))
    t0 = now_ns()
    src.start()
    assert src.join(10.0)
    assert src.status.state is SourceState.FINISHED
    y, _ = ring.read(0, ring.written)
    np.testing.assert_array_equal(y, x)
    # stamps are capture times of the first samples: start + index / rate, on the stream clock
    assert t0 <= src.start_ns <= now_ns()
    assert ring.time_of(len(x) - 1) == src.start_ns + round((len(x) - 1) * 62_500)
    # the last block is written only once it "has been captured"
    assert now_ns() >= src.start_ns + len(x) * 62_500


def test_realtime_replay_stops_when_asked():
    src = AudioFileSource(speech_files()[0], SampleRing(30, 16000))
    t0 = time.monotonic()
    src.start()
    time.sleep(0.2)
    assert src.stop(timeout=2.0)
    assert src.status.state is SourceState.STOPPED
    # it wrote, at real pace: never more than the time it ran (plus one 20 ms block)
    assert 0 < src.samples_written <= (time.monotonic() - t0) * 16000 + 320


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="audio file not found"):
        AudioFileSource(tmp_path / "nope.wav", SampleRing(1, 16000)).open()


def test_undecodable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"cannot decode audio in .*noise\.wav"):
        AudioFileSource(bad, SampleRing(1, 16000)).open()


def test_truncated_header_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(speech_files()[0].read_bytes()[:30])  # the RIFF header, cut short
    with pytest.raises(SourceError, match="cannot decode audio in"):
        AudioFileSource(cut, SampleRing(1, 16000)).open()


def test_file_without_audio_says_so():
    with pytest.raises(SourceError, match="no audio track in .*messi5.jpg"):
        AudioFileSource(MEDIA / "messi5.jpg", SampleRing(1, 16000)).open()


def test_looped_audio_starts_again_with_sample_times_running_on(megamind):
    once = SampleRing(30, 16000)
    src = AudioFileSource(megamind, once, realtime=False).begin(0)
    while not src.done:
        src.read_until(10**15)
    n = once.written
    ring = SampleRing(60, 16000)
    looped = AudioFileSource(megamind, ring, realtime=False, loop=True).begin(0)
    looped.read_until(int(25e9))
    assert looped.loops == 2 and not looped.done
    assert ring.written == pytest.approx(25 * 16000, abs=looped.block)
    y, _ = ring.read(0, ring.written)
    first, _ = once.read(0, n)
    # the second pass is the file again, sample for sample
    assert np.allclose(y[n : 2 * n], first, atol=1e-6)
