"""`affectstream train face-int8`: the int8 ONNX of the face model, for CPUs; the work lives in
models/face/quantize.py. Nothing heavy is imported at module import time."""

from __future__ import annotations

import argparse

TRAIN_HELP = "quantise the face model to int8 ONNX for CPUs (calibrated on FER2013 Training)"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="folder with FER2013 Training.npz (or .npz.xz): the calibration faces",
    )
    p.add_argument(
        "--weights", metavar="W", default=None, help="face checkpoint (default: the shipped one)"
    )
    p.add_argument(
        "--out",
        metavar="OUT",
        default=None,
        help="int8 model to write (default: the shipped face.int8.onnx beside face.pt)",
    )
    p.add_argument(
        "--calib", type=int, default=300, metavar="N", help="calibration faces (default 300)"
    )


def run_train(args: argparse.Namespace) -> int:
    import torch

    from affectstream.core.errors import UsageError
    from affectstream.models.face.data import FerFormatError, find_split, load_fer
    from affectstream.models.face.encoder import FaceEncoder
    from affectstream.models.face.quantize import default_int8_path, quantize_int8

    if args.calib < 1:
        raise UsageError(f"--calib must be >= 1, got {args.calib}")
    torch.set_num_threads(1)
    try:
        train = load_fer(find_split(args.data, "Training")).subset(args.calib, seed=1)
    except FerFormatError as e:
        raise UsageError(str(e)) from None
    out = args.out or default_int8_path()
    quantize_int8(FaceEncoder.load(args.weights), train.images, out)
    print(f"wrote {out}")
    return 0
