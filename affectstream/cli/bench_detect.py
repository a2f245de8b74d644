"""`affectstream bench detect`: the face detectors side by side on hard faces (bench/detect.py),
as a table and JSON. Defaults come from the checkout's `../shared` (resolved when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fer", help="FER2013-format npz of faces (default: ../shared Training.npz)")
    p.add_argument(
        "--jaffe", help="npz of full face photos (default: ../shared jaffe/originals.npz)"
    )
    p.add_argument("--background", help="background photo (default: ../shared/media/messi5.jpg)")
    p.add_argument("--frames", type=int, default=40, help="frames per condition (40)")
    p.add_argument("--seed", type=int, default=0, help="draw of faces and conditions (0)")
    p.add_argument("--json", type=Path, help="write the results here")


def run_bench(args: argparse.Namespace) -> int:
    from affectstream.bench.detect import print_detect_bench, run_detect_bench
    from affectstream.cli.args import write_json
    from affectstream.cli.defaults import fill_shared_defaults

    fill_shared_defaults(
        args,
        {
            "fer": ("--fer NPZ", "data/fer2013/Training.npz"),
            "jaffe": ("--jaffe NPZ", "data/jaffe/originals.npz"),
            "background": ("--background IMG", "media/messi5.jpg"),
        },
    )
    r = run_detect_bench(
        Path(args.fer), Path(args.jaffe), Path(args.background), args.frames, args.seed
    )
    print_detect_bench(r)
    write_json(args.json, r)
    return 0
