"""The PyTorch CUDA path: FP16, CUDA graphs per shape bucket, encoders side by side.

At one stream's tick the encoders are tiny (a 48x48 face, a 2 s window, a few tokens): on a
GPU their cost is kernel launches, not arithmetic. A CUDA graph replays all of a model's
kernels with one launch; zero-padding the batch (and masked token axes) up to a power of
two keeps the number of graphs small. Each runner owns a CUDA stream, so `run_concurrently`
lets face, voice and text execute at the same time on the GPU, and batching the inputs of
many streams into one call per encoder per tick is what serves hundreds of streams.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from affectstream.export.base import Signature
from affectstream.export.shapes import bucket_sizes

log = logging.getLogger(__name__)


class CudaRunner:
    """One model on one CUDA device, with its own stream and (optionally) CUDA graphs.

    `module` is what runs (already FP16 inside if wanted: `ModelEntry.to_fp16`); its inputs
    and outputs keep the signature's dtypes. Outputs of `run_torch` are device tensors valid
    until the next call of this runner (graph outputs live in static buffers).
    """

    def __init__(
        self,
        module,
        signature: Signature,
        device: str = "cuda",
        fp16: bool = False,
        graphs: bool = False,
        paddable: Sequence[str] = ("batch",),
        warmup: int = 3,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.signature = signature
        self.fp16 = fp16
        self.graphs = graphs
        self.paddable = tuple(paddable)
        self.warmup = warmup
        self.stream = torch.cuda.Stream(self.device)
        self._pool = torch.cuda.graph_pool_handle() if graphs else None
        self._graphs: dict[tuple, tuple[Any, dict, tuple]] = {}

    # -- device tensors in, device tensors out -----------------------------------------
    def run_torch(self, inputs: Mapping[str, Any], sizes: Mapping[str, int]) -> list:
        """Enqueue on this runner's stream; the caller synchronises (or uses `run_numpy`)."""
        import torch

        sig = self.signature
        with torch.cuda.stream(self.stream), torch.inference_mode():
            if not self.graphs:
                outs = self.module(*(inputs[n] for n in sig.input_names))
                return list(outs)
            target = bucket_sizes(sizes, sig, self.paddable)
            key = tuple(sorted(target.items()))
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(target)
                self._graphs[key] = entry
            _, static_in, static_out = entry
            for name in sig.input_names:
                src, dst = inputs[name], static_in[name]
                if tuple(src.shape) == tuple(dst.shape):
                    dst.copy_(src, non_blocking=True)
                else:
                    dst.zero_()
                    dst[tuple(slice(0, n) for n in src.shape)].copy_(src, non_blocking=True)
            entry[0].replay()
            return [
                o[
                    tuple(
                        slice(0, sizes[s]) if isinstance(s, str) else slice(None)
                        for s in spec.shape
                    )
                ]
                for spec, o in zip(sig.outputs, static_out, strict=True)
            ]

    def _capture(self, target: Mapping[str, int]):
        import torch

        from affectstream.export.base import TensorSpec

        def shape(spec: TensorSpec) -> tuple[int, ...]:
            return tuple(s if isinstance(s, int) else target[s] for s in spec.shape)

        static_in = {
            spec.name: torch.zeros(shape(spec), dtype=_torch_dtype(spec.dtype), device=self.device)
            for spec in self.signature.inputs
        }
        args = [static_in[n] for n in self.signature.input_names]
        # Warm up on the side stream first (lazy cuDNN/cuBLAS init must not be captured).
        for _ in range(self.warmup):
            self.module(*args)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self.stream):
            static_out = tuple(self.module(*args))
        log.debug("captured a CUDA graph for %s", dict(target))
        return graph, static_in, static_out

    # -- numpy in, numpy out (the Backend contract) -------------------------------------
    def run_numpy(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        sizes = self.signature.check(feed)
        with torch.cuda.stream(self.stream):
            inputs = {
                n: torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)
                for n, a in feed.items()
            }
        outs = self.run_torch(inputs, sizes)
        with torch.cuda.stream(self.stream):
            host = [o.to("cpu", non_blocking=False) for o in outs]
        self.stream.synchronize()
        return [h.numpy() for h in host]

    @property
    def n_graphs(self) -> int:
        return len(self._graphs)


def run_concurrently(
    jobs: Sequence[tuple[CudaRunner, Mapping[str, Any], Mapping[str, int]]],
) -> list[list]:
    """Launch each (runner, device inputs, sizes) on its runner's stream, then wait for all.

    The calling thread only enqueues; the GPU overlaps the models. Returns device outputs.
    """
    import torch

    current = torch.cuda.current_stream()
    for runner, _, _ in jobs:  # inputs were written on the current stream
        runner.stream.wait_stream(current)
    outs = [runner.run_torch(inputs, sizes) for runner, inputs, sizes in jobs]
    for runner, _, _ in jobs:
        current.wait_stream(runner.stream)
    current.synchronize()
    return outs


def _torch_dtype(name: str):
    import torch

    return {
        "float32": torch.float32,
        "float16": torch.float16,
        "int64": torch.int64,
        "int32": torch.int32,
        "bool": torch.bool,
        "uint8": torch.uint8,
    }[name]
