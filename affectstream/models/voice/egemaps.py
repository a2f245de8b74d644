"""A second voice branch: eGeMAPS functionals of an utterance, normalised per speaker.

The 88 eGeMAPSv02 functionals (pitch, loudness, spectral balance, voice quality and their
statistics over an utterance; Eyben et al. 2016) come from openSMILE through the `opensmile`
wheel, which bundles the binary and its configs (no download). The wheel is under
audEERING's research licence (non-commercial), so it is an optional extra,
`affectstream[egemaps]`, imported only here and only when the branch is used.

`EgemapsExtractor` turns one voiced span (an utterance, not a 2 s tick window) into 88
floats.
"""

from __future__ import annotations

import json
import logging
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

FORMAT = "affectstream-voice-egemaps/1"
SUFFIX = ".egemaps.npz"  # voice.pt -> voice.egemaps.npz
N_FEATURES = 88  # eGeMAPSv02 functionals
INSTALL_HINT = (
    "the eGeMAPS voice branch needs the opensmile package (audEERING's research licence, "
    "non-commercial): pip install 'affectstream[egemaps]'"
)
# openSMILE needs some audio to produce functionals; shorter spans are zero-padded at the end
MIN_SAMPLES = MODEL_SAMPLE_RATE // 4


def utterance_span(x: np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE) -> tuple[int, int]:
    """[start, end) of a clip's speech that the eGeMAPS branch reads: the loud part plus
    0.15 s each side (the CNN's trimming, `data.kept_segment`), grown to at least 0.5 s."""
    return kept_segment(x, int(0.5 * sample_rate), sample_rate=sample_rate)


def available() -> bool:
    """Whether the `opensmile` package can be imported."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


class EgemapsExtractor:
    """eGeMAPSv02 functionals of a mono float32 span at 16 kHz: `(N,) -> (88,)` float32.

    One openSMILE instance; not thread-safe (one per thread or per stage). `feature_set` names
    another openSMILE set (e.g. "ComParE_2016", 6,373 functionals) for the comparison in the
    voice card; the shipped branch reads eGeMAPSv02.
    """

    def __init__(
        self, sample_rate: int = MODEL_SAMPLE_RATE, feature_set: str = "eGeMAPSv02"
    ) -> None:
        try:
            import opensmile
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.sample_rate = int(sample_rate)
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.names: tuple[str, ...] = tuple(self._smile.feature_names)  # 88 for eGeMAPSv02

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        f = self._smile.process_signal(x, self.sample_rate).to_numpy(dtype=np.float32)
        out = f.reshape(-1)
        if out.shape != (len(self.names),):
            raise RuntimeError(f"openSMILE gave {out.shape} features, expected ({len(self.names)},)")
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class EgemapsHead:
    """A softmax regression on per-session standardised eGeMAPS functionals, and its fusion.

    Features are first standardised by the training set's mean and standard deviation (a
    fixed affine map, so every dimension has unit scale), then by the session's own running
    statistics (`SpeakerNorm`, shrunk toward the training statistics, mean 0 and variance 1
    after the first map, by a prior worth `strength_s` seconds of speech), then read by the
    linear head.

    Attributes:
        feat_mean, feat_std: (88,) the training features' statistics.
        weight: (7, 88) and bias (7,): logits = weight @ z + bias.
        strength_s: k, seconds of speech the training statistics count as in a session.
        fuse_weight: the share of this head's probabilities in the voice output; the rest is
            the CNN path's (`fuse`).
        meta: how it was fitted (echoed by the card).
    """

    feat_mean: np.ndarray
    feat_std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    strength_s: float
    fuse_weight: float = 0.5
    meta: dict | None = None

    @property
    def n_features(self) -> int:
        """88 for eGeMAPS; a head fitted on another openSMILE set (an experiment) has its own."""
        return int(self.feat_mean.shape[0])

    def standardise(self, feats: np.ndarray) -> np.ndarray:
        f = np.asarray(feats, dtype=np.float64).reshape(-1, self.n_features)
        return (f - self.feat_mean) / self.feat_std

    def new_session(self) -> SpeakerNorm:
        """Fresh per-session state (one per stream or speaker)."""
        return SpeakerNorm(np.zeros(self.n_features), np.ones(self.n_features), self.strength_s)

    def probs(self, z: np.ndarray) -> np.ndarray:
        """Probabilities (n, 7) of session-standardised features (n, 88)."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.n_features)
        return softmax(z @ self.weight.T + self.bias)

    def add(self, norm: SpeakerNorm, feats: np.ndarray, seconds: float) -> None:
        """Add one span's features (88,) worth `seconds` of speech to the session."""
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

    def fuse(self, cnn_probs: np.ndarray, egemaps_probs: np.ndarray | None) -> np.ndarray:
        """`fuse_weight` of this head's reading plus the rest of the CNN path's; the CNN's
        alone while there is no eGeMAPS reading yet."""
        cnn = np.asarray(cnn_probs, dtype=np.float32)
        if egemaps_probs is None:
            return cnn
        w = self.fuse_weight
        eg = np.asarray(egemaps_probs, dtype=np.float32).reshape(1, -1)
        return ((1 - w) * cnn + w * eg).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            format=np.array(FORMAT),
            labels=np.array(LABELS),
            feat_mean=self.feat_mean.astype(np.float64),
            feat_std=self.feat_std.astype(np.float64),
            weight=self.weight.astype(np.float32),
            bias=self.bias.astype(np.float32),
            strength_s=np.array(self.strength_s),
            fuse_weight=np.array(self.fuse_weight),
            meta=np.array(json.dumps(self.meta or {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> EgemapsHead:
        d = read_head_file(path, FORMAT, "an eGeMAPS head")
        shapes = (d["feat_mean"].shape, d["feat_std"].shape, d["weight"].shape)
        if shapes != ((N_FEATURES,), (N_FEATURES,), (len(LABELS), N_FEATURES)):
            raise ValueError(
                f"{path}: not a head of the {N_FEATURES} eGeMAPS functionals "
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
        )


def fit_egemaps_head(
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
) -> EgemapsHead:
    """The eGeMAPS head on training utterances `feats` (n, 88), one row per utterance.

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
            z, np.asarray(seconds, np.float64), np.asarray(speaker), np.arange(len(z)),
            zero, one, strength_s, np.random.default_rng(seed),
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
    return EgemapsHead(mean, std, w, b, float(strength_s), float(fuse_weight),
                       meta={"mode": mode, "l2": l2, "n": int(len(f))})


def companion_path(weights: str | Path) -> Path:
    """Where the eGeMAPS head of encoder file `weights` lives: `voice.pt` ->
    `voice.egemaps.npz`, beside it."""
    p = Path(weights)
    return p.with_name(p.stem + SUFFIX)


def load_companion(weights: str | Path) -> EgemapsHead | None:
    """The eGeMAPS head beside encoder file `weights` (numpy only: no opensmile needed to
    load it), or None when there is none, or when its fusion weight was chosen for another
    encoder (its sha256 differs: logged)."""
    path = companion_path(weights)
    if not path.is_file():
        return None
    head = EgemapsHead.load(path)
    want = (head.meta or {}).get("encoder_sha256", "")
    if want and want != file_sha256(weights):
        log.warning("%s was fitted beside another encoder than %s: not used", path, weights)
        return None
    return head
