"""TensorRT backend (native API): engines built from the exported ONNX files, cached.

- Optimisation profile: one per engine, min/opt/max of every dynamic axis from the model's
  signature (`shapes.profile_shapes`).
- Precision: TensorRT 10 takes `BuilderFlag.FP16` (weak typing); TensorRT 11 removed it and
  builds strongly typed networks whose precision comes from the ONNX types, so FP16 there
  needs the FP16 export (`affectstream export --fp16`: fp32 inputs/outputs, fp16 inside).
- Caches: the engine file is keyed by the ONNX file's hash, the GPU's name and compute
  capability, the TensorRT version, the precision and the profile; a timing cache per GPU and
  TensorRT version makes rebuilds fast.
- Running: `execute_async_v3` on a dedicated CUDA stream, one execution context per thread,
  device buffers through PyTorch (no pycuda), optional CUDA graphs per shape bucket.

Never touch TensorRT objects without a GPU (that crashes the process): `tensorrt_status()`
checks for a CUDA device first and only then looks for the package, without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.jsonio import write_json
from affectstream.export.base import Backend, BackendError, BackendUnavailable, Signature
from affectstream.export.shapes import bucket_sizes, pad_feed, profile_shapes, unpad

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13 "
    "(tensorrt-cu12 for a CUDA 12 build of PyTorch; see docs/export.md)"
)
MIN_MAJOR = 10  # named-tensor API, execute_async_v3


def cuda_device_present() -> bool:
    """A usable CUDA device, asked of PyTorch (a dependency), never of TensorRT."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install raises here on some machines
        return False


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason). Checks the GPU before even looking for the package."""
    if not cuda_device_present():
        return False, "no CUDA device here"
    try:
        found = importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return False, f"TensorRT is not installed: {INSTALL_HINT}"
    return True, ""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @classmethod
    def current(cls, device: int = 0) -> GpuInfo:
        import torch

        return cls(
            torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))
        )

    def slug(self) -> str:
        name = "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")
        return f"{name}-sm{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass(frozen=True)
class BuildPlan:
    """How to build for one TensorRT version (a pure function of version and wish)."""

    strongly_typed: bool  # network creation flag
    fp16_flag: bool  # BuilderFlag.FP16 (TensorRT 10 only)
    onnx_precision: str  # which export to parse: "fp32" or "fp16"

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16_flag or self.onnx_precision == "fp16" else "fp32"


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise BackendError(f"cannot read TensorRT version {version!r}") from None


def build_plan(trt_version: str, fp16: bool, platform_fast_fp16: bool = True) -> BuildPlan:
    """TensorRT >= 11: strongly typed, FP16 from the ONNX types. 10.x: the FP16 builder flag."""
    major, _ = parse_version(trt_version)
    if major < MIN_MAJOR:
        raise BackendUnavailable(f"TensorRT {trt_version} is too old (need >= {MIN_MAJOR}.0)")
    if major >= 11:
        return BuildPlan(True, False, "fp16" if fp16 else "fp32")
    return BuildPlan(False, bool(fp16 and platform_fast_fp16), "fp32")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; its digest names the cached engine file."""

    model: str
    onnx_sha256: str
    gpu: str
    compute_capability: tuple[int, int]
    tensorrt: str
    precision: str
    profile: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]

    @classmethod
    def make(
        cls,
        model: str,
        onnx_sha256: str,
        gpu: GpuInfo,
        trt_version: str,
        precision: str,
        profile: Mapping[str, tuple[tuple[int, ...], ...]],
    ) -> EngineKey:
        prof = tuple(sorted((k, tuple(tuple(s) for s in v)) for k, v in profile.items()))
        return cls(
            model,
            onnx_sha256,
            gpu.name,
            tuple(gpu.compute_capability),
            trt_version,
            precision,
            prof,
        )

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def filename(self) -> str:
        return f"{self.model}-{self.precision}-{self.digest()[:20]}.engine"


