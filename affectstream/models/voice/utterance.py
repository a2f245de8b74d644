"""The utterance head: features of a whole utterance, standardised per speaker, read by a
softmax regression and mixed with the CNN path's reading.

The log-mel CNN reads 2 s windows and learns the corpora it was trained on. A second view of
the voice, computed once per utterance and standardised by the speaker's own running
statistics, transfers better to speakers and languages never heard (models/cards/voice.md).
Two feature sets are read, each by a head stored beside the encoder's weight file:

- "eGeMAPSv02" (`voice.egemaps.npz`): 88 openSMILE functionals (`egemaps.EgemapsExtractor`;
  the optional extra `affectstream[egemaps]`, non-commercial licence);
- "whisper-tiny.en" (`voice.whisper.npz`): 3,072 statistics of the transcriber's Whisper
  encoder's four blocks (`whisper_stats.WhisperStats`; no extra package).

`UtteranceHead` holds the head and its fusion weight; `extractor` makes the matching feature
extractor; `load_companion` finds the head beside an encoder file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.labels import LABELS
from affectstream.core.numeric import softmax

from .data import kept_segment
from .session import (
    VAR_FLOOR,
    SpeakerNorm,
    file_sha256,
    fit_head,
    read_head_file,
    simulated_sessions,
)

log = logging.getLogger(__name__)

FORMAT = "affectstream-voice-egemaps/1"  # the first heads read eGeMAPS only; the name stays
EGEMAPS = "eGeMAPSv02"
WHISPER = "whisper-tiny.en"
# feature set -> (features per utterance, suffix of the head file beside the encoder)
FEATURE_SETS: dict[str, tuple[int, str]] = {
    EGEMAPS: (88, ".egemaps.npz"),
    WHISPER: (3072, ".whisper.npz"),
}
# the short names of the configuration keys (`voice.egemaps`, `voice.whisper`) and the CLI
SHORT_NAMES = {EGEMAPS: "egemaps", WHISPER: "whisper"}


def utterance_span(x: np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE) -> tuple[int, int]:
    """[start, end) of a clip's speech that the utterance head reads: the loud part plus
    0.15 s each side (the CNN's trimming, `data.kept_segment`), grown to at least 0.5 s."""
    return kept_segment(x, int(0.5 * sample_rate), sample_rate=sample_rate)


def available(features: str) -> bool:
    """Whether the extractor of `features` can run here (eGeMAPS needs opensmile)."""
    if features == EGEMAPS:
        from .egemaps import available as egemaps_available

        return egemaps_available()
    return features in FEATURE_SETS


def extractor(features: str, sample_rate: int = MODEL_SAMPLE_RATE) -> Callable:
    """A callable `samples (N,) -> (n_features,)` float32 for feature set `features`."""
    if features == EGEMAPS:
        from .egemaps import EgemapsExtractor

        return EgemapsExtractor(sample_rate)
    if features == WHISPER:
        from .whisper_stats import WhisperStats

        return WhisperStats(sample_rate)
    raise ValueError(f"unknown utterance feature set {features!r} ({', '.join(FEATURE_SETS)})")


@dataclass(frozen=True)
class UtteranceHead:
    """A softmax regression on per-session standardised utterance features, and its fusion.

    Features are first standardised by the training set's mean and standard deviation (a
    fixed affine map, so every dimension has unit scale), then by the session's own running
    statistics (`SpeakerNorm`, shrunk toward the training statistics, mean 0 and variance 1
    after the first map, by a prior worth `strength_s` seconds of speech), then read by the
    linear head.

    Attributes:
        feat_mean, feat_std: (F,) the training features' statistics.
        weight: (7, F) and bias (7,): logits = weight @ z + bias.
        strength_s: k, seconds of speech the training statistics count as in a session.
        fuse_weight: the share of this head's probabilities in the voice output; the rest is
            the CNN path's (`fuse`).
        meta: how it was fitted (echoed by the card).
        features: which feature set it reads (a key of `FEATURE_SETS`, or another openSMILE
            set's name in an experiment).
        joint_weight: its share when the heads of both feature sets read together
            (`fuse_all`), or None when it was not chosen for that.
    """

    feat_mean: np.ndarray
    feat_std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    strength_s: float
    fuse_weight: float = 0.5
    meta: dict | None = None
    features: str = EGEMAPS
    joint_weight: float | None = None

    @property
    def n_features(self) -> int:
        return int(self.feat_mean.shape[0])

    def standardise(self, feats: np.ndarray) -> np.ndarray:
        f = np.asarray(feats, dtype=np.float64).reshape(-1, self.n_features)
        return (f - self.feat_mean) / self.feat_std

    def new_session(self) -> SpeakerNorm:
        """Fresh per-session state (one per stream or speaker)."""
        return SpeakerNorm(np.zeros(self.n_features), np.ones(self.n_features), self.strength_s)

    def probs(self, z: np.ndarray) -> np.ndarray:
        """Probabilities (n, 7) of session-standardised features (n, F)."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.n_features)
        return softmax(z @ self.weight.T + self.bias)

    def add(self, norm: SpeakerNorm, feats: np.ndarray, seconds: float) -> None:
        """Add one span's features (F,) worth `seconds` of speech to the session."""
        norm.update(self.standardise(feats), seconds)

    def read(self, norm: SpeakerNorm | None, feats: np.ndarray) -> np.ndarray:
        """Probabilities (1, 7) of one span's features standardised by the session so far,
        without adding them to it (the live reader adds an utterance once, when it ends).
        `norm` None: the training statistics only (no session)."""
        z = self.standardise(feats)
        return self.probs(z if norm is None else norm.apply(z))

    def step(self, norm: SpeakerNorm | None, feats: np.ndarray, seconds: float) -> np.ndarray:
        """Add one span's features to the session, then read them (`add`, then `read`): what
        `eval voice` does with each clip."""
        if norm is not None:
            self.add(norm, feats, seconds)
        return self.read(norm, feats)

    def fuse(self, cnn_probs: np.ndarray, head_probs: np.ndarray | None) -> np.ndarray:
        """`fuse_weight` of this head's reading plus the rest of the CNN path's; the CNN's
        alone while there is no utterance reading yet."""
        cnn = np.asarray(cnn_probs, dtype=np.float32)
        if head_probs is None:
            return cnn
        w = self.fuse_weight
        hp = np.asarray(head_probs, dtype=np.float32).reshape(1, -1)
        return ((1 - w) * cnn + w * hp).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            format=np.array(FORMAT),
            labels=np.array(LABELS),
            features=np.array(self.features),
            feat_mean=self.feat_mean.astype(np.float64),
            feat_std=self.feat_std.astype(np.float64),
            weight=self.weight.astype(np.float32),
            bias=self.bias.astype(np.float32),
            strength_s=np.array(self.strength_s),
            fuse_weight=np.array(self.fuse_weight),
            meta=np.array(json.dumps(self.meta or {})),
            **({} if self.joint_weight is None else {"joint_weight": np.array(self.joint_weight)}),
        )

    @classmethod
    def load(cls, path: str | Path) -> UtteranceHead:
        d = read_head_file(path, FORMAT, "an utterance head")
        features = str(d["features"]) if "features" in d else EGEMAPS  # the first files
        if features not in FEATURE_SETS:
            raise ValueError(f"{path}: a head of unknown features {features!r}")
        n = FEATURE_SETS[features][0]
        shapes = (d["feat_mean"].shape, d["feat_std"].shape, d["weight"].shape)
        if shapes != ((n,), (n,), (len(LABELS), n)):
            raise ValueError(
                f"{path}: not a head of the {n} {features} features "
                f"(mean, std, weight shapes {shapes})"
            )
        return cls(
            feat_mean=d["feat_mean"],
            feat_std=d["feat_std"],
            weight=d["weight"],
            bias=d["bias"],
            strength_s=float(d["strength_s"]),
            fuse_weight=float(d["fuse_weight"]),
            meta=json.loads(str(d["meta"])),
            features=features,
            joint_weight=float(d["joint_weight"]) if "joint_weight" in d else None,
        )


