"""A stateful, streaming Silero VAD that says where speech starts and how long it has been quiet.

The transcriber decodes only while someone speaks and ends an utterance after a short silence,
so it needs voice activity on every new block, not on whole files. This runs the Silero v6
model bundled with faster-whisper (no download) 512 samples at a time, carrying the LSTM state
and the 64-sample context between calls; results equal the batch `get_speech_timestamps` model
pass on the same audio. ~6 ms of CPU per second of audio.
"""

from __future__ import annotations

import numpy as np

WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms)
_CONTEXT = 64


class VadGate:
    """Feed samples with `push`; read `voiced_end`, `onset` and `silence_samples`.

    Indices count samples pushed since the last `reset` (plus `origin`). A window is voiced
    when its probability is >= `threshold`, or >= `threshold - 0.15` right after a voiced one
    (Silero's usual hysteresis).
    """

    def __init__(self, threshold: float = 0.5, origin: int = 0) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self._pending = np.zeros(WINDOW, dtype=np.float32)
        self.reset(origin)

    def reset(self, origin: int = 0) -> None:
        """Forget all state; the next pushed sample has index `origin`."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._n_pending = 0
        self.origin = origin
        self.processed = origin  # index after the last sample decided
        self.voiced = False  # state of the last window
        self.onset = -1  # index where the current (or last) voiced run began
        self.voiced_end = -1  # index after the last voiced window
        self.last_prob = 0.0

    @property
    def silence_samples(self) -> int:
        """Samples since the last voiced window (all decided samples if none was voiced)."""
        return self.processed - (self.voiced_end if self.voiced_end >= 0 else self.origin)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Decide every complete window of the new samples; returns their probabilities."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        total = self._n_pending + len(x)
        n_win = total // WINDOW
        if n_win == 0:
            self._pending[self._n_pending : total] = x
            self._n_pending = total
            return np.zeros(0, dtype=np.float32)
        take = n_win * WINDOW - self._n_pending
        blocks = np.empty((n_win, _CONTEXT + WINDOW), dtype=np.float32)
        flat = np.concatenate([self._pending[: self._n_pending], x[:take]]).reshape(n_win, WINDOW)
        blocks[:, _CONTEXT:] = flat
        blocks[0, :_CONTEXT] = self._context
        if n_win > 1:
            blocks[1:, :_CONTEXT] = flat[:-1, -_CONTEXT:]
        self._context = flat[-1, -_CONTEXT:].copy()
        rest = len(x) - take
        self._pending[:rest] = x[take:]
        self._n_pending = rest

        out, self._h, self._c = self._session.run(
            None, {"input": blocks, "h": self._h, "c": self._c}
        )
        probs = np.asarray(out, dtype=np.float32).reshape(-1)
        for p in probs:
            start = self.processed
            self.processed += WINDOW
            on = p >= self.threshold or (self.voiced and p >= self.neg_threshold)
            if on:
                if not self.voiced:
                    self.onset = start
                self.voiced_end = self.processed
            self.voiced = bool(on)
            self.last_prob = float(p)
        return probs
