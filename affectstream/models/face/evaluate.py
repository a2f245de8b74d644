"""Evaluate the face model on a FER2013-format file: predictions and the shared metrics report.

Scoring goes through `predictor.FacePredictor` (any backend): `eval face` measures the code
the runtime stage runs.
"""

from __future__ import annotations

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.models.face.data import FerData
from affectstream.models.face.predictor import FacePredictor
from affectstream.models.metrics import ClassificationReport, classification_report


def predict_probs(
    predictor: FacePredictor, images: np.ndarray, batch: int = 256, tta: bool = False
) -> np.ndarray:
    """Probabilities (N, 7) for uint8 crops (N, 48, 48), in batches to bound memory."""
    out = [
        predictor.predict(images[i : i + batch], tta=tta)[0] for i in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def evaluate_fer(
    predictor: FacePredictor, data: FerData, tta: bool = False
) -> ClassificationReport:
    probs = predict_probs(predictor, data.images, tta=tta)
    return classification_report(data.labels, probs.argmax(1), LABELS)
