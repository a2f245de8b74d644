"""Per-session normalisation of the voice embedding, and the head that reads it.

An unseen speaker or microphone shifts every feature of every window at once. The voice
network already removes each window's own band means (gain, spectral colour), but what is
left of the speaker in its embedding still moves the class boundaries. `SpeakerNorm` keeps
running statistics of one session's embeddings (one stream, one speaker, as far as a live
session knows) and standardises each new embedding by them, shrunk toward the training
statistics while the session is short:

    mean = (sum_i w_i e_i + k * mu_train) / (W + k)
    var  = (sum_i w_i e_i**2 + k * (var_train + mu_train**2)) / (W + k) - mean**2

with `w_i` the seconds of speech each update brought (W their sum) and `k` the prior's
strength in seconds: a new session starts from the training statistics, and after `k`
seconds of speech its own count as much as they do. The formula is `shrunk_stats`, the one
implementation that the live path (`SpeakerNorm`) and training (`simulated_sessions`) share.

`SessionHead` is a linear layer on the standardised embedding (softmax regression, fitted by
`fit_head` on embeddings that a frozen encoder gave for training speakers, each normalised
by random-length sessions of its own speaker). It is stored beside the encoder's weight file
(`voice.session.npz`, tied to it by the encoder file's sha256); the encoder and its
embedding, which the fusion model reads, stay as they were. State lives in a `SpeakerNorm`,
one per session: the head is shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.core.numeric import softmax

log = logging.getLogger(__name__)

FORMAT = "affectstream-voice-session/1"
SUFFIX = ".session.npz"  # voice.pt -> voice.session.npz
VAR_FLOOR = 1e-4  # embedding dimensions that barely move (dead ReLUs) are not blown up


def shrunk_stats(
    w: np.ndarray | float,
    s1: np.ndarray,
    s2: np.ndarray,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    k: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, var) of a session with total weight `w`, weighted sums `s1` and `s2` (of e and
    e**2), with `k` units of weight of the prior (mean, var) added. Broadcasts: `w` may be
    (n, 1) with `s1`, `s2` (n, D) for n sessions at once."""
    tot = np.asarray(w, dtype=np.float64) + k
    mean = (s1 + k * prior_mean) / tot
    var = (s2 + k * (prior_var + prior_mean * prior_mean)) / tot - mean * mean
    return mean, np.maximum(var, VAR_FLOOR)


class SpeakerNorm:
    """Running, shrunk statistics of one session's embeddings: `update`, then `apply`.

    One instance per session (a live stream, a speaker in an evaluation); `reset` starts a new
    session. Not thread-safe: its session's stage calls it from one thread.
    """

    def __init__(self, prior_mean: np.ndarray, prior_var: np.ndarray, strength_s: float) -> None:
        self.prior_mean = np.asarray(prior_mean, dtype=np.float64)
        self.prior_var = np.asarray(prior_var, dtype=np.float64)
        if self.prior_mean.shape != self.prior_var.shape or self.prior_mean.ndim != 1:
            raise ValueError("prior mean and variance must be two vectors of one length")
        if strength_s <= 0:
            raise ValueError("the prior's strength must be positive (seconds)")
        self.strength_s = float(strength_s)
        self.reset()

    @property
    def dim(self) -> int:
        return len(self.prior_mean)

    def reset(self) -> None:
        """Forget the session: back to the training statistics."""
        self.seconds = 0.0
        self._s1 = np.zeros(self.dim)
        self._s2 = np.zeros(self.dim)

    def update(self, emb: np.ndarray, seconds: float | np.ndarray) -> None:
        """Add embeddings (D,) or (n, D), each standing for `seconds` of new speech (a scalar
        for all rows, or one per row)."""
        e = np.asarray(emb, dtype=np.float64).reshape(-1, self.dim)
        w = np.broadcast_to(np.asarray(seconds, dtype=np.float64), (len(e),))
        if (w < 0).any():
            raise ValueError("seconds must not be negative")
        self.seconds += float(w.sum())
        self._s1 += w @ e
        self._s2 += w @ (e * e)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, var) now: the session's, shrunk toward the training statistics."""
        return shrunk_stats(
            self.seconds, self._s1, self._s2, self.prior_mean, self.prior_var, self.strength_s
        )

    def apply(self, emb: np.ndarray) -> np.ndarray:
        """Standardise embeddings (D,) or (n, D) by the statistics now; float32."""
        mean, var = self.stats()
        return ((np.asarray(emb, dtype=np.float64) - mean) / np.sqrt(var)).astype(np.float32)


