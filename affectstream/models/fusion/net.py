"""FusionNet: temporal attention within each modality, a relevance weight per modality, a
fused head for the 7 classes, unimodal auxiliary heads, and a temperature for calibration.

Inputs per modality m (face, voice, text): `{m}_x` (B, K, E_m + 7): each token's embedding and
class probabilities; `{m}_age` (B, K): seconds since its capture; `{m}_mask` (B, K): 1 for a
token, 0 for an empty slot. A modality with no token is absent.

1. Each token is projected to `d` (its embedding layer-normalised, its probabilities and a few
   age features: the model learns how fast each modality's evidence goes stale).
2. Temporal attention: per modality, a query made of a learned vector and a projection of the
   newest token attends over that modality's tokens (age enters each key), giving one summary
   vector per modality, so the history is read in the light of what is there now (a new face
   outweighs the last seconds of the one before: 1.2 points on the development streams, fusion
   card); an auxiliary head reads each summary (the unimodal tasks trained beside the
   multimodal one).
3. Relevance: an MLP over all summaries (so each modality is judged against the others: a face
   that disagrees with an emotional voice) gives one logit per modality; a softmax over the
   present modalities gives the weights, exactly 0 for absent ones. These are the estimate's
   `relevance`.
4. The fused distribution is the relevance-weighted mixture of the auxiliary heads'
   distributions: the relevance a user sees is exactly how much each modality's reading (its
   summary over time) counts in the estimate. On the development stream this also did better
   than a head over the weighted summaries (0.415 vs 0.407 tick accuracy: fusion card). Its log
   is divided by the temperature fitted after training (`train.fit_temperature`), so the
   confidence is calibrated. Files written before this had the summary head (`FusionSpec.head`).
5. An ensemble (`FusionSpec.members` > 1): members trained apart (other seeds, other simulated
   streams) whose mixtures are averaged. Its relevance is the members' mean, and each
   modality's reading is the members' readings weighted by their relevance, so the fused
   distribution is still exactly the relevance-weighted mixture of the modalities' readings.
   Three members did 1.6 points better than one on the development streams (fusion card).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from affectstream.core.labels import LABELS, MODALITIES
from affectstream.models.fusion.spec import FusionSpec

N_CLASSES = len(LABELS)
AGE_SCALES_S = (0.3, 1.0, 3.0)  # exp(-age / s) features beside the raw age


def input_names() -> list[str]:
    return [f"{m}_{k}" for m in MODALITIES for k in ("x", "age", "mask")]


OUTPUTS = ("logits", "relevance", "aux_logits")


class ModalityEncoder(nn.Module):
    """Tokens of one modality -> one summary vector, by attention pooling over time."""

    def __init__(
        self,
        embed_dim: int,
        d: int,
        dropout: float,
        embed_dropout: float = 0.0,
        query: str = "learned",
    ) -> None:
        super().__init__()
        if query not in ("learned", "newest"):
            raise ValueError(f"unknown fusion query {query!r} (known: learned, newest)")
        self.embed_dim = embed_dim
        self.norm = nn.LayerNorm(embed_dim)
        self.embed_dropout = nn.Dropout(embed_dropout)
        n_in = embed_dim + N_CLASSES + 1 + len(AGE_SCALES_S)
        self.proj = nn.Sequential(nn.Linear(n_in, d), nn.GELU(), nn.Dropout(dropout))
        self.query = nn.Parameter(torch.zeros(d))
        self.newest_query = None
        if query == "newest":  # starts as the fixed query: the projection begins at zero
            self.newest_query = nn.Linear(d, d)
            nn.init.zeros_(self.newest_query.weight)
            nn.init.zeros_(self.newest_query.bias)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.out = nn.Sequential(nn.Linear(d, d), nn.GELU())
        self.register_buffer("scales", torch.tensor(AGE_SCALES_S))

    def forward(self, x: torch.Tensor, age: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = self.attend(x, age, mask)
        return self.out((w.unsqueeze(-1) * self.value(h)).sum(1))  # (B, d)

    def attend(
        self, x: torch.Tensor, age: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected tokens (B, K, d), attention weights (B, K); empty slots and empty rows 0)."""
        emb, probs = x[..., : self.embed_dim], x[..., self.embed_dim :]
        a = age.unsqueeze(-1)
        feats = torch.cat(
            [self.embed_dropout(self.norm(emb)), probs, a, torch.exp(-a / self.scales)], dim=-1
        )
        h = self.proj(feats)  # (B, K, d)
        q = self.query
        if self.newest_query is not None:  # the newest token is the last slot (left-padded)
            q = (q + self.newest_query(h[:, -1] * mask[:, -1:])).unsqueeze(1)  # (B, 1, d)
        score = (self.key(h) * q).sum(-1) / h.shape[-1] ** 0.5  # (B, K)
        score = score.masked_fill(mask < 0.5, -1e4)
        return h, torch.softmax(score, dim=-1) * mask


