"""Training on cached log-mels: random window crops, augmentation and the optimiser loop.

Clips are decoded and turned into log-mels once (`build_cache`); every epoch then draws random
windows (`window_s` long) from each clip and augments them on the training device: time
stretch and mel-axis warp (speed and pitch perturbation, approximately), additive stationary
noise, SpecAugment masks and mixup. Speaker-independence comes from the split: the caller
passes the actors to train on, and nothing here ever looks at the held-out actors' labels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from affectstream.core.labels import LABELS

from .data import Clip, kept_segment, load_audio, window_starts
from .features import MelOptions, log_mel_numpy, mel_centres_hz
from .net import NetOptions, VoiceEnsemble, VoiceNet
from .session import SessionHead, fit_head, simulated_sessions

log = logging.getLogger(__name__)

CACHE_FORMAT = "affectstream-voice-mels/1"
WEIGHTS_FORMAT = "affectstream-voice/1"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run, echoed into the weight file and the card."""

    name: str = "base"
    epochs: int = 60
    crops_per_clip: int = 4  # random windows of each clip per epoch
    batch: int = 128
    lr: float = 4e-3
    weight_decay: float = 5e-2
    warmup: float = 0.1  # fraction of steps
    label_smoothing: float = 0.1
    mixup: float = 0.4  # Beta(alpha, alpha); 0 disables
    speed: float = 0.12  # time stretch factor in 1 +- speed
    warp: float = 0.08  # mel-axis warp factor in 1 +- warp
    noise_p: float = 0.3  # probability of additive stationary noise
    time_masks: int = 2
    time_mask_max: int = 20  # frames
    freq_masks: int = 2
    freq_mask_max: int = 8  # mel bands
    reverb_p: float = 0.0  # probability of a synthetic room tail (RT60 0.2-0.9 s)
    band_limit_p: float = 0.0  # probability of cutting the bands above 3.4-7 kHz (codecs)
    net: NetOptions = field(default_factory=NetOptions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d


RECIPES: dict[str, Recipe] = {
    "base": Recipe(),
    "light-aug": Recipe(name="light-aug", mixup=0.0, noise_p=0.0, speed=0.05, warp=0.03),
    "utt-norm": Recipe(name="utt-norm", net=NetOptions(norm="utt")),
    "wide": Recipe(name="wide", net=NetOptions(channels=(24, 48, 96, 128))),
    "long": Recipe(name="long", epochs=120),
    "small-batch": Recipe(name="small-batch", batch=64, lr=3e-3),
    "strong-aug": Recipe(
        name="strong-aug", mixup=0.8, speed=0.18, warp=0.12, noise_p=0.5, time_masks=3
    ),
    # Fine-tuning a trained network on several corpora: a lower peak rate and short warm-up
    # (it starts from trained weights), one window per draw, and room and codec augmentation
    # for the microphones and rooms the corpora do not share.
    "transfer": Recipe(
        name="transfer",
        crops_per_clip=1,
        lr=1.5e-3,
        warmup=0.05,
        speed=0.15,
        warp=0.1,
        noise_p=0.4,
        reverb_p=0.3,
        band_limit_p=0.2,
        net=NetOptions(channels=(24, 48, 96, 128)),
    ),
}


# The same recipe from random weights (leaving RAVDESS out: no trained start exists), with the
# base recipe's peak rate and warm-up.
RECIPES["transfer-scratch"] = replace(
    RECIPES["transfer"], name="transfer-scratch", lr=Recipe.lr, warmup=Recipe.warmup
)


# ----------------------------------------------------------------------------- cache


def build_cache(
    clips: Sequence[Clip],
    mel: MelOptions | None = None,
    window_s: float = 2.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Decode `clips`, keep speech (+margin, at least one window) and store float16 log-mels."""
    mel = mel or MelOptions()
    win = mel.samples(mel.frames(int(round(window_s * mel.sample_rate))))
    mels, lengths = [], []
    for i, c in enumerate(clips):
        x = load_audio(c.path, mel.sample_rate)
        s, e = kept_segment(x, win, sample_rate=mel.sample_rate)
        seg = x[s:e]
        if len(seg) < win:
            seg = np.pad(seg, (0, win - len(seg)))
        m = log_mel_numpy(seg, mel).astype(np.float16)
        mels.append(m)
        lengths.append(m.shape[1])
        if progress is not None:
            progress(i + 1, len(clips))
    lengths_a = np.asarray(lengths, dtype=np.int64)
    return {
        "format": np.array(CACHE_FORMAT),
        "mel_options": np.array(json.dumps(asdict(mel))),
        "window_s": np.array(window_s),
        "mels": np.concatenate(mels, axis=1),
        "offsets": np.concatenate([[0], np.cumsum(lengths_a)[:-1]]).astype(np.int64),
        "lengths": lengths_a,
        "labels": np.array([c.label_index for c in clips], dtype=np.int64),
        "actors": np.array([c.actor for c in clips], dtype=np.int64),
        "corpus": np.array([c.corpus for c in clips]),
        "intensity": np.array([c.intensity for c in clips], dtype=np.int64),
        "names": np.array([c.path.name for c in clips]),
    }


def save_cache(cache: dict[str, np.ndarray], path: str | Path) -> None:
    np.savez_compressed(path, **cache)


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        cache = {k: z[k] for k in z.files}
    if str(cache.get("format")) != CACHE_FORMAT:
        raise ValueError(f"{path}: not a voice log-mel cache ({CACHE_FORMAT})")
    return cache


class MelBank:
    """The cache as tensors on one device, with the crop and augmentation operations."""

    def __init__(self, cache: dict[str, np.ndarray], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.mel = MelOptions(**json.loads(str(cache["mel_options"])))
        self.window_s = float(cache["window_s"])
        self.win = self.mel.frames(int(round(self.window_s * self.mel.sample_rate)))
        self.x = torch.from_numpy(cache["mels"].astype(np.float32)).to(self.device)
        self.offsets = torch.from_numpy(cache["offsets"]).to(self.device)
        self.lengths = torch.from_numpy(cache["lengths"]).to(self.device)
        self.labels = torch.from_numpy(cache["labels"]).to(self.device)
        self._off = cache["offsets"]  # host copies: no device sync per clip
        self._len = cache["lengths"]
        self.actors = cache["actors"]
        self.names = cache["names"]
        # caches written before corpora other than RAVDESS were read have no corpus column
        self.corpus = cache.get("corpus", np.full(len(self.actors), "ravdess"))

    def indices(self, actors: Sequence[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.actors, list(actors)))

    def corpus_indices(self, corpora: Sequence[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.corpus, list(corpora)))

    def crops(self, idx: torch.Tensor, speed: float, gen: torch.Generator) -> torch.Tensor:
        """(B, M, win) random windows of clips `idx`, time-stretched by 1 +- `speed`.

        Windows start at fractional frame positions (linear interpolation between neighbouring
        frames), which also jitters the framing phase a little.
        """
        b, w, dev = len(idx), self.win, self.device
        length = self.lengths[idx].float()
        r = 1 + (torch.rand(b, device=dev, generator=gen) * 2 - 1) * speed
        r = torch.minimum(r, (length - 1) / (w - 1))
        span = (w - 1) * r
        start = torch.rand(b, device=dev, generator=gen) * (length - 1 - span)
        pos = start[:, None] + r[:, None] * torch.arange(w, device=dev)
        i0 = pos.floor().long()
        frac = (pos - i0)[:, None, :]
        last = (self.lengths[idx] - 1)[:, None]
        base = self.offsets[idx][:, None]
        a = self.x[:, base + i0].permute(1, 0, 2)
        z = self.x[:, base + torch.minimum(i0 + 1, last)].permute(1, 0, 2)
        return a * (1 - frac) + z * frac

    def windows(self, idx: np.ndarray, hop_frames: int) -> tuple[torch.Tensor, np.ndarray]:
        """All sliding windows of clips `idx` (hop `hop_frames`) and each window's clip row."""
        rows, owners = [], []
        for k, i in enumerate(idx):
            o, n = int(self._off[i]), int(self._len[i])
            for s in window_starts(n, self.win, hop_frames):
                rows.append(self.x[:, o + s : o + s + self.win])
                owners.append(k)
        return torch.stack(rows), np.asarray(owners)

    def centre_windows(self, idx: np.ndarray) -> torch.Tensor:
        """One window per clip, centred on the kept (speech) segment."""
        rows = []
        for i in idx:
            o, n = int(self._off[i]), int(self._len[i])
            s = max(0, (n - self.win) // 2)
            rows.append(self.x[:, o + s : o + s + self.win])
        return torch.stack(rows)


def merge_caches(caches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One cache of several (same mel options and window): clips in order, offsets shifted."""
    first = caches[0]
    for c in caches[1:]:
        for k in ("format", "mel_options", "window_s"):
            if str(c[k]) != str(first[k]):
                raise ValueError(f"caches differ in {k}: cannot merge")
    shift = np.cumsum([0] + [c["mels"].shape[1] for c in caches[:-1]])
    out = {k: first[k] for k in ("format", "mel_options", "window_s")}
    out["mels"] = np.concatenate([c["mels"] for c in caches], axis=1)
    out["offsets"] = np.concatenate([c["offsets"] + s for c, s in zip(caches, shift, strict=True)])
    for k in ("lengths", "labels", "actors", "intensity", "names"):
        out[k] = np.concatenate([c[k] for c in caches])
    out["corpus"] = np.concatenate(
        [c.get("corpus", np.full(len(c["labels"]), "ravdess")) for c in caches]
    )
    return out


def balance_weights(corpus: np.ndarray, actors: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Sampling weight per clip so that no corpus or speaker dominates an epoch.

    A corpus's share grows as its clip count to `power` (0.5: four times the clips, twice the
    share), and so does each speaker's share within its corpus; the weights sum to one.
    """
    w = np.zeros(len(corpus))
    names, n_corpus = np.unique(corpus, return_counts=True)
    share = n_corpus.astype(float) ** power
    share /= share.sum()
    for name, s in zip(names, share, strict=True):
        in_c = corpus == name
        spk, n_spk = np.unique(actors[in_c], return_counts=True)
        spk_share = n_spk.astype(float) ** power
        spk_share /= spk_share.sum()
        for a, ss, n in zip(spk, spk_share, n_spk, strict=True):
            w[in_c & (actors == a)] = s * ss / n
    return w / w.sum()


# ----------------------------------------------------------------------------- augmentation


def _uniform(shape, lo, hi, dev, gen) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, device=dev, generator=gen)


def warp_mel(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Stretch the mel axis by 1 +- `amount` per example (a rough pitch/formant shift)."""
    if amount <= 0:
        return x
    b, m, w = x.shape
    f = _uniform((b, 1), 1 - amount, 1 + amount, x.device, gen)
    pos = torch.clamp(torch.arange(m, device=x.device) * f, 0, m - 1)
    i0 = pos.floor().long()
    i1 = torch.clamp(i0 + 1, max=m - 1)
    frac = (pos - i0)[:, :, None]
    g0 = torch.gather(x, 1, i0[:, :, None].expand(b, m, w))
    g1 = torch.gather(x, 1, i1[:, :, None].expand(b, m, w))
    return g0 * (1 - frac) + g1 * frac


def add_noise(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Add stationary, randomly tilted noise in the power domain, 3-9 nats below the peak."""
    if p <= 0:
        return x
    b, m, w = x.shape
    dev = x.device
    peak = x.mean(dim=2).amax(dim=1)
    level = peak - _uniform((b,), 3.0, 9.0, dev, gen)
    tilt = _uniform((b, 1), -1.5, 1.5, dev, gen) * torch.linspace(-1, 1, m, device=dev)
    noise = level[:, None, None] + tilt[:, :, None]
    noise = noise + 0.5 * torch.randn((b, m, w), device=dev, generator=gen)
    on = (torch.rand(b, device=dev, generator=gen) < p)[:, None, None]
    return torch.where(on, torch.logaddexp(x, noise), x)


def add_reverb(x: torch.Tensor, mel: MelOptions, p: float, gen: torch.Generator) -> torch.Tensor:
    """A room's tail in the power domain: each frame leaks into the next ones with an
    exponential decay (RT60 0.2-0.9 s) at a wet level of -12 to -3 dB, per example."""
    if p <= 0:
        return x
    b, m, w = x.shape
    dev = x.device
    frames_per_s = mel.sample_rate / mel.hop
    taps = int(round(0.6 * frames_per_s))  # 0.6 s: later energy is negligible after the decay
    rt60 = _uniform((b, 1), 0.2, 0.9, dev, gen)
    decay = 13.8155 / (rt60 * frames_per_s)  # power falls by 60 dB (ln 1e6) over RT60
    k = torch.arange(1, taps + 1, device=dev, dtype=x.dtype)[None]
    wet = 10 ** (_uniform((b, 1), -1.2, -0.3, dev, gen))
    kernel = wet * torch.exp(-decay * k)  # (b, taps), power gains of frames 1..taps ago
    peak = x.amax(dim=(1, 2), keepdim=True)
    power = torch.exp(x - peak)  # scaled for range; the scale cancels in the log below
    padded = nn.functional.pad(power, (taps, 0))
    # grouped conv: example i's kernel on each of its m bands
    weight = kernel.flip(1)[:, None, :].repeat_interleave(m, dim=0)
    tail = nn.functional.conv1d(padded.reshape(1, b * m, -1), weight, groups=b * m)
    tail = tail.reshape(b, m, -1)[:, :, :w]
    wetx = torch.log(power + tail + 1e-12) + peak
    on = (torch.rand(b, device=dev, generator=gen) < p)[:, None, None]
    return torch.where(on, wetx, x)


def band_limit(x: torch.Tensor, mel: MelOptions, p: float, gen: torch.Generator) -> torch.Tensor:
    """A narrow-band channel (telephone and speech codecs): the bands above a cut-off of
    3.4-7 kHz drop to the example's floor."""
    if p <= 0:
        return x
    b, m, w = x.shape
    dev = x.device
    centre_hz = torch.as_tensor(mel_centres_hz(mel), dtype=x.dtype, device=dev)
    cutoff = _uniform((b, 1), 3400.0, 7000.0, dev, gen)
    cut = centre_hz[None, :] > cutoff  # (b, m)
    on = (torch.rand(b, device=dev, generator=gen) < p)[:, None]
    floor = x.amin(dim=(1, 2), keepdim=True)
    return torch.where((cut & on)[:, :, None], floor, x)


def spec_augment(x: torch.Tensor, r: Recipe, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment: zero (= window mean) random time and mel-band stripes."""
    b, m, w = x.shape
    dev = x.device
    fill = x.mean(dim=(1, 2), keepdim=True)
    mask = torch.zeros((b, m, w), dtype=torch.bool, device=dev)
    for n, size, axis in ((r.time_masks, r.time_mask_max, 2), (r.freq_masks, r.freq_mask_max, 1)):
        dim = x.shape[axis]
        for _ in range(n):
            width = torch.floor(_uniform((b, 1), 0, size + 1, dev, gen))
            start = torch.floor(torch.rand((b, 1), device=dev, generator=gen) * (dim - width))
            ar = torch.arange(dim, device=dev)[None]
            hit = (ar >= start) & (ar < start + width)
            mask |= hit[:, None, :] if axis == 2 else hit[:, :, None]
    return torch.where(mask, fill, x)


# ----------------------------------------------------------------------------- training


def _lr_at(step: int, total: int, r: Recipe) -> float:
    warm = max(1, int(r.warmup * total))
    if step < warm:
        return r.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return r.lr * 0.5 * (1 + math.cos(math.pi * t))


def train_one(
    bank: MelBank,
    train_idx: np.ndarray,
    recipe: Recipe,
    seed: int = 0,
    eval_idx: np.ndarray | None = None,
    eval_every: int = 10,
    epochs: int | None = None,
    init: VoiceNet | None = None,
    sample_weights: np.ndarray | None = None,
    steps: int | None = None,
) -> tuple[VoiceNet, list[dict]]:
    """Train one network on clips `train_idx`; returns it (eval mode) and a per-epoch history.

    `init` starts from a trained network's weights (fine-tuning) instead of random ones.
    `sample_weights` (one per clip of `train_idx`) draws each epoch's clips with replacement
    in those proportions instead of every clip equally (see `balance_weights`). `steps` fixes
    the number of optimiser steps (so runs on different amounts of data train as long).
    """
    dev = bank.device
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    net = VoiceNet(replace(recipe.net, mel=bank.mel)).to(dev)
    if init is not None:
        net.load_state_dict(init.state_dict())
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    other = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": other, "weight_decay": 0},
        ],
        lr=recipe.lr,
    )
    epochs = epochs if epochs is not None else recipe.epochs
    tr = torch.as_tensor(train_idx, device=dev)
    per_epoch = math.ceil(len(tr) * recipe.crops_per_clip / recipe.batch)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    total = steps if steps is not None else epochs * per_epoch
    draw = None
    if sample_weights is not None:
        if len(sample_weights) != len(tr):
            raise ValueError("sample_weights needs one weight per training clip")
        draw = torch.as_tensor(sample_weights, dtype=torch.float64, device=dev)
    beta = torch.distributions.Beta(recipe.mixup, recipe.mixup) if recipe.mixup > 0 else None
    history: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        n_draw = len(tr) * recipe.crops_per_clip
        if draw is not None:
            order = tr[torch.multinomial(draw, n_draw, replacement=True, generator=gen)]
        else:
            order = torch.cat(
                [
                    tr[torch.randperm(len(tr), device=dev, generator=gen)]
                    for _ in range(recipe.crops_per_clip)
                ]
            )
        loss_sum, seen = torch.zeros((), device=dev), 0
        for k in range(per_epoch):
            idx = order[k * recipe.batch : (k + 1) * recipe.batch]
            if len(idx) < 2 or step >= total:
                continue
            x = bank.crops(idx, recipe.speed, gen)
            x = warp_mel(x, recipe.warp, gen)
            x = add_reverb(x, bank.mel, recipe.reverb_p, gen)
            x = band_limit(x, bank.mel, recipe.band_limit_p, gen)
            x = add_noise(x, recipe.noise_p, gen)
            x = spec_augment(x, recipe, gen)
            y = nn.functional.one_hot(bank.labels[idx], len(LABELS)).float()
            if beta is not None:
                lam = beta.sample((len(idx), 1)).to(dev)
                perm = torch.randperm(len(idx), device=dev, generator=gen)
                x = lam[:, :, None] * x + (1 - lam[:, :, None]) * x[perm]
                y = lam * y + (1 - lam) * y[perm]
            y = y * (1 - recipe.label_smoothing) + recipe.label_smoothing / len(LABELS)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, recipe)
            logits, _ = net.forward_mel(x)
            loss = -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        rec = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / max(1, seen),
            "s": time.perf_counter() - t0,
        }
        if eval_idx is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            net.eval()
            clip_p, win_p = predict_cached([net], bank, eval_idx)
            y_true = bank.labels[torch.as_tensor(eval_idx, device=dev)].cpu().numpy()
            rec["val_clip_acc"] = float((clip_p.argmax(1) == y_true).mean())
            rec["val_window_acc"] = float((win_p.argmax(1) == y_true).mean())
        history.append(rec)
        log.info("seed %d %s", seed, rec)
    net.eval()
    return net, history


@torch.inference_mode()
def predict_cached(
    nets: Sequence[VoiceNet], bank: MelBank, idx: np.ndarray, hop_s: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """(clip probs: mean over sliding windows, centre-window probs), both (len(idx), 7)."""
    hop = max(1, int(round(hop_s * bank.mel.sample_rate / bank.mel.hop)))
    wins, owner = bank.windows(idx, hop)
    centre = bank.centre_windows(idx)

    def probs(x: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(x), 512):
            p = torch.stack([torch.softmax(n.forward_mel(x[i : i + 512])[0], 1) for n in nets])
            out.append(p.mean(0).cpu().numpy())
        return np.concatenate(out)

    pw = probs(wins)
    clip = np.zeros((len(idx), len(LABELS)))
    np.add.at(clip, owner, pw)
    clip /= np.bincount(owner, minlength=len(idx))[:, None]
    return clip, probs(centre)


def ensemble(nets: Sequence[VoiceNet]) -> VoiceEnsemble:
    """Members share one front end; probabilities are averaged."""
    return VoiceEnsemble([n.cpu().eval() for n in nets]).eval()


def save_weights(model: VoiceEnsemble, path: str | Path, meta: dict) -> None:
    """Weight file: format tag, architecture, window, labels, member state dicts, metadata."""
    torch.save(
        {
            "format": WEIGHTS_FORMAT,
            "net": model.opt.to_dict(),
            "window_s": float(meta.get("window_s", 2.0)),
            "labels": list(LABELS),
            "members": [
                {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                for m in model.members
            ],
            "meta": json.dumps(meta),
        },
        path,
    )


def keep_members(src: str | Path, dst: str | Path, k: int, **meta_updates) -> None:
    """Write a copy of weight file `src` with only its first `k` networks (e.g. to fit a
    latency budget), with `meta_updates` merged into its metadata."""
    blob = torch.load(src, map_location="cpu", weights_only=True)
    if not 1 <= k <= len(blob["members"]):
        raise ValueError(f"{src} has {len(blob['members'])} member(s), cannot keep {k}")
    meta = json.loads(blob.get("meta", "{}"))
    meta.update(meta_updates, members=k)
    torch.save({**blob, "members": blob["members"][:k], "meta": json.dumps(meta)}, dst)


# ----------------------------------------------------------------------------- session head


@torch.inference_mode()
def window_embeddings(
    net: VoiceNet, bank: MelBank, idx: np.ndarray, hop_s: float = 0.5, chunk: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of the sliding windows of clips `idx` (the windows `predict_cached` scores):
    (emb (n, D), each window's clip row in the bank (n,), seconds of new speech (n,): a clip's
    first window brings `window_s`, each later one `hop_s`; the network's probabilities
    (n, 7))."""
    net.eval()
    hop = max(1, int(round(hop_s * bank.mel.sample_rate / bank.mel.hop)))
    embs, probs, owners = [], [], []
    for s in range(0, len(idx), chunk):
        part = np.asarray(idx[s : s + chunk])
        wins, owner = bank.windows(part, hop)
        for i in range(0, len(wins), 256):
            logits, emb = net.forward_mel(wins[i : i + 256])
            embs.append(emb.cpu().numpy())
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        owners.append(part[owner])
    owner = np.concatenate(owners)
    first = np.r_[True, owner[1:] != owner[:-1]]
    seconds = np.where(first, bank.window_s, hop * bank.mel.hop / bank.mel.sample_rate)
    return np.concatenate(embs).astype(np.float64), owner, seconds, np.concatenate(probs)


def fit_session_head(
    emb: np.ndarray,
    owner: np.ndarray,
    seconds: np.ndarray,
    bank: MelBank,
    strength_s: float,
    seed: int = 0,
    l2: float = 1e-3,
    balance: float | None = 0.5,
    corpus_sessions: Sequence[str] = (),
    net_weight: float = 0.0,
) -> SessionHead:
    """The session head on windows `emb` of the training clips `owner` (rows of `bank`).

    The prior is the training windows' (balanced) mean and variance; each window is
    standardised as a live session of random length of its own speaker would have it
    (`simulated_sessions`); a softmax regression is fitted on that. The clips of the corpora
    in `corpus_sessions` form one speaker per corpus (URDU's speaker tags mostly carry one
    emotion each, so a session of one tag would remove the emotion itself). `net_weight` is
    stored: the share of the network's own probabilities in what the head returns live.
    """
    clips = np.unique(owner)
    if balance is None:
        cw = np.ones(len(clips))
    else:
        cw = balance_weights(bank.corpus[clips], bank.actors[clips], balance)
    per_clip = np.zeros(len(bank.actors))
    per_clip[clips] = cw / np.bincount(owner, minlength=len(bank.actors))[clips]
    sw = per_clip[owner]
    mean = np.average(emb, axis=0, weights=sw)
    var = np.maximum(np.average((emb - mean) ** 2, axis=0, weights=sw), 1e-4)
    speaker = bank.actors[owner].astype(np.int64)
    for i, name in enumerate(corpus_sessions):
        speaker[bank.corpus[owner] == name] = -1 - i
    z = simulated_sessions(
        emb, seconds, speaker, owner, mean, var, strength_s, np.random.default_rng(seed)
    )
    w, b = fit_head(z, bank.labels[torch.as_tensor(owner)].cpu().numpy(), sw, l2=l2)
    return SessionHead(w, b, mean, var, float(strength_s), net_weight=float(net_weight))
