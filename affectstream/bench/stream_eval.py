"""Scoring a labelled stream replayed through the real pipeline (`affectstream eval stream`).

The stream's `video.avi` and `audio.wav` go through the same sources, encoders, transcriber,
scheduler and fusion as `affectstream run --fast`; every tick is scored against the label of
the segment it falls in. Beside the fused result the same ticks are scored for each modality
alone (absent: predicts neutral), the plain mean of the present modalities' probabilities
(`average`) and the earlier confidence-weighted rule (`confidence_weighted`). The fusion's
recorded inputs are replayed with one modality removed for the ablation.

Relevance by kind: over the ticks where a modality is present in the estimate, the mean weight
it gets, grouped by what its content is in that segment (agreeing, conflicting, or absent
content that the pipeline still shows: a face held a moment after it left, words that linger).
Lag: from each segment change to the first tick whose fused class is the new target (a
segment never reached counts its whole length).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.config import Config
from affectstream.core.labels import LABELS, MODALITIES
from affectstream.core.stats import percentiles
from affectstream.models.fusion import scenario as sc
from affectstream.models.metrics import classification_report
from affectstream.realtime.fusion import LearnedFusion, confidence_fusion
from affectstream.realtime.stages.base import ModalityResult

NEUTRAL = LABELS.index("neutral")
ECE_BINS = 15


def expected_calibration_error(
    conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def _scores(y: np.ndarray, pred: np.ndarray) -> dict:
    r = classification_report(y, pred, LABELS)
    return {"accuracy": round(r.accuracy, 4), "macro_f1": round(r.macro_f1, 4)}


@dataclass
class Replay:
    """A labelled stream run through the real pipeline: its labels, every estimate, the
    learned fusion's recorded inputs (None with the confidence rule) and its predictor."""

    labels: dict
    estimates: list
    record: list | None
    fusion: object | None


def replay_stream(folder: str | Path, config: Config, predictors: dict | None = None) -> Replay:
    """Replay the labelled stream in `folder` on the media clock, to its end."""
    from affectstream.realtime.stream import AffectStream, Inputs

    labels = sc.read_labels(folder)
    folder = Path(folder)
    inputs = Inputs(video=folder / labels["video"], audio=folder / labels["audio"], realtime=False)
    stream = AffectStream(config, inputs, predictors=predictors)
    record = None
    if isinstance(stream.pipeline.fuse, LearnedFusion):
        stream.pipeline.fuse.record = record = []
    estimates = list(stream.estimates())
    return Replay(labels, estimates, record, stream.predictors.get("fusion"))


def ablate(predictor, record: list, drop: str) -> np.ndarray:
    """Fused classes per tick with modality `drop` removed from the recorded inputs."""
    fusion = LearnedFusion(predictor)
    out = []
    for emit_ns, tokens in record:
        probs = fusion.step({m: v for m, v in tokens.items() if m != drop}, emit_ns)[0]
        out.append(int(np.argmax(probs)))
    return np.asarray(out)


def confidence_rule(view: dict, drop: str | None = None) -> int:
    """The class the confidence-weighted rule gives for one estimate's per-modality views
    (`Estimate.modalities`), leaving out `drop`; neutral when nothing is left."""
    results = {
        m: ModalityResult(np.asarray(x["probs"]), 0, confidence=float(np.max(x["probs"])))
        for m, x in view.items()
        if m != drop
    }
    return int(np.argmax(confidence_fusion(results)[0])) if results else NEUTRAL


