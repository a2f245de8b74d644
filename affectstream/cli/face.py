"""`affectstream train|eval|bench face`: argument parsing and output only; the work lives in
train.py, evaluate.py and bench.py. Nothing heavy is imported at module import time."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affectstream.cli.args import write_json

log = logging.getLogger(__name__)


def _widths(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


# -- train -------------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="folder with Training.npz and PublicTest.npz (or .npz.xz)"
    )
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="runs/face/face.pt", help="checkpoint to write")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--widths", type=_widths, default=(32, 64, 128, 256), help="student conv widths")
    p.add_argument(
        "--teacher-widths",
        type=_widths,
        default=(),
        help="train a wider teacher alongside and distil",
    )
    p.add_argument("--kd-weight", type=float, default=0.5)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="cap epochs to fit this time (measured before training)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--history-json", default=None, help="write the per-epoch history here")
    g = p.add_argument_group(
        "fine-tuning (--init): a trained checkpoint on FER2013 Training plus another corpus"
    )
    g.add_argument("--init", default=None, metavar="W", help="start from this face checkpoint")
    g.add_argument("--extra", default=None, metavar="NPZ", help="48x48 crops of the other corpus")
    g.add_argument(
        "--extra-photos",
        default=None,
        metavar="NPZ",
        help="its full photos: the live tracker's crops of them are added",
    )
    g.add_argument(
        "--hold-out",
        default="",
        metavar="S1,S2",
        help="subjects of the extra corpus kept out of training and scored at the end",
    )
    g.add_argument("--steps", type=int, default=1000, help="fine-tuning steps")
    g.add_argument("--ft-lr", type=float, default=0.005, help="fine-tuning peak learning rate")
    g.add_argument("--extra-per-batch", type=int, default=16)
    g.add_argument(
        "--resume",
        default=None,
        metavar="FILE",
        help="keep the run's state here at every log point and continue from it if it exists "
        "(default: OUT.resume.pt; removed when the run ends)",
    )
    g.add_argument(
        "--teacher",
        nargs="+",
        default=None,
        metavar="W",
        help="face checkpoints whose mean reading (with the mirrored face) is distilled, "
        "with --kd-weight and --kd-temperature",
    )
    g.add_argument("--kd-temperature", type=float, default=4.0)
    g.add_argument(
        "--keep",
        type=float,
        default=0.0,
        help="ship keep * start + (1 - keep) * fine-tuned weights (0: the fine-tuned ones)",
    )


def _train_command(args: argparse.Namespace, epochs: int) -> str:
    parts = [
        "affectstream train face",
        f"--data {args.data}",
        f"--epochs {epochs}",
        f"--device {args.device}",
        f"--batch-size {args.batch_size}",
        f"--lr {args.lr}",
        f"--seed {args.seed}",
        f"--widths {','.join(map(str, args.widths))}",
    ]
    if args.teacher_widths:
        parts += [
            f"--teacher-widths {','.join(map(str, args.teacher_widths))}",
            f"--kd-weight {args.kd_weight}",
        ]
    if args.limit:
        parts.append(f"--limit {args.limit}")
    return " ".join(parts)


def run_train(args: argparse.Namespace) -> int:
    if args.init:
        return run_finetune(args)
    import torch

    from affectstream.core.errors import UsageError
    from affectstream.export.predictors import module_predictor
    from affectstream.models.face.data import FerFormatError, find_split, load_fer
    from affectstream.models.face.encoder import FaceEncoder
    from affectstream.models.face.evaluate import evaluate_fer
    from affectstream.models.face.net import FaceNetSpec
    from affectstream.models.face.train import TrainOptions, checkpoint, train
    from affectstream.models.metrics import print_report

    torch.set_num_threads(max(1, args.threads))
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device")
    try:
        tr = load_fer(find_split(args.data, "Training"))
        va = load_fer(find_split(args.data, "PublicTest"))
    except FerFormatError as e:
        raise UsageError(str(e)) from None
    if args.limit:
        tr, va = tr.subset(args.limit, args.seed), va.subset(args.limit, args.seed)
    opts = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        spec=FaceNetSpec(widths=args.widths),
        teacher_widths=args.teacher_widths,
        kd_weight=args.kd_weight,
        max_minutes=args.max_minutes,
    )

    def show(row: dict) -> None:
        print(
            " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )

    model, info = train(tr, va, opts, device=args.device, on_epoch=show)
    epochs = info["options"]["epochs"]
    teacher = info.pop("teacher_state_dict", None)
    trained = module_predictor("face", FaceEncoder(model_copy(model)).model)
    report = evaluate_fer(trained, va)
    tta = evaluate_fer(trained, va, tta=True)
    print_report(report, title=f"PublicTest (final epoch {epochs})")
    print(f"with flip TTA: accuracy={tta.accuracy:.4f} macro-F1={tta.macro_f1:.4f}")
    metrics = {"PublicTest": report.to_dict(), "PublicTest_flip_tta": tta.to_dict()}
    ckpt = checkpoint(model, info, _train_command(args, epochs), metrics)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    if teacher is not None:
        torch.save(
            {"state_dict": teacher, "widths": list(args.teacher_widths)},
            out.with_name(out.stem + "_teacher.pt"),
        )
    write_json(args.history_json, {"training": ckpt["training"], "metrics": metrics})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def _finetune_command(args: argparse.Namespace) -> str:
    parts = [
        "affectstream train face",
        f"--data {args.data}",
        f"--init {args.init}",
        f"--extra {args.extra}",
    ]
    if args.extra_photos:
        parts.append(f"--extra-photos {args.extra_photos}")
    if args.hold_out:
        parts.append(f"--hold-out {args.hold_out}")
    parts += [
        f"--steps {args.steps}",
        f"--ft-lr {args.ft_lr}",
        f"--extra-per-batch {args.extra_per_batch}",
        f"--keep {args.keep}",
        f"--seed {args.seed}",
    ]
    if args.teacher:
        parts += [
            f"--teacher {' '.join(args.teacher)}",
            f"--kd-weight {args.kd_weight}",
            f"--kd-temperature {args.kd_temperature}",
        ]
    return " ".join(parts)


def run_finetune(args: argparse.Namespace) -> int:
    """`train face --init W --extra NPZ`: fine-tune W; score PublicTest and held-out subjects."""
    import torch

    from affectstream.core.errors import UsageError
    from affectstream.core.labels import LABELS
    from affectstream.export.predictors import module_predictor
    from affectstream.models.face.data import FerData, FerFormatError, find_split, load_fer
    from affectstream.models.face.encoder import (
        FaceEncoder,
        WeightsError,
        load_checkpoint,
        net_from_checkpoint,
    )
    from affectstream.models.face.evaluate import predict_probs
    from affectstream.models.face.finetune import (
        FinetuneOptions,
        finetune,
        live_views,
        split_subjects,
    )
    from affectstream.models.face.train import checkpoint
    from affectstream.models.metrics import classification_report, print_report

    torch.set_num_threads(max(1, args.threads))
    if not args.extra and not args.extra_photos:
        raise UsageError("--init fine-tunes on FER2013 plus --extra (and/or --extra-photos)")
    try:
        ckpt = load_checkpoint(args.init)
        tr = load_fer(find_split(args.data, "Training"))
        va = load_fer(find_split(args.data, "PublicTest"))
        crops = load_fer(args.extra) if args.extra else None
        photos = load_fer(args.extra_photos, size=None) if args.extra_photos else None
        held = {s for s in args.hold_out.split(",") if s}
        tests: dict[str, FerData] = {}
        if held:  # split before cropping: a held-out subject's photos are never trained on
            if crops is not None:
                crops, tests["held_out_crops"] = split_subjects(crops, held)
            if photos is not None:
                photos, held_photos = split_subjects(photos, held)
                tests["held_out_tracker"] = live_views(None, held_photos)
        extra = live_views(crops, photos)
        teachers = [net_from_checkpoint(load_checkpoint(w)) for w in args.teacher or []]
    except (FerFormatError, WeightsError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.limit:
        tr, va = tr.subset(args.limit, args.seed), va.subset(args.limit, args.seed)
    model = net_from_checkpoint(ckpt)
    opts = FinetuneOptions(
        steps=args.steps,
        lr=args.ft_lr,
        extra_per_batch=args.extra_per_batch,
        base_per_batch=max(1, 64 - args.extra_per_batch),
        seed=args.seed,
        keep=args.keep,
        kd_weight=args.kd_weight,
        kd_temperature=args.kd_temperature,
    )
    print(f"fine-tuning on {len(tr)} FER2013 + {len(extra)} extra faces", flush=True)

    def show(row: dict) -> None:
        print(" ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)

    out = Path(args.out)
    resume = Path(args.resume) if args.resume else out.with_name(out.name + ".resume.pt")
    resume.parent.mkdir(parents=True, exist_ok=True)
    try:
        tuned, info = finetune(
            model, tr, extra, opts, on_log=show, resume=resume, teachers=teachers
        )
    except ValueError as e:  # a state file of another run
        raise UsageError(str(e)) from None
    predictor = module_predictor("face", FaceEncoder(model_copy(tuned)).model)

    def score(data: FerData, title: str) -> dict:
        pred = predict_probs(predictor, data.images).argmax(1)
        report = classification_report(data.labels, pred, LABELS)
        print_report(report, title=title)
        return {**report.to_dict(), "pred": pred.tolist(), "true": data.labels.tolist()}

    metrics = {"PublicTest": score(va, "PublicTest (after fine-tuning)")}
    for key, data in tests.items():
        metrics[key] = score(data, f"{key} {sorted(held)} ({len(data)} faces)")
    # the checkpoint keeps the summaries; --history-json also keeps every prediction
    slim = {
        k: {n: v for n, v in m.items() if n not in ("pred", "true")} for k, m in metrics.items()
    }
    train_info = {"init": str(args.init), "init_training": ckpt.get("training", {}), **info}
    train_info["held_out"] = sorted(held)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint(tuned, train_info, _finetune_command(args), slim), out)
    write_json(args.history_json, {"training": train_info, "metrics": metrics})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def model_copy(model):
    import copy

    return copy.deepcopy(model)


# -- eval --------------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fer2013", required=True, help="a FER2013-format .npz (images, labels, classes)"
    )
    p.add_argument("--weights", default=None, help="face checkpoint (default: the shipped one)")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument(
        "--onnx", default=None, help="evaluate this exported ONNX model (e.g. the int8 one) instead"
    )
    p.add_argument("--tta", action="store_true", help="average with the mirrored face")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="W",
        help="also score these weights ('shipped': the shipped file) on the same faces and "
        "compare: accuracy of both and of the difference, with its 95 %% interval from a "
        "paired bootstrap over the faces",
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument(
        "--tracker",
        action="store_true",
        help="the file holds full photos (any square size): score the live tracker's crops",
    )
    p.add_argument(
        "--subjects",
        default="",
        metavar="S1,S2",
        help="only these subjects (names up to the first dot, e.g. JAFFE's KA)",
    )
    p.add_argument("--threads", type=int, default=1)
    from affectstream.cli.args import add_eval_backend_arguments

    add_eval_backend_arguments(p)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from affectstream.cli.args import eval_predictor
    from affectstream.core.errors import UsageError
    from affectstream.core.labels import LABELS
    from affectstream.export.base import BackendError
    from affectstream.models.face.data import FerFormatError, load_fer
    from affectstream.models.face.encoder import WeightsError
    from affectstream.models.face.evaluate import predict_probs
    from affectstream.models.face.finetune import live_views, split_subjects
    from affectstream.models.metrics import (
        classification_report,
        paired_accuracy_bootstrap,
        print_report,
    )

    torch.set_num_threads(max(1, args.threads))
    try:
        data = load_fer(args.fer2013, size=None if args.tracker else 48)
        if args.subjects:
            data = split_subjects(data, {s for s in args.subjects.split(",") if s})[1]
        # --onnx: that one file on ONNX Runtime (e.g. the int8 model); else --backend
        predictor = eval_predictor(args, "face", args.weights, onnx_file=args.onnx or None)
    except BackendError as e:
        if args.onnx:  # ONNX Runtime's own message spans lines; its type says enough
            raise UsageError(
                f"ONNX model {args.onnx} unusable: {type(e.__cause__ or e).__name__}"
            ) from None
        raise UsageError(str(e)) from None
    except (FerFormatError, WeightsError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.limit:
        data = data.head(args.limit)
    photos = len(data)
    if args.tracker:
        data = live_views(None, data)
        print(f"the live tracker found a face in {len(data)} of {photos} photos")
        if not len(data):
            raise UsageError(f"{args.fer2013}: the tracker found no face")
    probs = predict_probs(predictor, data.images, tta=args.tta)
    report = classification_report(data.labels, probs.argmax(1), LABELS)
    title = f"face on {args.fer2013}" + (" (tracker crops)" if args.tracker else "")
    print_report(report, title=title + (" (flip TTA)" if args.tta else ""))
    compared = None
    if args.baseline:
        weights = None if args.baseline == "shipped" else args.baseline
        try:
            base = eval_predictor(args, "face", weights)
        except (BackendError, WeightsError, FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        base_pred = predict_probs(base, data.images, tta=args.tta).argmax(1)
        compared = paired_accuracy_bootstrap(
            data.labels, base_pred, probs.argmax(1), n=args.bootstrap
        )
        print(
            f"accuracy: baseline {args.baseline} {compared['a']:.4f}, these weights "
            f"{compared['b']:.4f}; difference {100 * compared['diff']:+.2f} points (sd "
            f"{100 * compared['diff_sd']:.2f}, 95 % interval [{100 * compared['diff_lo']:+.2f}, "
            f"{100 * compared['diff_hi']:+.2f}] over {compared['resamples']} resamples of the "
            f"faces; {compared['fixed']} faces fixed, {compared['broken']} broken)"
        )
        compared["weights"] = args.baseline
    write_json(
        args.json,
        {
            "baseline": compared,
            "data": str(args.fer2013),
            "weights": str(args.onnx or args.weights or "shipped"),
            "tta": bool(args.tta),
            "tracker": {"photos": photos, "faces_found": len(data)} if args.tracker else None,
            "subjects": args.subjects or None,
            **report.to_dict(),
        },
    )
    return 0


# -- bench -------------------------------------------------------------------------------------
def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument(
        "--video",
        default=None,
        help="video for the per-frame face path (default: the checkout's "
        "../shared/media/Megamind.avi, resolved when the command runs)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch, onnxruntime, OpenCV"
    )
    p.add_argument("--iters", type=int, default=300, help="model inference repetitions per backend")
    p.add_argument("--frames", type=int, default=0, help="use only the first N video frames")
    p.add_argument("--passes", type=int, default=2, help="alternating passes over the frames")
    p.add_argument("--weights", default=None)


def run_bench(args: argparse.Namespace) -> int:
    from affectstream.bench.face import print_bench, run_face_bench
    from affectstream.cli.defaults import fill_shared_defaults
    from affectstream.core.errors import UsageError

    fill_shared_defaults(args, {"video": ("--video FILE", "media/Megamind.avi")})
    video = Path(args.video)
    if not video.is_file():
        raise UsageError(f"video not found: {video}")
    try:
        result = run_face_bench(
            video,
            threads=args.threads,
            iters=args.iters,
            weights=args.weights,
            passes=args.passes,
            frames=args.frames,
        )
    except ValueError as e:  # WeightsError (a ValueError), no frames, bad counts
        raise UsageError(str(e)) from None
    print_bench(result)
    write_json(args.json, result)
    return 0
