"""Classification metrics shared by every modality, and a rich table that shows them.

Accuracy alone hides what matters for emotion data (rare classes such as disgust), so the
report always carries macro-F1, weighted-F1, per-class recall/precision/F1, support and the
confusion matrix. Plain numpy: no scikit-learn needed at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """`cm[i, j]` = number of samples of true class i predicted as j."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has a class outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


@dataclass(frozen=True)
class ClassificationReport:
    """Metrics of one evaluation. Classes with no true samples get recall 0 and are excluded
    from macro averages (macro over the classes present in `y_true`)."""

    labels: tuple[str, ...]
    n: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    macro_recall: float  # balanced accuracy
    recall: tuple[float, ...]
    precision: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["confusion"] = [list(r) for r in self.confusion]
        d["per_class"] = {
            name: {
                "recall": self.recall[i],
                "precision": self.precision[i],
                "f1": self.f1[i],
                "support": self.support[i],
            }
            for i, name in enumerate(self.labels)
        }
        for k in ("recall", "precision", "f1", "support"):
            d[k] = list(d[k])
        return d


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]
) -> ClassificationReport:
    """All metrics from integer class ids (indices into `labels`)."""
    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no samples to evaluate")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = _safe_div(tp, support)
    precision = _safe_div(tp, predicted)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    return ClassificationReport(
        labels=tuple(labels),
        n=n,
        accuracy=float(tp.sum() / n),
        macro_f1=float(f1[present].mean()),
        weighted_f1=float((f1 * support).sum() / n),
        macro_recall=float(recall[present].mean()),
        recall=tuple(float(v) for v in recall),
        precision=tuple(float(v) for v in precision),
        f1=tuple(float(v) for v in f1),
        support=tuple(int(v) for v in support),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
    )


def print_report(report: ClassificationReport, title: str = "", console=None) -> None:
    """Summary line, per-class table and confusion matrix (rows: true, columns: predicted)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(
        f"[bold]{title}[/bold]  n={report.n}  accuracy={report.accuracy:.4f}  "
        f"macro-F1={report.macro_f1:.4f}  weighted-F1={report.weighted_f1:.4f}  "
        f"balanced-acc={report.macro_recall:.4f}"
    )
    per = Table(title="per class", show_lines=False)
    for col in ("class", "recall", "precision", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(report.labels):
        per.add_row(
            name,
            f"{report.recall[i]:.3f}",
            f"{report.precision[i]:.3f}",
            f"{report.f1[i]:.3f}",
            str(report.support[i]),
        )
    console.print(per)
    cm = Table(title="confusion matrix (rows true, columns predicted)")
    cm.add_column("true \\ pred")
    for name in report.labels:
        cm.add_column(name[:8], justify="right")
    for i, name in enumerate(report.labels):
        cm.add_row(name, *(str(v) for v in report.confusion[i]))
    console.print(cm)


def weighted_f1_resampled(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted-F1 of one prediction under many row weightings `w` (B, N) at once (a
    bootstrap resample is a count per row). A class's F1 counts by its support, so classes
    beyond the largest id seen would add nothing."""
    k = int(max(y.max(), pred.max())) + 1
    onehot_y = np.eye(k)[y]  # (N, k)
    onehot_p = np.eye(k)[pred]
    tp = w @ (onehot_y * onehot_p)  # (B, k)
    support = w @ onehot_y
    predicted = w @ onehot_p
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    return (f1 * support).sum(1) / support.sum(1)


def accuracy_resampled(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Accuracy of one prediction under many row weightings `w` (B, N) at once."""
    return (w @ (pred == y)) / w.sum(1)


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    groups: np.ndarray | None = None,
    n: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """`score` (e.g. `weighted_f1_resampled`) of predictions a and b and of b - a, with sd
    and 95 % intervals over `n` resamples of the same rows for both (paired, so that the
    shared difficulty of the set cancels and a difference is judged against how much the two
    models disagree, not against the set's size alone).

    With `groups` whole groups (MELD dialogues) are resampled: rows of one group are not
    independent, and resampling them one by one would make the intervals too narrow.
    """
    y, pred_a, pred_b = (np.asarray(v) for v in (y, pred_a, pred_b))
    if not len(y) == len(pred_a) == len(pred_b) or not len(y):
        raise ValueError(f"need as many predictions as labels, got {len(pred_a)}, {len(pred_b)}")
    rng = np.random.default_rng(seed)
    keys, inv = np.unique(groups if groups is not None else np.arange(len(y)), return_inverse=True)
    draws = rng.integers(0, len(keys), size=(n, len(keys)))
    per_group = np.stack([np.bincount(d, minlength=len(keys)) for d in draws])  # (n, G)
    w = per_group[:, inv].astype(np.float64)  # (n, N): how often each row is drawn
    fa, fb = score(y, pred_a, w), score(y, pred_b, w)
    ones = np.ones((1, len(y)))
    out = {
        "a": float(score(y, pred_a, ones)[0]),
        "b": float(score(y, pred_b, ones)[0]),
        "resamples": n,
        "groups": len(keys),
    }
    for name, v in (("a", fa), ("b", fb), ("diff", fb - fa)):
        lo, hi = np.percentile(v, [2.5, 97.5])
        out[f"{name}_lo"], out[f"{name}_hi"], out[f"{name}_sd"] = (
            float(lo),
            float(hi),
            float(v.std()),
        )
    out["diff"] = out["b"] - out["a"]
    out["p_not_better"] = float((fb - fa <= 0).mean())
    return out


def paired_accuracy_bootstrap(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n: int = 2000, seed: int = 0
) -> dict[str, float]:
    """`paired_bootstrap` of the accuracy, items resampled one by one, with the items only b
    gets right (`fixed`) and only a gets right (`broken`)."""
    out = paired_bootstrap(y, pred_a, pred_b, accuracy_resampled, n=n, seed=seed)
    right_a, right_b = np.asarray(pred_a) == np.asarray(y), np.asarray(pred_b) == np.asarray(y)
    out["fixed"] = int((right_b & ~right_a).sum())
    out["broken"] = int((right_a & ~right_b).sum())
    return out
