"""`affectstream bench models`: per-model latency per backend and batch, and batched ticks.

Nothing heavy is imported here at import time; see `affectstream.bench.models`.
"""

from __future__ import annotations

import argparse

from affectstream.cli.args import positive_ints


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        type=_names,
        default=None,
        metavar="LIST",
        help="comma-separated models (default: all)",
    )
    p.add_argument(
        "--backends",
        type=_names,
        default=None,
        metavar="LIST",
        help="comma-separated: torch,onnxruntime,tensorrt (default: torch,onnxruntime "
        "on cpu; torch,onnxruntime,tensorrt on cuda, skipping those not installed)",
    )
    p.add_argument(
        "--batch",
        type=positive_ints,
        default=[1, 8, 32],
        metavar="LIST",
        help="batch sizes (default 1,8,32)",
    )
    p.add_argument("--no-model-table", action="store_true", help="only the batched-tick bench")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per row (default 50)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--onnx-dir", metavar="DIR", help="exported models (default: cache)")
    p.add_argument(
        "--torch-modes",
        type=_names,
        default=["fp32", "fp16", "fp16+graphs"],
        metavar="LIST",
        help="CUDA only: fp32,fp16,fp16+graphs",
    )
    p.add_argument(
        "--streams",
        type=positive_ints,
        default=[],
        metavar="LIST",
        help="simulated 10 Hz streams per batched tick, e.g. 1,64,512",
    )
    p.add_argument(
        "--search",
        action="store_true",
        help="also search the largest stream count with p99 tick <= --budget-ms",
    )
    p.add_argument("--budget-ms", type=float, default=50.0, help="p99 tick budget (default 50)")
    p.add_argument("--ticks", type=int, default=50, help="timed ticks per stream count")
    p.add_argument(
        "--tick-backend",
        choices=("torch", "onnxruntime"),
        default="onnxruntime",
        help="CPU only: the backend of the batched ticks (CUDA: torch FP16 + graphs)",
    )
    p.add_argument(
        "--max-streams", type=int, default=4096, help="where --search stops on CUDA (default 4096)"
    )
    p.add_argument("--json", metavar="OUT", help="write the results here")


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from affectstream.bench.models import BenchOptions, run_all
    from affectstream.core.errors import UsageError
    from affectstream.export import registry

    models = args.models or registry.names()
    unknown = [m for m in models if m not in registry.names()]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r} (known: {', '.join(registry.names())})")
    default_backends = ["torch", "onnxruntime"] + (["tensorrt"] if args.device == "cuda" else [])
    backends = args.backends or default_backends
    bad = [b for b in backends if b not in ("torch", "onnxruntime", "tensorrt")]
    if bad:
        raise UsageError(f"unknown backend {bad[0]!r} (torch, onnxruntime, tensorrt)")
    modes = [m for m in args.torch_modes if m not in ("fp32", "fp16", "fp16+graphs")]
    if modes:
        raise UsageError(f"unknown torch mode {modes[0]!r} (fp32, fp16, fp16+graphs)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    opts = BenchOptions(
        models=models,
        backends=backends,
        batches=[] if args.no_model_table else args.batch,
        device=args.device,
        threads=args.threads,
        iters=args.iters,
        warmup=args.warmup,
        onnx_dir=args.onnx_dir,
        torch_modes=args.torch_modes,
        streams=args.streams,
        search=args.search,
        tick_budget_ms=args.budget_ms,
        ticks=args.ticks,
        max_streams=args.max_streams,
        tick_backend=args.tick_backend,
    )
    result = run_all(opts)
    console = Console()
    console.print(models_table(result))
    if "streams" in result:
        console.print(streams_table(result["streams"]))
    for what, why in result.get("skipped", {}).items():
        console.print(f"[yellow]skipped[/] {what}: {why}")
    if args.json:
        from affectstream.cli.args import write_json

        write_json(args.json, result)
        console.print(f"wrote {args.json}")
    return 0


def models_table(result: dict):
    from rich.markup import escape
    from rich.table import Table

    m = result["machine"]
    where = m.get("gpu") or f"{m['processor']} ({m['cpu_count']} CPUs)"
    t = Table(title=f"models on {result['options']['device']}: {where}")
    for col in ("model", "backend", "batch", "median ms", "p99 ms", "items/s"):
        t.add_column(col, justify="right" if col not in ("model", "backend") else "left")
    for r in result.get("models", []):
        t.add_row(
            r["model"],
            escape(r["backend"]),  # "torch[fp16]" is not rich markup
            str(r["batch"]),
            f"{r['median_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['items_per_s']:.0f}",
        )
    return t


def streams_table(streams: dict):
    from rich.table import Table

    t = Table(
        title=f"batched ticks ({', '.join(streams['models'])}), budget p99 <= "
        f"{streams['tick_budget_ms']:.0f} ms; max streams within budget: "
        f"{streams['max_streams_within_budget']}"
        + (" (the search's cap: at least that many)" if streams.get("capped") else "")
    )
    for col in ("streams", "p50 ms", "p99 ms", "within budget"):
        t.add_column(col, justify="right")
    for r in streams["rows"]:
        t.add_row(
            str(r["streams"]),
            f"{r['median_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            "yes" if r["meets_budget"] else "no",
        )
    return t
