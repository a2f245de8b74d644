"""Evaluate a face encoder on a FER2013-format file: predictions and the shared metrics report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.models.face.data import FerData
from affectstream.models.face.encoder import FaceEncoder, WeightsError
from affectstream.models.metrics import ClassificationReport, classification_report


class OnnxFacePredictor:
    """The `FaceEncoder.predict` contract on an exported ONNX file (float32 or int8), run by
    ONNX Runtime on the CPU: lets `eval face --onnx` measure an exported model's accuracy."""

    def __init__(self, path: str | Path, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError("--onnx needs onnxruntime (pip install onnxruntime)") from e
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for bad files
            raise WeightsError(f"ONNX model {path} unusable: {type(e).__name__}") from None

    def predict(self, crops: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        x = FaceEncoder.to_input(crops).numpy()
        logits, emb = self.session.run(["logits", "embedding"], {"x": x})
        probs = _softmax(logits)
        if tta:
            logits_f, emb_f = self.session.run(["logits", "embedding"], {"x": x[..., ::-1].copy()})
            probs = (probs + _softmax(logits_f)) / 2
            emb = (emb + emb_f) / 2
        return probs, emb


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict_probs(
    encoder: FaceEncoder | OnnxFacePredictor,
    images: np.ndarray,
    batch: int = 256,
    tta: bool = False,
) -> np.ndarray:
    """Probabilities (N, 7) for uint8 crops (N, 48, 48), in batches to bound memory."""
    out = [encoder.predict(images[i : i + batch], tta=tta)[0] for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def evaluate_fer(
    encoder: FaceEncoder | OnnxFacePredictor, data: FerData, tta: bool = False
) -> ClassificationReport:
    probs = predict_probs(encoder, data.images, tta=tta)
    return classification_report(data.labels, probs.argmax(1), LABELS)
