"""The runtime's encoders, each running through one inference backend (`export.select`).

The stages call `predict` with what they hold (face crops, a window of audio, words); these
adapters do the model's own pre- and post-processing around `backend.infer`, so the same code
runs on PyTorch, ONNX Runtime or TensorRT. `backend.name` says which one was picked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from affectstream.core.config import Config

log = logging.getLogger(__name__)

VOICE_MIN_S = 0.2  # shorter audio is padded at the front (the CNN needs 16 mel frames)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _open(name: str, config: Config, weights: str):
    from affectstream.export.select import open_backend

    b = config.backend
    backend = open_backend(
        name,
        b.name,
        onnx_dir=b.onnx_dir or None,
        weights=_weights_path(name, weights),
        threads=b.threads,
        device=b.device,
    )
    log.info("%s encoder runs on %s", name, backend.name)
    return backend


def _shipped(name: str) -> Path | None:
    from importlib import resources

    p = Path(str(resources.files("affectstream") / "models" / "weights" / name))
    return p if p.is_file() else None


def _weights_path(name: str, weights: str) -> str | None:
    """A bare file name means one of the shipped weight files (e.g. voice.ensemble3.pt)."""
    if not weights:
        return None
    p = Path(weights)
    if not p.exists() and p.parent == Path("."):
        shipped = _shipped(weights)
        if shipped is not None:
            return str(shipped)
    return str(p)


class FaceModel:
    """48x48 grayscale uint8 crops -> (probs (N,7), embedding (N,D))."""

    def __init__(self, config: Config) -> None:
        b = config.backend
        int8 = _shipped("face.int8.onnx")
        if (
            config.face.int8_on_cpu
            and not config.face.weights
            and not b.onnx_dir  # exported files named by the user come first
            and b.device == "cpu"
            and b.name in ("auto", "onnxruntime")
            and int8 is not None
        ):
            from affectstream.export.onnxrt import OnnxRuntimeBackend

            self.backend = OnnxRuntimeBackend("face", int8, threads=b.threads).load()
            log.info("face encoder runs on onnxruntime (shipped int8 model)")
        else:
            self.backend = _open("face", config, config.face.weights)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (np.asarray(crops, dtype=np.float32) / 255.0)[:, None]
        out = self.backend.infer({"x": x})
        return softmax(out["logits"]), out["embedding"]


class VoiceModel:
    """16 kHz float32 samples (one window) -> (probs (1,7), embedding (1,D))."""

    def __init__(self, config: Config) -> None:
        self.backend = _open("voice", config, config.voice.weights)
        self.min_samples = int(VOICE_MIN_S * config.audio.sample_rate)

    def predict(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(samples, dtype=np.float32).reshape(1, -1)
        if x.shape[1] < self.min_samples:
            x = np.pad(x, ((0, 0), (self.min_samples - x.shape[1], 0)))
        out = self.backend.infer({"wave": x})
        return softmax(out["logits"]), out["embedding"]


class TextModel:
    """An utterance and the words heard before it -> (probs (1,7), embedding (1,D))."""

    def __init__(self, config: Config) -> None:
        from affectstream.models.text.encoder import Tokenizer
        from affectstream.models.text.net import TextModelSpec, default_weights_path

        path = Path(_weights_path("text", config.text.weights) or default_weights_path())
        spec = TextModelSpec.from_json(_safetensors_metadata(path)["spec"])
        self.use_context = spec.use_context
        self.tokenizer = Tokenizer(
            max_tokens=spec.max_tokens,
            context_tokens=spec.context_tokens if spec.use_context else 0,
        )
        self.backend = _open("text", config, str(path))

    def predict(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, mask, types = self.tokenizer(list(texts), contexts if self.use_context else None)
        out = self.backend.infer(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        return softmax(out["logits"]), out["embedding"]


def _safetensors_metadata(path: Path) -> dict:
    """The JSON header of a safetensors file, read without loading the tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"text weights not found: {path}")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {})
