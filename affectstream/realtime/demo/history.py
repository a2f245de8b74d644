"""The rolling record the demo draws from: the last 30 s of estimates, bounded.

The stream's thread adds each estimate; the window's thread reads the trail (for the
circumplex and the strip chart), the input-age percentiles per modality and the estimate
rate. A lock keeps the two apart; the deque has a fixed length, and entries older than
`seconds` on the estimate clock are dropped as new ones come.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from affectstream.core.labels import MODALITIES
from affectstream.core.messages import Estimate
from affectstream.core.stats import percentiles


class History:
    """The last `seconds` of estimates (at most `max_items`, oldest dropped first)."""

    def __init__(self, seconds: float = 30.0, max_items: int = 2000) -> None:
        if seconds <= 0 or max_items < 1:
            raise ValueError(f"seconds and max_items must be positive, got {seconds}, {max_items}")
        self.seconds = float(seconds)
        self._items: deque[tuple[float, np.ndarray, float, float, dict]] = deque(maxlen=max_items)
        self._lock = threading.Lock()

    def add(self, est: Estimate) -> None:
        item = (est.t, np.array(est.probs, np.float32), est.valence, est.arousal, dict(est.age_ms))
        with self._lock:
            self._items.append(item)
            while self._items and self._items[0][0] < est.t - self.seconds:
                self._items.popleft()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def trail(self) -> list[tuple[float, np.ndarray, float, float]]:
        """(t, probs, valence, arousal), oldest first."""
        with self._lock:
            return [(t, p, v, a) for t, p, v, a, _ in self._items]

    def latency(self) -> dict[str, dict]:
        """Per modality {"p50", "p99"} of the input age in ms over the window (None if absent)."""
        with self._lock:
            ages = [a for *_, a in self._items]
        return {m: percentiles((a.get(m) for a in ages), (50, 99), digits=1) for m in MODALITIES}

    def rate_hz(self, span_s: float = 5.0) -> float | None:
        """Estimates per second over the newest `span_s` (None with fewer than two)."""
        with self._lock:
            ts = [t for t, *_ in self._items]
        recent = [t for t in ts if ts and t >= ts[-1] - span_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])
