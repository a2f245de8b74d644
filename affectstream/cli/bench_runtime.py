"""`affectstream bench scheduler` (the scheduler's own cost per tick) and `affectstream bench
startup` (launch to first estimate): tables and JSON from bench/scheduler.py, bench/startup.py."""

from __future__ import annotations

import argparse

from affectstream.cli.args import (
    add_looped_stream_arguments,
    looped_media,
    passed_on,
    write_json,
)


class Scheduler:
    @staticmethod
    def add_bench_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ticks", type=int, default=3000, help="ticks to time (3000)")
        p.add_argument("--stages", type=int, default=3, help="instant stages per tick (3)")
        p.add_argument("--json", metavar="OUT", help="write the results as JSON here")

    @staticmethod
    def run_bench(args: argparse.Namespace) -> int:
        from rich.console import Console
        from rich.table import Table

        from affectstream.bench.scheduler import measure
        from affectstream.core.errors import UsageError

        if args.ticks < 1 or args.stages < 1:
            raise UsageError("--ticks and --stages must be >= 1")
        r = measure(args.ticks, args.stages)
        t = Table(title=f"scheduler cost: {r['ticks']} ticks, {r['stages']} instant stages (ms)")
        for col in ("what", "p50", "p99"):
            t.add_column(col, justify="left" if col == "what" else "right")
        for what, key in (
            ("tick, stages on worker threads", "tick_ms_workers"),
            ("the same stage calls inline", "stage_calls_ms_inline"),
        ):
            t.add_row(what, f"{r[key]['p50']:.4f}", f"{r[key]['p99']:.4f}")
        t.caption = (
            f"the scheduler's own cost per tick (p50): {r['scheduler_ms_per_tick_p50']:.3f} ms"
        )
        Console().print(t)
        write_json(args.json, r)
        return 0


class Startup:
    @staticmethod
    def add_bench_arguments(p: argparse.ArgumentParser) -> None:
        add_looped_stream_arguments(p)
        p.add_argument("--runs", type=int, default=3, help="launches back to back (3)")
        p.add_argument("--json", metavar="OUT", help="write the results as JSON here")

    @staticmethod
    def run_bench(args: argparse.Namespace) -> int:
        from affectstream.bench.startup import measure
        from affectstream.core.errors import UsageError

        if args.runs < 1:
            raise UsageError("--runs must be >= 1")
        extra = ["--no-transcribe"] * args.no_transcribe
        extra += passed_on(args, ("config", "backend", "device", "onnx_dir", "threads"))
        r = measure(looped_media(args), args.runs, extra)
        for i, (s, joined, loaded) in enumerate(
            zip(r["first_estimate_s"], r["joined_s"], r["all_loaded_s"], strict=True), 1
        ):
            joins = ", ".join(f"{m} {t:.2f} s" for m, t in joined.items())
            done = "not all loaded" if loaded is None else f"all loaded {loaded:.2f} s"
            print(f"launch {i}: first estimate {s:.2f} s after launch ({joins}; {done})")
        write_json(args.json, r)
        return 0
