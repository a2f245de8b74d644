"""The face model's one inference path: crops in, (probs, embedding) out, over any backend.

`FacePredictor` wraps any object with `infer(dict[str, np.ndarray]) -> dict[str, np.ndarray]`
(an `affectstream.export` backend: PyTorch, ONNX Runtime, TensorRT; duck-typed, since models
do not import export). It owns the model's input and output names, the pre-processing
(uint8 (N, 48, 48) crops -> float32 (N, 1, 48, 48) in [0, 1]), the optional mirror
test-time augmentation and the softmax. The runtime stage, `eval face` and `bench face` all
call it; `affectstream.export.predictors` opens one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.core.numeric import softmax

INPUT_SIZE = 48  # crop side, pixels (models/face/net.py builds the CNN for it)
INPUT = "x"  # float32 (N, 1, 48, 48) in [0, 1]
LOGITS, EMBEDDING = "logits", "embedding"
OUTPUTS = (LOGITS, EMBEDDING)


class InferBackend(Protocol):
    """What a predictor needs of a backend (`affectstream.export.base.Backend` has it)."""

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def to_input(crops: np.ndarray) -> np.ndarray:
    """uint8 (N, 48, 48) or (48, 48) -> float32 (N, 1, 48, 48) in [0, 1]."""
    a = np.asarray(crops)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"face crops must be (N, 48, 48), got {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"face crops must be uint8, got {a.dtype}")
    return np.ascontiguousarray(a.astype(np.float32)[:, None] * np.float32(1.0 / 255.0))


class FacePredictor:
    """`predict(crops, tta=False) -> (probs (N, 7) float32 in LABELS order, embedding (N, D))`.

    Attributes:
        backend: what runs the network (`backend.name` says which one, when it has one).
        tta: default for `predict`'s mirror test-time augmentation (2x the cost).
    """

    labels = LABELS

    def __init__(self, backend: InferBackend, tta: bool = False) -> None:
        self.backend = backend
        self.tta = tta

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.backend.infer({INPUT: x})
        return softmax(out[LOGITS]), np.asarray(out[EMBEDDING], dtype=np.float32)

    def predict(self, crops: np.ndarray, tta: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings; `tta` averages with the mirrored face."""
        x = to_input(crops)
        probs, emb = self._run(x)
        if self.tta if tta is None else tta:
            probs_f, emb_f = self._run(np.ascontiguousarray(x[..., ::-1]))
            probs = (probs + probs_f) / 2
            emb = (emb + emb_f) / 2
        return probs, emb

    def describe(self) -> dict[str, Any]:
        d = getattr(self.backend, "describe", None)
        return {"model": "face", "tta": self.tta, **(d() if callable(d) else {})}
