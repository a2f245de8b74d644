"""Calibrating the fused confidence: what the estimate's `confidence` (its top probability)
should mean, on streams the calibration never saw.

The fused distribution is the relevance-weighted mixture of the modalities' readings
(`net.py`); its log is divided by a temperature. One temperature fitted on one development
stream (the shipped file's `state["temperature"]`) held there, but not once the encoders' accuracy
shifted (issue 22). This module fits and applies a **temperature per tick** that depends on
what the model knows at run time, `log T = w . features`:

- `rel_face`, `rel_voice`, `rel_text`: the relevance, so each modality's share of the estimate
  brings its own measured reliability (a face read over its last seconds is right far more
  often than the live words are);
- `agree`: the share of the relevance whose modality's reading has the fused class (1 with one
  modality; low when the modalities disagree, which they do more when the encoders err);
- `top`: the mixture's top probability before any temperature.

A per-tick positive temperature never changes the fused class: only the confidence moves.
The weights are fitted by negative log-likelihood on pooled replays of several development
streams of different difficulty (`fit`), and judged by leaving each stream out in turn
(`scripts/fusion_calibration.py`). Only numpy at run time; the fit uses torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from affectstream.core.labels import MODALITIES

EPS = 1e-6  # as in the net: log(mix + EPS)
FEATURES = ("rel_face", "rel_voice", "rel_text", "agree", "top")
COMPANION = "fusion.calibration.json"  # beside the weights file


def features(relevance: np.ndarray, reading: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """(N, len(FEATURES)) from the relevance (N, 3), the readings (N, 3, 7) and their mixture
    (N, 7), all of which the model gives at run time."""
    relevance = np.asarray(relevance, np.float64)
    mix = np.asarray(mix, np.float64)
    fused = mix.argmax(1)
    agrees = np.asarray(reading).argmax(2) == fused[:, None]
    agree = (relevance * agrees).sum(1) / np.maximum(relevance.sum(1), 1e-9)
    top = mix.max(1) / np.maximum(mix.sum(1), 1e-9)
    cols = {f"rel_{m}": relevance[:, j] for j, m in enumerate(MODALITIES)}
    cols.update(agree=agree, top=top)
    return np.stack([cols[k] for k in FEATURES], 1)


def temperature(weights: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """The per-tick temperature (N,), exp(feats @ weights), bounded to [0.2, 5]."""
    return np.clip(np.exp(np.asarray(feats, np.float64) @ np.asarray(weights)), 0.2, 5.0)


def calibrated(mix: np.ndarray, temp: np.ndarray | float) -> np.ndarray:
    """softmax(log(mix + EPS) / T) per row: the calibrated fused probabilities."""
    z = np.log(np.asarray(mix, np.float64) + EPS) / np.reshape(temp, (-1, 1))
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


def fit(
    feats: np.ndarray, mix: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 200
) -> np.ndarray:
    """Weights minimising the mean negative log-likelihood of `y` (plus `l2` x |w|^2) over
    the rows given: L-BFGS on a handful of numbers."""
    import torch

    f = torch.as_tensor(np.asarray(feats, np.float64))
    z = torch.log(torch.as_tensor(np.asarray(mix, np.float64)) + EPS)
    target = torch.as_tensor(np.asarray(y, np.int64))
    w = torch.zeros(f.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        t = torch.exp(f @ w).clamp(0.2, 5.0)
        loss = torch.nn.functional.cross_entropy(z / t[:, None], target) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def fit_temperature(mix: np.ndarray, y: np.ndarray) -> float:
    """One temperature for every tick (the shipped method before), by the same likelihood."""
    ones = np.ones((len(y), 1))
    return float(np.exp(fit(ones, mix, y, l2=0.0)[0]))


def _sha256(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(path: str | Path, weights: np.ndarray, fusion_weights: str | Path, info: dict) -> Path:
    """The calibration file read at run time (`load_for`): the features' names, their weights,
    the fusion weights file they were fitted for (its SHA-256), and how they were fitted."""
    path = Path(path)
    doc = {
        "method": "temperature per tick, log T = w . features",
        "features": list(FEATURES),
        "weights": [round(float(v), 6) for v in weights],
        "fusion_sha256": _sha256(fusion_weights),
        "info": info,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_for(path: str | Path, fusion_weights: str | Path) -> np.ndarray | None:
    """The weights of the calibration file `path` when it was fitted for `fusion_weights`;
    None when there is no such file or it belongs to other fusion weights (a retrained model
    keeps its own single temperature until it is calibrated again). A file that names other
    features than this code computes is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not a calibration file ({e})") from None
    if tuple(doc.get("features", ())) != FEATURES or len(doc.get("weights", ())) != len(FEATURES):
        raise ValueError(f"{path}: a calibration of features {doc.get('features')}, not {FEATURES}")
    if doc.get("fusion_sha256") != _sha256(fusion_weights):
        import logging

        logging.getLogger(__name__).warning(
            "%s was fitted for other fusion weights than %s: not used", path, fusion_weights
        )
        return None
    return np.asarray(doc["weights"], np.float64)
