"""Evaluate a face encoder on a FER2013-format file: predictions and the shared metrics report."""

from __future__ import annotations

import numpy as np

from affectstream.labels import LABELS
from affectstream.models.face.data import FerData
from affectstream.models.face.encoder import FaceEncoder
from affectstream.models.metrics import ClassificationReport, classification_report


def predict_probs(
    encoder: FaceEncoder, images: np.ndarray, batch: int = 256, tta: bool = False
) -> np.ndarray:
    """Probabilities (N, 7) for uint8 crops (N, 48, 48), in batches to bound memory."""
    out = [encoder.predict(images[i : i + batch], tta=tta)[0] for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def evaluate_fer(encoder: FaceEncoder, data: FerData, tta: bool = False) -> ClassificationReport:
    probs = predict_probs(encoder, data.images, tta=tta)
    return classification_report(data.labels, probs.argmax(1), LABELS)
