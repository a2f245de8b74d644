"""Voice activity: speech or not, per 32 ms frame, so that silence makes the voice absent.

`VoiceActivity` runs the Silero VAD model that faster-whisper ships as ONNX
(`faster_whisper/assets/silero_vad_v6.onnx`, run with onnxruntime on one thread) and keeps its
state between calls: each tick feeds only the audio that arrived since the last one, which
costs a fraction of a millisecond, and gives the same probabilities as running the model over
the whole recording at once (faster-whisper's `SileroVADModel`).

The model reads 512-sample frames at 16 kHz, each with the last 64 samples of the previous
frame as context, and carries an LSTM state (h, c) from frame to frame. On top of the frame
probabilities a hysteresis decides speech: a frame at or above `threshold` starts speech;
speech ends once the probability has stayed below `neg_threshold` for `min_silence_ms`, so the
short pauses between words do not flip the voice modality on and off. This is faster-whisper's
rule (`get_speech_timestamps`), run online.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass

import numpy as np

from affectstream.core.ringbuffer import SampleRing

log = logging.getLogger(__name__)

FRAME = 512  # samples per model frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees before each frame
SAMPLE_RATE = 16000


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """A stretch of speech on the stream clock; `end_ns` is None while it goes on."""

    start_ns: int
    end_ns: int | None


def silero_model_path() -> str:
    """The Silero VAD ONNX file inside the installed faster-whisper package."""
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as e:  # pragma: no cover - faster-whisper is a dependency
        raise ImportError("voice activity needs faster-whisper: pip install faster-whisper") from e
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    if not os.path.isfile(path):  # pragma: no cover - an older faster-whisper
        raise FileNotFoundError(f"Silero VAD model not found at {path}; upgrade faster-whisper")
    return path


class VoiceActivity:
    """Stateful, incremental Silero VAD over a 16 kHz stream.

    Feed it with `update(ring)` once per tick (it reads only the samples new since the last
    call) or with `feed(samples, t_ns)`. Then ask `is_speech(last_ms)`, `speech_prob(last_ms)`,
    `speech_fraction(last_ms)` or `segments()`. Results cover whole frames: audio newer than
    the last complete 512-sample frame waits for the next call.

    Not thread-safe: one caller (the scheduler) owns it.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_silence_ms: float = 300.0,
        history_s: float = 60.0,
        max_segments: int = 64,
        sample_rate: int = SAMPLE_RATE,
        model_path: str | None = None,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"VoiceActivity runs at {SAMPLE_RATE} Hz, got {sample_rate} Hz")
        import onnxruntime

        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        self.min_silence_frames = max(1, int(np.ceil(min_silence_ms / 1000 * SAMPLE_RATE / FRAME)))
        self.sample_rate = sample_rate
        self.frame_ns = FRAME * 1_000_000_000 // SAMPLE_RATE  # 32 ms

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            model_path or silero_model_path(), providers=["CPUExecutionProvider"], sess_options=opts
        )

        # frame history, preallocated: probability, speech decision, start time
        cap = max(1, int(history_s * SAMPLE_RATE / FRAME))
        self._probs = np.zeros(cap, dtype=np.float32)
        self._speech = np.zeros(cap, dtype=bool)
        self._times = np.zeros(cap, dtype=np.int64)
        self._cap = cap
        self.frames = 0  # frames processed since creation
        self._segments: deque[SpeechSegment] = deque(maxlen=max_segments)
        self._pending = np.zeros(FRAME, dtype=np.float32)
        self._last_speech_end = None
        self.gaps = 0  # discontinuities seen (samples lost, clock jumps): state was reset
        self._ring_index: int | None = None
        self.reset()

    # -- state ------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: clear the model state and the partial frame (history stays)."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._n_pending = 0
        self._pending_t_ns: int | None = None
        if self._segments and self._segments[-1].end_ns is None:  # close an open segment
            start = self._segments.pop().start_ns
            self._segments.append(SpeechSegment(start, self._last_speech_end or start))
        self._triggered = False
        self._silent_frames = 0
        self._last_speech_end: int | None = None  # end time of the newest speech frame

    # -- feeding ----------------------------------------------------------------------
    def update(self, ring: SampleRing) -> int:
        """Process the samples written to `ring` since the last call; returns frames done.

        The first call starts at the newest whole frames (at most `history` back). Samples
        overwritten before they were read count as a gap: the model state restarts.
        """
        end = ring.written
        if self._ring_index is None:
            self._ring_index = max(0, end - self._cap * FRAME)
        if end <= self._ring_index:
            return 0
        x, first = ring.read(self._ring_index, end)
        if first != self._ring_index:
            log.debug("vad: %d samples overwritten before read", first - self._ring_index)
            self.gaps += 1
            self.reset()
        self._ring_index = first + len(x)
        return self._feed(x, ring.time_of(first), check_gap=False)

    def feed(self, samples: np.ndarray, t_ns: int) -> int:
        """Process mono float32 16 kHz samples whose first was captured at t_ns.

        A t_ns more than 100 ms away from where the previous samples ended starts a new
        stream (the state is reset). Returns frames processed.
        """
        return self._feed(np.asarray(samples, dtype=np.float32).reshape(-1), t_ns, check_gap=True)

    def _feed(self, x: np.ndarray, t_ns: int, check_gap: bool) -> int:
        if len(x) == 0:
            return 0
        if self._pending_t_ns is not None and check_gap:
            expected = self._pending_t_ns + self._n_pending * 1_000_000_000 // SAMPLE_RATE
            if abs(t_ns - expected) > 100_000_000:
                self.gaps += 1
                self.reset()
        if self._n_pending == 0:
            self._pending_t_ns = t_ns
        n_total = self._n_pending + len(x)
        n_frames = n_total // FRAME
        if n_frames == 0:
            self._pending[self._n_pending : n_total] = x
            self._n_pending = n_total
            return 0
        audio = np.empty(n_frames * FRAME, dtype=np.float32)
        audio[: self._n_pending] = self._pending[: self._n_pending]
        take = n_frames * FRAME - self._n_pending
        audio[self._n_pending :] = x[:take]
        t0 = self._pending_t_ns
        rest = x[take:]
        self._n_pending = len(rest)
        self._pending[: len(rest)] = rest
        self._pending_t_ns = t0 + n_frames * self.frame_ns if len(rest) else None
        probs = self._run(audio.reshape(n_frames, FRAME))
        self._record(probs, t0)
        return n_frames

    def _run(self, frames: np.ndarray) -> np.ndarray:
        n = len(frames)
        batch = np.empty((n, CONTEXT + FRAME), dtype=np.float32)
        batch[:, CONTEXT:] = frames
        batch[0, :CONTEXT] = self._context
        if n > 1:
            batch[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = frames[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def _record(self, probs: np.ndarray, t0: int) -> None:
        for k, p in enumerate(probs):
            t = t0 + k * self.frame_ns
            if p >= self.threshold:
                self._silent_frames = 0
                if not self._triggered:
                    self._triggered = True
                    self._segments.append(SpeechSegment(t, None))
                self._last_speech_end = t + self.frame_ns
            elif self._triggered and p < self.neg_threshold:
                self._silent_frames += 1
                if self._silent_frames >= self.min_silence_frames:
                    self._triggered = False
                    self._silent_frames = 0
                    start = self._segments.pop().start_ns
                    self._segments.append(SpeechSegment(start, self._last_speech_end))
            i = self.frames % self._cap
            self._probs[i] = p
            self._speech[i] = self._triggered
            self._times[i] = t
            self.frames += 1

    # -- questions --------------------------------------------------------------------
    def _recent(self, last_ms: float | None) -> slice | np.ndarray:
        """Indices of the frames in the last `last_ms` before the newest processed frame."""
        n = min(self.frames, self._cap)
        if last_ms is not None:
            n = min(n, max(1, int(np.ceil(last_ms * 1e6 / self.frame_ns))))
        return np.arange(self.frames - n, self.frames) % self._cap

    def frame_probs(self, last_ms: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start times, speech probabilities) of the recent frames, oldest first."""
        idx = self._recent(last_ms)
        return self._times[idx].copy(), self._probs[idx].copy()

    def speech_prob(self, last_ms: float = 500.0) -> float:
        """Highest frame probability in the last `last_ms` (0 before any frame)."""
        idx = self._recent(last_ms)
        return float(self._probs[idx].max()) if len(idx) else 0.0

    def speech_fraction(self, last_ms: float = 2000.0) -> float:
        """Fraction of the frames in the last `last_ms` that were inside speech."""
        idx = self._recent(last_ms)
        return float(self._speech[idx].mean()) if len(idx) else 0.0

    def is_speech(self, last_ms: float = 500.0) -> bool:
        """Whether any frame of the last `last_ms` was inside speech (with hysteresis)."""
        idx = self._recent(last_ms)
        return bool(self._speech[idx].any()) if len(idx) else False

    @property
    def in_speech(self) -> bool:
        """Whether speech is going on at the newest processed frame."""
        return self._triggered

    @property
    def last_speech_ns(self) -> int | None:
        """End time of the newest frame at or above the threshold (None before any)."""
        return self._last_speech_end

    @property
    def processed_until_ns(self) -> int | None:
        """End time of the newest processed frame (None before any)."""
        if self.frames == 0:
            return None
        return int(self._times[(self.frames - 1) % self._cap]) + self.frame_ns

    def segments(self, since_ns: int | None = None) -> list[SpeechSegment]:
        """Speech segments, oldest first (the newest may be open: `end_ns` None)."""
        segs = list(self._segments)
        if since_ns is not None:
            segs = [s for s in segs if s.end_ns is None or s.end_ns >= since_ns]
        return segs
