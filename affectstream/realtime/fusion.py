"""The fusion step of each tick: the present modalities' results -> fused probabilities and
the relevance of each modality.

- `LearnedFusion` (the default): the temporal-attention fusion model
  (`models/fusion/`). Each stream owns one, holding its bounded token history; the
  predictor under it is stateless and shared by every stream of a process.
- `confidence_fusion`: the earlier rule, each present modality weighted by its own top
  probability; kept for comparison (`--fusion confidence`) and as the baseline that
  `eval stream` scores beside the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from affectstream.core.config import FUSION_METHODS
from affectstream.core.labels import LABELS, MODALITIES
from affectstream.models.fusion.tokens import TokenHistory
from affectstream.realtime.stages.base import ModalityResult

UNIFORM = np.full(len(LABELS), 1.0 / len(LABELS), dtype=np.float32)

# (present results, emit_ns) -> (fused probabilities, relevance, readings): the readings are
# what the fusion mixes, one distribution per modality it read, so that
# fused = calibrate(sum of relevance x reading) is there for a user to see
Fuse = Callable[
    [dict[str, ModalityResult], int],
    tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]],
]


def confidence_fusion(
    results: dict[str, ModalityResult], emit_ns: int = 0
) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
    """Present modalities weighted by their own confidence; relevance is the normalised
    weight, so it sums to 1 over the present modalities. Each reading is the modality's own
    newest output."""
    if not results:
        return UNIFORM.copy(), {}, {}
    w = {m: max(r.confidence, 1e-3) for m, r in results.items()}
    total = sum(w.values())
    rel = {m: v / total for m, v in w.items()}
    probs = sum(rel[m] * results[m].probs for m in results)
    return np.asarray(probs, dtype=np.float32), rel, {m: r.probs for m, r in results.items()}


class LearnedFusion:
    """One stream's fusion state: the token history, and the shared fusion predictor.

    Built without a predictor (the stream opens it in the background), it fuses with the
    confidence rule until `attach` hands it one. `record`, when a list, receives each learned
    tick's (emit_ns, {modality: (t_ns, token vector)}), so `eval stream` can replay the same
    inputs with a modality removed.
    """

    def __init__(self, predictor=None) -> None:
        self.predictor = None
        self.history: TokenHistory | None = None
        self.record: list | None = None
        self._forget: set[str] = set()  # modalities to drop at the next tick (`forget`)
        if predictor is not None:
            self.attach(predictor)

    def attach(self, predictor) -> None:
        self.history = TokenHistory(predictor.history)
        self.predictor = predictor  # last: a tick that sees it sees its history too

    def __call__(
        self, present: dict[str, ModalityResult], emit_ns: int
    ) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
        predictor = self.predictor
        if predictor is None:
            return confidence_fusion(present, emit_ns)
        tokens = {m: (r.t_ns, predictor.token(m, r.embedding, r.probs)) for m, r in present.items()}
        if self.record is not None:
            self.record.append((emit_ns, tokens))
        return self.step(tokens, emit_ns)

    def forget(self, modality: str) -> None:
        """Drop what the model holds of `modality` from the next tick on, so a modality the
        user switches off leaves at once rather than after its hold. Safe from any thread:
        the stream's own thread applies it."""
        self._forget.add(modality)

    def step(
        self, tokens: dict, emit_ns: int
    ) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
        """Fold this tick's newest tokens into the history and run the model once. The
        relevance covers what the model attended to: the present modalities, and one it
        still holds after it went absent (a voice just after the speaker stopped). The
        readings are each of those modalities' distribution over its last seconds (the
        auxiliary heads), which the model mixes by relevance before calibrating."""
        while self._forget:
            self.history.forget(self._forget.pop())
        self.history.update(tokens, emit_ns)
        seen = [m for m in MODALITIES if self.history.visible(m)]
        if not seen:
            return UNIFORM.copy(), {}, {}
        probs, rel, aux = self.predictor.predict(self.predictor.inputs(self.history, emit_ns))
        index = {m: j for j, m in enumerate(MODALITIES) if m in seen}
        return (
            probs[0],
            {m: float(rel[0, j]) for m, j in index.items()},
            {m: aux[0, j] for m, j in index.items()},
        )


def make_fusion(method: str, predictor=None) -> Fuse:
    """The fusion step a stream runs: "learned" (needs the fusion predictor) or "confidence"."""
    if method == "confidence":
        return confidence_fusion
    if method == "learned":
        if predictor is None:
            raise ValueError("learned fusion needs the fusion predictor")
        return LearnedFusion(predictor)
    raise ValueError(f"unknown fusion method {method!r} (known: {', '.join(FUSION_METHODS)})")
