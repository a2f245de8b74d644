"""`affectstream bench serve`: N real websocket clients against a real server
(bench/serve.py), as a table, JSON and a plot.

The media default is the bundled sample clip (`run --sample`), looped for `--seconds`.
"""

from __future__ import annotations

import argparse
import functools

from affectstream.cli.args import add_budget_argument, passed_on, positive_ints, write_outputs


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--media",
        metavar="FILE",
        help="video with an audio track every client pushes, looped (default: the bundled "
        "sample clip)",
    )
    p.add_argument(
        "--sessions",
        type=functools.partial(positive_ints, what="session counts", empty=False),
        default=[1, 2, 4],
        metavar="LIST",
        help="session counts to run, e.g. 1,2,4 (default 1,2,4): that many clients at once",
    )
    p.add_argument("--seconds", type=float, default=30.0, metavar="S", help="per run (30)")
    p.add_argument("--no-transcribe", action="store_true", help="the server runs no words")
    p.add_argument("--device", choices=("cpu", "cuda"), help="the server's --device")
    p.add_argument("--backend", help="the server's --backend (auto, torch, onnxruntime, ...)")
    p.add_argument("--config", metavar="FILE", help="the server's --config")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="measure `serve --ray [ADDRESS]` (on 127.0.0.2) instead of the in-process server: "
        "the cluster at ADDRESS, or a local one per run (docs/serving.md)",
    )
    add_budget_argument(p, "session")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    p.add_argument("--plot", metavar="OUT.png", help="p99 age and server CPU per session count")


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from affectstream.bench import serve
    from affectstream.cli.args import looped_media
    from affectstream.core.errors import UsageError

    media = looped_media(args)
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    extra = passed_on(args, ("device", "backend", "config"))
    launch = functools.partial(serve.default_launch, transcribe=not args.no_transcribe, extra=extra)
    where = {}
    if args.ray is not None:
        launch = functools.partial(
            serve.ray_launch, address=args.ray, transcribe=not args.no_transcribe, extra=extra
        )
        cluster = f"the cluster at {args.ray}" if args.ray else "a local cluster"
        where = {"host": serve.RAY_HOST, "label": f"Ray Serve (serve --ray) on {cluster}"}
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(n: int) -> None:
            bar.update(task, description=f"{n} session{'s' * (n > 1)}: server, then clients")

        result = serve.measure(
            media, args.seconds, args.sessions, args.budget_ms, launch, progress=progress, **where
        )
    Console(width=max(Console().width, 160)).print(table(result))  # a wide table
    write_outputs(args, result, serve.plot)
    return 0


def table(result: dict):
    from rich.table import Table

    t = Table(
        title=f"bench serve: {result['server']}, {result['seconds']:g} s per run, "
        f"{result['machine']['cpu']} ({result['machine']['cores']} cores); budget p99 age <= "
        f"{result['budget_ms']:g} ms: largest within it {result['max_sessions_within_budget']}"
    )
    cols = (
        "sessions",
        "age p50/p99 face",
        "voice",
        "text",
        "first estimate s (max)",
        "rate Hz",
        "drops",
        "errors",
        "batches: mean (max)",
        "server CPU % p50",
        "server RSS MB",
    )
    for c in cols:
        t.add_column(c, justify="right")
    for r in result["runs"]:
        o = r["overall"]
        ages = [_pair(o["age_ms"][m]) for m in ("face", "voice", "text")]
        first = o["connect_to_first_estimate_s"]
        batches = ", ".join(
            f"{m} {b['mean_batch']:.1f} ({b['max_batch']})"
            for m, b in o["batches"].items()
            if b.get("calls")
        )
        res = r["resources"]
        t.add_row(
            str(r["sessions"]),
            *ages,
            f"{_num(first['p50'])} ({_num(first['max'])})",
            f"{o['estimate_rate_hz']:.2f}",
            str(o["dropped"]),
            str(sum(o["errors"].values()) + len(r["client_failures"])),
            batches or "-",
            _num(res["server_cpu_percent"]["p50"]),
            _num(res["server_rss_mb"]["max"]),
        )
    return t


def _pair(p: dict) -> str:
    return f"{_num(p['p50'])}/{_num(p['p99'])}"


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"
