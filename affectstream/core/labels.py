"""The common label space and the fixed circumplex mapping to valence and arousal.

Every encoder maps its corpus's labels onto these 7 classes, in this order. Until a learned
valence/arousal head exists, valence and arousal are the probability-weighted mean of fixed
circumplex coordinates per class (Russell 1980; coordinates as in the commonly used
placement of the basic emotions on the valence/arousal plane, scaled to -1..1).
"""

from __future__ import annotations

import numpy as np

LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
MODALITIES: tuple[str, ...] = ("face", "voice", "text")

# (valence, arousal) per label, in LABELS order.
CIRCUMPLEX = np.array(
    [
        [0.0, 0.0],  # neutral
        [0.8, 0.5],  # happy
        [-0.7, -0.4],  # sad
        [-0.6, 0.7],  # angry
        [-0.6, 0.6],  # fearful
        [-0.7, 0.3],  # disgusted
        [0.2, 0.8],  # surprised
    ],
    dtype=np.float32,
)


def valence_arousal(probs: np.ndarray) -> tuple[float, float]:
    """Probability-weighted circumplex coordinates, each in -1..1."""
    p = np.asarray(probs, dtype=np.float32)
    va = p @ CIRCUMPLEX
    return float(np.clip(va[0], -1, 1)), float(np.clip(va[1], -1, 1))


def remap(probs_src: np.ndarray, src_labels: list[str], mapping: dict[str, str]) -> np.ndarray:
    """Sum source-label probabilities into the common space (e.g. calm -> neutral)."""
    out = np.zeros(len(LABELS), dtype=np.float32)
    for i, name in enumerate(src_labels):
        out[LABELS.index(mapping.get(name, name))] += probs_src[i]
    return out
