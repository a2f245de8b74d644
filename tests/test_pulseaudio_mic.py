"""The real capture path: a recording played by a PulseAudio daemon, captured by the mic source.

PortAudio (ALSA host API) -> ALSA `pulse` plugin -> PulseAudio -> module-pipe-source, fed
with a recording from ../shared/media/speech at real time. What comes out must be the
recording: aligned, without a gap, at 16 kHz. Skipped, with the reason, only where a
PulseAudio daemon cannot start (e.g. pulseaudio not installed).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from audio_fixtures import (  # noqa: F401 (pulse_mic_fixture: the pulse_mic fixture)
    cards,
    lag_of,
    pulse_mic_fixture,
    read_speech,
    speech_files,
)

from affectstream.core.clock import now_ns
from affectstream.core.config import AudioConfig
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import SourceError, SourceState
from affectstream.realtime.sources.microphone import MicrophoneSource, input_devices


class StampedRing(SampleRing):
    """A SampleRing that also records (first index, capture time, n) of every write."""

    def __init__(self, seconds: float, sample_rate: int) -> None:
        super().__init__(seconds, sample_rate)
        self.stamps: list[tuple[int, int, int]] = []

    def write(self, samples: np.ndarray, t_ns: int) -> None:
        self.stamps.append((self.written, t_ns, len(samples)))
        super().write(samples, t_ns)


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def capture(mic, ring, x, **kw) -> MicrophoneSource:
    """Open the `pulse` device, play `x` through the daemon, return the stopped source."""
    src = MicrophoneSource(ring, device="pulse", **kw)
    with src:
        t_feed = now_ns()
        mic.feed(x)
        mic.wait_fed(len(x))
        written_at_end = ring.written
        # PulseAudio and ALSA buffer some tens of ms: wait for the tail to come through
        wait_for(lambda: ring.written >= written_at_end + 8000, timeout=3.0)
    src.t_feed = t_feed
    return src


def test_pulse_device_is_listed(pulse_mic):
    names = [d["name"] for d in input_devices()]
    assert "pulse" in names, names


def test_microphone_delivers_the_recording_exactly_at_16k(pulse_mic):
    x = read_speech(speech_files()[1])  # 2.99 s of read speech
    ring = StampedRing(10, 16000)
    src = capture(pulse_mic, ring, x)
    assert src.device_name == "pulse" and src.device_rate_used == 16000  # no resampling
    assert src.status.state is SourceState.STOPPED
    y, first = ring.read(0, ring.written)
    assert first == 0
    lag, peak = lag_of(y, x)
    assert lag >= 0 and peak > 0.999, (lag, peak)
    assert len(y) >= lag + len(x), "the end of the recording never arrived"
    # bit-exact: s16 -> float32 is exact, so any gap, repeat or gain change would show
    np.testing.assert_array_equal(y[lag : lag + len(x)], x)

    # capture times: one block per write, each stamped after the previous one by its length
    idx = np.array([s[0] for s in ring.stamps])
    t = np.array([s[1] for s in ring.stamps], dtype=np.float64)
    n = np.array([s[2] for s in ring.stamps])
    assert np.all(np.diff(idx) == n[:-1]), "a write was skipped"
    assert set(n) == {320}, "blocks of audio.block_ms = 20 ms at 16 kHz"
    assert np.all(np.diff(t) > 0), "capture times must increase"
    slope = np.polyfit(idx, t, 1)[0]  # ns per sample
    assert abs(slope * 16000 / 1e9 - 1) < 0.02, f"clock runs at {1e9 / slope:.0f} Hz"
    # the first sample of the recording is stamped about when the feeder wrote it: the
    # feeder hands each 20 ms block over at once, a block ahead of a real microphone, and
    # PulseAudio buffers some tens of ms, so allow two blocks before and a loose second after
    t_speech = ring.stamps[lag // 320][1] + (lag % 320) * 62_500
    assert src.t_feed - 40_000_000 <= t_speech <= src.t_feed + 1_000_000_000


def test_microphone_resamples_a_device_opened_at_48k(pulse_mic):
    x = read_speech(cards()[1])  # 1.96 s
    ring = StampedRing(10, 16000)
    src = capture(pulse_mic, ring, x, device_rate=48000)
    assert src.device_rate_used == 48000  # PulseAudio upsamples, the source resamples back
    y, _ = ring.read(0, ring.written)
    lag, peak = lag_of(y, x)
    assert lag >= 0 and peak > 0.99, (lag, peak)
    assert len(y) >= lag + len(x)
    err = y[lag : lag + len(x)] - x
    assert np.sqrt(np.mean(err**2)) < 0.1 * np.sqrt(np.mean(x**2))  # error below -20 dB
    idx = np.array([s[0] for s in ring.stamps])
    t = np.array([s[1] for s in ring.stamps], dtype=np.float64)
    slope = np.polyfit(idx, t, 1)[0]
    assert abs(slope * 16000 / 1e9 - 1) < 0.02, f"clock runs at {1e9 / slope:.0f} Hz"


def test_microphone_reconnects_after_the_server_dies(pulse_mic):
    x = read_speech(cards()[0])  # 1.10 s
    ring = SampleRing(20, 16000)
    cfg = AudioConfig(reconnect_initial_s=0.2, reconnect_max_s=0.4, stall_timeout_s=1.0)
    src = MicrophoneSource(ring, device="pulse", config=cfg)
    with src:
        pulse_mic.feed(np.zeros(8000, np.float32))
        assert wait_for(lambda: ring.written >= 4000, 3.0)
        pulse_mic.kill()  # the "device" vanishes
        assert wait_for(lambda: src.status.state is SourceState.RECONNECTING, 3.0), src.status
        written = ring.written
        time.sleep(0.5)
        assert ring.written == written  # nothing arrives while it is gone
        pulse_mic.start()  # it comes back
        assert wait_for(lambda: src.status.state is SourceState.RUNNING, 5.0), src.status
        pulse_mic.feed(x)
        pulse_mic.wait_fed(len(x))
        wait_for(lambda: ring.written >= written + len(x) + 4000, 3.0)
        assert src.reconnects >= 1
    y, first = ring.read(written, ring.written)
    lag, peak = lag_of(y, x)
    assert lag >= 0 and peak > 0.999, (lag, peak)
    np.testing.assert_array_equal(y[lag : lag + len(x)], x)


def test_unknown_microphone_names_the_devices_command(pulse_mic):
    src = MicrophoneSource(SampleRing(1, 16000), device="no-such-microphone")
    with pytest.raises(SourceError, match="not found.*affectstream devices"):
        src.start()
    assert src.status.state is SourceState.CREATED
