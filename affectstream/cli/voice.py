"""`affectstream train|eval|bench voice`: argument parsing and printing only.

Nothing heavy is imported at module import time; each command imports what it uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

from affectstream.cli.args import write_json
from affectstream.cli.defaults import fill_shared_defaults

log = logging.getLogger(__name__)


def _usage(msg: str):
    from affectstream.core.errors import UsageError

    return UsageError(msg)


def actors_arg(text: str) -> tuple[int, ...]:
    """`--actors 1,2,5-8` as actor numbers; a bad list is a usage error naming it."""
    from affectstream.models.voice.data import DataError, parse_actors

    try:
        return parse_actors(text)
    except DataError as e:
        raise _usage(str(e)) from None


def _scan(folder: str | Path):
    from affectstream.models.voice.data import DataError, scan

    try:
        return scan(folder)
    except DataError as e:
        raise _usage(str(e)) from None


def _own_args() -> list[str]:
    """The arguments after `voice` on this process's command line (for the report)."""
    argv = sys.argv[1:]
    return argv[argv.index("voice") + 1 :] if "voice" in argv else argv


def _print_scores(title: str, d: dict) -> None:
    """Print a scores dict (from evaluate.scores) with the shared metrics table."""
    from dataclasses import fields

    from affectstream.models.metrics import ClassificationReport, print_report

    kw = {}
    for f in fields(ClassificationReport):
        v = d[f.name]
        kw[f.name] = (
            tuple(tuple(r) for r in v)
            if f.name == "confusion"
            else (tuple(v) if isinstance(v, list) else v)
        )
    print_report(ClassificationReport(**kw), title=title)