class FusionNet(nn.Module):
    def __init__(self, spec: FusionSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or FusionSpec()
        s = self.spec
        self.register_buffer("temperature", torch.ones(()))
        if s.members > 1:
            if s.head != "mixture":
                raise ValueError(f"an ensemble needs the mixture head, not {s.head!r}")
            one = replace(s, members=1)
            self.members = nn.ModuleList([FusionNet(one) for _ in range(s.members)])
            return
        if s.members < 1:
            raise ValueError(f"a fusion model needs at least one member, got {s.members}")
        self.encoders = nn.ModuleDict(
            {
                m: ModalityEncoder(s.embed_dims[m], s.d, s.dropout, s.embed_dropout, s.query)
                for m in MODALITIES
            }
        )
        self.aux = nn.ModuleDict({m: nn.Linear(s.d, N_CLASSES) for m in MODALITIES})
        n = len(MODALITIES)
        self.relevance = nn.Sequential(
            nn.Linear(n * (s.d + 1), s.hidden), nn.GELU(), nn.Linear(s.hidden, n)
        )
        if s.head == "summary":
            self.head = nn.Sequential(
                nn.Linear(s.d, s.hidden),
                nn.GELU(),
                nn.Dropout(s.dropout),
                nn.Linear(s.hidden, N_CLASSES),
            )
        elif s.head != "mixture":
            raise ValueError(f"unknown fusion head {s.head!r} (known: mixture, summary)")

    def forward(self, *inputs: torch.Tensor):
        """Inputs in `input_names()` order -> (logits / T (B, 7), relevance (B, 3),
        auxiliary logits (B, 3, 7))."""
        if self.spec.members > 1:
            return self._ensemble(inputs)
        summaries, present = [], []
        for i, m in enumerate(MODALITIES):
            x, age, mask = inputs[3 * i : 3 * i + 3]
            summaries.append(self.encoders[m](x, age, mask))
            present.append((mask.sum(-1, keepdim=True) > 0).to(x.dtype))
        s = torch.stack(summaries, 1)  # (B, 3, d)
        p = torch.cat(present, 1)  # (B, 3)
        s = s * p.unsqueeze(-1)
        rel_in = torch.cat([s, p.unsqueeze(-1)], -1).flatten(1)
        rel_logits = self.relevance(rel_in).masked_fill(p < 0.5, -1e4)
        rel = torch.softmax(rel_logits, -1) * p  # absent: exactly 0; nothing present: all 0
        aux = torch.stack([self.aux[m](summaries[i]) for i, m in enumerate(MODALITIES)], 1)
        if self.spec.head == "mixture":
            mix = (rel.unsqueeze(-1) * torch.softmax(aux, -1)).sum(1)
            logits = torch.log(mix + 1e-6) / self.temperature
        else:
            fused = (rel.unsqueeze(-1) * s).sum(1)
            logits = self.head(fused) / self.temperature
        return logits, rel, aux

    def _ensemble(self, inputs):
        """The members' mean mixture, as the mixture of their mean relevance with each
        modality's readings pooled by the members' relevance (the same distribution)."""
        rels, readings = [], []
        for member in self.members:
            _, rel, aux = member(*inputs)
            rels.append(rel)
            readings.append(torch.softmax(aux, -1))
        rel = torch.stack(rels).mean(0)  # (B, 3)
        weighted = sum(r.unsqueeze(-1) * p for r, p in zip(rels, readings, strict=True))
        pooled = sum(readings) / len(readings)  # a modality no member weighs (absent)
        reading = torch.where(
            rel.unsqueeze(-1) > 0, weighted / (len(rels) * rel.unsqueeze(-1) + 1e-12), pooled
        )
        mix = (rel.unsqueeze(-1) * reading).sum(1)
        logits = torch.log(mix + 1e-6) / self.temperature
        return logits, rel, torch.log(reading + 1e-6)
