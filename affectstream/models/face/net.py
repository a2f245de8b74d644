"""The face expression CNN: a compact VGG-style network for 48x48 grayscale crops.

Sized so that one face costs about 3 ms in float32 ONNX Runtime on one CPU core (about 1.5 ms
int8), while reaching FER2013 accuracy near the large VGG peers: four stages of two 3x3 conv-BN-ReLU layers (the last
stage at 6x6), a max-pool to 3x3, and one fully connected layer whose 256-d output is the
embedding that the fusion model consumes.

Input contract: float32 (N, 1, 48, 48) with pixel values in [0, 1] (uint8 / 255). The
normalisation ((x - 0.5077) / 0.2550) happens inside the model, so an exported
ONNX graph takes the same raw [0, 1] input. No data-dependent Python control flow: the module
traces and exports as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

INPUT_SIZE = 48
# Input normalisation, a rough FER2013 centring (the Training set's exact pixel mean and std
# are 0.514 and 0.307; BatchNorm after the first conv makes the exact values immaterial).
# They are buffers, so a checkpoint carries the values it was trained with.
PIXEL_MEAN = 0.5077
PIXEL_STD = 0.2550


@dataclass(frozen=True)
class FaceNetSpec:
    """Architecture hyper-parameters, stored with the weights so a checkpoint rebuilds itself."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 256
    num_classes: int = 7
    dropout: float = 0.4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FaceNetSpec:
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class FaceNet(nn.Module):
    """`forward(x) -> (logits (N, classes), embedding (N, embed_dim))`; x in [0, 1]."""

    def __init__(self, spec: FaceNetSpec | None = None):
        super().__init__()
        self.spec = spec = spec or FaceNetSpec()
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN))
        self.register_buffer("std", torch.tensor(PIXEL_STD))
        layers: list[nn.Module] = []
        cin = 1
        for w in spec.widths:
            layers += _conv_bn_relu(cin, w) + _conv_bn_relu(w, w)
            layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        side = INPUT_SIZE // 2 ** len(spec.widths)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, spec.embed_dim, bias=False),
            nn.BatchNorm1d(spec.embed_dim),
            nn.ReLU(True),
        )
        self.drop = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.embed_dim, spec.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        emb = self.embed(self.features(x))
        return self.head(self.drop(emb)), emb


def fuse_for_inference(model: FaceNet) -> FaceNet:
    """Fold each BatchNorm into the preceding conv/linear (eval only): fewer ops per face."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    model.eval()
    feats = list(model.features)
    fused: list[nn.Module] = []
    i = 0
    while i < len(feats):
        m = feats[i]
        if (
            isinstance(m, nn.Conv2d)
            and i + 1 < len(feats)
            and isinstance(feats[i + 1], nn.BatchNorm2d)
        ):
            fused.append(fuse_conv_bn_eval(m, feats[i + 1]))
            i += 2
            continue
        fused.append(m)
        i += 1
    model.features = nn.Sequential(*fused)
    flat, lin, bn, relu = model.embed
    model.embed = nn.Sequential(flat, fuse_linear_bn_eval(lin, bn), relu)
    return model


def count_macs(spec: FaceNetSpec) -> int:
    """Multiply-accumulates per face (convs and linears), for sizing against the CPU budget."""
    macs, cin, side = 0, 1, INPUT_SIZE
    for w in spec.widths:
        macs += side * side * 9 * (cin * w + w * w)
        cin, side = w, side // 2
    macs += cin * side * side * spec.embed_dim + spec.embed_dim * spec.num_classes
    return macs
