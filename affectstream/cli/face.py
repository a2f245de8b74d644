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
    p.add_argument("--threads", type=int, default=1)
    from affectstream.cli.args import add_eval_backend_arguments

    add_eval_backend_arguments(p)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from affectstream.cli.args import eval_predictor
    from affectstream.core.errors import UsageError
    from affectstream.export.base import BackendError
    from affectstream.models.face.data import FerFormatError, load_fer
    from affectstream.models.face.encoder import WeightsError
    from affectstream.models.face.evaluate import evaluate_fer
    from affectstream.models.metrics import print_report

    torch.set_num_threads(max(1, args.threads))
    try:
        data = load_fer(args.fer2013)
        # --onnx: that one file on ONNX Runtime (e.g. the int8 model); else --backend
        predictor = eval_predictor(args, "face", args.weights, onnx_file=args.onnx or None)
    except BackendError as e:
        if args.onnx:  # ONNX Runtime's own message spans lines; its type says enough
            raise UsageError(
                f"ONNX model {args.onnx} unusable: {type(e.__cause__ or e).__name__}"
            ) from None
        raise UsageError(str(e)) from None
    except (FerFormatError, WeightsError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if args.limit:
        data = data.head(args.limit)
    report = evaluate_fer(predictor, data, tta=args.tta)
    print_report(report, title=f"face on {args.fer2013}" + (" (flip TTA)" if args.tta else ""))
    write_json(
        args.json,
        {
            "data": str(args.fer2013),
            "weights": str(args.onnx or args.weights or "shipped"),
            "tta": bool(args.tta),
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
    from affectstream.cli.defaults import shared_dir
    from affectstream.core.errors import UsageError

    video = Path(args.video) if args.video else shared_dir() / "media" / "Megamind.avi"
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
