"""The face stage: newest frame → main face → crop → face predictor, at most once per frame."""

from __future__ import annotations

from affectstream.core.messages import VideoFrame
from affectstream.core.ringbuffer import RingBuffer
from affectstream.realtime.stages.base import ModalityResult, Stage


class FaceStage(Stage):
    name = "face"

    def __init__(self, ring: RingBuffer[VideoFrame], tracker, predictor) -> None:
        self.ring = ring
        self.tracker = tracker
        self.predictor = predictor
        self._last_seq = -1
        self.frames_seen = 0
        self.frames_with_face = 0

    def run(self, now_ns: int) -> ModalityResult | None:
        slot = self.ring.newest()
        if slot is None or slot.seq == self._last_seq or slot.t_ns > now_ns:
            return None  # nothing new: the previous result ages
        self._last_seq = slot.seq
        self.frames_seen += 1
        crop = self.tracker.process(slot.item.image)
        if crop is None:
            return None
        self.frames_with_face += 1
        probs, emb = self.predictor.predict(crop.image[None])
        return ModalityResult(
            probs=probs[0],
            t_ns=slot.t_ns,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info={"box": tuple(int(v) for v in crop.box)},
        )

    def warmup(self) -> None:
        import numpy as np

        for _ in range(3):
            self.predictor.predict(np.zeros((1, 48, 48), np.uint8))

    def counters(self) -> dict[str, int]:
        return {"video_frames_not_used": max(0, self.ring.written - self.frames_seen)}
