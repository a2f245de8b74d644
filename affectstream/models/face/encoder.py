"""The face encoder's torch module: 48x48 crops in, common-label logits and an embedding for
the fusion model out (run through `predictor.FacePredictor` on any backend).

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

import torch

from affectstream.core.errors import WeightsError
from affectstream.core.labels import LABELS
from affectstream.models.face.net import INPUT_SIZE, FaceNet, FaceNetSpec, fuse_for_inference
from affectstream.models.face.predictor import INPUT, OUTPUTS

log = logging.getLogger(__name__)


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


def net_from_checkpoint(ckpt: dict) -> FaceNet:
    """The trainable network of a checkpoint from `load_checkpoint` (not fused: for training,
    fine-tuning, or as a teacher)."""
    model = FaceNet(FaceNetSpec.from_dict(ckpt["spec"]))
    model.load_state_dict(ckpt["state_dict"])
    return model


class FaceEncoder:
    """The face CNN ready for inference (BatchNorm folded, channels-last) and its checkpoint
    metadata. Inference itself (pre-processing, softmax, TTA) is `predictor.FacePredictor`,
    over any backend; the export registry builds its torch module from `FaceEncoder.load`."""

    def __init__(self, model: FaceNet, meta: dict | None = None):
        self.meta = meta or {}
        self.model = fuse_for_inference(model).eval().to(memory_format=torch.channels_last)
        self.embed_dim = model.spec.embed_dim
        self.labels = LABELS

    @classmethod
    def load(cls, path: str | Path | None = None) -> FaceEncoder:
        """Shipped weights (`models/weights/face.pt`) unless `path` names another file."""
        ckpt = load_checkpoint(path)
        model = net_from_checkpoint(ckpt)
        meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
        log.debug("face encoder loaded from %s", path or default_weights_path())
        return cls(model, meta)

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
                    input_names=[INPUT],
                    output_names=list(OUTPUTS),
                    dynamic_axes={n: {0: "n"} for n in (INPUT, *OUTPUTS)},
                    opset_version=opset,
                    dynamo=False,
                )
        finally:
            self.model.to(memory_format=torch.channels_last)
        return path
