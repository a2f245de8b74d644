"""Torch modules the registry puts around the owners' models (imported only when building).

- `Fp16IO`, `VoiceFp16`: FP16 inside, float32 inputs and outputs (CUDA path, TensorRT 11).
- `EmptyRowsSafe`: text rows with no tokens at all (padding rows) give what the model defines
  for them (the head applied to a zero sentence vector) instead of NaN. In FP16 an attention
  row whose keys are all masked overflows to -inf and softmax turns it into NaN, and the
  masked mean pool multiplies NaN by 0, which stays NaN.
"""

from __future__ import annotations

import copy

import torch
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


class EmptyRowsSafe(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> (logits, embedding), NaN-free for rows
    whose mask is all zeros: those rows attend to one token inside, and their outputs are
    replaced by `net.head(0)`, what the model gives a zero sentence vector."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.hidden = net.bert.config.hidden_size

    @property
    def spec(self):
        return self.net.spec

    def forward(self, input_ids, attention_mask, token_type_ids):
        empty = attention_mask.sum(dim=1, keepdim=True) == 0  # (B, 1)
        first = torch.zeros_like(attention_mask)
        first[:, 0] = 1
        visible = torch.where(empty, first, attention_mask)
        logits, emb = self.net(input_ids, visible, token_type_ids)
        zero = torch.zeros(1, self.hidden, dtype=emb.dtype, device=emb.device)
        logits0, emb0 = self.net.head(zero)
        return torch.where(empty, logits0, logits), torch.where(empty, emb0, emb)
