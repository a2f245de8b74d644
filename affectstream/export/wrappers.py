"""FP16 versions of the models with float32 inputs and outputs (CUDA path, TensorRT 11 export).

Imported only when FP16 is asked for; `ModelEntry.to_fp16` picks the wrapper.
"""

from __future__ import annotations

import copy

from torch import nn


class Fp16IO(nn.Module):
    """Float32 (and integer) inputs in, float32 outputs out, FP16 inside."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(inner).half()

    def forward(self, *args):
        args = [a.half() if a.is_floating_point() else a for a in args]
        return tuple(o.float() for o in self.inner(*args))


class VoiceFp16(nn.Module):
    """FP16 except the log-mel front end: frame power reaches ~1e5, past FP16's range."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        ens = copy.deepcopy(ensemble)
        self.frontend = ens.frontend
        self.ens = ens.half()
        self.frontend.float()

    def forward(self, wave):
        logp, emb = self.ens.forward_mel(self.frontend(wave).half())
        return logp.float(), emb.float()