def score(labels: dict, estimates: list, record: list | None, predictor=None) -> dict:
    segments = labels["segments"]
    starts = np.array([s["start_s"] for s in segments])
    ends = np.array([s["end_s"] for s in segments])
    targets = np.array([LABELS.index(s["target"]) for s in segments])
    t = np.array([e.t for e in estimates])
    keep = t < ends[-1]
    seg = sc.segment_at(labels, t)
    y = targets[seg]
    probs = np.stack([e.probs for e in estimates])
    fused = probs.argmax(1)
    out: dict = {"ticks": int(keep.sum()), "segments": len(segments)}
    out["fused"] = _scores(y[keep], fused[keep])
    conf = probs.max(1)
    out["fused"]["ece"] = round(expected_calibration_error(conf[keep], (fused == y)[keep]), 4)
    report = classification_report(y[keep], fused[keep], LABELS)
    out["fused"]["recall"] = {k: round(v, 4) for k, v in zip(LABELS, report.recall, strict=True)}
    out["fused"]["confusion"] = [list(r) for r in report.confusion]

    views = [e.modalities for e in estimates]
    for m in MODALITIES:
        pred = np.array([int(np.argmax(v[m]["probs"])) if m in v else NEUTRAL for v in views])
        out[m] = _scores(y[keep], pred[keep])
        out[m]["present"] = round(float(np.mean([m in v for v in views])), 4)
    avg = [
        int(np.argmax(np.mean([x["probs"] for x in v.values()], 0))) if v else NEUTRAL
        for v in views
    ]
    cw = [confidence_rule(v) for v in views]
    out["average"] = _scores(y[keep], np.array(avg)[keep])
    out["confidence_weighted"] = _scores(y[keep], np.array(cw)[keep])

    kinds = {"agrees": "agreeing", "conflicts": "conflicting", "absent": "absent"}
    weights: dict[str, list[float]] = {k: [] for k in kinds.values()}
    for i, e in enumerate(estimates):
        if not keep[i]:
            continue
        s = segments[seg[i]]
        for m in MODALITIES:
            if e.present.get(m) or e.relevance.get(m, 0.0) > 0:  # the fusion may hold one gone
                weights[kinds[s[m]["relation"]]].append(float(e.relevance.get(m, 0.0)))
    out["relevance"] = {k: round(float(np.mean(v)), 4) if v else None for k, v in weights.items()}
    out["relevance_ticks"] = {k: len(v) for k, v in weights.items()}

    lags = []
    for j in range(1, len(segments)):
        sel = np.flatnonzero((seg == j) & (fused == targets[j]))
        lags.append(float(t[sel[0]] - starts[j]) if sel.size else float(ends[j] - starts[j]))
    lag = percentiles(lags, (50, 90), 3)
    out["lag_s"] = {"median": lag["p50"], "p90": lag["p90"]}
    fusion_ms = percentiles([e.stages_ms.get("fusion") for e in estimates], (50, 99), 4)
    out["fusion_ms"] = {"p50": fusion_ms["p50"], "p99": fusion_ms["p99"]}

    out["ablation"] = {}
    for m in MODALITIES:
        if record is not None and predictor is not None:
            pred = ablate(predictor, record, m)
        else:  # the confidence rule: the same rule over the other modalities' own views
            pred = np.array([confidence_rule(v, drop=m) for v in views])
        out["ablation"][f"no_{m}"] = {"accuracy": _scores(y[keep], pred[keep])["accuracy"]}
    return out


def evaluate_stream(folder: str | Path, config: Config, predictors: dict | None = None) -> dict:
    """Replay the labelled stream in `folder` through the real pipeline and score it."""
    r = replay_stream(folder, config, predictors)
    result = score(r.labels, r.estimates, r.record, r.fusion)
    result["fusion"] = config.fusion.method
    result["stream"] = {
        "folder": str(folder),
        "stats": r.labels.get("stats"),
        "source": r.labels.get("source"),
    }
    return result


def mean_over_streams(results: list[dict]) -> dict:
    """The scores of several streams as one result with the same keys: each figure the mean
    over the streams (a ten-minute stream decides more than a small model change does, so a
    change is judged on several), `ticks` and `segments` summed, `confusion` matrices summed;
    `streams` holds each stream's own result."""

    def merge(values: list, key: str):
        first = next((v for v in values if v is not None), None)  # a figure a stream lacks
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
            return {k: merge([v[k] for v in values], k) for k in keys}
        if key == "confusion":
            return np.sum(np.asarray(values), axis=0).tolist()
        if isinstance(first, bool) or not isinstance(first, (int, float)):
            return first if all(v == first for v in values) else None
        if key in ("ticks", "segments"):
            return int(sum(values))
        present = [float(v) for v in values if v is not None]
        return round(float(np.mean(present)), 4) if present else None

    out = merge([{k: v for k, v in r.items() if k != "stream"} for r in results], "")
    out["streams"] = results  # each with its own `stream` (folder, mix, sources)
    return out
