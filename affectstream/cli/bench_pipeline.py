"""`affectstream bench pipeline`: the whole pipeline at real pace (bench/pipeline.py), as
tables, JSON and a plot.

The media default is the bundled sample clip (`run --sample`); the file is looped for as long
as `--seconds` asks.
"""

from __future__ import annotations

import argparse
import functools

from affectstream.cli.args import (
    add_budget_argument,
    add_looped_stream_arguments,
    config_from_args,
    looped_media,
    positive_ints,
    write_outputs,
)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    add_looped_stream_arguments(p)
    p.add_argument("--seconds", type=float, default=60.0, metavar="S", help="per run (60)")
    p.add_argument(
        "--streams",
        type=functools.partial(positive_ints, what="stream counts", empty=False),
        default=[1],
        metavar="LIST",
        help="stream counts to run, e.g. 1,2,4: that many streams in one process sharing "
        "the models (default 1)",
    )
    p.add_argument("--rate", type=float, metavar="HZ", help="estimates per second (default 10)")
    p.add_argument(
        "--faces",
        type=functools.partial(positive_ints, what="face counts", empty=False),
        metavar="LIST",
        help="also run one stream with the video tiled to show this many faces, e.g. 1,2,4 "
        "(bench/faces.py)",
    )
    add_budget_argument(p, "stream")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    p.add_argument("--plot", metavar="OUT.png", help="latency over time and CDF per stage")


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from affectstream.bench import pipeline
    from affectstream.core.errors import UsageError

    media = looped_media(args)
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    config = config_from_args(args)

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks = {
            n: bar.add_task(f"{n} stream{'s' * (n > 1)}", total=args.seconds) for n in args.streams
        }

        def progress(n: int, done_s: float) -> None:
            bar.update(tasks[n], completed=done_s)

        result = pipeline.measure(
            config,
            media,
            args.seconds,
            streams=args.streams,
            budget_ms=args.budget_ms,
            transcribe=not args.no_transcribe,
            progress=progress,
        )
    out = Console(width=max(Console().width, 140))  # the streams table is wide
    out.print(header_text(result))
    out.print(stages_table(result))
    if len(args.streams) > 1 or args.streams != [1]:
        out.print(streams_table(result))
    if args.faces:
        from affectstream.bench.faces import faces_table, measure_faces

        result["faces_in_view"] = measure_faces(
            config, media, args.seconds, args.faces, transcribe=not args.no_transcribe
        )
        out.print(faces_table(result["faces_in_view"]))
    write_outputs(args, result, pipeline.plot)
    return 0


def header_text(result: dict) -> str:
    m = result["machine"]
    backends = ", ".join(f"{k}={v}" for k, v in m.get("backends", {}).items())
    return (
        f"bench pipeline: {result['media']} for {result['seconds']:g} s at "
        f"{result['rate_hz']:g} Hz\n{m['cpu']}, {m['cores']} cores, device {m['device']}"
        f"{', ' + m['gpu'] if m.get('gpu') else ''}; backends {backends or m['backend']}\n"
        f"python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
        f"ctranslate2 {m['ctranslate2']}"
    )


def stages_table(result: dict):
    from rich.table import Table

    p = result["pipeline"]
    res = p["resources"]
    t = Table(
        title=(
            f"{p['estimates']} estimates ({p['estimate_rate_hz']:.2f} Hz), "
            f"{p['tick_overruns']} overruns, {p['ticks_skipped']} skipped ticks; "
            f"CPU {res['cpu_percent']['p50']}% (p50), RSS max {res['rss_mb']['max']} MB"
        )
    )
    for col in ("ms", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "ms" else "right")
    for name, s in p["stages_ms"].items():
        t.add_row(f"stage {name}", *(_fmt(s[k]) for k in ("p50", "p95", "p99", "max")))
    for m, a in p["age_ms"].items():
        present = p["present_fraction"][m]
        t.add_row(
            f"age {m} ({present:.0%} present)", *(_fmt(a[k]) for k in ("p50", "p95", "p99", "max"))
        )
    nonzero = {k: v for k, v in p["dropped"].items() if v}
    t.caption = "drops: " + (", ".join(f"{k}={v}" for k, v in nonzero.items()) or "none")
    return t


def streams_table(result: dict):
    from rich.table import Table

    t = Table(
        title=f"streams sharing the models (budget: p99 age <= {result['budget_ms']:g} ms; "
        f"largest within it: {result['max_streams_within_budget']})"
    )
    cols = ("streams", "tick p99 ms", "age p99 ms", "rate Hz", "CPU % p50", "RSS max MB")
    for col in (*cols, "batches: mean size (max), wait p99 ms"):
        t.add_column(col, justify="right")
    for r in result["streams"]:
        t.add_row(
            str(r["streams"]),
            _fmt(r["tick_p99_ms"]),
            _fmt(r["age_p99_ms"]),
            f"{r['estimate_rate_hz']:.2f}",
            _fmt(r["cpu_percent_p50"]),
            _fmt(r["rss_mb_max"]),
            batches_cell(r.get("batches", {})),
        )
    return t


def batches_cell(batches: dict) -> str:
    """`face 2.9 (3) 1.2, voice ...`: per shared model, the mean and largest batch and the
    p99 time a request waited for its batch."""
    parts = []
    for model, b in batches.items():
        if b["calls"]:
            wait = b["wait_ms"]["p99"]
            parts.append(f"{model} {b['mean_batch']:.1f} ({b['max_batch']}) {_fmt(wait)}")
    return ", ".join(parts) or "-"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
