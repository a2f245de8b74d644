"""PCM conversion, the streaming resampler and the capture clock, on real speech."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import fft_resample, lag_of, read_speech, speech_files

from affectstream.core.audio import (
    CaptureClock,
    StreamResampler,
    TimedResampler,
    to_mono_float32,
)
from affectstream.core.ringbuffer import SampleRing


def test_to_mono_float32_scales_each_sample_type():
    np.testing.assert_array_equal(
        to_mono_float32(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5]
    )
    np.testing.assert_array_equal(to_mono_float32(np.array([0, 128, 192], np.uint8)), [-1, 0, 0.5])
    np.testing.assert_array_equal(to_mono_float32(np.array([-(2**31), 2**30], np.int32)), [-1, 0.5])
    np.testing.assert_array_equal(to_mono_float32(b"\x00\x80\x00\x40"), [-1.0, 0.5])  # s16le
    stereo = np.array([[16384, -16384], [32767, 32767]], np.int16)  # (frames, channels)
    np.testing.assert_allclose(to_mono_float32(stereo), [0.0, 32767 / 32768])
    x = to_mono_float32(np.array([0.25, -0.5]))  # float64 in, float32 out, values kept
    assert x.dtype == np.float32 and list(x) == [0.25, -0.5]


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2, 2), np.float32), np.zeros(3, np.uint16), b"\x00\x01\x02"]
)
def test_to_mono_float32_refuses_what_it_cannot_read(bad):
    with pytest.raises(ValueError):
        to_mono_float32(bad)


def blocks(x: np.ndarray, sizes) -> list[np.ndarray]:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(x[i : i + n])
        i, k = i + n, k + 1
    return out


@pytest.mark.parametrize("rate", [48000, 44100, 8000])
def test_stream_resampler_is_aligned_and_independent_of_block_size(rate):
    x = read_speech(speech_files()[1])
    at_rate = fft_resample(x, 16000, rate)  # an independent reference
    outs = []
    for sizes in ([rate // 50], [1, 7, 333, 4096]):  # 20 ms blocks; ragged blocks
        r = StreamResampler(rate, 16000)
        y = np.concatenate([r.process(b) for b in blocks(at_rate, sizes)] + [r.flush()])
        assert r.consumed == len(at_rate) and r.produced == len(y)
        outs.append(y)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)  # the same stream, any chunking
    y = outs[0]
    assert abs(len(y) - len(x)) <= 1
    lag, peak = lag_of(y, x)
    assert lag == 0, "output sample j lines up with input j * rate / 16000"
    assert peak > (0.97 if rate == 8000 else 0.999)  # 8 kHz loses the band above 4 kHz


def test_matching_rates_pass_through_untouched():
    x = read_speech(speech_files()[0])[:5000]
    r = StreamResampler(16000, 16000)
    assert r.passthrough
    np.testing.assert_array_equal(np.concatenate([r.process(b) for b in blocks(x, [320])]), x)
    assert len(r.flush()) == 0


def test_timed_resampler_keeps_capture_times():
    ring = SampleRing(10, 16000)
    w = TimedResampler(ring, 48000)
    t0 = 5_000_000_000
    x = np.zeros(48000, np.float32)
    for k in range(50):  # 1 s in 20 ms blocks, stamped on a 48 kHz device clock
        w.write(x[k * 960 : (k + 1) * 960], t0 + k * 20_000_000)
    assert 15000 < ring.written <= 16000
    # sample j of the output was captured at t0 + j / 16 kHz (within a sample)
    for j in (0, 1000, ring.written - 1):
        assert abs(ring.time_of(j) - (t0 + j * 62_500)) <= 62_500


def test_capture_clock_irons_out_jitter_and_counts_a_jump():
    clock = CaptureClock(16000)
    rng = np.random.default_rng(1)
    stamps = []
    for k in range(200):  # 20 ms blocks delivered with +-3 ms of jitter
        t, lost = clock.stamp(k * 20_000_000 + int(rng.uniform(-3e6, 3e6)), 320)
        assert lost == 0
        stamps.append(t)
    steps = np.diff(stamps[50:])
    assert np.abs(steps - 20_000_000).max() < 1_000_000  # raw steps vary by up to 6 ms
    late = 200 * 20_000_000 + 100_000_000
    t, lost = clock.stamp(late, 320)  # a callback 100 ms late, no overflow: keep course
    assert lost == 0 and t - stamps[-1] < 30_000_000
    t, lost = clock.stamp(late + 20_000_000, 320, overflow=True)  # the device lost ~100 ms
    assert lost == pytest.approx(1600, abs=400)
    # A busy CPU delays callbacks, then delivers them in a burst: measured times fall far
    # behind, but stamps keep increasing and nothing counts as lost.
    burst = [clock.stamp(t + 5_000_000, 320) for _ in range(10)]
    assert all(lost == 0 for _, lost in burst)
    assert np.all(np.diff([t] + [b for b, _ in burst]) > 0)
    clock.reset()  # a device restart
    t2, lost = clock.stamp(0, 320)
    assert t2 == 0 and lost == 0
