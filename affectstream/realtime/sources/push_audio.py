"""Audio handed in by a host application (a voice bot that already has the caller's PCM).

The host calls `push` with each piece as it arrives; the source converts it to mono float32,
resamples it to the ring's rate when it comes at another rate (soxr, stateful across pushes),
and writes it into the `SampleRing` stamped with the capture time the host gives, or with
"now minus the piece's duration" (it was captured just before it was handed in).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from affectstream.core.audio import TimedResampler, to_mono_float32
from affectstream.core.clock import now_ns
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import PushSource, SourceState

log = logging.getLogger(__name__)


class PushAudioSource(PushSource):
    """PCM pushed by a host into `ring`; no thread of its own.

    `sample_rate` is the rate pushes have when they do not say (default: the ring's rate).
    A push at another rate is resampled; a change of rate, or a `t_ns` that jumps more than
    `gap_ms` away from where the previous push ended, starts a new resampling stream (no
    filtering across a discontinuity). `push` is safe to call from several threads (they are
    serialised), but the samples of one stream should come from one.
    Counters: `pushed_samples` (input), `dropped_samples` (pushes refused while stopped),
    `overflows` (always 0: a push never waits).
    """

    name = "push-audio"

    def __init__(self, ring: SampleRing, sample_rate: int | None = None, gap_ms: float = 100.0):
        super().__init__()
        self.ring = ring
        self.sample_rate = int(sample_rate or ring.sample_rate)
        self.gap_ns = int(gap_ms * 1e6)
        self.pushed_samples = 0
        self.dropped_samples = 0
        self.overflows = 0
        self._writer: TimedResampler | None = None
        self._next_t_ns: int | None = None  # where the previous push ended, on the stream clock
        self._lock = threading.Lock()

    def stop(self, timeout: float = 0.0) -> bool:
        with self._lock:
            if self._writer is not None:
                self._writer.flush()
            self._writer = None
            self._next_t_ns = None
        return super().stop(timeout)

    def push(
        self,
        samples: np.ndarray | bytes,
        sample_rate: int | None = None,
        t_ns: int | None = None,
    ) -> int:
        """Add PCM captured at `t_ns` (first sample; default now minus its duration).

        `samples`: 1-D, or (frames, channels), int16/int32/uint8/float32/float64; bytes are
        s16le mono. Returns the number of samples written to the ring (the resampler may
        hold a few back until the next push). Raises ValueError for malformed PCM.
        """
        rate = int(sample_rate or self.sample_rate)
        if rate <= 0:
            raise ValueError(f"push: sample rate must be positive, got {rate}")
        x = to_mono_float32(samples)
        if len(x) == 0:
            return 0
        if self.status.state is not SourceState.RUNNING:
            self.dropped_samples += len(x)
            return 0
        duration_ns = int(round(len(x) * 1e9 / rate))
        t = now_ns() - duration_ns if t_ns is None else int(t_ns)
        with self._lock:
            w = self._writer
            gap = self._next_t_ns is not None and abs(t - self._next_t_ns) > self.gap_ns
            if w is None or w.in_rate != rate or gap:
                if w is not None:
                    w.flush()
                    log.debug("push-audio: new stream (rate %d, gap %s)", rate, gap)
                w = self._writer = TimedResampler(self.ring, rate)
            self._next_t_ns = t + duration_ns
            self.pushed_samples += len(x)
            return w.write(x, t)
