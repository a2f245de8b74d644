"""Choosing and opening a backend: `open_backend(model, "auto" | "torch" | ...)` for the
commands that may measure and export (eval, bench), and `ready_backend(...)` for a live stream.

`open_backend(..., "auto")` measures: each backend that can run here is opened and timed for a
few warm calls at batch 1 on the model's example inputs, and the fastest wins; the choice and
the timings are logged and kept on the backend (`backend.auto`) and in the cache
(`<cache>/auto/`, keyed by the model's code and weights, the options, the CPU and the runtime
versions). A measurement, not a rule, because the winner depends on the model, the CPU and
the thread count.

A live stream never measures, exports or compiles: on a first launch that work starved the
stream (a 14-s clip lost its words entirely while three models were exported on its two
cores). `ready_backend` opens only what is ready: a pick measured before on this machine if
its files are there, else the ONNX file that ships in the package (`models/weights/onnx/`,
written by `affectstream export` and checked against the shipped weights by the tests) or
one the user exported, else PyTorch. So the first launch runs the same backends as the
second.

ONNX Runtime and TensorRT need an exported ONNX file: from `onnx_dir` (written by
`affectstream export`), from the package (the shipped weights only), or, for the commands
that may export, exported once into the user cache (in a subprocess; seconds for face and
voice, about a minute for text on a small CPU).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.config import BACKEND_NAMES
from affectstream.core.machine import cpu_model
from affectstream.export import registry
from affectstream.export.base import Backend, BackendError, BackendUnavailable, Signature

log = logging.getLogger(__name__)

CHOICES = BACKEND_NAMES  # "auto" and the concrete backends, as config and flags spell them
BACKENDS = tuple(n for n in BACKEND_NAMES if n != "auto")
DEVICES = ("cpu", "cuda")


def cache_root() -> Path:
    """`$AFFECTSTREAM_CACHE`, else `$XDG_CACHE_HOME/affectstream`, else ~/.cache/affectstream."""
    root = os.environ.get("AFFECTSTREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "affectstream"
    )
    return Path(root)


def availability(device: str = "cpu") -> dict[str, str]:
    """Backend -> "" if it can run on `device` here, else the reason it cannot."""
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")
    out: dict[str, str] = {}
    if device == "cuda":
        import torch

        out["torch"] = "" if torch.cuda.is_available() else "no CUDA device"
    else:
        out["torch"] = ""
    if importlib.util.find_spec("onnxruntime") is None:
        out["onnxruntime"] = "onnxruntime is not installed: pip install onnxruntime"
    elif device == "cuda":
        import onnxruntime

        has = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        out["onnxruntime"] = "" if has else "no CUDA provider: pip install onnxruntime-gpu"
    else:
        out["onnxruntime"] = ""
    if device == "cuda":
        from affectstream.export.tensorrt import tensorrt_status

        ok, why = tensorrt_status()
        out["tensorrt"] = "" if ok else why
    else:
        out["tensorrt"] = "TensorRT needs --device cuda"
    return out


# -- exported files ------------------------------------------------------------------------
def _weights_identity(entry: registry.ModelEntry, weights: str | Path | None) -> dict[str, Any]:
    path = Path(weights) if weights else entry.default_weights()
    if weights and not path.is_file():
        raise FileNotFoundError(f"{entry.name} weights not found: {path}")
    if path.is_file():
        return {"sha256": registry.file_sha256(path)}
    return {"random_init": registry.RANDOM_SEED}


def shipped_onnx_dir() -> Path:
    """The ONNX files that ship in the package, exported from the shipped weights."""
    return registry.weights_dir() / "onnx"


def _shipped_export(entry: registry.ModelEntry, want: dict[str, Any], fp16: bool):
    """(path, record) of the package's own export of `entry` when it was made from the same
    weights (`want`), else None. Its code is not compared at run time: the tests check that
    every shipped file matches the shipped weights and the PyTorch module."""
    from affectstream.export.onnx_export import ExportError, find_exported

    folder = shipped_onnx_dir()
    if fp16 or not (folder / "manifest.json").is_file():
        return None
    try:
        path, record = find_exported(folder, entry.name)
    except (FileNotFoundError, ExportError):
        return None
    got = record.get("weights", {})
    return (path, record) if {k: got.get(k) for k in want} == want else None


def exported_model(
    model: str,
    onnx_dir: str | Path | None = None,
    weights: str | Path | None = None,
    fp16: bool = False,
    threads: int = 1,
    export: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """(ONNX path, manifest record) from `onnx_dir`, the package or the cache; on a miss,
    exported into the cache, or `ExportError` when `export` is False (a live stream)."""
    from affectstream.export.onnx_export import ExportError, export_all, find_exported

    entry = registry.get(model)
    want = _weights_identity(entry, weights)
    if onnx_dir is not None:
        path, record = find_exported(onnx_dir, model)
        got = record.get("weights", {})
        same = {k: got.get(k) for k in want} == want
        if not same:
            raise ExportError(
                f"{path} was exported from other weights ({got}, here {want}); "
                "re-run affectstream export"
            )
        # The package's own files are checked against the PyTorch module by the tests (see
        # `_shipped_export`), so a refactor of the hashed sources does not make them stale.
        is_shipped = Path(onnx_dir).resolve() == shipped_onnx_dir().resolve()
        if not is_shipped and record.get("source_sha256") != entry.source_hash():
            log.warning("%s: the model's code changed since it was exported; re-export", path)
        if fp16 and "fp16" not in record:
            raise ExportError(f"{onnx_dir} has no FP16 export of {model}: export with --fp16")
        return path, record
    shipped = _shipped_export(entry, want, fp16)
    if shipped is not None:
        return shipped
    folder = _cache_folder(entry, want, fp16)
    try:
        return find_exported(folder, model)
    except (FileNotFoundError, ExportError):
        if not export:
            raise ExportError(
                f"{model}: no exported ONNX file is ready (none ships for these weights, "
                "none in the cache); a live stream does not export"
            ) from None
    log.warning("exporting %s to ONNX once (cached in %s); this takes a while", model, folder)
    t0 = time.perf_counter()
    export_all(
        folder, [model], {model: str(weights)} if weights else None, fp16=fp16, threads=threads
    )
    log.info("%s exported in %.1f s", model, time.perf_counter() - t0)
    return find_exported(folder, model)


def _cache_folder(entry: registry.ModelEntry, want: dict[str, Any], fp16: bool) -> Path:
    """Where `exported_model` keeps its own exports: keyed by the weights, the model's code,
    torch and affectstream versions, and fp16."""
    from importlib import metadata

    from affectstream.core.version import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    key = json.dumps(
        [entry.name, want, entry.source_hash(), torch_version, __version__, fp16], sort_keys=True
    )
    return cache_root() / "onnx" / f"{entry.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


# -- opening backends ----------------------------------------------------------------------
def _open_one(
    name: str,
    entry: registry.ModelEntry,
    onnx_dir,
    weights,
    threads: int,
    device: str,
    fp16: bool,
    cuda_graphs: bool,
    export: bool = True,
) -> Backend:
    if name == "torch":
        from affectstream.export.torch_backend import TorchBackend

        built = entry.build(weights)
        module = built.module
        if device == "cuda" and fp16:
            module = entry.to_fp16(module)
        return TorchBackend(
            entry.name,
            built.signature,
            lambda: module,
            device=device,
            threads=threads,
            fp16=fp16 and device == "cuda",
            cuda_graphs=cuda_graphs and device == "cuda",
            paddable=entry.paddable,
        ).load()
    if name == "onnxruntime":
        from affectstream.export.onnxrt import OnnxRuntimeBackend

        path, record = exported_model(entry.name, onnx_dir, weights, threads=threads, export=export)
        sig = Signature.from_dict(record["signature"])
        return OnnxRuntimeBackend(entry.name, path, sig, threads=threads, device=device).load()
    if name == "tensorrt":
        from affectstream.export.tensorrt import TensorRTBackend, tensorrt_status

        ok, why = tensorrt_status()  # before any export work
        if not ok:
            raise BackendUnavailable(f"tensorrt: {why}")
        path, record = exported_model(
            entry.name, onnx_dir, weights, fp16=fp16, threads=threads, export=export
        )
        half = path.parent / record["fp16"]["file"] if "fp16" in record else None
        return TensorRTBackend(
            entry.name,
            path,
            Signature.from_dict(record["signature"]),
            record["sha256"],
            fp16=fp16,
            cuda_graphs=cuda_graphs,
            paddable=tuple(record.get("paddable", ("batch",))),
            cache_dir=cache_root() / "tensorrt",
            fp16_onnx=half,
        ).load()
    raise BackendError(f"unknown backend {name!r} (choose from {', '.join(CHOICES)})")


def time_backend(
    backend: Backend, feed: dict[str, np.ndarray], warm: int = 3, runs: int = 10
) -> float:
    """Median milliseconds of `runs` calls after `warm` untimed ones."""
    for _ in range(warm):
        backend.infer(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        backend.infer(feed)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


def open_backend(
    model_name: str,
    backend: str = "auto",
    onnx_dir: str | Path | None = None,
    weights: str | Path | None = None,
    threads: int = 1,
    device: str = "cpu",
    fp16: bool | None = None,
    cuda_graphs: bool | None = None,
) -> Backend:
    """A loaded backend for `model_name`; `backend.name` says which one runs.

    Args:
        backend: "auto" (fastest that works here, measured), "torch", "onnxruntime",
            "tensorrt".
        onnx_dir: folder written by `affectstream export`; None: export into the cache.
        weights: a weights file; None: the shipped weights (random init if none are shipped).
        threads: CPU threads for torch / ONNX Runtime intra-op (config `backend.threads`).
        device: "cpu" or "cuda".
        fp16, cuda_graphs: GPU options; default on for CUDA, off (and refused) on CPU.
    """
    if backend not in CHOICES:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(CHOICES)})")
    entry = registry.get(model_name)
    on_gpu = device == "cuda"
    fp16 = on_gpu if fp16 is None else fp16
    cuda_graphs = on_gpu if cuda_graphs is None else cuda_graphs
    args = (entry, onnx_dir, weights, threads, device, fp16, cuda_graphs)
    if backend != "auto":
        reason = availability(device).get(backend)
        if reason:
            raise BackendUnavailable(f"{backend} cannot run here: {reason}")
        return _open_one(backend, *args)

    reasons = {k: v for k, v in availability(device).items() if v}
    key = _auto_key(entry, weights, threads, device, fp16, cuda_graphs)
    known = _read_auto(key)
    if known is not None and known.get("picked") not in reasons:
        try:
            chosen = _open_one(known["picked"], *args)
        except (BackendError, FileNotFoundError, OSError) as e:
            log.info("auto: the cached pick %s failed (%s); measuring again", known["picked"], e)
        else:
            chosen.auto = dict(known, cached=True)
            log.info(
                "backend auto for %s on %s: %s (measured before on this machine, cached in %s)",
                model_name,
                device,
                known["picked"],
                _auto_path(key),
            )
            return chosen
    timings: dict[str, float] = {}
    opened: dict[str, Backend] = {}
    for name in BACKENDS:
        if name in reasons:
            continue
        try:
            b = _open_one(name, *args)
        except (BackendError, FileNotFoundError, OSError) as e:
            reasons[name] = str(e)
            log.info("auto: %s unusable for %s: %s", name, model_name, e)
            continue
        sizes = {"batch": 1}
        feed = entry.example(sizes, np.random.default_rng(0), b.signature)
        timings[name] = time_backend(b, feed)
        opened[name] = b
    if not opened:
        raise BackendUnavailable(f"no backend can run {model_name} here: {reasons}")
    best = min(timings, key=timings.get)
    for name, b in opened.items():
        if name != best:
            b.close()
    chosen = opened[best]
    chosen.auto = {"picked": best, "median_ms_batch1": timings, "unavailable": reasons}
    _write_auto(key, chosen.auto)
    log.info(
        "backend auto for %s on %s: picked %s (%s)",
        model_name,
        device,
        best,
        ", ".join(f"{k} {v:.2f} ms" for k, v in timings.items()),
    )
    return chosen


def ready_backend(
    model_name: str,
    backend: str = "auto",
    onnx_dir: str | Path | None = None,
    weights: str | Path | None = None,
    threads: int = 1,
    device: str = "cpu",
) -> Backend:
    """A loaded backend for a live stream: like `open_backend`, but "auto" neither measures
    nor exports. It opens, in this order, the first that is ready: the pick measured before
    on this machine (by `open_backend(..., "auto")`, e.g. `eval ... --backend auto`), ONNX
    Runtime on an exported file that is already there (the user's `onnx_dir`, the package's
    own, the cache), PyTorch. `backend.auto` says which rule chose it. A named backend is
    opened as `open_backend` would (the user asked for it, export included)."""
    if backend != "auto":
        return open_backend(model_name, backend, onnx_dir, weights, threads, device)
    entry = registry.get(model_name)
    on_gpu = device == "cuda"
    args = (entry, onnx_dir, weights, threads, device, on_gpu, on_gpu)
    reasons = {k: v for k, v in availability(device).items() if v}
    known = _read_auto(_auto_key(entry, weights, threads, device, on_gpu, on_gpu))
    tries: dict[str, str] = {}  # backend -> why it is chosen, in the order tried
    if known is not None and known["picked"] not in reasons:
        tries[known["picked"]] = "measured before on this machine"
    if "onnxruntime" not in reasons:
        tries.setdefault("onnxruntime", "an exported ONNX file is ready")
    tries.setdefault("torch", "needs nothing prepared")
    for name, why in tries.items():  # each once, though the measured pick is one of them
        try:
            chosen = _open_one(name, *args, export=False)
        except (BackendError, FileNotFoundError, OSError) as e:
            log.info("%s for %s not ready: %s", name, model_name, e)
            continue
        chosen.auto = {"picked": name, "why": why, "unavailable": reasons}
        log.info("backend auto for %s on %s: %s (%s)", model_name, device, name, why)
        return chosen
    raise BackendUnavailable(f"no backend can run {model_name} here: {reasons}")


# -- the auto pick, measured once per machine ------------------------------------------------
def _auto_key(entry, weights, threads, device, fp16, cuda_graphs) -> str:
    """What the measurement depends on: the model (code and weights), the options, this
    machine's CPU and the installed runtimes. Any change measures again."""
    from importlib import metadata

    from affectstream.core.version import __version__

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    parts = [
        entry.name,
        _weights_identity(entry, weights),
        entry.source_hash(),
        threads,
        device,
        fp16,
        cuda_graphs,
        cpu_model(),
        os.cpu_count(),
        __version__,
        {d: version(d) for d in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt")},
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _auto_path(key: str) -> Path:
    return cache_root() / "auto" / f"{key}.json"


def _read_auto(key: str) -> dict[str, Any] | None:
    try:
        record = json.loads(_auto_path(key).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("picked") in BACKENDS else None


def _write_auto(key: str, record: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only means measuring again next time."""
    path = _auto_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
    except OSError as e:
        log.info("auto: cannot cache the pick in %s: %s", path, e)
