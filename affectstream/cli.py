"""The `affectstream` command. Subcommands live in small modules, imported only when used.

Each modality module `affectstream.models.<m>.cli` provides `add_train_arguments(p)`,
`run_train(args)`, `add_eval_arguments(p)`, `run_eval(args)` and optionally
`add_bench_arguments(p)`, `run_bench(args)`; those modules import nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

TRAINABLE = ("face", "voice", "text")
EVALUABLE = ("face", "voice", "text", "stt")


class UsageError(Exception):
    """A problem with the command line or its inputs, printed as one line (exit code 2)."""


def add_pace_arguments(p: argparse.ArgumentParser) -> None:
    """`--realtime` (default) / `--fast`: how files are replayed, for every command that does."""
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="replay files at real time (default)",
    )
    pace.add_argument(
        "--fast",
        dest="realtime",
        action="store_false",
        help="replay files as fast as possible, on the media clock",
    )


def _module(name: str):
    return importlib.import_module(f"affectstream.{name}")


def _add_modality_commands(sub, verb: str, names: tuple[str, ...], module_of) -> None:
    p = sub.add_parser(verb, help=f"{verb} a model")
    msub = p.add_subparsers(dest="modality", required=True)
    for m in names:
        try:
            mod = _module(module_of(m))
        except ModuleNotFoundError as e:
            if e.name and f"affectstream.{module_of(m)}".startswith(e.name):
                continue  # that part is not built yet
            raise
        adder = getattr(mod, f"add_{verb}_arguments", None)
        runner = getattr(mod, f"run_{verb}", None)
        if adder is None or runner is None:
            continue
        mp = msub.add_parser(m, help=f"{verb} the {m} model")
        adder(mp)
        mp.set_defaults(func=runner)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectstream", description="Real-time multimodal emotion recognition."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    for name in ("run", "devices", "transcribe", "export", "serve", "bench"):
        try:
            mod = _module(f"realtime.cmd_{name}")
        except ModuleNotFoundError as e:
            if e.name == f"affectstream.realtime.cmd_{name}":
                continue  # that command is not built yet
            raise
        p = sub.add_parser(name, help=mod.__doc__.strip().splitlines()[0] if mod.__doc__ else None)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)

    _add_modality_commands(sub, "train", TRAINABLE, lambda m: f"models.{m}.cli")
    _add_modality_commands(sub, "eval", EVALUABLE, lambda m: f"models.{m}.cli")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from affectstream.config import ConfigError
    from affectstream.errors import SetupError
    from affectstream.export.backend import BackendError, InputError
    from affectstream.realtime.sources.base import SourceError

    try:
        return int(args.func(args) or 0)
    except (
        UsageError,
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