def default_cache_dir() -> Path:
    root = os.environ.get("AFFECTSTREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "affectstream"
    )
    return Path(root) / "tensorrt"


def timing_cache_path(cache_dir: Path, gpu: GpuInfo, trt_version: str) -> Path:
    return cache_dir / f"timing-{gpu.slug()}-trt{trt_version}.cache"


def _import_trt():
    ok, why = tensorrt_status()
    if not ok:
        raise BackendUnavailable(f"tensorrt: {why}")
    import tensorrt as trt

    return trt


def build_engine(
    onnx_path: Path,
    signature: Signature,
    plan: BuildPlan,
    timing_cache: Path | None = None,
    workspace_bytes: int = 1 << 30,
) -> bytes:
    """Parse `onnx_path`, add one optimisation profile, build, return the serialized engine."""
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(signature).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}")
    if cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def engine_for(
    model: str,
    onnx_path: Path,
    onnx_sha256: str,
    signature: Signature,
    fp16: bool = True,
    cache_dir: Path | None = None,
    fp16_onnx: Path | None = None,
) -> tuple[Path, EngineKey]:
    """The cached engine for this ONNX file on this GPU, building it on a miss."""
    trt = _import_trt()
    cache_dir = cache_dir or default_cache_dir()
    gpu = GpuInfo.current()
    fast = True
    if parse_version(trt.__version__)[0] < 11:
        fast = bool(trt.Builder(trt.Logger(trt.Logger.ERROR)).platform_has_fast_fp16)
    plan = build_plan(trt.__version__, fp16, fast)
    source, sha = onnx_path, onnx_sha256
    if plan.onnx_precision == "fp16":
        if fp16_onnx is None or not fp16_onnx.is_file():
            raise BackendError(
                f"TensorRT {trt.__version__} takes FP16 from the ONNX types: export with "
                "`affectstream export --fp16` (or pass fp16=False)"
            )
        from affectstream.export.registry import file_sha256

        source, sha = fp16_onnx, file_sha256(fp16_onnx)
    key = EngineKey.make(
        model, sha, gpu, trt.__version__, plan.precision, profile_shapes(signature)
    )
    path = cache_dir / key.filename()
    if path.is_file():
        log.info("tensorrt: engine cache hit %s", path.name)
        return path, key
    log.info(
        "tensorrt: building %s engine for %s (%s); this takes a while",
        plan.precision,
        model,
        gpu.name,
    )
    data = build_engine(source, signature, plan, timing_cache_path(cache_dir, gpu, trt.__version__))
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    write_json(path.with_suffix(".json"), asdict(key), indent=1)
    return path, key


