"""The voice stage: voice activity on the new audio, then the voice predictor on recent speech.

Silence makes the voice modality absent (not a confident "neutral"); so does a microphone
that is reconnecting. While someone speaks, the predictor sees the newest `window_s` seconds.

When the predictor has a session head (`models.voice.session`) and `session_norm` is on, the
class probabilities mix the network's own with a reading of the embedding standardised by
this stream's own running statistics (one `SpeakerNorm` per stage, so per stream; `reset_session` starts again), which
the head shrinks toward the training statistics while the stream has little speech. The
embedding handed on (to the fusion) is the encoder's own, unchanged.

With `egemaps` on and an eGeMAPS head beside the weights, each utterance's eGeMAPS reading
(`utterance_egemaps.UtteranceEgemaps`: openSMILE on a worker thread, about once a second of
speech) is mixed into the probabilities as `eval voice` mixes it into each clip's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage

log = logging.getLogger(__name__)


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
        self._eg = None  # this stream's UtteranceEgemaps, made when the head is first seen

    def reset_session(self) -> None:
        """Forget this stream's voice statistics (a new speaker or session starts)."""
        self._norm = None
        if self._eg is not None:
            self._eg.reset_session()

    def _utterances(self):
        """This stream's eGeMAPS reader, or None when the branch is off or has no head."""
        if self._eg is None and self.egemaps:
            head = getattr(self.predictor, "egemaps", None)
            if head is None:
                log.warning(
                    "voice.egemaps is on, but these voice weights have no eGeMAPS head beside "
                    "them (<encoder>.egemaps.npz): the CNN path alone"
                )
                self.egemaps = False  # said once
            else:
                from affectstream.realtime.stages.utterance_egemaps import UtteranceEgemaps

                self._eg = UtteranceEgemaps(self.ring, head)
        return self._eg

    def run(self, now_ns: int) -> ModalityResult | object | None:
        self.vad.update(self.ring)
        eg = self._utterances()
        if (
            not self.available()
            or self.ring.written == 0
            or not self.vad.is_speech(self.speech_ms)
        ):
            if eg is not None:
                eg.silence()
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
        if eg is not None:
            eg.speech(max(0, end - int(self.speech_ms * self.ring.sample_rate / 1000)))
            probs = eg.fuse(probs)
            info["egemaps_s"] = eg.reading_s
        t_newest = t0 + int(len(x) * 1e9 / self.ring.sample_rate)
        return ModalityResult(
            probs=probs[0],
            t_ns=t_newest,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info=info,
        )

    def warmup(self) -> None:
        import numpy as np

        for _ in range(3):
            self.predictor.predict(np.zeros(self.window, np.float32))

    def counters(self) -> dict[str, int]:
        return {"vad_gaps": int(self.vad.gaps)}
