"""The face stage: newest frame → every face → crops → face predictor (one batch), at most
once per frame.

Every face in view is read (up to `face.max_faces`), all crops in one call of the model; the
result the fusion reads is the primary face's (`models/face/primary.py`), and every face's
own reading travels in `info["faces"]` into the estimate's `faces`. When the primary changes
to another person, `on_primary_change` is called (the stream makes the fusion forget the
previous person's face, so the fused estimate follows the new one at once).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from affectstream.core.messages import VideoFrame
from affectstream.core.ringbuffer import RingBuffer
from affectstream.models.face.primary import PrimaryFace
from affectstream.realtime.stages.base import ModalityResult, Stage


class FaceStage(Stage):
    name = "face"

    def __init__(
        self, ring: RingBuffer[VideoFrame], tracker, predictor, primary: PrimaryFace | None = None
    ) -> None:
        self.ring = ring
        self.tracker = tracker
        self.predictor = predictor
        self.primary = primary or PrimaryFace()
        self.on_primary_change: Callable[[], None] | None = None
        self._last_seq = -1
        self.frames_seen = 0
        self.frames_with_face = 0

    def run(self, now_ns: int) -> ModalityResult | None:
        slot = self.ring.newest()
        if slot is None or slot.seq == self._last_seq or slot.t_ns > now_ns:
            return None  # nothing new: the previous result ages
        self._last_seq = slot.seq
        self.frames_seen += 1
        image = slot.item.image  # a pushed JPEG/PNG decodes here, or is None if it cannot
        faces = self.tracker.process_all(image) if image is not None else []
        if not faces:
            return None
        self.frames_with_face += 1
        probs, emb = self.predictor.predict(np.stack([f.image for f in faces]))
        before = self.primary.current
        pid = self.primary.choose([(f.id, float(f.box[2] * f.box[3])) for f in faces], slot.t_ns)
        if before is not None and pid != before and self.on_primary_change is not None:
            self.on_primary_change()
        k = next(i for i, f in enumerate(faces) if f.id == pid)
        views = [
            {"id": f.id, "box": tuple(int(v) for v in f.box), "probs": probs[i], "primary": i == k}
            for i, f in enumerate(faces)
        ]
        return ModalityResult(
            probs=probs[k],
            t_ns=slot.t_ns,
            embedding=emb[k],
            confidence=float(probs[k].max()),
            info={"box": views[k]["box"], "face_id": pid, "faces": views},
        )

    def warmup(self) -> None:
        for _ in range(3):
            self.predictor.predict(np.zeros((1, 48, 48), np.uint8))

    def counters(self) -> dict[str, int]:
        return {"video_frames_not_used": max(0, self.ring.written - self.frames_seen)}