def simulated_sessions(
    emb: np.ndarray,
    seconds: np.ndarray,
    speaker: np.ndarray,
    clip: np.ndarray,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    strength_s: float,
    rng: np.random.Generator,
    max_session_s: float = 300.0,
    min_session_s: float = 1.0,
) -> np.ndarray:
    """Each window's embedding standardised as a live session would have it (training).

    Per speaker, the clips are shuffled and cut into sessions whose lengths are drawn
    log-uniformly from `min_session_s` to `max_session_s` seconds; inside a session the windows
    come in order, and each is normalised by the statistics of its session up to and including
    itself, shrunk as in `SpeakerNorm` (the same `shrunk_stats`). So the head sees sessions a
    few seconds old as often as long ones. `emb` (n, D) windows, `seconds` (n,) new speech per
    window, `speaker` and `clip` (n,) ids; windows of one clip must be contiguous, in order.
    """
    emb = np.asarray(emb, dtype=np.float64)
    out = np.empty(emb.shape, dtype=np.float32)
    for spk in np.unique(speaker):
        rows = np.flatnonzero(speaker == spk)
        change = np.flatnonzero(np.diff(clip[rows])) + 1  # where the next clip starts
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(rows)]])
        seq = np.concatenate([rows[starts[i] : ends[i]] for i in rng.permutation(len(starts))])
        w = seconds[seq]
        t = np.cumsum(w)
        # session boundaries: cumulative time crosses successive random session lengths
        bounds, edge = [0], 0.0
        while edge < t[-1]:
            edge += float(np.exp(rng.uniform(np.log(min_session_s), np.log(max_session_s))))
            bounds.append(int(np.searchsorted(t, edge, side="right")))
        e = emb[seq]
        c0 = np.cumsum(w)
        c1 = np.cumsum(w[:, None] * e, axis=0)
        c2 = np.cumsum(w[:, None] * e * e, axis=0)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b <= a:
                continue
            base0 = c0[a - 1] if a else 0.0
            base1 = c1[a - 1] if a else 0.0
            base2 = c2[a - 1] if a else 0.0
            mean, var = shrunk_stats(
                (c0[a:b] - base0)[:, None],
                c1[a:b] - base1,
                c2[a:b] - base2,
                prior_mean,
                prior_var,
                strength_s,
            )
            out[seq[a:b]] = (e[a:b] - mean) / np.sqrt(var)
    return out


