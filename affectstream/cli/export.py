"""Export the models to ONNX (one file each, dynamic batch/time axes) with a manifest.

`affectstream export --out DIR` writes DIR/<model>.onnx and DIR/manifest.json (hashes,
shapes, opset, source weights); `affectstream run --backend onnxruntime --onnx-dir DIR`
uses them. Each model is exported in its own process and checked against PyTorch.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    p.add_argument(
        "--models", metavar="LIST", help="comma-separated (default: every model in this checkout)"
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=FILE",
        help="export MODEL from FILE instead of the shipped weights (repeatable)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18-20 (default 18)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write <model>.fp16.onnx (FP16 inside, fp32 I/O) for TensorRT 11",
    )
    p.add_argument(
        "--half-weights",
        metavar="LIST",
        default="",
        help="comma-separated models whose file stores its weights in FP16 (computing in "
        "FP32): half the size; the package ships text this way",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads per export (default 1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from affectstream.core.errors import UsageError
    from affectstream.export import registry
    from affectstream.export.onnx_export import OPSETS, ExportError, export_all

    if args.opset not in OPSETS:
        raise UsageError(f"--opset must be {OPSETS.start}..{OPSETS.stop - 1}, got {args.opset}")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    for m in models or []:
        if m not in registry.names():
            raise UsageError(f"unknown model {m!r} (known: {', '.join(registry.names())})")
    weights = {}
    for item in args.weights:
        model, sep, path = item.partition("=")
        if not sep or model not in registry.names():
            raise UsageError(
                f"--weights takes MODEL=FILE with MODEL in {registry.names()}: {item!r}"
            )
        if not Path(path).is_file():
            raise UsageError(f"--weights {model}: file not found: {path}")
        weights[model] = path
    if models is None:
        models = registry.names()
    half = [m.strip() for m in args.half_weights.split(",") if m.strip()]
    for m in half:
        if m not in models:
            raise UsageError(f"--half-weights {m}: not among the exported models {models}")
    console = Console(stderr=True)
    try:
        manifest = export_all(
            args.out,
            models,
            weights,
            opset=args.opset,
            threads=args.threads,
            fp16=args.fp16,
            half_weights=half,
        )
    except ExportError as e:
        raise UsageError(str(e)) from None
    t = Table(title=f"exported to {args.out} (opset {args.opset})")
    for col in ("model", "file", "MB", "weights", "max |onnx - torch|", "export s"):
        t.add_column(col)
    for name, r in manifest["models"].items():
        w = r["weights"]
        src = Path(w["path"]).name if "path" in w else f"random (seed {w.get('random_init')})"
        diff = max(r.get("verify", {}).get("max_abs_diff", {"-": 0.0}).values())
        t.add_row(
            name, r["file"], f"{r['bytes'] / 1e6:.1f}", src, f"{diff:.1e}", f"{r['export_s']:.0f}"
        )
    console.print(t)
    for name, why in manifest["skipped"].items():
        console.print(f"[yellow]skipped[/] {name}: {why}")
    return 0
