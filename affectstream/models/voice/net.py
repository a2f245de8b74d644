"""The voice-emotion network: log-mel front end, compact CNN, attentive statistics pooling.

`forward(wave)` takes raw 16 kHz windows, so one ONNX graph covers the whole model;
`forward_mel(logmel)` skips the front end for training on cached log-mels.
Per-window normalisation (mean per mel band over time, one scale for the window) removes
microphone gain and much of the speaker's spectral colour, which is what the model must
ignore to work on voices it never heard.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from affectstream.core.labels import LABELS

from .features import LogMel, MelOptions


@dataclass(frozen=True)
class NetOptions:
    """Architecture settings; stored in the weight file so it rebuilds the same net."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    emb_dim: int = 128
    dropout: float = 0.3
    norm: str = "cmn"  # "cmn": per-band mean over time; "utt": one mean for the window
    n_classes: int = len(LABELS)
    mel: MelOptions = field(default_factory=MelOptions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetOptions:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d["mel"] = MelOptions(**d["mel"])
        return cls(**d)


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time: (B, C, T) -> (B, 2C)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.att = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.att(h), dim=-1)
        mean = (h * w).sum(dim=-1)
        var = (h * h * w).sum(dim=-1) - mean * mean
        return torch.cat([mean, torch.sqrt(torch.clamp(var, min=1e-5))], dim=1)


class VoiceNet(nn.Module):
    """Raw window (B, samples) -> (logits (B, 7), embedding (B, emb_dim))."""

    def __init__(self, opt: NetOptions | None = None) -> None:
        super().__init__()
        self.opt = opt or NetOptions()
        self.frontend = LogMel(self.opt.mel)
        chans = (1, *self.opt.channels)
        n = len(self.opt.channels)
        self.cnn = nn.Sequential(
            *[_block(chans[i], chans[i + 1], pool=i < n - 1) for i in range(n)]
        )
        c = self.opt.channels[-1]
        self.pool = AttentiveStatsPool(c)
        self.embed = nn.Sequential(nn.Linear(2 * c, self.opt.emb_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(self.opt.dropout)
        self.head = nn.Linear(self.opt.emb_dim, self.opt.n_classes)
        self.channels_last = False  # set for CPU inference: faster convolutions and pooling

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, T) log-mel -> zero-mean, unit-scale per window."""
        if self.opt.norm == "cmn":
            x = x - x.mean(dim=-1, keepdim=True)
        else:
            x = x - x.mean(dim=(1, 2), keepdim=True)
        std = torch.sqrt((x * x).mean(dim=(1, 2), keepdim=True) + 1e-5)
        return x / std

    def forward_mel(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.normalise(logmel).unsqueeze(1)
        if self.channels_last and not torch.onnx.is_in_onnx_export():
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.cnn(h)  # (B, C, M', T')
        emb = self.embed(self.pool(h.mean(dim=2)))
        return self.head(self.drop(emb)), emb

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_mel(self.frontend(wave))


class VoiceEnsemble(nn.Module):
    """Networks of one architecture sharing one front end; probabilities are averaged.

    Returns (log of the mean probability (B, 7), concatenated embeddings (B, k*emb_dim)),
    so a single network and an ensemble have the same interface.
    """

    def __init__(self, members: list[VoiceNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.opt = members[0].opt
        self.frontend = LogMel(self.opt.mel)
        self.members = nn.ModuleList(members)

    @property
    def emb_dim(self) -> int:
        return self.opt.emb_dim * len(self.members)

    def forward_mel(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m.forward_mel(logmel) for m in self.members]
        if len(outs) == 1:
            return torch.log_softmax(outs[0][0], dim=1), outs[0][1]
        probs = torch.stack([torch.softmax(o[0], dim=1) for o in outs]).mean(dim=0)
        return torch.log(probs), torch.cat([o[1] for o in outs], dim=1)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_mel(self.frontend(wave))


def fuse_batchnorm(net: VoiceNet) -> VoiceNet:
    """Fold each BatchNorm into its convolution and use channels-last (inference only)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net.eval()
    for block in net.cnn:
        if isinstance(block[1], nn.BatchNorm2d):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    net.cnn.to(memory_format=torch.channels_last)
    net.channels_last = True
    return net
