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


REPLAY_VERSION = 1
REPLAY_SUFFIX = ".replay.pkl"  # how a kept replay is named, and told from a stream folder


def save_replay(path: str | Path, r: Replay) -> Path:
    """A replay's labels, estimates and the learned fusion's recorded inputs, as one pickle, so
    other fusion models are scored on the very same live ticks (`refuse`) without replaying the
    stream again (a replay takes the stream's length on the media clock)."""
    import pickle

    if r.record is None:
        raise ValueError("only a replay with the learned fusion records its inputs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": REPLAY_VERSION,
        "labels": r.labels,
        "estimates": r.estimates,
        "record": r.record,
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load_replay(path: str | Path) -> Replay:
    """A replay written by `save_replay` (its fusion predictor is not kept: see `refuse`).
    It is a pickle, which runs code as it loads: read only replays you kept yourself."""
    import pickle

    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise sc.ScenarioError(f"cannot read the saved replay {path}: {e}") from None
    if not isinstance(data, dict) or data.get("version") != REPLAY_VERSION:
        raise sc.ScenarioError(
            f"{path} is not a replay saved by this version (eval stream --save-replays)"
        )
    return Replay(data["labels"], data["estimates"], data["record"], None)


def refuse(r: Replay, predictor) -> Replay:
    """The replay as fusion model `predictor` would have fused it: its recorded inputs (every
    stage's tokens, tick by tick) run through a fresh `LearnedFusion`. Only the fused fields
    change (probabilities, confidence, relevance); the modalities' own views, the timings and
    the ticks fused by the rule before the model opened are the replay's."""
    from dataclasses import replace

    fusion = LearnedFusion(predictor)
    first = len(r.estimates) - len(r.record)
    out = list(r.estimates[:first])
    for e, (emit_ns, tokens) in zip(r.estimates[first:], r.record, strict=True):
        probs, rel, _ = fusion.step(tokens, emit_ns)
        out.append(replace(e, probs=probs, confidence=float(np.max(probs)), relevance=rel))
    return Replay(r.labels, out, r.record, predictor)


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


RELATIONS = ("agrees", "conflicts", "absent")
AUDIO_KINDS = ("ravdess", "speech", "silence")


def tick_table(r: Replay) -> dict[str, np.ndarray]:
    """Every tick of a replay as arrays, so calibration (or anything read off the fused
    output) can be fitted and judged offline, without replaying the stream again:

    `t` (s), `y` (target class), `keep` (inside the last segment, as `score` counts),
    `probs` (the fused output, N x 7), `present` (N x 3, the estimate's), `newest` (each
    present modality's own newest probabilities, N x 3 x 7, 0 when absent), `relation` and
    `audio` (the segment's content per modality: index into `RELATIONS`; its audio: into
    `AUDIO_KINDS`). With the learned fusion, its recorded inputs are run again to give what
    it mixed before calibration: `seen` (N x 3, the modalities it read, a held voice too),
    `relevance` (N x 3), `reading` (N x 3 x 7, uniform where unseen) and `mix` (N x 7, the
    relevance-weighted mixture, whose log the temperature divides)."""
    labels, estimates = r.labels, r.estimates
    segments = labels["segments"]
    t = np.array([e.t for e in estimates])
    seg = sc.segment_at(labels, t)
    n = len(estimates)
    out = {
        "t": t,
        "y": np.array([LABELS.index(segments[i]["target"]) for i in seg]),
        "keep": t < segments[-1]["end_s"],
        "probs": np.stack([e.probs for e in estimates]).astype(np.float32),
        "present": np.array([[bool(e.present.get(m)) for m in MODALITIES] for e in estimates]),
        "newest": np.zeros((n, len(MODALITIES), len(LABELS)), np.float32),
        "relation": np.array(
            [[RELATIONS.index(segments[i][m]["relation"]) for m in MODALITIES] for i in seg]
        ),
        "audio": np.array([AUDIO_KINDS.index(segments[i]["audio"]) for i in seg]),
    }
    for k, e in enumerate(estimates):
        for j, m in enumerate(MODALITIES):
            if m in e.modalities:
                out["newest"][k, j] = e.modalities[m]["probs"]
    if r.record is not None and r.fusion is not None:
        uniform = np.full(len(LABELS), 1.0 / len(LABELS), np.float32)
        fusion = LearnedFusion(r.fusion)
        rel = np.zeros((len(r.record), len(MODALITIES)), np.float32)
        reading = np.tile(uniform, (len(r.record), len(MODALITIES), 1))
        for k, (emit_ns, tokens) in enumerate(r.record):
            _, w, readings = fusion.step(tokens, emit_ns)
            for j, m in enumerate(MODALITIES):
                if m in w:
                    rel[k, j], reading[k, j] = w[m], readings[m]
        first = n - len(r.record)  # ticks before the model opened were fused by the rule
        out["seen"] = np.zeros((n, len(MODALITIES)), bool)
        out["relevance"] = np.zeros((n, len(MODALITIES)), np.float32)
        out["reading"] = np.tile(uniform, (n, len(MODALITIES), 1))
        out["seen"][first:] = rel > 0
        out["relevance"][first:] = rel
        out["reading"][first:] = reading
        out["mix"] = (out["relevance"][..., None] * out["reading"]).sum(1)
    return out


def save_ticks(path: str | Path, table: dict[str, np.ndarray], info: dict) -> Path:
    """`tick_table`'s arrays as one `.npz`, with `info` (JSON) beside them."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, info=np.array(json.dumps(info)), **table)
    return path


def load_ticks(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, info) of a file written by `save_ticks`."""
    import json

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "info"}
        info = json.loads(str(z["info"])) if "info" in z.files else {}
    return arrays, info


def evaluate_stream(
    folder: str | Path,
    config: Config,
    predictors: dict | None = None,
    ticks: str | Path | None = None,
    save: str | Path | None = None,
) -> dict:
    """Replay the labelled stream in `folder` through the real pipeline and score it;
    `ticks`: also write every tick's arrays there (`tick_table`, `save_ticks`); `save`: also
    keep the replay there (`save_replay`), to score other fusion models on it later."""
    r = replay_stream(folder, config, predictors)
    if save is not None:
        save_replay(save, r)
    return evaluate_replay(r, folder, config.fusion.method, ticks)


def evaluate_replay(
    r: Replay, folder: str | Path, method: str, ticks: str | Path | None = None
) -> dict:
    """`score` one replay, with where it came from; `ticks` as in `evaluate_stream`."""
    if ticks is not None:
        info = {"stream": str(folder), "source": r.labels.get("source"), "fusion": method}
        save_ticks(ticks, tick_table(r), info)
    result = score(r.labels, r.estimates, r.record, r.fusion)
    result["fusion"] = method
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
