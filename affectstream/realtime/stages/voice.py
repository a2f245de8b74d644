"""The voice stage: voice activity on the new audio, then the voice predictor on recent speech.

Silence makes the voice modality absent (not a confident "neutral"); so does a microphone
that is reconnecting. While someone speaks, the predictor sees the newest `window_s` seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage


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
    ) -> None:
        self.ring = ring
        self.vad = vad
        self.predictor = predictor
        self.window = int(window_s * ring.sample_rate)
        self.speech_ms = speech_ms
        self.available = available
        self._last_end = -1

    def run(self, now_ns: int) -> ModalityResult | object | None:
        self.vad.update(self.ring)
        if not self.available() or self.ring.written == 0:
            return ABSENT
        if not self.vad.is_speech(self.speech_ms):
            return ABSENT
        end = self.ring.written
        if end == self._last_end:
            return None  # no new audio since the last tick
        self._last_end = end
        x, t0 = self.ring.latest(self.window)
        probs, emb = self.predictor.predict(x)
        t_newest = t0 + int(len(x) * 1e9 / self.ring.sample_rate)
        return ModalityResult(
            probs=probs[0],
            t_ns=t_newest,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info={"speech_prob": self.vad.speech_prob(self.speech_ms)},
        )

    def warmup(self) -> None:
        import numpy as np

        for _ in range(3):
            self.predictor.predict(np.zeros(self.window, np.float32))

    def counters(self) -> dict[str, int]:
        return {"vad_gaps": int(self.vad.gaps)}
