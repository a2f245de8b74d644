"""Benchmarks: print a table and write JSON (face, detect, voice, text, fusion, stt, models, audio,
pipeline, serve, scheduler, startup)."""

from __future__ import annotations

import argparse

from affectstream.cli import (
    bench_audio,
    bench_detect,
    bench_pipeline,
    bench_serve,
    face,
    fusion,
    models,
    stt,
    text,
    voice,
)
from affectstream.cli.bench_runtime import Scheduler, Startup

# bench target -> module providing add_bench_arguments / run_bench
TARGETS = {
    "face": face,
    "detect": bench_detect,
    "voice": voice,
    "text": text,
    "fusion": fusion,
    "stt": stt,
    "models": models,
    "audio": bench_audio,
    "pipeline": bench_pipeline,
    "serve": bench_serve,
    "scheduler": Scheduler,
    "startup": Startup,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", required=True)
    for name, mod in TARGETS.items():
        bp = sub.add_parser(name, help=f"benchmark {name}")
        mod.add_bench_arguments(bp)
        bp.set_defaults(bench=mod.run_bench)


def run(args: argparse.Namespace) -> int:
    return int(args.bench(args) or 0)