def fuse_all(
    cnn_probs: np.ndarray, readings: list[tuple[UtteranceHead, np.ndarray | None]]
) -> np.ndarray:
    """The CNN path's probabilities mixed with every head's reading that is there: one head
    by its `fuse_weight` (`UtteranceHead.fuse`), several by their `joint_weight`s, the CNN
    path keeping the rest."""
    there = [(h, p) for h, p in readings if p is not None]
    if len(there) <= 1:
        return there[0][0].fuse(cnn_probs, there[0][1]) if there else cnn_probs
    missing = [h.features for h, _ in there if h.joint_weight is None]
    if missing:
        raise ValueError(f"the {', '.join(missing)} head has no joint weight: refit it")
    out = (1 - sum(h.joint_weight for h, _ in there)) * np.asarray(cnn_probs, np.float32)
    for h, p in there:
        out = out + h.joint_weight * np.asarray(p, np.float32).reshape(1, -1)
    return out.astype(np.float32)


def fit_utterance_head(
    feats: np.ndarray,
    labels: np.ndarray,
    speaker: np.ndarray,
    seconds: np.ndarray,
    sample_weight: np.ndarray | None = None,
    strength_s: float = 30.0,
    l2: float = 1e-3,
    mode: str = "sessions",
    seed: int = 0,
    fuse_weight: float = 0.5,
    features: str = EGEMAPS,
) -> UtteranceHead:
    """The utterance head on training utterances `feats` (n, F), one row per utterance.

    `mode` says how each training utterance is standardised before the head sees it:
    "speaker": by all of its speaker's utterances (the speaker's full statistics);
    "sessions": as a live session would have it (the speaker's utterances shuffled and cut
    into sessions of random length, 1-300 s, each standardised by its session so far, shrunk
    by `strength_s`: `session.simulated_sessions`); "none": the training statistics only.
    `speaker` (n,) ids; give one id to a corpus whose speakers carry one emotion each.
    """
    f = np.asarray(feats, dtype=np.float64)
    sw = np.ones(len(f)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean = np.average(f, axis=0, weights=sw)
    std = np.sqrt(np.maximum(np.average((f - mean) ** 2, axis=0, weights=sw), 1e-12))
    std = np.where(std > 1e-6, std, 1.0)
    z = (f - mean) / std
    zero, one = np.zeros(f.shape[1]), np.ones(f.shape[1])
    if mode == "sessions":
        zn = simulated_sessions(
            z,
            np.asarray(seconds, np.float64),
            np.asarray(speaker),
            np.arange(len(z)),
            zero,
            one,
            strength_s,
            np.random.default_rng(seed),
        )
    elif mode == "speaker":
        zn = np.empty_like(z)
        for s in np.unique(speaker):
            m = speaker == s
            mu = z[m].mean(axis=0)
            sd = np.sqrt(np.maximum(z[m].var(axis=0), VAR_FLOOR))
            zn[m] = (z[m] - mu) / sd
    elif mode == "none":
        zn = z
    else:
        raise ValueError(f"unknown mode {mode!r} (sessions, speaker, none)")
    w, b = fit_head(zn, np.asarray(labels), sw, l2=l2)
    return UtteranceHead(
        mean,
        std,
        w,
        b,
        float(strength_s),
        float(fuse_weight),
        meta={"mode": mode, "l2": l2, "n": int(len(f))},
        features=features,
    )


def companion_path(weights: str | Path, features: str = EGEMAPS) -> Path:
    """Where the head of `features` for encoder file `weights` lives: `voice.pt` ->
    `voice.egemaps.npz` / `voice.whisper.npz`, beside it."""
    p = Path(weights)
    return p.with_name(p.stem + FEATURE_SETS[features][1])


def load_companion(weights: str | Path, features: str = EGEMAPS) -> UtteranceHead | None:
    """The head of `features` beside encoder file `weights` (numpy only: no extractor needed
    to load it), or None when there is none, or when its fusion weight was chosen for another
    encoder (its sha256 differs: logged)."""
    path = companion_path(weights, features)
    if not path.is_file():
        return None
    head = UtteranceHead.load(path)
    if head.features != features:
        raise ValueError(f"{path}: a head of {head.features}, not of {features}")
    want = (head.meta or {}).get("encoder_sha256", "")
    if want and want != file_sha256(weights):
        log.warning("%s was fitted beside another encoder than %s: not used", path, weights)
        return None
    return head


def load_companions(weights: str | Path) -> dict[str, UtteranceHead]:
    """Every utterance head beside encoder file `weights`, by feature set."""
    heads = {f: load_companion(weights, f) for f in FEATURE_SETS}
    return {f: h for f, h in heads.items() if h is not None}
