"""Evaluation of the voice model (its predictor, on any backend) on a RAVDESS-style folder: per window and per clip.

A clip is scored the way the live system sees speech: sliding windows of `window_s` over the
speech (silence trimmed, as in training), each window classified on its own; the clip's
prediction averages the window probabilities. Single-window accuracy (the window centred on
the speech) is reported beside it, since a live tick sees only one window.

When the predictor has a session head, each speaker is one session, as one live stream
would be: the speaker's clips come in a seeded random order, each window updates the
speaker's `SpeakerNorm` (no labels) and is read standardised by the statistics so far. The
stateless figures (the network's own head, every window on its own) are reported beside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from affectstream.core.labels import LABELS

from .data import Clip, kept_segment, load_audio, window_starts
from .features import MelOptions
from .predictor import VoicePredictor

log = logging.getLogger(__name__)


def clip_windows(
    x: np.ndarray, mel: MelOptions, window_s: float, hop_s: float = 0.5
) -> tuple[np.ndarray, int]:
    """(windows (n, window_samples), index of the centre window) of one clip's speech.

    Windows start on frame boundaries of the kept segment, so they see exactly the frames the
    training cache holds for the same clip.
    """
    win_frames = mel.frames(int(round(window_s * mel.sample_rate)))
    win = mel.samples(win_frames)
    s, e = kept_segment(x, win, sample_rate=mel.sample_rate)
    seg = x[s:e]
    if len(seg) < win:
        seg = np.pad(seg, (0, win - len(seg)))
    n_frames = mel.frames(len(seg))
    hop = max(1, int(round(hop_s * mel.sample_rate / mel.hop)))
    starts = window_starts(n_frames, win_frames, hop)
    out = np.stack([seg[j * mel.hop : j * mel.hop + win] for j in starts]).astype(np.float32)
    centre = max(0, (n_frames - win_frames) // 2)
    centre_win = seg[centre * mel.hop : centre * mel.hop + win][None].astype(np.float32)
    return np.concatenate([out, centre_win]), len(out)


def scores(y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Accuracy, macro/weighted F1, per-class recall and the confusion matrix, as a dict."""
    from affectstream.models.metrics import classification_report

    return classification_report(np.asarray(y_true), np.asarray(y_pred), LABELS).to_dict()


def corpus_scores(y_true: np.ndarray, clip_probs: np.ndarray, window_probs: np.ndarray) -> dict:
    """Scores of a corpus that may lack some of the 7 classes.

    `clips` and `single_window` take the argmax over all 7 classes, as the live system does;
    `clips_own_classes` takes it over only the classes the corpus has (how cross-corpus results
    are usually reported: a model cannot be asked to know the corpus's label set otherwise).
    """
    y_true = np.asarray(y_true)
    own = np.zeros(len(LABELS), dtype=bool)
    own[np.unique(y_true)] = True
    restricted = np.where(own[None, :], clip_probs, -np.inf).argmax(axis=1)
    return {
        "classes": [LABELS[i] for i in np.flatnonzero(own)],
        "clips": scores(y_true, clip_probs.argmax(axis=1)),
        "single_window": scores(y_true, window_probs.argmax(axis=1)),
        "clips_own_classes": scores(y_true, restricted),
    }


