"""Typed messages that flow through the runtime, each stamped with a monotonic capture time.

All `*_ns` fields are on the stream clock (`core.clock.now_ns`, or the media clock when a
file is replayed as fast as possible). `Estimate.to_json` gives one JSON object per line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from affectstream.core.labels import LABELS, MODALITIES


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One BGR uint8 image (H, W, 3) and the time it was captured."""

    t_ns: int
    index: int
    image: np.ndarray


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_ns: int
    end_ns: int
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """Words with times on the stream clock; `final` once committed by local agreement."""

    t_start_ns: int
    t_end_ns: int
    text: str
    words: tuple[Word, ...] = ()
    final: bool = False
    emitted_ns: int = 0


def _round(x: float, nd: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), nd)


@dataclass(slots=True)
class Estimate:
    """The rolling output, one per scheduler tick.

    `relevance` sums to 1 over the modalities the fusion read (0 for the others): the present
    ones, and with the learned fusion a voice it still holds for a moment after the speaker
    stopped (its `present` is then false: nothing new is heard); `age_ms` is emit
    time minus the capture time of the newest input used, per modality (None when absent);
    `modalities` holds each present modality's own probabilities, so a user sees who says
    what beside the fused result (a polite smile over an angry voice).
    """

    t: float
    probs: np.ndarray
    valence: float
    arousal: float
    confidence: float
    relevance: dict[str, float]
    present: dict[str, bool]
    age_ms: dict[str, float | None]
    stages_ms: dict[str, float]
    dropped: dict[str, int] = field(default_factory=dict)
    stale: dict[str, bool] = field(default_factory=dict)
    overrun: bool = False
    transcript: str = ""
    tick: int = 0
    emitted_ns: int = 0
    # per modality, why it is or is not present: ok, stale, absent (silence, no face, no
    # words), missing (no recent input), timeout (its stage did not answer in time), error:
    # ... (its stage raised or gave NaN), off (not configured)
    status: dict[str, str] = field(default_factory=dict)
    # each present modality's own view, beside the fused one: who says what
    modalities: dict[str, dict] = field(default_factory=dict)
    # every face in view while the face is present: {id, box (x, y, w, h) frame pixels,
    # probs, primary}; the fused estimate and the relevance follow the primary one
    faces: list[dict] = field(default_factory=list)

    @property
    def emotion(self) -> str:
        return LABELS[int(np.argmax(self.probs))]

    def to_dict(self, faces: bool = True) -> dict:
        """The estimate as JSON-ready values; `faces` False leaves out the list of faces (the
        server's protocol 1, whose schema has no `faces`)."""
        out = {
            "t": _round(self.t),
            "tick": self.tick,
            "emotion": self.emotion,
            "probs": {k: _round(p) for k, p in zip(LABELS, self.probs, strict=True)},
            "valence": _round(self.valence),
            "arousal": _round(self.arousal),
            "confidence": _round(self.confidence),
            "relevance": {m: _round(self.relevance.get(m, 0.0)) for m in MODALITIES},
            "present": {m: bool(self.present.get(m, False)) for m in MODALITIES},
            "stale": {m: bool(self.stale.get(m, False)) for m in MODALITIES},
            "age_ms": {m: _round(self.age_ms.get(m), 2) for m in MODALITIES},
            "status": {m: self.status.get(m, "off") for m in MODALITIES},
            "modalities": {m: _view(v) for m, v in self.modalities.items()},
            "stages_ms": {k: _round(v, 3) for k, v in self.stages_ms.items()},
            "dropped": dict(self.dropped),
            "overrun": self.overrun,
            "transcript": self.transcript,
        }
        if faces:
            out["faces"] = [_face(f) for f in self.faces]
        return out

    def to_json(self, faces: bool = True) -> str:
        return json.dumps(self.to_dict(faces), separators=(",", ":"))


def _face(f: dict) -> dict:
    """One face in view: its id, box, own reading and whether the estimate follows it."""
    p = f["probs"]
    return {
        "id": int(f["id"]),
        "box": [int(v) for v in f["box"]],
        "emotion": LABELS[int(np.argmax(p))],
        "probs": _probs(p),
        "confidence": _round(float(np.max(p))),
        "primary": bool(f["primary"]),
    }


def _view(v: dict) -> dict:
    """One modality's view: its newest output (emotion, probs, confidence) and, where the
    fusion read it, the distribution the fusion mixed (`reading`)."""
    out = {
        "emotion": LABELS[int(np.argmax(v["probs"]))],
        "probs": _probs(v["probs"]),
        "confidence": _round(float(np.max(v["probs"]))),
    }
    if v.get("reading") is not None:
        out["reading"] = _probs(v["reading"])
    return out


def _probs(p) -> dict[str, float]:
    return {k: _round(x) for k, x in zip(LABELS, p, strict=True)}
