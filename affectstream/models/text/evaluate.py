"""Evaluate the text model (its predictor, on any backend) on any CSV in MELD's format;
measure its CPU latency."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.core.stats import percentiles
from affectstream.models import metrics
from affectstream.models.metrics import ClassificationReport, classification_report
from affectstream.models.text import data
from affectstream.models.text.predictor import TextPredictor

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    report: ClassificationReport
    majority_weighted_f1: float  # always predicting the most frequent true class
    context_turns: int
    skipped_empty: int  # rows with an empty utterance (no words: nothing to classify)
    y: np.ndarray | None = None  # true class ids of the rows scored
    probs: np.ndarray | None = None  # (N, 7) the model's probabilities
    groups: np.ndarray | None = None  # dialogue id of each row (for a grouped bootstrap)


def predict_examples(
    predictor: TextPredictor, examples: list[data.TextExample], batch: int = 64
) -> np.ndarray:
    """Probabilities (N, 7) for examples, batched by length (padding costs time on CPU)."""
    order = np.argsort([len(e.text) + len(e.context) for e in examples], kind="stable")
    probs = np.zeros((len(examples), len(LABELS)), np.float32)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        p, _ = predictor.predict(
            [examples[j].text for j in idx], [examples[j].context for j in idx]
        )
        probs[idx] = p
    return probs


def context_turns_of(predictor: TextPredictor) -> int:
    """Context the weights were trained with (0 when they use none)."""
    if not predictor.spec.use_context:
        return 0
    return int(predictor.info.get("options", {}).get("context_turns", 2))


def evaluate_meld(
    predictor: TextPredictor, path: str | Path, context_turns: int | None = None
) -> Evaluation:
    """Metrics on a MELD-format CSV; raises data.DataError for a malformed file.

    `context_turns`: previous utterances given as context (None: as the weights were trained;
    0: none, as when the live transcript has nothing before the utterance).
    """
    turns = context_turns_of(predictor) if context_turns is None else context_turns
    if turns < 0:
        raise ValueError(f"context_turns must be >= 0, got {turns}")
    examples = data.read_meld(path, turns)
    kept = [e for e in examples if e.text.strip()]
    if not kept:
        raise data.DataError(f"{path}: every utterance is empty")
    groups = np.asarray([e.group for e in kept])
    return _evaluate(predictor, kept, groups, turns, len(examples) - len(kept))


def evaluate_goemotions(
    predictor: TextPredictor, folder: str | Path, split: str = "test"
) -> Evaluation:
    """Metrics on a GoEmotions-Ekman split: the comments with one label only (a comment with
    several has no single right answer). Each comment is its own group for the bootstrap: they
    are independent Reddit comments, not turns of a dialogue."""
    examples = data.read_goemotions(folder, split)
    kept = [e for e in examples if e.text.strip() and max(e.target) == 1.0]
    if not kept:
        raise data.DataError(f"{folder}: no single-label comment in {split}.tsv")
    groups = np.arange(len(kept)).astype(str)
    return _evaluate(predictor, kept, groups, 0, len(examples) - len(kept))


def _evaluate(
    predictor: TextPredictor,
    kept: list[data.TextExample],
    groups: np.ndarray,
    turns: int,
    skipped: int,
) -> Evaluation:
    y = data.labels(kept)
    probs = predict_examples(predictor, kept)
    report = classification_report(y, probs.argmax(1), LABELS)
    majority = classification_report(y, np.full_like(y, np.bincount(y).argmax()), LABELS)
    return Evaluation(report, majority.weighted_f1, turns, skipped, y, probs, groups)


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray | None = None,
    n: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Weighted-F1 of predictions a and b and of b - a, with 95 % intervals over `n` paired
    resamples (`metrics.paired_bootstrap`); with `groups` whole dialogues are resampled."""
    return metrics.paired_bootstrap(
        y, pred_a, pred_b, metrics.weighted_f1_resampled, groups, n=n, seed=seed
    )


@dataclass
class Latency:
    text: str
    context: str
    tokens: int
    threads: int
    repeats: int
    median_ms: float
    p90_ms: float
    min_ms: float


def measure_latency(
    predictor: TextPredictor, text: str, context: str = "", repeats: int = 50, warmup: int = 5
) -> Latency:
    """Wall time of one `predict([text], [context])` call (tokenize + model + softmax);
    `threads` in the result is the backend's thread count."""
    for _ in range(warmup):
        predictor.predict([text], [context])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        predictor.predict([text], [context])
        times.append((time.perf_counter_ns() - t0) / 1e6)
    ids = predictor.to_input([text], [context])["input_ids"]
    p = percentiles(times, (50, 90), digits=3)
    return Latency(
        text,
        context,
        int(ids.shape[1]),
        int(getattr(predictor.backend, "threads", None) or 1),
        repeats,
        p["p50"],
        p["p90"],
        round(min(times), 3),
    )
