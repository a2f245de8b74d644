"""Soak the pipeline: a loop of the media for minutes, memory, drops, overruns and rate.

`soak serve`: one server while sessions open and close, its memory per round and over time."""

from __future__ import annotations

import argparse
from pathlib import Path

from affectstream.cli.args import (
    add_looped_stream_arguments,
    config_from_args,
    looped_media,
    passed_on,
    write_outputs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_looped_stream_arguments(p)
    p.add_argument("--minutes", type=float, default=30.0, metavar="M", help="how long (30)")
    p.add_argument(
        "--cpu-hog", type=int, default=0, metavar="N", help="N busy processes beside it (0)"
    )
    p.add_argument("--sample-s", type=float, default=5.0, metavar="S", help="memory every S s")
    p.add_argument("--json", metavar="OUT", help="write the record (with memory over time)")
    p.add_argument("--plot", metavar="OUT.png", help="resident memory and CPU over time")
    sub = p.add_subparsers(dest="soak_target", metavar="{serve}")
    add_serve_arguments(
        sub.add_parser(
            "serve",
            help="one `affectstream serve` (push mode) while sessions open and close: its "
            "resident memory per round and over time",
        )
    )


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--media",
        type=Path,
        help="video each client pushes, looped (default: the bundled sample clip)",
    )
    p.add_argument("--audio", type=Path, metavar="FILE", help="audio from this file instead")
    p.add_argument("--sessions", type=int, default=4, metavar="N", help="sessions a round (4)")
    p.add_argument(
        "--session-s", type=float, default=10.0, metavar="S", help="each session's length (10)"
    )
    p.add_argument(
        "--gap-s",
        type=float,
        default=3.0,
        metavar="S",
        help="wait after a round before its memory figure and the next round (3)",
    )
    how_long = p.add_mutually_exclusive_group()
    how_long.add_argument("--rounds", type=int, metavar="R", help="R rounds (default 8)")
    how_long.add_argument("--minutes", type=float, metavar="M", help="rounds for M minutes")
    p.add_argument("--sample-s", type=float, default=2.0, metavar="S", help="memory every S s")
    p.add_argument("--no-transcribe", action="store_true", help="the server runs no words")
    p.add_argument("--config", metavar="FILE", help="the server's --config")
    p.add_argument("--device", choices=("cpu", "cuda"), help="the server's --device")
    p.add_argument("--json", metavar="OUT", help="write the record (per round, over time)")
    p.add_argument("--plot", metavar="OUT.png", help="the server's resident memory over time")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "soak_target", None) == "serve":
        return run_serve(args)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from affectstream.bench import soak
    from affectstream.core.errors import UsageError

    media = looped_media(args)
    if args.minutes <= 0 or args.cpu_hog < 0 or args.sample_s <= 0:
        raise UsageError("--minutes and --sample-s must be positive, --cpu-hog >= 0")
    config = config_from_args(args)
    seconds = args.minutes * 60
    columns = (TextColumn("soak"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("soak", total=seconds)
        r = soak.soak(
            config,
            media,
            args.minutes,
            cpu_hogs=args.cpu_hog,
            sample_s=args.sample_s,
            transcribe=not args.no_transcribe,
            progress=lambda t: bar.update(task, completed=t),
        )
    t = Table(title=f"soak: {r['media']}, {r['minutes']:g} min, {r['cpu_hogs']} CPU hogs")
    t.add_column("what")
    t.add_column("value", justify="right")
    mem = r["rss_mb"]
    t.add_row("estimates", str(r["estimates"]))
    t.add_row(
        "estimate rate (Hz)",
        f"{r['estimate_rate_hz']:.3f} ({r['rate_error_percent']:+.2f}% of nominal)",
    )
    t.add_row(
        "RSS after warm-up / end / max (MB)", f"{mem['after_warmup']} / {mem['end']} / {mem['max']}"
    )
    t.add_row("RSS growth after warm-up", f"{mem['growth_percent_after_warmup']}%")
    t.add_row("tick p50 / p99 / max (ms)", "{p50} / {p99} / {max}".format(**r["tick_ms"]))
    for m, a in r["age_ms"].items():
        t.add_row(f"age {m} p50 / p99 (ms)", f"{a['p50']} / {a['p99']}")
    t.add_row("tick overruns", str(r["tick_overruns"]))
    nonzero = {k: v for k, v in r["dropped"].items() if v}
    t.add_row("drops", ", ".join(f"{k}={v}" for k, v in nonzero.items()) or "none")
    Console().print(t)
    write_outputs(args, r, soak.plot)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import functools

    from rich.console import Console

    from affectstream.bench import serve, soak_serve
    from affectstream.core.errors import UsageError

    media = looped_media(args)
    if args.audio is not None and not args.audio.is_file():
        raise UsageError(f"--audio: file not found: {args.audio}")
    if args.sessions < 1 or args.session_s <= 0 or args.gap_s < 0 or args.sample_s <= 0:
        raise UsageError("--sessions, --session-s and --sample-s must be positive, --gap-s >= 0")
    if args.rounds is not None and args.rounds < 2:
        raise UsageError("--rounds must be at least 2: growth is judged from round 2")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError("--minutes must be positive")
    rounds = args.rounds if args.minutes is None else None
    rounds = 8 if rounds is None and args.minutes is None else rounds
    extra = passed_on(args, ("config", "device"))
    launch = functools.partial(serve.default_launch, transcribe=not args.no_transcribe, extra=extra)
    console = Console(stderr=True)
    name = str(media) + (f" + audio {args.audio}" if args.audio else "")
    r = soak_serve.soak_serve(
        serve.load_media(media, audio=args.audio),
        name,
        sessions=args.sessions,
        session_s=args.session_s,
        gap_s=args.gap_s,
        rounds=rounds,
        minutes=args.minutes,
        sample_s=args.sample_s,
        launch=launch,
        progress=lambda k, t: console.print(f"round {k} done at {t / 60:.1f} min", style="dim"),
    )
    Console().print(serve_table(r))
    write_outputs(args, r, soak_serve.plot)
    return 0


def serve_table(r: dict):
    """One row per round (at most 12, evenly spread, first two and last kept) and the verdict."""
    from rich.table import Table

    mem = r["rss_mb"]
    t = Table(
        title=f"soak serve: {r['sessions']} sessions x {r['session_s']:g} s a round, "
        f"{r['sessions_per_minute']:g} sessions/min, {r['rounds']} rounds; server RSS idle "
        f"{mem['idle']} MB, last round vs round 2 {mem['growth_percent']:+.2f}%"
    )
    for c in ("round", "minute", "server RSS MB", "vs round 2", "estimates per session", "failed"):
        t.add_column(c, justify="right")
    rows = r["per_round"]
    keep = sorted({0, 1, len(rows) - 1, *range(0, len(rows), max(1, len(rows) // 10))})
    for i in keep:
        row = rows[i]
        t.add_row(
            str(row["round"]),
            f"{row['t'] / 60:.1f}",
            f"{row['rss_mb']:.1f}",
            f"{100 * (row['rss_mb'] / mem['round_2'] - 1):+.2f}%",
            ", ".join(map(str, row["estimates"])),
            str(len(row["failures"])),
        )
    return t
