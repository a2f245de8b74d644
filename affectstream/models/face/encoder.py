"""The face encoder used at run time: 48x48 uint8 crops in, common-label probabilities and an
embedding for the fusion model out.

PyTorch reference backend: BatchNorm is folded into the convolutions and the weights are kept
channels-last, which is what makes batch-1 CPU inference fast in PyTorch. Threads are the
caller's business (`torch.set_num_threads`). `export_onnx` writes the same module as an ONNX
graph whose input `x` is float32 (N, 1, 48, 48) in [0, 1] (uint8 / 255); outputs `logits`
(N, 7) and `embedding` (N, D).
"""

from __future__ import annotations

import logging
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from affectstream.core.labels import LABELS
from affectstream.models.face.net import INPUT_SIZE, FaceNet, FaceNetSpec, fuse_for_inference

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weight file that cannot be used (missing, corrupt, or for another label space)."""


def default_weights_path() -> Path:
    return Path(str(resources.files("affectstream.models") / "weights" / "face.pt"))


def load_checkpoint(path: str | Path | None = None) -> dict:
    path = Path(path) if path else default_weights_path()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"face weights not found: {path}") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise WeightsError(f"face weights {path} unreadable: {type(e).__name__}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "spec" not in ckpt:
        raise WeightsError(f"face weights {path}: not an affectstream face checkpoint")
    if list(ckpt.get("labels", [])) != list(LABELS):
        raise WeightsError(f"face weights {path}: label order {ckpt.get('labels')} != {LABELS}")
    return ckpt


class FaceEncoder:
    """`predict(crops) -> (probs (N, 7) in LABELS order, embedding (N, D))`."""

    def __init__(self, model: FaceNet, meta: dict | None = None):
        self.meta = meta or {}
        self.model = fuse_for_inference(model).eval().to(memory_format=torch.channels_last)
        self.embed_dim = model.spec.embed_dim
        self.labels = LABELS
        self.backend = None  # set by use_backend: run there instead of this torch module

    def use_backend(self, backend) -> FaceEncoder:
        """Run `predict` through an `affectstream.export` backend (same inputs and outputs)."""
        self.backend = backend
        return self

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend is None:
            return self.model(x)
        out = self.backend.infer({"x": np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(out["logits"]), torch.from_numpy(out["embedding"])

    @classmethod
    def load(cls, path: str | Path | None = None) -> FaceEncoder:
        """Shipped weights (`models/weights/face.pt`) unless `path` names another file."""
        ckpt = load_checkpoint(path)
        model = FaceNet(FaceNetSpec.from_dict(ckpt["spec"]))
        model.load_state_dict(ckpt["state_dict"])
        meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
        log.debug("face encoder loaded from %s", path or default_weights_path())
        return cls(model, meta)

    @staticmethod
    def to_input(crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, 48, 48) or (48, 48) -> float32 (N, 1, 48, 48) in [0, 1]."""
        a = np.asarray(crops)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"face crops must be (N, 48, 48), got {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"face crops must be uint8, got {a.dtype}")
        return torch.from_numpy(a.astype(np.float32) * (1.0 / 255.0)).unsqueeze(1)

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings; `tta` averages with the mirrored face (2x the cost)."""
        x = self.to_input(crops)
        logits, emb = self._forward(x)
        probs = torch.softmax(logits, 1)
        if tta:
            logits_f, emb_f = self._forward(torch.flip(x, dims=[3]))
            probs = (probs + torch.softmax(logits_f, 1)) / 2
            emb = (emb + emb_f) / 2
        return probs.numpy(), emb.numpy()

    def export_onnx(self, path: str | Path, opset: int = 17) -> Path:
        """ONNX graph with a dynamic batch axis; input `x` float32 [0, 1] (N, 1, 48, 48)."""
        path = Path(path)
        x = torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE)
        model = self.model.to(memory_format=torch.contiguous_format)
        try:
            with warnings.catch_warnings():
                # the TorchScript exporter is deprecated in favour of dynamo; it exports this
                # plain feed-forward module exactly and needs no extra dependency
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    input_names=["x"],
                    output_names=["logits", "embedding"],
                    dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "embedding": {0: "n"}},
                    opset_version=opset,
                    dynamo=False,
                )
        finally:
            self.model.to(memory_format=torch.channels_last)
        return path
