"""What a modality stage returns to the scheduler, and the stage contract.

A stage turns the newest data of one modality into class probabilities and an embedding.
It returns a `ModalityResult` when it produced something new, `None` when there was nothing
new (the scheduler keeps the previous result and lets its age grow), or `ABSENT` when the
input says the modality is not there right now (silence, no words).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class ModalityResult:
    probs: np.ndarray  # (7,) in LABELS order
    t_ns: int  # capture time of the newest input used
    embedding: np.ndarray | None = None
    confidence: float = 0.0
    info: dict = field(default_factory=dict)


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


class Stage:
    """One modality's work per tick. Subclasses set `name` and implement `run`.

    `problem`, when the stream sets it, says what is wrong with the stage's input right now
    ("" when nothing is: a camera reconnecting, a transcriber that failed or stalls); the
    estimate's `status` gives it as the reason a modality is missing or stale. `model_status`
    likewise says whether the stage's model is open yet (`model_problem`).
    """

    name = "stage"
    problem: Callable[[], str] | None = None
    model_status: Callable[[], str] | None = None

    def input_problem(self) -> str:
        return self.problem() if self.problem is not None else ""

    def model_problem(self) -> str:
        """Why the stage's model is not open: "loading" while the stream opens it in the
        background, "error: ..." when it could not; "" once it is open (the stream sets
        `model_status`). The scheduler does not run a stage whose model is not open."""
        return self.model_status() if self.model_status is not None else ""

    def run(self, now_ns: int) -> ModalityResult | _Absent | None:  # pragma: no cover
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Drop/skip counters copied into `Estimate.dropped`."""
        return {}

    def warmup(self) -> None:
        """Run the model once before the first tick, so tick 0 is not the slow one."""