# ----------------------------------------------------------------------------- train


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="corpus folders: RAVDESS-named files or a clips.csv folder such as "
        "speech_extra/nemo (default: the checkout's ../shared/data/ravdess_speech, "
        "resolved when the command runs)",
    )
    p.add_argument(
        "--cache",
        nargs="+",
        default=None,
        help="log-mel caches (.npz), one per --data folder in the same order: each is read if "
        "it exists, else built from its folder and written",
    )
    p.add_argument("--actors", default="", help="use only these actors at all (default: every one)")
    p.add_argument("--test-actors", default="17,18,19,20", help="held out, scored at the end")
    p.add_argument(
        "--hold-out-corpus",
        default="",
        help="train on no clip of this corpus (folder name, e.g. emovo) and score it at the end: "
        "one row of the leave-one-corpus-out table",
    )
    p.add_argument(
        "--val-actors",
        default="",
        help="actors for choosing among --recipes (then the final fit uses them too)",
    )
    p.add_argument("--recipes", default="base", help="comma-separated recipe names to compare")
    p.add_argument("--select-seeds", type=int, default=2, help="seeds per recipe when selecting")
    p.add_argument(
        "--select-budget-s",
        type=float,
        default=0.0,
        help="start no further recipe after this many seconds of selection (0: no limit)",
    )
    p.add_argument("--seeds", type=int, default=1, help="networks in the shipped ensemble")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument(
        "--steps", type=int, default=None, help="train this many optimiser steps (overrides epochs)"
    )
    p.add_argument("--init", default=None, help="fine-tune from this weight file's first network")
    p.add_argument(
        "--balance",
        type=float,
        default=None,
        help="draw clips so each corpus (and each speaker in it) gets a share growing as its "
        "clip count to this power (0.5: square root; default: every clip equally)",
    )
    p.add_argument(
        "--session-head",
        action="store_true",
        help="fit only the session head (per-session normalised embedding -> classes) on the "
        "frozen encoder of --init (default: the shipped voice.pt); --out names the .npz, which "
        "is used when it sits beside its encoder as <encoder>.session.npz",
    )
    p.add_argument(
        "--session-strength",
        type=float,
        default=30.0,
        help="seconds of speech the training statistics count as in a new session "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--session-net-weight",
        type=float,
        default=0.5,
        help="share of the network's own probabilities in the session head's output "
        "(default: %(default)s; 0: the session head alone)",
    )
    p.add_argument(
        "--session-by-corpus",
        default="",
        help="corpora whose clips form one training session per corpus instead of one per "
        "speaker (comma-separated; e.g. urdu, whose speaker tags mostly carry one emotion)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default="voice.pt", help="weight file to write")
    p.add_argument("--json", default=None, help="write the training report here")


def _load_caches(args: argparse.Namespace, T) -> tuple[dict, str]:
    """The training cache from --data and --cache (merged when several), and its description."""
    from affectstream.models.voice.data import DataError

    if args.data is None and not args.cache:
        fill_shared_defaults(args, {"data": ("--data DIR", "data/ravdess_speech")})
        args.data = [args.data]
    datas = [Path(d) for d in args.data] if args.data else []
    caches = list(args.cache or [])
    if caches and datas and len(caches) != len(datas):
        raise _usage(f"{len(caches)} --cache file(s) for {len(datas)} --data folder(s)")
    parts, desc = [], []
    for i in range(max(len(datas), len(caches))):
        path = Path(caches[i]) if caches else None
        if path is not None and path.is_file():
            try:
                parts.append(T.load_cache(path))
            except (ValueError, OSError) as e:
                raise _usage(str(e)) from None
            desc.append(f"cache {path}")
            continue
        if i >= len(datas):
            raise _usage(f"--cache {path} does not exist and no --data folder builds it")
        clips = _scan(datas[i])
        print(f"decoding {len(clips)} clips from {datas[i]} ...", file=sys.stderr)
        try:
            parts.append(T.build_cache(clips))
        except DataError as e:
            raise _usage(str(e)) from None
        if path is not None:
            T.save_cache(parts[-1], path)
        desc.append(str(datas[i]))
    return (parts[0] if len(parts) == 1 else T.merge_caches(parts)), ", ".join(desc)


def run_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from affectstream.models.voice import train as T
    from affectstream.models.voice.evaluate import corpus_scores

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise _usage("--device cuda given but CUDA is not available")
    unknown = [r for r in args.recipes.split(",") if r not in T.RECIPES]
    if unknown:
        raise _usage(f"unknown recipe {unknown[0]} (known: {', '.join(T.RECIPES)})")
    recipes = [T.RECIPES[r] for r in args.recipes.split(",")]
    test_actors = actors_arg(args.test_actors)
    val_actors = actors_arg(args.val_actors) if args.val_actors else ()
    if set(val_actors) & set(test_actors):
        raise _usage("--val-actors and --test-actors overlap")
    init = None
    if args.init:
        from affectstream.models.voice.encoder import load_networks

        try:
            init = load_networks(args.init)[0]
        except (ValueError, OSError) as e:
            raise _usage(str(e)) from None

    t0 = time.perf_counter()
    cache, data_desc = _load_caches(args, T)
    bank = T.MelBank(cache, args.device)
    held_corpus = args.hold_out_corpus
    if held_corpus and held_corpus not in set(bank.corpus):
        raise _usage(
            f"--hold-out-corpus {held_corpus}: not among the corpora {sorted(set(bank.corpus))}"
        )
    usable = bank.corpus != held_corpus
    all_actors = sorted({int(a) for a in bank.actors[usable]})
    if args.actors:
        all_actors = [a for a in all_actors if a in set(actors_arg(args.actors))]
    fit_actors = [a for a in all_actors if a not in test_actors]
    if not fit_actors:
        raise _usage("no actors left to train on after holding out --test-actors")
    report: dict = {
        "command": "affectstream train voice " + shlex.join(_own_args()),
        "data": data_desc,
        "device": args.device,
        "torch": torch.__version__,
        "test_actors": list(test_actors),
        "val_actors": list(val_actors),
        "hold_out_corpus": held_corpus or None,
        "init": args.init,
        "balance": args.balance,
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d"),
    }

    if args.session_head:
        return _run_session_head(args, bank, cache, fit_actors, test_actors, usable, report, t0)

    def weights_of(idx):
        if args.balance is None:
            return None
        return T.balance_weights(bank.corpus[idx], bank.actors[idx], args.balance)

    def fit_one(idx, recipe, seed, **kw):
        return T.train_one(
            bank,
            idx,
            recipe,
            seed=seed,
            epochs=args.epochs,
            init=init,
            sample_weights=weights_of(idx),
            steps=args.steps,
            **kw,
        )

    recipe = recipes[0]
    if val_actors:
        sel_train = bank.indices([a for a in fit_actors if a not in val_actors])
        val = bank.indices(val_actors)
        y_val = cache["labels"][val]
        selection = []
        for r in recipes:
            if args.select_budget_s and time.perf_counter() - t0 > args.select_budget_s:
                selection.append({"recipe": r.name, "skipped": "selection time budget spent"})
                continue
            nets, accs, curves = [], [], []
            for seed in range(args.select_seeds):
                net, hist = fit_one(sel_train, r, seed, eval_idx=val)
                curves.append(
                    [(h["epoch"], h.get("val_clip_acc")) for h in hist if "val_clip_acc" in h]
                )
                clip_p, win_p = T.predict_cached([net], bank, val)
                accs.append(float((clip_p.argmax(1) == y_val).mean()))
                nets.append(net)
            ens_p, ens_w = T.predict_cached(nets, bank, val)
            row = {
                "recipe": r.name,
                "val_clip_acc_per_seed": accs,
                "val_clip_acc_mean": float(np.mean(accs)),
                "val_clip_acc_ensemble": float((ens_p.argmax(1) == y_val).mean()),
                "val_window_acc_ensemble": float((ens_w.argmax(1) == y_val).mean()),
                "val_clip_acc_curves": curves,
                "s": time.perf_counter() - t0,
            }
            selection.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        done = [row for row in selection if "skipped" not in row]
        best = max(done, key=lambda row: row["val_clip_acc_mean"])
        recipe = T.RECIPES[best["recipe"]]
        report["selection"] = selection
        report["chosen_recipe"] = recipe.name

    fit = bank.indices(fit_actors)
    nets, member_hist = [], []
    for seed in range(args.seeds):
        net, hist = fit_one(fit, recipe, 100 + seed)
        nets.append(net)
        member_hist.append(hist[-1])
    report.update(
        {
            "recipe": recipe.to_dict(),
            "epochs": args.epochs or recipe.epochs,
            "train_actors": fit_actors,
            "train_clips": int(len(fit)),
            "train_corpora": dict(Counter(str(c) for c in bank.corpus[fit])),
            "members": len(nets),
            "final_loss": [h["loss"] for h in member_hist],
        }
    )
    test = np.setdiff1d(bank.indices(test_actors), np.flatnonzero(~usable))
    if held_corpus:
        held = bank.corpus_indices([held_corpus])
        clip_p, win_p = T.predict_cached(nets, bank, held)
        report["held_out_corpus"] = corpus_scores(cache["labels"][held], clip_p, win_p)
    if len(test):
        y = cache["labels"][test]
        clip_p, win_p = T.predict_cached(nets, bank, test)
        report["test"] = {
            **corpus_scores(y, clip_p, win_p),
            "members_clip_acc": [
                float((T.predict_cached([n], bank, test)[0].argmax(1) == y).mean()) for n in nets
            ],
        }
    report["train_s"] = time.perf_counter() - t0
    model = T.ensemble(nets)
    T.save_weights(model, args.out, {**report, "window_s": bank.window_s})
    write_json(args.json, report)
    print(f"wrote {args.out} ({len(nets)} member(s), {report['train_s']:.0f} s)")
    if "test" in report:
        _print_scores(f"held-out actors {list(test_actors)}, clips", report["test"]["clips"])
        _print_scores("single window", report["test"]["single_window"])
    if held_corpus:
        _print_scores(f"held-out corpus {held_corpus}, clips", report["held_out_corpus"]["clips"])
    return 0


def _run_session_head(args, bank, cache, fit_actors, test_actors, usable, report, t0) -> int:
    """`train voice --session-head`: the session head on the frozen encoder of --init."""
    from dataclasses import replace

    import numpy as np

    from affectstream.export.predictors import resolve_weights
    from affectstream.models.voice import train as T
    from affectstream.models.voice.encoder import default_weights_path, load_networks
    from affectstream.models.voice.evaluate import corpus_scores
    from affectstream.models.voice.session import file_sha256, stream_sessions

    encoder = Path(resolve_weights(args.init) or default_weights_path())  # a shipped name too
    try:
        net = load_networks(encoder)[0]
    except (ValueError, OSError) as e:
        raise _usage(str(e)) from None
    fit = bank.indices(fit_actors)
    by_corpus = tuple(c for c in args.session_by_corpus.split(",") if c)
    if not 0.0 <= args.session_net_weight <= 1.0:
        raise _usage("--session-net-weight must be within 0..1")
    emb, owner, seconds, _ = T.window_embeddings(net, bank, fit)
    head = T.fit_session_head(
        emb,
        owner,
        seconds,
        bank,
        args.session_strength,
        seed=0,
        balance=args.balance,
        corpus_sessions=by_corpus,
        net_weight=args.session_net_weight,
    )
    report.update(
        {
            "session_head": True,
            "encoder": str(encoder),
            "encoder_sha256": file_sha256(encoder),
            "session_strength_s": args.session_strength,
            "session_net_weight": args.session_net_weight,
            "session_by_corpus": list(by_corpus),
            "train_actors": fit_actors,
            "train_clips": int(len(fit)),
            "train_windows": int(len(owner)),
            "train_corpora": dict(Counter(str(c) for c in bank.corpus[fit])),
        }
    )
    test = np.setdiff1d(bank.indices(test_actors), np.flatnonzero(~usable))
    if len(test):
        # one session per speaker, its clips in a seeded random order, as eval voice reads them
        rng = np.random.default_rng(0)
        order = np.concatenate(
            [rng.permutation(test[bank.actors[test] == a]) for a in sorted(set(bank.actors[test]))]
        )
        e, o, sec, net_p = T.window_embeddings(net, bank, order)
        pw = stream_sessions(head, e, sec, bank.actors[o], net_p)
        clip_p = np.zeros((len(bank.actors), pw.shape[1]))
        np.add.at(clip_p, o, pw)
        first = np.r_[True, o[1:] != o[:-1]]
        plain_p, _ = T.predict_cached([net], bank, order)
        y = cache["labels"][order]
        report["test"] = {
            "session": corpus_scores(y, clip_p[order], pw[first]),
            "stateless": corpus_scores(y, plain_p, plain_p),
        }
    report["train_s"] = time.perf_counter() - t0
    head = replace(head, encoder_sha256=report["encoder_sha256"], meta=report)
    head.save(args.out)
    write_json(args.json, report)
    print(f"wrote {args.out} (session head on {encoder}, {report['train_s']:.0f} s)")
    if "test" in report:
        _print_scores(
            f"held-out actors {list(test_actors)}, clips, one session per speaker",
            report["test"]["session"]["clips"],
        )
        _print_scores(
            "the same, stateless (the network's own head)", report["test"]["stateless"]["clips"]
        )
    return 0


# ----------------------------------------------------------------------------- eval


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        "--ravdess",
        dest="ravdess",
        required=True,
        help="corpus folder: laid out like ravdess_speech/, or with a clips.csv like "
        "speech_extra/emovo",
    )
    p.add_argument("--weights", default=None, help="weight file (default: the shipped one)")
    p.add_argument("--actors", default="", help="only these actors (comma-separated)")
    p.add_argument("--hop", type=float, default=0.5, help="window hop in seconds")
    p.add_argument(
        "--no-session",
        action="store_true",
        help="score every window on its own with the network's head, even when the weights "
        "have a session head (default: each speaker is one session)",
    )
    p.add_argument(
        "--utterance",
        choices=("auto", "both", "egemaps", "whisper", "none"),
        default="auto",
        help="which utterance heads to fuse with the CNN path (models/cards/voice.md): auto "
        "(default) reads the eGeMAPS head (<encoder>.egemaps.npz; needs the opensmile "
        "package) and the Whisper-encoder head (<encoder>.whisper.npz) wherever each can "
        "read; both, egemaps or whisper require those heads; none scores the CNN path alone",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", default=None, help="write the scores here")
    from affectstream.cli.args import add_eval_backend_arguments

    add_eval_backend_arguments(p)


def _utterance_choice(args: argparse.Namespace, enc) -> tuple[list[str], str]:
    """The utterance heads `eval voice` fuses in (feature sets), and why a head beside the
    weights was not read ("" when none was left out). The shipped voice reading is the CNN
    path fused with both heads; the eGeMAPS head needs the optional opensmile package (its
    licence is non-commercial), the Whisper-encoder head nothing extra."""
    from affectstream.models.voice.egemaps import INSTALL_HINT
    from affectstream.models.voice.utterance import EGEMAPS, WHISPER, available

    heads = getattr(enc, "utterance_heads", {})
    if args.utterance == "none":
        return [], "--utterance none" if heads else ""
    want = {"both": [EGEMAPS, WHISPER], "egemaps": [EGEMAPS], "whisper": [WHISPER]}.get(
        args.utterance
    )
    if want is not None:
        for f in want:
            if f not in heads:
                raise _usage(
                    f"--utterance {args.utterance}: no {f} head beside these voice weights "
                    "(fitted beside the same encoder)"
                )
            if not available(f):
                raise _usage(f"--utterance {args.utterance}: {INSTALL_HINT}")
        return want, ""
    use = [f for f in (EGEMAPS, WHISPER) if f in heads and available(f)]
    if EGEMAPS in heads and EGEMAPS not in use:
        print(
            f"warning: these voice weights have an eGeMAPS head, but it is not used: "
            f"{INSTALL_HINT}; the figures below are those of "
            + (" and ".join(["the CNN path", *(f"the {f} head" for f in use)])),
            file=sys.stderr,
        )
        return use, "opensmile not installed"
    return use, ""


def run_eval(args: argparse.Namespace) -> int:
    from affectstream.cli.args import eval_predictor
    from affectstream.export.base import BackendError
    from affectstream.models.voice.data import DataError
    from affectstream.models.voice.evaluate import evaluate_clips

    clips = _scan(args.ravdess)
    if args.actors:
        keep = set(actors_arg(args.actors))
        clips = [c for c in clips if c.actor in keep]
        if not clips:
            raise _usage(f"{args.ravdess}: no clips of actors {sorted(keep)}")
    try:
        enc = eval_predictor(args, "voice", args.weights)
    except (ValueError, OSError, BackendError) as e:
        raise _usage(str(e)) from None
    features, not_used = _utterance_choice(args, enc)
    try:
        res = evaluate_clips(
            enc, clips, hop_s=args.hop, sessions=not args.no_session, utterance=features
        )
    except DataError as e:
        raise _usage(str(e)) from None
    trained_on = set(enc.meta.get("train_actors", []))
    seen = sorted(trained_on & set(res["actors"]))
    res["weights"] = str(args.weights or "shipped")
    if not_used:  # a head beside the weights was not read: say why in the report
        res["utterance_not_used"] = not_used
    res["actors_seen_in_training"] = seen
    write_json(args.json, res)
    if seen:
        print(f"warning: actors {seen} were in this model's training set", file=sys.stderr)
    print(f"{len(clips)} clips, actors {res['actors']}, window {enc.window_s:.2f} s")
    if res["session_norm"]:
        print(
            "each speaker is one session (its clips in a seeded random order); "
            f"the network's own head, stateless: clip accuracy "
            f"{res['stateless']['clips']['accuracy']:.3f}"
        )
    if res["utterance_features"]:
        mix = ", ".join(f"{f} {w:.2f}" for f, w in res["utterance_weights"].items())
        print(
            f"utterance heads fused in, each clip read once (weights {mix}; each speaker one "
            f"session); the CNN path alone: clip accuracy "
            f"{res['cnn_path']['clips']['accuracy']:.3f}"
        )
    _print_scores("clips (mean over windows)", res["clips"])
    _print_scores("single centre window", res["single_window"])
    if len(res["classes"]) < 7:
        _print_scores(
            f"clips, argmax over its {len(res['classes'])} classes", res["clips_own_classes"]
        )
    return 0


# ----------------------------------------------------------------------------- bench


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="weight file (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch and ORT)")
    p.add_argument("--iters", type=int, default=200, help="timed calls per backend")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime row")
    p.add_argument(
        "--utterance",
        action="store_true",
        help="also time the utterance heads' feature extractors (Whisper statistics; eGeMAPS "
        "with the egemaps extra) on 1, 2 and 4 s of a voiced signal",
    )
    p.add_argument("--json", default=None, help="write the timings here")


