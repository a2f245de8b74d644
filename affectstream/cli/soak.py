"""Soak the pipeline: a loop of the media for minutes, memory, drops, overruns and rate."""

from __future__ import annotations

import argparse

from affectstream.cli.args import (
    add_looped_stream_arguments,
    config_from_args,
    looped_media,
    write_json,
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


def run(args: argparse.Namespace) -> int:
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
    write_json(args.json, r)
    if args.plot:
        soak.plot(r, args.plot)
        print(f"wrote {args.plot}")
    return 0