def fit_head(
    z: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    l2: float = 1e-3,
    n_classes: int = len(LABELS),
    iters: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on rows `z` (n, D) with labels `y`: (W (C, D), b (C,)).

    Weighted mean cross-entropy plus `l2` * |W|^2, minimised by L-BFGS in torch (float64).
    """
    import torch

    x = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    sw = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw_t = torch.as_tensor(sw / sw.sum(), dtype=torch.float64)
    w = torch.zeros((n_classes, x.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(x @ w.T + b, dim=1)
        loss = -(sw_t * logp[torch.arange(len(t)), t]).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def stream_sessions(
    head: SessionHead,
    emb: np.ndarray,
    seconds: np.ndarray,
    session: np.ndarray,
    net_probs: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities (n, 7) of windows `emb` (n, D) read live, in the order given: each
    session id has its own `SpeakerNorm`, updated with a window (its `seconds` of new
    speech) before that window is read (evaluation, the live stage's arithmetic).
    `net_probs` (n, 7): the network's own probabilities, mixed in as `head.step` does."""
    norms: dict = {}
    out = np.empty((len(emb), len(LABELS)), dtype=np.float32)
    for i, (e, w, sid) in enumerate(zip(emb, seconds, session, strict=True)):
        norm = norms.get(sid)
        if norm is None:
            norm = norms[sid] = head.new_session()
        out[i] = head.step(norm, e, float(w), None if net_probs is None else net_probs[i])[0]
    return out


def read_head_file(path: str | Path, fmt: str, what: str) -> dict[str, np.ndarray]:
    """The arrays of a head's .npz file, checked to be of format `fmt` and of our labels;
    ValueError naming `what` it should have been otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not {what} ({e.__class__.__name__})") from None
    if str(d.get("format")) != fmt:
        raise ValueError(f"{path}: not {what} ({fmt})")
    if tuple(str(x) for x in d["labels"]) != LABELS:
        raise ValueError(f"{path}: labels differ from {LABELS}")
    return d


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SessionHead:
    """The linear head on per-session standardised embeddings, with its prior.

    Attributes:
        weight: (7, D) and bias (7,): logits = weight @ z + bias.
        prior_mean, prior_var: (D,) the training embeddings' statistics.
        strength_s: k, seconds of speech the prior counts as.
        net_weight: the share of the network's own (stateless) probabilities in what `step`
            returns; the rest is this head's reading of the standardised embedding.
        encoder_sha256: the encoder weight file whose embedding this head reads.
        meta: how it was fitted (echoed by the card).
    """

    weight: np.ndarray
    bias: np.ndarray
    prior_mean: np.ndarray
    prior_var: np.ndarray
    strength_s: float
    net_weight: float = 0.0
    encoder_sha256: str = ""
    meta: dict | None = None

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def new_session(self) -> SpeakerNorm:
        """Fresh per-session state (one per stream)."""
        return SpeakerNorm(self.prior_mean, self.prior_var, self.strength_s)

    def probs(self, z: np.ndarray) -> np.ndarray:
        """Probabilities (n, 7) of standardised embeddings (n, D) or (D,)."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.dim)
        return softmax(z @ self.weight.T + self.bias)

    def step(
        self,
        norm: SpeakerNorm,
        emb: np.ndarray,
        seconds: float,
        net_probs: np.ndarray | None = None,
    ) -> np.ndarray:
        """The live step: add the newest embedding (D,) or (1, D) to the session, then read
        it standardised by the session so far; returns probabilities (1, 7), mixed with the
        network's own `net_probs` (7,) by `net_weight` when given."""
        norm.update(emb, seconds)
        p = self.probs(norm.apply(emb))
        if net_probs is None or self.net_weight == 0:
            return p
        net = np.asarray(net_probs, dtype=np.float32).reshape(1, -1)
        return ((1 - self.net_weight) * p + self.net_weight * net).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            format=np.array(FORMAT),
            labels=np.array(LABELS),
            weight=self.weight.astype(np.float32),
            bias=self.bias.astype(np.float32),
            prior_mean=self.prior_mean.astype(np.float64),
            prior_var=self.prior_var.astype(np.float64),
            strength_s=np.array(self.strength_s),
            net_weight=np.array(self.net_weight),
            encoder_sha256=np.array(self.encoder_sha256),
            meta=np.array(json.dumps(self.meta or {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> SessionHead:
        d = read_head_file(path, FORMAT, "a voice session head")
        return cls(
            weight=d["weight"],
            bias=d["bias"],
            prior_mean=d["prior_mean"],
            prior_var=d["prior_var"],
            strength_s=float(d["strength_s"]),
            net_weight=float(d.get("net_weight", 0.0)),
            encoder_sha256=str(d["encoder_sha256"]),
            meta=json.loads(str(d["meta"])),
        )


def companion_path(weights: str | Path) -> Path:
    """Where the session head of encoder file `weights` lives: `voice.pt` ->
    `voice.session.npz`, beside it."""
    p = Path(weights)
    return p.with_name(p.stem + SUFFIX)


def load_companion(weights: str | Path) -> SessionHead | None:
    """The session head beside encoder file `weights`, or None when there is none, or when it
    was fitted on another encoder (its sha256 differs: logged)."""
    path = companion_path(weights)
    if not path.is_file():
        return None
    head = SessionHead.load(path)
    if head.encoder_sha256 != file_sha256(weights):
        log.warning("%s was fitted on another encoder than %s: not used", path, weights)
        return None
    return head
