"""ONNX Runtime backend: CPU everywhere; CUDA and TensorRT execution providers when they run.

The GPU package (`onnxruntime-gpu`) lists CUDA and TensorRT providers in
`get_available_providers()` even on machines where they cannot start (no driver, no cuDNN):
the session then silently falls back to CPU. So the providers that count are the ones the
built session reports with `get_providers()`; asking for a GPU and getting CPU is an error
unless the caller allowed the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.export.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    DimRange,
    Signature,
    TensorSpec,
)

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)"
        ) from e
    return onnxruntime


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """Providers to ask for, best first, on `device` ("cpu", "cuda", "tensorrt")."""
    wanted = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TRT, CUDA, CPU]}.get(device)
    if wanted is None:
        raise BackendError(f"onnxruntime: unknown device {device!r} (cpu, cuda, tensorrt)")
    return [p for p in wanted if p in available]


def signature_from_session(session, dims: Mapping[str, DimRange] | None = None) -> Signature:
    """A signature read off the session (used when an ONNX file comes without a manifest)."""

    def spec(arg) -> TensorSpec:
        shape = tuple(s if isinstance(s, int) else str(s) for s in arg.shape)
        return TensorSpec(arg.name, shape, _DTYPES.get(arg.type, arg.type))

    return Signature(
        tuple(spec(a) for a in session.get_inputs()),
        tuple(spec(a) for a in session.get_outputs()),
        dict(dims or {}),
    )


class OnnxRuntimeBackend(Backend):
    """One `InferenceSession` on an exported file.

    Attributes:
        threads: intra-op threads (config `backend.threads`); inter-op is 1, sequential.
        device: "cpu", "cuda" or "tensorrt": which providers to ask for.
        allow_fallback: if the GPU providers asked for are not active after the session is
            built, use CPU with a warning instead of raising BackendUnavailable.
        providers: what the session actually runs on (filled by load()).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: str,
        path: str | Path,
        signature: Signature | None = None,
        threads: int = 1,
        device: str = "cpu",
        allow_fallback: bool = False,
    ) -> None:
        super().__init__(model, signature)
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.allow_fallback = allow_fallback
        self.providers: list[str] = []
        self.session = None

    def _load(self) -> None:
        ort = _import_ort()
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        asked = providers_for(self.device, ort.get_available_providers())
        if self.device != "cpu" and asked == [CPU] and not self.allow_fallback:
            raise BackendUnavailable(
                f"onnxruntime: no GPU provider in this build "
                f"({ort.get_available_providers()}); pip install onnxruntime-gpu"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = max(1, int(self.threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), sess_options=opts, providers=asked)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise BackendError(f"onnxruntime cannot load {self.path}: {e}") from e
        active = list(session.get_providers())
        gpu_asked = [p for p in asked if p != CPU]
        if gpu_asked and not any(p in active for p in gpu_asked):
            msg = (
                f"onnxruntime: asked for {gpu_asked} but the session runs on {active} "
                "(driver, CUDA or cuDNN missing)"
            )
            if not self.allow_fallback:
                raise BackendUnavailable(msg)
            log.warning("%s; using CPU", msg)
        self.session, self.providers = session, active
        from_file = signature_from_session(session)
        if self.signature is None:
            self.signature = from_file
        else:
            _check_matches(self.signature, from_file, self.path)

    def _close(self) -> None:
        self.session = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.signature.output_names, dict(feed))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            device=self.device, providers=self.providers, threads=self.threads, file=str(self.path)
        )
        return d


def _check_matches(declared: Signature, found: Signature, path: Path) -> None:
    """The manifest's signature and the file's must agree on names, ranks and dtypes."""
    for kind, a, b in (
        ("inputs", declared.inputs, found.inputs),
        ("outputs", declared.outputs, found.outputs),
    ):
        if [(t.name, len(t.shape), t.dtype) for t in a] != [
            (t.name, len(t.shape), t.dtype) for t in b
        ]:
            raise BackendError(
                f"{path}: {kind} {[t.to_dict() for t in b]} differ from the manifest's "
                f"{[t.to_dict() for t in a]}; re-export"
            )