class TensorRTBackend(Backend):
    """Runs a cached engine. Inputs/outputs are numpy; device buffers are PyTorch tensors.

    Attributes:
        fp16: build an FP16 engine (see the module docstring for TensorRT 11).
        cuda_graphs: capture one CUDA graph per shape bucket (batch and `paddable` axes are
            zero-padded up to a power of two, outputs cut back), replayed on later calls.
    """

    name = "tensorrt"

    def __init__(
        self,
        model: str,
        onnx_path: str | Path,
        signature: Signature,
        onnx_sha256: str,
        fp16: bool = True,
        cuda_graphs: bool = False,
        paddable: tuple[str, ...] = ("batch",),
        cache_dir: str | Path | None = None,
        fp16_onnx: str | Path | None = None,
    ) -> None:
        super().__init__(model, signature)
        self.onnx_path = Path(onnx_path)
        self.onnx_sha256 = onnx_sha256
        self.fp16 = fp16
        self.cuda_graphs = cuda_graphs
        self.paddable = paddable
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.fp16_onnx = Path(fp16_onnx) if fp16_onnx else None
        self.engine = None
        self.key: EngineKey | None = None
        self._local = threading.local()
        self._trt = None

    def _load(self) -> None:
        trt = _import_trt()  # raises BackendUnavailable before any TensorRT object exists
        path, self.key = engine_for(
            self.model,
            self.onnx_path,
            self.onnx_sha256,
            self.signature,
            self.fp16,
            self.cache_dir,
            self.fp16_onnx,
        )
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT could not load {path} (delete it to rebuild)")
        self._trt, self._runtime, self.engine = trt, runtime, engine

    def _close(self) -> None:
        self._local = threading.local()
        self.engine = None
        self._runtime = None

    def _state(self):
        """This thread's execution context, stream, and per-shape buffers and graphs."""
        st = getattr(self._local, "state", None)
        if st is None:
            import torch

            st = _ThreadState(self.engine.create_execution_context(), torch.cuda.Stream())
            self._local.state = st
        return st

    def _infer(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        sig = self.signature
        sizes = sig.check(feed)
        target = bucket_sizes(sizes, sig, self.paddable) if self.cuda_graphs else sizes
        padded = pad_feed(feed, sig, target)
        st = self._state()
        shape_key = tuple(sorted(target.items()))
        slot = st.slots.get(shape_key)
        if slot is None:
            slot = self._prepare(st, padded)
            st.slots[shape_key] = slot
        with torch.cuda.stream(st.stream):
            for name in sig.input_names:
                slot.inputs[name].copy_(torch.from_numpy(padded[name]), non_blocking=False)
            if slot.graph is not None:
                slot.graph.replay()
            else:
                self._enqueue(st, slot)
                if self.cuda_graphs:
                    slot.graph = self._capture(st, slot)
            outs = [slot.outputs[n].to("cpu") for n in sig.output_names]
        st.stream.synchronize()
        return unpad([o.numpy() for o in outs], sig, sizes)

    def _prepare(self, st, padded: Mapping[str, np.ndarray]):
        """Buffers for one shape. With CUDA graphs each shape also gets its own execution
        context: a captured graph is only valid while its context keeps those shapes."""
        import torch

        trt = self._trt
        ctx = self.engine.create_execution_context() if self.cuda_graphs else st.context
        inputs, outputs = {}, {}
        for name in self.signature.input_names:
            a = padded[name]
            ctx.set_input_shape(name, a.shape)
            inputs[name] = torch.empty(a.shape, dtype=_torch_dtype(a.dtype), device="cuda")
            ctx.set_tensor_address(name, inputs[name].data_ptr())
        for name in self.signature.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            outputs[name] = torch.empty(shape, dtype=_torch_dtype(dtype), device="cuda")
        return _Slot(ctx, inputs, outputs)

    def _enqueue(self, st, slot) -> None:
        ctx = slot.context
        for name, t in slot.inputs.items():
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        for name, t in slot.outputs.items():
            ctx.set_tensor_address(name, t.data_ptr())
        if not ctx.execute_async_v3(st.stream.cuda_stream):
            raise BackendError(f"tensorrt: execute_async_v3 failed for {self.model}")

    def _capture(self, st, slot):
        """Capture the enqueue of this shape bucket (after one plain run, which TensorRT needs)."""
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=st.stream):
            self._enqueue(st, slot)
        return graph

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            fp16=self.fp16,
            cuda_graphs=self.cuda_graphs,
            onnx=str(self.onnx_path),
            engine=self.key.filename() if self.key else None,
        )
        return d


class _ThreadState:
    def __init__(self, context, stream) -> None:
        self.context = context
        self.stream = stream
        self.slots: dict = {}


class _Slot:
    def __init__(self, context, inputs: dict, outputs: dict) -> None:
        self.context = context
        self.inputs = inputs
        self.outputs = outputs
        self.graph = None


def _torch_dtype(dtype: np.dtype):
    import torch

    return {
        np.dtype("float32"): torch.float32,
        np.dtype("float16"): torch.float16,
        np.dtype("int64"): torch.int64,
        np.dtype("int32"): torch.int32,
        np.dtype("bool"): torch.bool,
        np.dtype("uint8"): torch.uint8,
    }[np.dtype(dtype)]
