"""Audio helpers the sources share: PCM to mono float32, streaming resampling, capture clocks.

Every source ends in the same place: mono float32 samples at the configured rate (16 kHz) in
a `SampleRing`, each write stamped with the capture time of its first sample. The pieces here
get PCM of any common layout and rate there without gaps or clicks between blocks:

- `to_mono_float32` converts int16/int32/uint8/float PCM (1-D, or frames x channels) to mono.
- `StreamResampler` is a stateful polyphase resampler (libsoxr through `soxr`): block by block
  it gives the same samples as resampling the whole stream at once, with no delay to correct
  (output sample j lines up with input sample j * in_rate / out_rate). About 10 us per 20 ms
  block on one CPU core. Matching rates pass through without importing soxr.
- `TimedResampler` writes resampled blocks into a ring and carries the capture times across.
- `CaptureClock` turns noisy per-callback capture times into a smooth sample clock and reports
  the samples a device lost (a jump ahead of the clock).
"""

from __future__ import annotations

import logging

import numpy as np

from affectstream.core.ringbuffer import SampleRing

log = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 16000
"""Hz: the rate Whisper, Silero VAD and the voice CNN read; every audio ring holds samples at it."""

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def to_mono_float32(samples: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """Mono float32 in -1..1 from PCM: 1-D, or 2-D (frames, channels) averaged over channels.

    int16 and int32 are scaled by their full range, uint8 is offset binary (8-bit WAV);
    float input is taken as already in -1..1. Bytes are read as s16le mono.
    """
    if isinstance(samples, (bytes, bytearray, memoryview)):
        if len(samples) % 2:
            raise ValueError(f"s16le PCM needs an even number of bytes, got {len(samples)}")
        samples = np.frombuffer(samples, dtype="<i2")
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise ValueError(f"PCM must be 1-D or (frames, channels), got shape {x.shape}")
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype.kind == "i" and x.dtype.newbyteorder("=") in _INT_SCALE:
        x = x.astype(np.float32) / np.float32(_INT_SCALE[x.dtype.newbyteorder("=")])
    else:
        raise ValueError(f"unsupported PCM sample type {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x, dtype=np.float32)


class StreamResampler:
    """Stateful sample-rate conversion of one continuous mono stream (soxr, quality HQ).

    `process` may return fewer samples than the ratio suggests at first (the filter's
    look-ahead); `flush` returns the rest at the end of the stream. `reset` starts a new
    stream (after a gap: never filter across a discontinuity).
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.quality = quality
        self.passthrough = self.in_rate == self.out_rate
        self.consumed = 0  # input samples taken since the last reset
        self.produced = 0  # output samples given since the last reset
        self._stream = None
        if not self.passthrough:
            self._stream = self._new_stream()

    def _new_stream(self):
        try:
            import soxr
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"resampling {self.in_rate} Hz to {self.out_rate} Hz needs the soxr package: "
                "pip install soxr"
            ) from e
        return soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality
        )

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next piece of the stream (mono float32)."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        self.consumed += len(x)
        y = x.copy() if self.passthrough else self._stream.resample_chunk(x)
        self.produced += len(y)
        return y

    def flush(self) -> np.ndarray:
        """The samples still held in the filter, at the end of the stream."""
        if self.passthrough:
            return np.empty(0, dtype=np.float32)
        y = self._stream.resample_chunk(np.empty(0, dtype=np.float32), last=True)
        self.produced += len(y)
        self._stream = self._new_stream()
        return y

    def reset(self) -> None:
        """Forget the stream so far (the next sample starts a new, unrelated stream)."""
        if not self.passthrough:
            self._stream.clear()
        self.consumed = self.produced = 0


class TimedResampler:
    """Resample timestamped blocks at `in_rate` into a `SampleRing`, keeping capture times.

    The time of output sample j is extrapolated from the newest input block's capture time,
    since output j lines up with input j * in_rate / out_rate. Call `reset` after a gap.
    """

    def __init__(self, ring: SampleRing, in_rate: int) -> None:
        self.ring = ring
        self.resampler = StreamResampler(in_rate, ring.sample_rate)
        self._anchor_in = 0  # input index of the newest block's first sample ...
        self._anchor_t_ns = 0  # ... and its capture time

    @property
    def in_rate(self) -> int:
        return self.resampler.in_rate

    def write(self, samples: np.ndarray, t_ns: int) -> int:
        """Resample one block (captured at t_ns) into the ring; returns samples written."""
        self._anchor_in, self._anchor_t_ns = self.resampler.consumed, t_ns
        j0 = self.resampler.produced
        y = self.resampler.process(samples)
        self._emit(y, j0)
        return len(y)

    def flush(self) -> int:
        j0 = self.resampler.produced
        y = self.resampler.flush()
        self._emit(y, j0)
        return len(y)

    def reset(self) -> None:
        self.resampler.reset()

    def _emit(self, y: np.ndarray, j0: int) -> None:
        if len(y) == 0:
            return
        r = self.resampler
        in_pos = j0 * r.in_rate / r.out_rate  # input index that output j0 lines up with
        t = self._anchor_t_ns + int(round((in_pos - self._anchor_in) * 1e9 / r.in_rate))
        self.ring.write(y, t)


class CaptureClock:
    """A smooth capture clock from noisy per-block capture times, with gap detection.

    Device callbacks arrive with scheduling jitter. The clock predicts each block's start
    from the previous one plus its duration and moves a fraction `gain` toward the measured
    time, which follows a slow drift between device and host clocks while ironing out jitter.
    Only a block the device flagged as following an overflow may jump: if its measured time is
    more than `gap_ms` ahead of the prediction, the clock jumps and `stamp` reports how many
    samples were lost. Without that flag, a time far ahead or behind is a callback that a busy
    CPU delayed, or a burst delivered at once, and the clock keeps its course both ways (times
    never go backwards). A device restart calls `reset()`.
    """

    def __init__(self, sample_rate: int, gain: float = 0.05, gap_ms: float = 40.0) -> None:
        self.sample_rate = sample_rate
        self.gain = gain
        self.gap_ns = int(gap_ms * 1e6)
        self._next_ns: int | None = None  # predicted start of the next block
        self._last_n_ns = 0  # duration of the previous block

    def reset(self) -> None:
        self._next_ns = None

    def stamp(self, measured_ns: int, n: int, overflow: bool = False) -> tuple[int, int]:
        """(smoothed capture time of this block's first sample, samples lost before it).

        `overflow`: the device reported lost input before this block.
        """
        lost = 0
        pred = self._next_ns
        if pred is None:
            t = measured_ns
        elif overflow and measured_ns - pred > self.gap_ns:
            lost = int(round((measured_ns - pred) * self.sample_rate / 1e9))
            t = measured_ns
        else:
            # Jitter or late delivery: move a little toward the measurement, never before
            # the previous block's start.
            prev_start = pred - self._last_n_ns
            t = max(pred + int(self.gain * (measured_ns - pred)), prev_start + 1)
        self._last_n_ns = int(round(n * 1e9 / self.sample_rate))
        self._next_ns = t + self._last_n_ns
        return t, lost
