"""The reference backend: the model's own PyTorch module, eager, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from affectstream.export.base import Backend, BackendError, BackendUnavailable, Signature


class TorchBackend(Backend):
    """The reference: the model's own PyTorch module, eager, on CPU or CUDA.

    `build` returns an eval-mode module whose `forward` takes the inputs positionally in
    signature order and returns the outputs in signature order. On CUDA, `fp16` and
    `cuda_graphs` turn on the fast path of `affectstream.export.cuda`.
    """

    name = "torch"

    def __init__(
        self,
        model: str,
        signature: Signature,
        build: Callable[[], Any],
        device: str = "cpu",
        threads: int | None = None,
        fp16: bool = False,
        cuda_graphs: bool = False,
        paddable: Sequence[str] = ("batch",),
    ) -> None:
        super().__init__(model, signature)
        self._build = build
        self.device = device
        self.threads = threads
        self.fp16 = fp16  # informational: `build` returns the FP16 module (ModelEntry.to_fp16)
        self.cuda_graphs = cuda_graphs
        self.paddable = tuple(paddable)
        self.module = None
        self._runner = None

    def _load(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendUnavailable("torch: no CUDA device here (torch.cuda.is_available())")
            from affectstream.export.cuda import CudaRunner

            self.module = self._build()
            self._runner = CudaRunner(
                self.module,
                self.signature,
                self.device,
                fp16=self.fp16,
                graphs=self.cuda_graphs,
                paddable=self.paddable,
            )
        else:
            if self.fp16 or self.cuda_graphs:
                raise BackendError("torch: fp16 and CUDA graphs need --device cuda")
            self.module = self._build().eval()

    def _close(self) -> None:
        self.module = None
        self._runner = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._runner is not None:
            return self._runner.run_numpy(feed)
        prev = torch.get_num_threads()
        if self.threads and prev != self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                args = [
                    torch.from_numpy(np.ascontiguousarray(feed[n]))
                    for n in self.signature.input_names
                ]
                outs = self.module(*args)
        finally:
            if self.threads and prev != self.threads:
                torch.set_num_threads(prev)
        return [o.numpy() for o in outs]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            device=self.device, threads=self.threads, fp16=self.fp16, cuda_graphs=self.cuda_graphs
        )
        return d
