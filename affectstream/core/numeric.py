"""Small numeric helpers shared by every layer (numpy only)."""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along `axis`, as float32, computed stably (max subtracted first).

    Log-probabilities (e.g. the voice ensemble's log-mean-probability output) go through it
    unchanged up to rounding: softmax(log p) = p / sum(p) = p.
    """
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(np.float32)
