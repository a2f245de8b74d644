"""The voice stage: voice activity on the new audio, then the voice predictor on recent speech.

Silence makes the voice modality absent (not a confident "neutral"); so does a microphone
that is reconnecting. While someone speaks, the predictor sees the newest `window_s` seconds.

When the predictor has a session head (`models.voice.session`) and `session_norm` is on, the
class probabilities mix the network's own with a reading of the embedding standardised by
this stream's own running statistics (one `SpeakerNorm` per stage, so per stream; `reset_session` starts again), which
the head shrinks toward the training statistics while the stream has little speech. The
embedding handed on (to the fusion) is the encoder's own, unchanged.

When the predictor has an eGeMAPS head (`models.voice.egemaps`, the optional opensmile
package) and `egemaps` is on, the current voiced span (its newest `EGEMAPS_MAX_S` seconds) is
also read as eGeMAPS functionals, once per `EGEMAPS_HOP_S` of new speech, on a background
thread (one span waiting at most: a newer span replaces it), standardised by this stream's
own eGeMAPS statistics; the newest reading of the current span is fused into each tick's
probabilities (`EgemapsHead.fuse`). A span's first ticks, before its first reading, are the
CNN path's alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage

log = logging.getLogger(__name__)

EGEMAPS_HOP_S = 1.0  # new speech between two eGeMAPS readings of a span (the first: after 1 s)
EGEMAPS_MAX_S = 4.0  # the newest speech of a span that one reading covers


class UtteranceReader:
    """eGeMAPS readings of one stream's voiced spans on a background thread.

    `submit` hands the newest span (keep newest: a span still waiting is replaced, its speech
    seconds carried over, and counted in `replaced`); the thread extracts its functionals and
    reads them in the stream's eGeMAPS session; `latest(span)` is the newest reading of span
    `span`, or None. `reset` starts a new session; `close` stops the thread.
    """

    def __init__(self, head, extractor_factory: Callable[[], Callable] | None = None) -> None:
        self.head = head
        self._factory = extractor_factory
        self._cv = threading.Condition()
        self._pending: tuple | None = None
        self._result: tuple[int, np.ndarray] | None = None
        self._norm = head.new_session()
        self._generation = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.replaced = 0
        self.readings = 0
        self.error = ""

    @property
    def session_s(self) -> float:
        return float(self._norm.seconds)

    def submit(self, samples: np.ndarray, seconds: float, span: int) -> None:
        with self._cv:
            if self._closed:
                return
            if self._pending is not None:
                self.replaced += 1
                seconds += self._pending[1]
            self._pending = (samples, seconds, span, self._generation)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="voice-egemaps", daemon=True
                )
                self._thread.start()
            self._cv.notify()

    def latest(self, span: int) -> np.ndarray | None:
        r = self._result
        return r[1] if r is not None and r[0] == span else None

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until nothing waits or is being read (tests)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending is None and not self._busy, timeout_s)

    _busy = False

    def reset(self) -> None:
        with self._cv:
            self._generation += 1
            self._pending = None
            self._result = None
            self._norm = self.head.new_session()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._pending = None
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            if self._factory is not None:
                extract = self._factory()
            else:
                from affectstream.models.voice.egemaps import EgemapsExtractor

                extract = EgemapsExtractor()
        except Exception as e:  # opensmile missing or broken: the CNN path goes on alone
            self.error = str(e)
            log.warning("eGeMAPS branch off: %s", e)
            with self._cv:
                self._closed, self._pending = True, None
                self._cv.notify_all()
            return
        while True:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
                self._cv.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                samples, seconds, span, gen = self._pending
                self._pending, self._busy = None, True
            feats = extract(samples)
            with self._cv:
                if gen == self._generation:
                    self._result = (span, self.head.step(self._norm, feats, seconds)[0])
                    self.readings += 1


class VoiceStage(Stage):
    name = "voice"

    def __init__(
        self,
        ring: SampleRing,
        vad,
        predictor,
        window_s: float = 2.0,
        speech_ms: float = 300.0,
        available: Callable[[], bool] = lambda: True,
        session_norm: bool = True,
        egemaps: bool = False,
    ) -> None:
        self.ring = ring
        self.vad = vad
        self.predictor = predictor
        self.window = int(window_s * ring.sample_rate)
        self.speech_ms = speech_ms
        self.available = available
        self._last_end = -1
        self.session_norm = session_norm
        self._norm = None  # this stream's SpeakerNorm, made when the head is first seen
        self.egemaps = egemaps
        self._reader: UtteranceReader | None = None  # made when the eGeMAPS head is first seen
        self._span = 0  # the number of the current voiced span (0: none yet)
        self._span_start = -1  # ring index where it started; -1: no speech now
        self._eg_last = 0  # ring index up to which the span was handed to the reader

    def reset_session(self) -> None:
        """Forget this stream's voice statistics (a new speaker or session starts)."""
        self._norm = None
        if self._reader is not None:
            self._reader.reset()

    def close(self) -> None:
        """Stop the eGeMAPS thread, if one runs."""
        if self._reader is not None:
            self._reader.close()

    def run(self, now_ns: int) -> ModalityResult | object | None:
        self.vad.update(self.ring)
        if not self.available() or self.ring.written == 0:
            return ABSENT
        if not self.vad.is_speech(self.speech_ms):
            self._span_start = -1
            return ABSENT
        end = self.ring.written
        if end == self._last_end:
            return None  # no new audio since the last tick
        new = end - max(0, self._last_end)
        self._last_end = end
        x, t0 = self.ring.latest(self.window)
        probs, emb = self.predictor.predict(x)
        info = {"speech_prob": self.vad.speech_prob(self.speech_ms)}
        head = getattr(self.predictor, "session", None) if self.session_norm else None
        if head is not None:
            if self._norm is None:
                self._norm = head.new_session()
            seconds = min(new, len(x)) / self.ring.sample_rate
            probs = head.step(self._norm, emb[0], seconds, probs[0])
            info["session_s"] = self._norm.seconds
        eg = getattr(self.predictor, "egemaps", None) if self.egemaps else None
        if eg is not None:
            probs = self._fuse_egemaps(eg, end, probs, info)
        t_newest = t0 + int(len(x) * 1e9 / self.ring.sample_rate)
        return ModalityResult(
            probs=probs[0],
            t_ns=t_newest,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info=info,
        )

    def _fuse_egemaps(self, head, end: int, probs: np.ndarray, info: dict) -> np.ndarray:
        """Hand the current span to the reader when it has new speech enough; fuse the span's
        newest reading into `probs` (1, 7)."""
        if self._reader is None:
            self._reader = UtteranceReader(head)
        sr = self.ring.sample_rate
        if self._span_start < 0:  # a new span: it began about speech_ms ago
            self._span += 1
            self._span_start = max(0, end - int((self.speech_ms / 1000 + 0.15) * sr))
            self._eg_last = self._span_start
        if end - self._eg_last >= EGEMAPS_HOP_S * sr:
            x, _ = self.ring.read(max(self._span_start, end - int(EGEMAPS_MAX_S * sr)), end)
            self._reader.submit(x, (end - self._eg_last) / sr, self._span)
            self._eg_last = end
        reading = self._reader.latest(self._span)
        info["egemaps"] = reading is not None
        info["egemaps_session_s"] = self._reader.session_s
        return head.fuse(probs, reading)

    def warmup(self) -> None:
        for _ in range(3):
            self.predictor.predict(np.zeros(self.window, np.float32))

    def counters(self) -> dict[str, int]:
        out = {"vad_gaps": int(self.vad.gaps)}
        if self._reader is not None:
            out["egemaps_replaced"] = int(self._reader.replaced)
        return out
