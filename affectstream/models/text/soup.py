"""Checkpoint averaging ("model soup") for text weights files that share one starting point.

Fine-tuning runs that start from the same weights and differ only in seed or epoch stay in
one basin of the loss, so the mean of their weights is a model about as good as an ensemble
of them, at the cost of one model: the live path runs a single ONNX file, so an ensemble
would multiply the text stage's latency. Only the tensors a weights file stores (the head and
the fine-tuned top layers) are averaged; the frozen base is shared by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from affectstream.models.text.net import TextEmotionNet, load_net, save_weights, trained_state


def average(paths: Sequence[str | Path], base: Path | None = None) -> tuple[TextEmotionNet, dict]:
    """(net holding the mean of the files' trained tensors, info naming the files).

    Raises ValueError when the files differ in spec (layers, width, context): their tensors
    would not mean the same thing.
    """
    if not paths:
        raise ValueError("nothing to average")
    net, _ = load_net(paths[0], base)
    total = {k: v.double().clone() for k, v in trained_state(net).items()}
    for path in paths[1:]:
        other, _ = load_net(path, base)
        if asdict(other.spec) != asdict(net.spec):
            raise ValueError(f"{path}: spec {asdict(other.spec)} differs from {paths[0]}")
        for k, v in trained_state(other).items():
            total[k] += v.double()
    mean = {k: (v / len(paths)).to(torch.float32) for k, v in total.items()}
    net.load_state_dict(mean, strict=False)
    return net.eval(), {"averaged": [str(p) for p in paths]}


def write_average(
    paths: Sequence[str | Path], out: str | Path, command: str, base: Path | None = None
) -> Path:
    net, info = average(paths, base)
    return save_weights(net, out, {"command": command, **info})
