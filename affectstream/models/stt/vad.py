"""One streaming Silero VAD per audio stream, read by the voice stage and by the transcriber.

`VoiceActivity` runs the Silero VAD model that faster-whisper ships as ONNX
(`faster_whisper/assets/silero_vad_v6.onnx`, run with onnxruntime on one thread) and keeps its
state between calls: each call feeds only the audio that arrived since the last one, which
costs a fraction of a millisecond, and gives the same probabilities as running the model over
the whole recording at once (faster-whisper's `SileroVADModel`). ~6 ms of CPU per second of
audio.

The model reads 512-sample frames at 16 kHz, each with the last 64 samples of the previous
frame as context, and carries an LSTM state (h, c) from frame to frame. Every frame is
evaluated once per stream; its probability, time and sample index go into a bounded history
that two consumers read, each with the hysteresis it needs:

- **The voice stage** asks `is_speech(last_ms)`: is someone speaking (the voice modality is
  present)? A frame at or above `threshold` starts speech; speech ends once the probability
  has stayed below `neg_threshold` for `min_silence_ms`, so the short pauses between words do
  not flip the voice modality on and off. This is faster-whisper's rule
  (`get_speech_timestamps`), run online, and `VoiceActivity` applies it as frames arrive.
- **The transcriber** (`VadGate`, fed with `probs_between`) wants the opposite of bridging:
  the frame-exact end of the last voiced frame, to cut trailing silence before decoding
  (whisper repeats itself on silence) and to measure the silence that ends an utterance
  against its own `end_silence_s`, and the onset of the newest voiced run, to start the
  utterance with its pre-roll. So a frame is voiced when its probability is >= `threshold`,
  or >= `neg_threshold` right after a voiced frame (Silero's one-frame hysteresis), with no
  minimum silence. Bridging 300 ms inside the gate would move `voiced_end` past the last word.

Both thresholds come from the config (`voice.vad_threshold`, `transcriber.vad_threshold`);
the probabilities are shared, so the two may differ without a second model pass.

Who runs it: in `AffectStream` one `VoiceActivity` serves the voice stage (scheduler thread)
and the transcriber (its own thread); whoever calls `update(ring)` first evaluates the new
frames, the other finds them done. A lock makes `update` and the questions safe from both
threads (the model runs under it: ~0.1 ms per 32 ms frame). Without a voice stage (file
transcription), `OnlineTranscriber` feeds a private one with the samples it is given.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE

if TYPE_CHECKING:
    from affectstream.core.ringbuffer import SampleRing

log = logging.getLogger(__name__)

FRAME = 512  # samples per model frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees before each frame


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


@functools.lru_cache(maxsize=4)
def silero_session(model_path: str | None = None):
    """The ONNX Runtime session of the Silero model, one per file and process.

    Streams share it: the LSTM state travels as an input and output, and a session's `run`
    may be called from several threads at once.
    """
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(
        model_path or silero_model_path(), providers=["CPUExecutionProvider"], sess_options=opts
    )


def silero_probs(audio: np.ndarray, model_path: str | None = None) -> np.ndarray:
    """Speech probabilities of every whole frame of `audio` (16 kHz), from a fresh state."""
    vad = VoiceActivity(history_s=len(audio) / MODEL_SAMPLE_RATE + 1.0, model_path=model_path)
    n = vad.feed(audio, t_ns=0)
    return vad.frame_probs()[1][-n:] if n else np.zeros(0, dtype=np.float32)


class VoiceActivity:
    """Stateful, incremental Silero VAD over a 16 kHz stream; one per stream.

    Feed it with `update(ring)` (it reads only the samples new since the last call) or with
    `feed(samples, t_ns)`. Then ask `is_speech(last_ms)`, `speech_prob(last_ms)`,
    `speech_fraction(last_ms)` or `segments()` (the voice stage's rule, see the module
    docstring), or take the raw frames with `probs_between(start, stop)` (the transcriber's
    gate). Results cover whole frames: audio newer than the last complete 512-sample frame
    waits for the next call.

    Thread-safe: feeding and questions take one lock, so several threads (the scheduler and
    the transcriber) may call `update(ring)` on the same ring; each frame is evaluated once.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_silence_ms: float = 300.0,
        history_s: float = 60.0,
        max_segments: int = 64,
        sample_rate: int = MODEL_SAMPLE_RATE,
        model_path: str | None = None,
    ) -> None:
        if sample_rate != MODEL_SAMPLE_RATE:
            raise ValueError(f"VoiceActivity runs at {MODEL_SAMPLE_RATE} Hz, got {sample_rate} Hz")
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        self.min_silence_frames = max(
            1, int(np.ceil(min_silence_ms / 1000 * MODEL_SAMPLE_RATE / FRAME))
        )
        self.sample_rate = sample_rate
        self.frame_ns = FRAME * 1_000_000_000 // MODEL_SAMPLE_RATE  # 32 ms
        self._session = silero_session(model_path)
        self._lock = threading.RLock()

        # frame history, preallocated: probability, speech decision, start time, start index
        cap = max(1, int(np.ceil(history_s * MODEL_SAMPLE_RATE / FRAME)))
        self._probs = np.zeros(cap, dtype=np.float32)
        self._speech = np.zeros(cap, dtype=bool)
        self._times = np.zeros(cap, dtype=np.int64)
        self._index = np.zeros(cap, dtype=np.int64)
        self._cap = cap
        self.frames = 0  # frames evaluated since creation
        self._segments: deque[SpeechSegment] = deque(maxlen=max_segments)
        self._pending = np.zeros(FRAME, dtype=np.float32)
        self._last_speech_end = None
        self.gaps = 0  # discontinuities seen (samples lost, clock jumps): state was reset
        self._next_index: int | None = None  # sample index the next fed sample should have
        self.reset()

    # -- state ------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: clear the model state and the partial frame (history stays)."""
        with self._lock:
            self._h = np.zeros((1, 1, 128), dtype=np.float32)
            self._c = np.zeros((1, 1, 128), dtype=np.float32)
            self._context = np.zeros(CONTEXT, dtype=np.float32)
            self._n_pending = 0
            self._pending_t_ns: int | None = None
            self._pending_index = 0
            if self._segments and self._segments[-1].end_ns is None:  # close an open segment
                start = self._segments.pop().start_ns
                self._segments.append(SpeechSegment(start, self._last_speech_end or start))
            self._triggered = False
            self._silent_frames = 0
            self._last_speech_end: int | None = None  # end time of the newest speech frame

    # -- feeding ----------------------------------------------------------------------
    def update(self, ring: SampleRing) -> int:
        """Evaluate the samples written to `ring` since the last call; returns frames done.

        The first call starts at the newest whole frames (at most `history` back). Samples
        overwritten before they were read count as a gap: the model state restarts.
        """
        with self._lock:
            end = ring.written
            if self._next_index is None:
                self._next_index = max(0, end - self._cap * FRAME)
            if end <= self._next_index:
                return 0
            x, first = ring.read(self._next_index, end)
            if first != self._next_index:
                log.debug("vad: %d samples overwritten before read", first - self._next_index)
                self._gap()
            return self._feed(x, ring.time_of(first), first)

    def feed(self, samples: np.ndarray, t_ns: int, index: int | None = None) -> int:
        """Evaluate mono float32 16 kHz samples whose first was captured at t_ns.

        `index` numbers the first sample (default: right after the previous ones). An index
        other than that one, or (without an index) a t_ns more than 100 ms away from where
        the previous samples ended, starts a new stream (the state is reset). Returns the
        frames evaluated.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            if index is None:
                index = self._next_index or 0
                if self._pending_t_ns is not None:
                    expected = (
                        self._pending_t_ns + self._n_pending * 1_000_000_000 // MODEL_SAMPLE_RATE
                    )
                    if abs(t_ns - expected) > 100_000_000:
                        self._gap()
            elif self._next_index is not None and index != self._next_index:
                self._gap()
            return self._feed(x, t_ns, index)

    def _gap(self) -> None:
        self.gaps += 1
        self.reset()

    def _feed(self, x: np.ndarray, t_ns: int, index: int) -> int:
        self._next_index = index + len(x)
        if len(x) == 0:
            return 0
        if self._n_pending == 0:
            self._pending_t_ns = t_ns
            self._pending_index = index
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
        t0, i0 = self._pending_t_ns, self._pending_index
        rest = x[take:]
        self._n_pending = len(rest)
        self._pending[: len(rest)] = rest
        self._pending_t_ns = t0 + n_frames * self.frame_ns if len(rest) else None
        self._pending_index = i0 + n_frames * FRAME
        probs = self._run(audio.reshape(n_frames, FRAME))
        self._record(probs, t0, i0)
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

    def _record(self, probs: np.ndarray, t0: int, i0: int) -> None:
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
            self._index[i] = i0 + k * FRAME
            self.frames += 1

    # -- questions --------------------------------------------------------------------
    def _recent(self, last_ms: float | None) -> np.ndarray:
        """Indices of the frames in the last `last_ms` before the newest processed frame."""
        n = min(self.frames, self._cap)
        if last_ms is not None:
            n = min(n, max(1, int(np.ceil(last_ms * 1e6 / self.frame_ns))))
        return np.arange(self.frames - n, self.frames) % self._cap

    def frame_probs(self, last_ms: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start times, speech probabilities) of the recent frames, oldest first."""
        with self._lock:
            idx = self._recent(last_ms)
            return self._times[idx].copy(), self._probs[idx].copy()

    def probs_between(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The frames that end after sample `start` and at or before `stop` (sample indices).

        Returns (the sample index where each frame starts, its probability), oldest first;
        frames no longer in the history are left out.
        """
        with self._lock:
            idx = self._recent(None)
            starts = self._index[idx]  # increasing
            a, b = np.searchsorted(starts + FRAME, [start, stop], side="right")
            return starts[a:b].copy(), self._probs[idx[a:b]].copy()

    def speech_prob(self, last_ms: float = 500.0) -> float:
        """Highest frame probability in the last `last_ms` (0 before any frame)."""
        with self._lock:
            idx = self._recent(last_ms)
            return float(self._probs[idx].max()) if len(idx) else 0.0

    def speech_fraction(self, last_ms: float = 2000.0) -> float:
        """Fraction of the frames in the last `last_ms` that were inside speech."""
        with self._lock:
            idx = self._recent(last_ms)
            return float(self._speech[idx].mean()) if len(idx) else 0.0

    def is_speech(self, last_ms: float = 500.0) -> bool:
        """Whether any frame of the last `last_ms` was inside speech (with hysteresis)."""
        with self._lock:
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
        with self._lock:
            if self.frames == 0:
                return None
            return int(self._times[(self.frames - 1) % self._cap]) + self.frame_ns

    def segments(self, since_ns: int | None = None) -> list[SpeechSegment]:
        """Speech segments, oldest first (the newest may be open: `end_ns` None)."""
        with self._lock:
            segs = list(self._segments)
        if since_ns is not None:
            segs = [s for s in segs if s.end_ns is None or s.end_ns >= since_ns]
        return segs


class VadGate:
    """The transcriber's view of the frames: `voiced_end`, `onset` and `silence_samples`.

    Push frames with `push(starts, probs)` (from `VoiceActivity.probs_between`). Indices are
    sample numbers of the stream; samples before `origin` (the last `reset`) do not count. A frame is voiced when its probability is >=
    `threshold`, or >= `threshold - 0.15` right after a voiced one (Silero's usual
    hysteresis; why not the voice stage's rule: see the module docstring). No model here.
    Not thread-safe: one owner (the transcriber).
    """

    def __init__(self, threshold: float = 0.5, origin: int = 0) -> None:
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.reset(origin)

    def reset(self, origin: int = 0) -> None:
        """Forget all state; the next frame that counts ends after sample `origin`."""
        self.origin = origin
        self.processed = origin  # index after the last frame decided
        self.voiced = False  # state of the last frame
        self.onset = -1  # index where the current (or last) voiced run began
        self.voiced_end = -1  # index after the last voiced frame
        self.last_prob = 0.0

    @property
    def silence_samples(self) -> int:
        """Samples since the last voiced frame (all decided samples if none was voiced)."""
        return self.processed - (self.voiced_end if self.voiced_end >= 0 else self.origin)

    def push(self, starts: np.ndarray, probs: np.ndarray) -> None:
        """Decide frames in order: `starts` their first sample indices, `probs` Silero's."""
        for start, p in zip(np.asarray(starts).tolist(), np.asarray(probs).tolist(), strict=True):
            if start + FRAME <= self.processed:
                continue  # decided already
            self.processed = start + FRAME
            on = p >= self.threshold or (self.voiced and p >= self.neg_threshold)
            if on:
                if not self.voiced:
                    self.onset = start
                self.voiced_end = self.processed
            self.voiced = bool(on)
            self.last_prob = p
