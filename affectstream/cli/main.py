"""The `affectstream` command: one parser, one module per command or command group.

Command modules import nothing heavy at import time (torch, onnxruntime, faster-whisper load
inside the commands), so `affectstream --help` is quick. Each provides `add_arguments(p)` and
`run(args)`; the model groups (face, voice, text, stt) provide `add_train_arguments`,
`run_train`, `add_eval_arguments`, `run_eval`, `add_bench_arguments` and `run_bench` as they
apply.
"""

from __future__ import annotations

import argparse
import logging
import sys

from affectstream.cli import (
    bench,
    demo,
    devices,
    export,
    face,
    face_int8,
    fusion,
    run,
    serve,
    soak,
    stt,
    text,
    transcribe,
    voice,
)

COMMANDS = {
    "run": run,
    "demo": demo,
    "devices": devices,
    "transcribe": transcribe,
    "export": export,
    "serve": serve,
    "bench": bench,
    "soak": soak,
    "scenario": fusion,
}
TRAIN = {"face": face, "face-int8": face_int8, "voice": voice, "text": text, "fusion": fusion}
EVAL = {"face": face, "voice": voice, "text": text, "stt": stt, "stream": fusion}


def _summary(module) -> str | None:
    return module.__doc__.strip().splitlines()[0] if module.__doc__ else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectstream", description="Real-time multimodal emotion recognition."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=_summary(mod))
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    for verb, group in (("train", TRAIN), ("eval", EVAL)):
        p = sub.add_parser(verb, help=f"{verb} a model")
        msub = p.add_subparsers(dest="modality", required=True)
        for m, mod in group.items():
            default = f"{verb} the {m} model"
            mp = msub.add_parser(m, help=getattr(mod, f"{verb.upper()}_HELP", default))
            getattr(mod, f"add_{verb}_arguments")(mp)
            mp.set_defaults(func=getattr(mod, f"run_{verb}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from affectstream.core.config import ConfigError
    from affectstream.core.errors import OutputError, SetupError, UsageError, WeightsError
    from affectstream.export.base import BackendError, InputError
    from affectstream.realtime.sources.base import SourceError

    try:
        return int(args.func(args) or 0)
    except (
        OutputError,
        UsageError,
        WeightsError,
        ConfigError,
        SetupError,
        SourceError,
        BackendError,
        InputError,
        FileNotFoundError,
    ) as e:
        print(f"affectstream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
