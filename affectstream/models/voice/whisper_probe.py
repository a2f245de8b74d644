"""The first comparison (2026-11-22): the bundled Whisper tiny.en encoder in place of the CNN.

Each 2 s speech window goes through the encoder (`whisper_stats.WhisperStats(pool="final")`:
faster-whisper's log-mel, not padded to 30 s; the encoder's last output pooled to mean and
standard deviation over time) and a logistic regression is trained on them, window by window,
to compare with the log-mel CNN (models/cards/voice.md). The 2026-11-22 figures came from
CTranslate2's int8 encoder; this runs the same weights in float32. The shipped use of Whisper
statistics is per utterance and per encoder block, beside the CNN: `utterance.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from .data import Clip, load_audio
from .evaluate import clip_windows, scores
from .features import MelOptions
from .whisper_stats import WhisperStats

log = logging.getLogger(__name__)


def clip_features(
    wf: WhisperStats, clips: Sequence[Clip], window_s: float = 2.0, hop_s: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window features, owning clip row, label per clip) with the CNN's windowing."""
    mel = MelOptions()
    feats, owner = [], []
    for k, c in enumerate(clips):
        wins, n = clip_windows(load_audio(c.path), mel, window_s, hop_s)
        feats.append(np.stack([wf(w) for w in wins[:n]]))
        owner += [k] * n
    return np.concatenate(feats), np.asarray(owner), np.array([c.label_index for c in clips])


def probe(clips: Sequence[Clip], train_actors: Sequence[int], eval_actors: Sequence[int]) -> dict:
    """Train a logistic regression on `train_actors`' windows, score clips of `eval_actors`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wf = WhisperStats(pool="final")
    tr = [c for c in clips if c.actor in set(train_actors)]
    ev = [c for c in clips if c.actor in set(eval_actors)]
    t0 = time.perf_counter()
    xtr, otr, ytr = clip_features(wf, tr)
    xev, oev, yev = clip_features(wf, ev)
    feat_s = time.perf_counter() - t0
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(xtr, ytr[otr])
    p = clf.predict_proba(xev)
    probs = np.zeros((len(ev), p.shape[1]))
    np.add.at(probs, oev, p)
    classes = clf.classes_
    return {
        "train_actors": list(train_actors),
        "eval_actors": list(eval_actors),
        "clips": scores(yev, classes[probs.argmax(1)]),
        "windows": scores(yev[oev], classes[p.argmax(1)]),
        "feature_s": feat_s,
        "train_windows": int(len(xtr)),
    }