def run_bench(args: argparse.Namespace) -> int:
    import os
    import platform

    from rich.console import Console
    from rich.table import Table

    from affectstream.bench.voice import bench_encoder, bench_utterance_heads

    if args.iters < 1:
        raise _usage("--iters must be >= 1")
    rows = bench_encoder(
        args.weights, threads=args.threads, iters=args.iters, onnx=not args.no_onnx
    )
    t = Table(title=f"voice encoder, one window, {args.threads} thread(s)")
    cols = ("backend", "members", "window s", "median ms", "p95 ms", "p99 ms", "CPU ms", "max |dp|")
    for col in cols:
        t.add_column(col, justify="right" if col != "backend" else "left")
    for r in rows:
        t.add_row(
            r["backend"],
            str(r["members"]),
            f"{r['window_s']:.2f}",
            f"{r['median_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['cpu_median_ms']:.2f}",
            f"{r['max_abs_diff']:.1e}",
        )
    Console().print(t)
    heads = bench_utterance_heads(iters=args.iters) if args.utterance else []
    if heads:
        u = Table(title="utterance heads' features, once per utterance (CPU: every thread)")
        for col in ("features", "speech s", "median ms", "p95 ms", "CPU ms"):
            u.add_column(col, justify="right" if col != "features" else "left")
        for r in heads:
            u.add_row(r["features"], f"{r['seconds']:.0f}", f"{r['median_ms']:.1f}",
                      f"{r['p95_ms']:.1f}", f"{r['cpu_median_ms']:.1f}")  # fmt: skip
        Console().print(u)
    write_json(
        args.json,
        {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "threads": args.threads,
            "iters": args.iters,
            "results": rows,
            "utterance_heads": heads,
        },
    )
    return 0
