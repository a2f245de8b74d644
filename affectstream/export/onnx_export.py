"""ONNX export of the registered models: dynamo exporter, dynamic batch and time axes.

Each model is exported in its own process (`python -m affectstream.export.onnx_export`):
the exporter is slow to import, holds memory it never gives back, and a failure in one model
must not take the others down. Every file is checked after export (onnx.checker, then ONNX
Runtime against the PyTorch module on fresh inputs of a size other than the trace's), and
the manifest records hashes, signature, opset and the weights it came from.

The `__main__` entry (`_main`) is that internal subprocess worker, started by
`export_in_subprocess`; it is not a user command. Users run `affectstream export`
(cli/export.py), which calls `export_all`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.jsonio import write_json
from affectstream.export import registry
from affectstream.export.base import BackendError, Signature

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "affectstream-onnx/1"
DEFAULT_OPSET = 18
OPSETS = range(18, 21)  # what the dynamo exporter and the runtimes here agree on


class ExportError(BackendError):
    """An export that failed; the message names the model and the cause (a BackendError, so
    `--backend auto` falls back to a backend that needs no export)."""


def _trace_sizes(signature: Signature) -> dict[str, int]:
    """Example sizes for tracing: each axis at `opt`, at least 2 (1 would be specialised)."""
    return {k: max(2, r.opt) for k, r in signature.dims.items()}


def _rename_outputs(model, names: list[str]) -> None:
    """Give the graph outputs their contract names, moving aside internal values that clash."""
    graph = model.graph
    wanted = set(names)
    outputs = set(id(v) for v in graph.outputs)
    values = list(graph.inputs) + list(graph.initializers.values())
    for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
        values.extend(node.outputs)
    for v in values:
        if v.name in wanted and id(v) not in outputs:
            v.name = f"{v.name}__internal"
    for v, name in zip(graph.outputs, names, strict=True):
        v.name = name


def _export_file(module, sig: Signature, example: dict, out_path: Path, opset: int, meta: dict):
    """torch.onnx.export (dynamo) with the signature's dynamic axes; outputs renamed."""
    import onnx
    import torch
    from torch.export import Dim

    args = tuple(torch.from_numpy(example[n]) for n in sig.input_names)
    dims = {k: Dim(k, min=r.min, max=r.max) for k, r in sig.dims.items()}
    dynamic_shapes = tuple(
        {axis: dims[s] for axis, s in enumerate(t.shape) if isinstance(s, str)} for t in sig.inputs
    )
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        dynamic_shapes = (dynamic_shapes,)  # `forward(*args)`: one spec for the args tuple
    try:
        program = torch.onnx.export(
            module,
            args,
            None,
            input_names=sig.input_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as e:
        raise ExportError(
            f"{meta['affectstream.model']}: torch.onnx.export failed: {type(e).__name__}: {e}"
        ) from e
    _rename_outputs(program.model, sig.output_names)
    program.model.metadata_props.update(meta)
    program.save(out_path, external_data=False)
    onnx.checker.check_model(str(out_path))


def export_model(
    name: str,
    out_path: str | Path,
    weights: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    fp16: bool = False,
    half_weights: bool = False,
) -> dict[str, Any]:
    """Export one model in this process; return its manifest record.

    With `fp16`, also `<name>.fp16.onnx`: float32 inputs and outputs, FP16 inside (what
    TensorRT 11 needs for an FP16 engine, since it takes precision from the ONNX types).
    With `half_weights`, the file stores its large weights in FP16 (`halve_weights`).
    """
    import torch

    if opset not in OPSETS:
        raise ExportError(f"opset {opset} not supported (use {OPSETS.start}..{OPSETS.stop - 1})")
    entry = registry.get(name)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    built = entry.build(weights)
    module = built.module.to(memory_format=torch.contiguous_format).eval()
    sig = built.signature
    example = entry.example(_trace_sizes(sig), np.random.default_rng(1), sig)
    meta = {"affectstream.model": name, "affectstream.weights": json.dumps(built.weights)}
    t0 = time.perf_counter()
    _export_file(module, sig, example, out_path, opset, meta)
    if half_weights:
        halve_weights(out_path)
    record: dict[str, Any] = {
        "file": out_path.name,
        "sha256": registry.file_sha256(out_path),
        "bytes": out_path.stat().st_size,
        "opset": opset,
        "signature": sig.to_dict(),
        "paddable": list(entry.paddable),
        "weights": built.weights,
        "source_sha256": entry.source_hash(),
        "torch": torch.__version__,
        "export_s": round(time.perf_counter() - t0, 2),
    }
    if half_weights:
        record["half_weights"] = True
    if verify:
        atol = entry.fp16_atol if half_weights else None
        record["verify"] = verify_against_torch(out_path, built, entry, atol)
    if fp16:
        half_path = out_path.with_suffix(".fp16.onnx")
        half = entry.to_fp16(module).eval()
        _export_file(
            half, sig, example, half_path, opset, dict(meta, **{"affectstream.precision": "fp16"})
        )
        record["fp16"] = {
            "file": half_path.name,
            "sha256": registry.file_sha256(half_path),
            "bytes": half_path.stat().st_size,
        }
        if verify:
            record["fp16"]["verify"] = verify_against_torch(
                half_path, built, entry, entry.fp16_atol
            )
    return record


def halve_weights(path: Path, min_elements: int = 4096) -> None:
    """Rewrite `path` so that every float32 weight of at least `min_elements` is stored in
    FP16 and cast back to float32 by a Cast node; the computation stays float32. ONNX Runtime
    folds the casts when it opens the file, so it runs as fast as the float32 file, from a
    file half the size: the text model (92 MB, most of it MiniLM) ships this way."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16))
        original = init.name
        init.CopyFrom(half)
        init.name = f"{original}__fp16"
        casts.append(helper.make_node("Cast", [init.name], [original], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def verify_against_torch(
    path: Path, built: registry.Built, entry: registry.ModelEntry, atol: float | None = None
) -> dict:
    """Max abs difference ONNX Runtime vs torch on fresh inputs of other sizes than the trace."""
    import torch

    from affectstream.export.onnxrt import OnnxRuntimeBackend

    sig = built.signature
    sizes = {k: r.min + (r.opt - r.min) // 3 + 1 for k, r in sig.dims.items()}
    feed = entry.example(sizes, np.random.default_rng(2), sig)
    with torch.inference_mode():
        ref = built.module(*(torch.from_numpy(feed[n]) for n in sig.input_names))
    with OnnxRuntimeBackend(entry.name, path, threads=1) as ort_backend:
        got = ort_backend.infer(feed)
    diff = {
        n: float(np.abs(r.numpy() - got[n]).max())
        for n, r in zip(sig.output_names, ref, strict=True)
    }
    atol = entry.atol if atol is None else atol
    if not all(d <= atol for d in diff.values()):
        raise ExportError(f"{entry.name}: {path.name} differs from torch by {diff} > {atol}")
    return {"sizes": sizes, "max_abs_diff": diff, "atol": atol}


# -- many models, one process each -------------------------------------------------------
def export_in_subprocess(
    name: str,
    out_path: str | Path,
    weights: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    threads: int = 1,
    timeout_s: float = 600.0,
    fp16: bool = False,
    half_weights: bool = False,
) -> dict[str, Any]:
    """Run `export_model` in a fresh Python process; return its record. Raises ExportError."""
    cmd = [
        sys.executable,
        "-m",
        "affectstream.export.onnx_export",
        name,
        str(out_path),
        "--opset",
        str(opset),
        "--threads",
        str(threads),
    ]
    if weights:
        cmd += ["--weights", str(weights)]
    if fp16:
        cmd.append("--fp16")
    if half_weights:
        cmd.append("--half-weights")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    log.info("exporting %s -> %s", name, out_path)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ExportError(f"{name}: export took longer than {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ExportError(f"{name}: export process failed (exit {proc.returncode}):\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise ExportError(f"{name}: export process printed no record")
    return json.loads(lines[-1])


def export_all(
    out_dir: str | Path,
    models: Iterable[str] | None = None,
    weights: Mapping[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    threads: int = 1,
    fp16: bool = False,
    half_weights: Iterable[str] = (),
) -> dict[str, Any]:
    """Export each model (own process) into `out_dir` and write `manifest.json` there;
    the models named in `half_weights` store their weights in FP16 (`halve_weights`)."""
    import onnx
    import torch

    from affectstream.core.version import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = dict(weights or {})
    wanted = list(models) if models is not None else registry.names()
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "affectstream": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": opset,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {},
        "skipped": {},
    }
    for name in wanted:
        registry.get(name)  # an unknown name fails before any export work
        path = out_dir / f"{name}.onnx"
        manifest["models"][name] = export_in_subprocess(
            name,
            path,
            weights.get(name),
            opset=opset,
            threads=threads,
            fp16=fp16,
            half_weights=name in set(half_weights),
        )
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(onnx_dir: str | Path) -> dict[str, Any]:
    path = Path(onnx_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no {MANIFEST} in {onnx_dir}: run `affectstream export`") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: unknown format {manifest.get('format')!r}")
    return manifest


def find_exported(onnx_dir: str | Path, name: str, check_hash: bool = True) -> tuple[Path, dict]:
    """(path of `name`'s ONNX file, its manifest record); the file's hash is checked."""
    manifest = read_manifest(onnx_dir)
    record = manifest["models"].get(name)
    if record is None:
        why = manifest.get("skipped", {}).get(name, "not exported")
        raise FileNotFoundError(f"{onnx_dir} has no {name} model ({why})")
    path = Path(onnx_dir) / record["file"]
    if check_hash and registry.file_sha256(path) != record["sha256"]:
        raise ExportError(f"{path}: hash differs from the manifest (file changed after export)")
    return path, record


def _main(argv: list[str] | None = None) -> int:
    """The subprocess worker behind `export_in_subprocess` (not a user command): export one
    model, verify it, print its manifest record as one JSON line on stdout."""
    p = argparse.ArgumentParser(description="Export one model to ONNX (used as a subprocess).")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--weights")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--half-weights", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import contextlib
    import io

    import torch

    torch.set_num_threads(args.threads)
    # The exporter prints progress to stdout; keep stdout for the one JSON record.
    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        record = export_model(
            args.model,
            args.out,
            args.weights,
            args.opset,
            not args.no_verify,
            args.fp16,
            args.half_weights,
        )
    log.debug("exporter output:\n%s", chatter.getvalue())
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
