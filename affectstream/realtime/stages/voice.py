"""The voice stage: voice activity on the new audio, then the voice predictor on recent speech.

Silence makes the voice modality absent (not a confident "neutral"); so does a microphone
that is reconnecting. While someone speaks, the predictor sees the newest `window_s` seconds.

When the predictor has a session head (`models.voice.session`) and `session_norm` is on, the
class probabilities mix the network's own with a reading of the embedding standardised by
this stream's own running statistics (one `SpeakerNorm` per stage, so per stream; `reset_session` starts again), which
the head shrinks toward the training statistics while the stream has little speech. The
embedding handed on (to the fusion) is the encoder's own, unchanged.

With `utterance` naming feature sets whose heads lie beside the weights (eGeMAPS, Whisper
statistics), each utterance's readings by those heads (`utterance_reader.UtteranceReader`:
the extractor on a worker thread, about once a second of speech) are mixed into the
probabilities as `eval voice` mixes them into each clip's (`utterance.fuse_all`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

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
        utterance: Sequence[str] = (),
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
        self.utterance = tuple(utterance)
        self._readers = None  # this stream's UtteranceReaders, made when the heads are first seen

    def reset_session(self) -> None:
        """Forget this stream's voice statistics (a new speaker or session starts)."""
        self._norm = None
        for reader in self._readers or ():
            reader.reset_session()

    def _utterance_readers(self) -> list:
        """This stream's utterance readers, one per head named in `utterance` that lies
        beside the weights (a missing head is said once, and the rest read on)."""
        if self._readers is None:
            from affectstream.models.voice.utterance import SHORT_NAMES
            from affectstream.realtime.stages.utterance_reader import UtteranceReader

            heads = getattr(self.predictor, "utterance_heads", {})
            for f in self.utterance:
                if f not in heads:
                    log.warning(
                        "voice.%s is on, but these voice weights have no %s head beside them "
                        "(<encoder>.%s.npz): read without it", SHORT_NAMES[f], f, SHORT_NAMES[f]
                    )  # fmt: skip
            self._readers = [UtteranceReader(self.ring, heads[f]) for f in self.utterance
                             if f in heads]  # fmt: skip
        return self._readers

    def run(self, now_ns: int) -> ModalityResult | object | None:
        self.vad.update(self.ring)
        readers = self._utterance_readers()
        if (
            not self.available()
            or self.ring.written == 0
            or not self.vad.is_speech(self.speech_ms)
        ):
            for reader in readers:
                reader.silence()
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
        if readers:
            from affectstream.models.voice.utterance import SHORT_NAMES, fuse_all

            start = max(0, end - int(self.speech_ms * self.ring.sample_rate / 1000))
            for reader in readers:
                reader.speech(start)
                info[f"{SHORT_NAMES[reader.head.features]}_s"] = reader.reading_s
            probs = fuse_all(probs, [(r.head, r.reading) for r in readers])
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
