"""PCM pushed by a host application: formats, rates, capture times, lifecycle."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import fft_resample, lag_of, read_speech, speech_files

from affectstream.core.clock import now_ns
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import SourceState
from affectstream.realtime.sources.push_audio import PushAudioSource


def test_int16_at_the_ring_rate_is_written_exactly_with_host_times():
    x16 = read_speech(speech_files()[0], dtype="int16")
    ring = SampleRing(30, 16000)
    src = PushAudioSource(ring).start()
    t0 = 7_000_000_000
    for i in range(0, len(x16), 480):  # 30 ms pieces, stamped by the host
        assert src.push(x16[i : i + 480], t_ns=t0 + i * 62_500) == len(x16[i : i + 480])
    y, _ = ring.read(0, ring.written)
    np.testing.assert_array_equal(y, x16.astype(np.float32) / 32768)
    assert ring.time_of(0) == t0 and ring.time_of(len(y) - 1) == t0 + (len(y) - 1) * 62_500
    assert src.pushed_samples == len(x16) and src.dropped_samples == 0


def test_s16le_bytes_and_stereo_float_are_accepted():
    ring = SampleRing(1, 16000)
    src = PushAudioSource(ring).start()
    src.push(np.array([0, 16384], "<i2").tobytes())
    src.push(np.array([[0.5, -0.5], [1.0, 0.0]], np.float32))  # (frames, channels)
    y, _ = ring.read(0, ring.written)
    np.testing.assert_array_equal(y, [0.0, 0.5, 0.0, 0.5])


def test_other_rates_are_resampled_and_stay_aligned():
    x = read_speech(speech_files()[1])
    at48 = fft_resample(x, 16000, 48000)
    ring = SampleRing(30, 16000)
    src = PushAudioSource(ring, sample_rate=48000).start()
    t0 = 1_000_000_000
    for i in range(0, len(at48), 960):  # 20 ms pieces of a 48 kHz stream
        src.push(at48[i : i + 960], t_ns=t0 + round(i * 1e9 / 48000))
    src.stop()  # flushes the resampler's tail
    y, _ = ring.read(0, ring.written)
    assert abs(len(y) - len(x)) <= 1
    lag, peak = lag_of(y, x)
    assert lag == 0 and peak > 0.999
    assert abs(ring.time_of(0) - t0) < 62_500  # the first output sample keeps the host's time


def test_a_push_without_time_is_stamped_just_captured():
    ring = SampleRing(1, 16000)
    src = PushAudioSource(ring).start()
    before = now_ns()
    src.push(np.zeros(1600, np.float32))  # 100 ms, handed in as soon as captured
    after = now_ns()
    assert before - 100_000_000 <= ring.time_of(0) <= after - 100_000_000


def test_pushes_are_refused_and_counted_unless_running():
    ring = SampleRing(1, 16000)
    src = PushAudioSource(ring)
    assert src.push(np.zeros(100, np.float32)) == 0  # not started
    src.start()
    src.push(np.zeros(100, np.float32))
    src.stop()
    assert src.status.state is SourceState.STOPPED
    assert src.push(np.zeros(50, np.float32)) == 0
    assert ring.written == 100 and src.dropped_samples == 150


@pytest.mark.parametrize(
    "bad, rate",
    [(np.zeros((2, 3, 4), np.float32), None), (b"\x00", None), (np.zeros(4, np.float32), -1)],
)
def test_malformed_pcm_is_a_value_error(bad, rate):
    src = PushAudioSource(SampleRing(1, 16000)).start()
    with pytest.raises(ValueError):
        src.push(bad, sample_rate=rate)
