"""Benchmarks: print a table and write JSON (face, voice, text, stt, models, audio)."""

from __future__ import annotations

import argparse
import importlib

# bench target -> module providing add_bench_arguments / run_bench
TARGETS = {
    "face": "affectstream.models.face.cli",
    "voice": "affectstream.models.voice.cli",
    "text": "affectstream.models.text.cli",
    "stt": "affectstream.models.stt.cli",
    "models": "affectstream.export.cli",
    "audio": "affectstream.realtime.bench_audio",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", required=True)
    for name, module in TARGETS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # that part is not built yet
            raise
        if not hasattr(mod, "add_bench_arguments"):
            continue
        bp = sub.add_parser(name, help=f"benchmark {name}")
        mod.add_bench_arguments(bp)
        bp.set_defaults(bench=mod.run_bench)


def run(args: argparse.Namespace) -> int:
    return int(args.bench(args) or 0)