def session_order(clips: Sequence[Clip], seed: int = 0) -> list[int]:
    """Indices of `clips`, speaker after speaker, each speaker's clips in a seeded random
    order (file names often sort by emotion, which would make every session start alike)."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for a in sorted({c.actor for c in clips}):
        mine = [i for i, c in enumerate(clips) if c.actor == a]
        out.extend(mine[j] for j in rng.permutation(len(mine)))
    return out


def evaluate_clips(
    predictor: VoicePredictor,
    clips: Sequence[Clip],
    hop_s: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    sessions: bool = True,
    seed: int = 0,
    utterance: Sequence[str] = (),
) -> dict:
    """Score `predictor` (any backend) on `clips`: clip-level and centre-window metrics.

    `sessions` (when the predictor has a session head): one session per speaker, clips in
    `session_order(clips, seed)`; the stateless scores are under "stateless".
    `utterance` (feature sets of the predictor's utterance heads, `models.voice.utterance`:
    "eGeMAPSv02", which needs the opensmile package, and/or "whisper-tiny.en"): each clip's
    speech is also read once by each of those heads, standardised by its speaker's session so
    far, and fused with the CNN path's clip and centre-window probabilities
    (`utterance.fuse_all`); the CNN path alone is under "cnn_path"."""
    mel = predictor.mel if predictor.mel is not None else MelOptions()
    head = getattr(predictor, "session", None) if sessions else None
    from . import utterance as U

    have = getattr(predictor, "utterance_heads", {})
    heads = [have[f] for f in utterance if f in have]
    if len(heads) != len(utterance):
        raise ValueError(f"these voice weights have no head of each of {list(utterance)} beside them")
    extract = [U.extractor(h.features, predictor.sample_rate) for h in heads]
    if head is not None or heads:
        clips = [clips[i] for i in session_order(clips, seed)]
    utterance_norms: dict[tuple[str, int], object] = {}
    cnn_clip, cnn_win = [], []
    norms: dict[int, object] = {}
    y, clip_probs, win_probs, rows = [], [], [], []
    plain_clip, plain_win = [], []
    for i, c in enumerate(clips):
        x = load_audio(c.path, predictor.sample_rate)
        wins, n = clip_windows(x, mel, predictor.window_s, hop_s)
        probs, emb = predictor.predict(wins)
        if head is not None:
            plain_clip.append(probs[:n].mean(axis=0))
            plain_win.append(probs[n])
            norm = norms.get(c.actor)
            if norm is None:
                norm = norms[c.actor] = head.new_session()
            new_s = [predictor.window_s] + [hop_s] * (n - 1)
            read = [head.step(norm, emb[j], new_s[j], probs[j]) for j in range(n)]
            read.append(head.step(norm, emb[n], 0.0, probs[n]))  # the centre: counted already
            probs = np.concatenate(read)
        clip_p, win_p = probs[:n].mean(axis=0), probs[n]
        if heads:
            cnn_clip.append(clip_p)
            cnn_win.append(win_p)
            s, e = U.utterance_span(x, predictor.sample_rate)
            read = []
            for h, ex in zip(heads, extract, strict=True):
                norm = utterance_norms.get((h.features, c.actor))
                if norm is None:
                    norm = utterance_norms[(h.features, c.actor)] = h.new_session()
                read.append((h, h.step(norm, ex(x[s:e]), (e - s) / predictor.sample_rate)))
            clip_p, win_p = U.fuse_all(clip_p, read)[0], U.fuse_all(win_p, read)[0]
        clip_probs.append(clip_p)
        win_probs.append(win_p)
        y.append(c.label_index)
        rows.append(
            {
                "file": c.path.name,
                "corpus": c.corpus,
                "actor": c.actor,
                "label": c.label,
                "predicted": LABELS[int(clip_probs[-1].argmax())],
                "windows": n,
            }
        )
        if progress is not None:
            progress(i + 1, len(clips))
    out = {
        **corpus_scores(np.asarray(y), np.stack(clip_probs), np.stack(win_probs)),
        "actors": sorted({c.actor for c in clips}),
        "session_norm": head is not None,
        "session_strength_s": head.strength_s if head is not None else None,
        "hop_s": hop_s,
        "window_s": predictor.window_s,
        "predictions": rows,
    }
    if head is not None:
        out["stateless"] = corpus_scores(np.asarray(y), np.stack(plain_clip), np.stack(plain_win))
    out["utterance_features"] = [h.features for h in heads]
    if heads:
        joint = len(heads) > 1
        out["utterance_weights"] = {
            h.features: h.joint_weight if joint else h.fuse_weight for h in heads
        }
        out["utterance_strength_s"] = {h.features: h.strength_s for h in heads}
        out["cnn_path"] = corpus_scores(np.asarray(y), np.stack(cnn_clip), np.stack(cnn_win))
    return out
