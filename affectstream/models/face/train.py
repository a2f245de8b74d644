"""Train the face CNN on FER2013 with the whole data set and its augmentation on the device.

Why on the device: at 48x48 the network is tiny and a CPU data loader would be the bottleneck
on a GPU, so the uint8 images live on the device as one tensor and every augmentation (random
affine: rotation, scale, shift, flip; brightness/contrast; random erasing) is a batched tensor
op. Recipe: SGD with Nesterov momentum, linear warm-up then cosine decay, label smoothing,
bf16 autocast on CUDA, a fixed number of epochs chosen in advance (no early stopping or
best-epoch picking on the validation split). Optionally a wider teacher is trained alongside
on the same batches and the student also learns from its softened outputs (online
distillation); only the student is saved.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectstream.core.labels import LABELS
from affectstream.models.face.data import FerData
from affectstream.models.face.net import INPUT_SIZE, PIXEL_MEAN, PIXEL_STD, FaceNet, FaceNetSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "affectstream.face/1"


@dataclass
class TrainOptions:
    """Hyper-parameters; echoed into the checkpoint so a run can be reproduced."""

    epochs: int = 120
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    seed: int = 0
    spec: FaceNetSpec = field(default_factory=FaceNetSpec)
    teacher_widths: tuple[int, ...] = ()  # empty: no teacher
    kd_weight: float = 0.5  # share of the student's loss that comes from the teacher
    kd_temperature: float = 4.0
    max_minutes: float = 0.0  # >0: cap epochs to what fits, measured before training starts
    # augmentation
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    shift_frac: float = 0.1
    jitter: float = 0.3  # contrast factor in 1 +- jitter, brightness in +- jitter/3
    erase_p: float = 0.5
    # transfer augmentation (0 = off, the original recipe): see `augment`
    shear: float = 0.0  # horizontal shear +- this, and a horizontal squeeze down to 1 - shear
    light_p: float = 0.0  # share of faces lit from one side (a ramp +-0.25) with gamma 0.6-1.6
    blur_p: float = 0.0  # share of faces blurred, Gaussian sigma 0.3-1.5 px (focus, motion)
    erase_solid: float = 0.0  # share of the erased patches filled flat (a hand) instead of noise

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        d["teacher_widths"] = list(self.teacher_widths)
        d["scale_range"] = list(self.scale_range)
        return d


def augment(x: torch.Tensor, opts: TrainOptions, gen: torch.Generator) -> torch.Tensor:
    """Batched random affine + flip, brightness/contrast and random erasing; x float in [0, 1].

    With the transfer options on (`shear`, `light_p`, `blur_p`, `erase_solid`), also: pose
    beyond in-plane rotation (shear and a horizontal squeeze, a cheap stand-in for a turned
    head), light from one side with a gamma change, defocus blur, and flat occluders."""
    b, dev = x.shape[0], x.device

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=gen) * (hi - lo) + lo

    def chosen(p: float) -> torch.Tensor:
        return (torch.rand(b, device=dev, generator=gen) < p).view(b, 1, 1, 1)

    ang = u(-opts.rotate_deg, opts.rotate_deg) * (math.pi / 180)
    inv_s = 1.0 / u(*opts.scale_range)
    flip = torch.where(torch.rand(b, device=dev, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) * inv_s, torch.sin(ang) * inv_s
    row0 = [cos * flip, -sin, u(-2 * opts.shift_frac, 2 * opts.shift_frac)]
    if opts.shear > 0:  # output x reads input x / squeeze + shear * y
        sq = 1.0 / u(1 - opts.shear, 1.0)
        row0 = [row0[0] * sq, row0[1] * sq + u(-opts.shear, opts.shear), row0[2]]
    theta = torch.stack(
        [
            torch.stack(row0, 1),
            torch.stack([sin * flip, cos, u(-2 * opts.shift_frac, 2 * opts.shift_frac)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = u(1 - opts.jitter, 1 + opts.jitter).view(b, 1, 1, 1)
    br = u(-opts.jitter / 3, opts.jitter / 3).view(b, 1, 1, 1)
    x = ((x - mean) * c + mean + br).clamp(0, 1)

    if opts.light_p > 0:
        side = x.shape[-1]
        r = torch.linspace(-1, 1, side, device=dev, dtype=x.dtype)
        phi = u(0, 2 * math.pi).view(b, 1, 1, 1)
        ramp = torch.cos(phi) * r.view(1, 1, 1, side) + torch.sin(phi) * r.view(1, 1, side, 1)
        gamma = torch.exp(u(math.log(0.6), math.log(1.6))).view(b, 1, 1, 1)
        lit = (x.clamp_min(1e-4) ** gamma + u(0, 0.25).view(b, 1, 1, 1) * ramp).clamp(0, 1)
        x = torch.where(chosen(opts.light_p), lit, x)

    if opts.blur_p > 0:
        sigma = u(0.3, 1.5).view(b, 1)
        t = torch.arange(-3, 4, device=dev, dtype=x.dtype).view(1, 7)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum(1, keepdim=True)  # (b, 7), one kernel per face, applied separably
        y = F.pad(x.transpose(0, 1), (3, 3, 3, 3), mode="replicate")
        y = F.conv2d(y, k.view(b, 1, 1, 7), groups=b)
        y = F.conv2d(y, k.view(b, 1, 7, 1), groups=b).transpose(0, 1)
        x = torch.where(chosen(opts.blur_p), y, x)

    if opts.erase_p > 0:
        side = x.shape[-1]
        area = u(0.02, 0.2)
        aspect = torch.exp(u(math.log(0.3), math.log(3.3)))
        h = (torch.sqrt(area * aspect) * side).clamp(1, side)
        w = (torch.sqrt(area / aspect) * side).clamp(1, side)
        y0 = torch.rand(b, device=dev, generator=gen) * (side - h)
        x0 = torch.rand(b, device=dev, generator=gen) * (side - w)
        on = torch.rand(b, device=dev, generator=gen) < opts.erase_p
        r = torch.arange(side, device=dev, dtype=x.dtype)
        ys = (r.view(1, side) >= y0.view(b, 1)) & (r.view(1, side) < (y0 + h).view(b, 1))
        xs = (r.view(1, side) >= x0.view(b, 1)) & (r.view(1, side) < (x0 + w).view(b, 1))
        mask = (ys.view(b, 1, side, 1) & xs.view(b, 1, 1, side)) & on.view(b, 1, 1, 1)
        noise = torch.rand(x.shape, device=dev, generator=gen, dtype=x.dtype)
        if opts.erase_solid > 0:
            flat = u(0, 1).view(b, 1, 1, 1).expand_as(x)
            noise = torch.where(chosen(opts.erase_solid), flat, noise)
        x = torch.where(mask, noise, x)
    return x


def _to_device(data: FerData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(data.images).to(device).view(-1, 1, INPUT_SIZE, INPUT_SIZE)
    y = torch.from_numpy(data.labels).to(device)
    return x, y


@torch.no_grad()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Logits for uint8 images (N, 1, 48, 48) already on the model's device (eval mode)."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch):
        xb = images_u8[i : i + batch].float().div_(255)
        with _autocast(xb.device):
            out.append(model(xb)[0].float())
    model.train(was)
    return torch.cat(out)


def _autocast(device: torch.device):
    enabled = device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class _Trainer:
    """One optimisation step over student (and teacher): kept in a class so the timing probe
    can run the exact same step on throw-away copies."""

    def __init__(self, opts: TrainOptions, device: torch.device):
        self.opts, self.device = opts, device
        self.student = FaceNet(opts.spec).to(device)
        self.teacher = (
            FaceNet(FaceNetSpec(widths=tuple(opts.teacher_widths))).to(device)
            if opts.teacher_widths
            else None
        )
        if device.type == "cuda":
            self.student.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        params = list(self.student.parameters())
        if self.teacher is not None:
            params += list(self.teacher.parameters())
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.optim = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": opts.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=opts.lr,
            momentum=opts.momentum,
            nesterov=True,
        )

    def step(self, xb: torch.Tensor, yb: torch.Tensor, lr: float, kd_w: float) -> tuple:
        o = self.opts
        for g in self.optim.param_groups:
            g["lr"] = lr
        if self.device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device):
            s_logits, _ = self.student(xb)
            loss_s = F.cross_entropy(s_logits.float(), yb, label_smoothing=o.label_smoothing)
            loss = loss_s
            if self.teacher is not None:
                t_logits, _ = self.teacher(xb)
                t_logits = t_logits.float()
                loss_t = F.cross_entropy(t_logits, yb, label_smoothing=o.label_smoothing)
                temp = o.kd_temperature
                kd = F.kl_div(
                    F.log_softmax(s_logits.float() / temp, 1),
                    F.log_softmax(t_logits.detach() / temp, 1),
                    reduction="batchmean",
                    log_target=True,
                ) * (temp * temp)
                loss = (1 - kd_w) * loss_s + kd_w * kd + loss_t
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        return loss_s.detach(), s_logits.detach()


def _probe_seconds_per_step(opts: TrainOptions, device, x_tr, y_tr, gen) -> float:
    """Time a few real steps on copies (weights of the real run untouched)."""
    probe = _Trainer(opts, device)
    n = min(len(y_tr), opts.batch_size)
    xb = x_tr[:n].float().div_(255)
    yb = y_tr[:n]
    times = []
    for i in range(25):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        probe.step(augment(xb, opts, gen), yb, 1e-3, 0.5)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    del probe
    return float(np.median(times))


def train(
    train_data: FerData,
    val_data: FerData | None,
    opts: TrainOptions,
    device: str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[FaceNet, dict]:
    """Train and return (student in eval mode on CPU, info with history and final metrics)."""
    dev = torch.device(device)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(opts.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x_tr, y_tr = _to_device(train_data, dev)
    val = _to_device(val_data, dev) if val_data is not None else None
    steps_per_epoch = len(y_tr) // opts.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"need at least one batch of {opts.batch_size} training images")

    opts = copy.deepcopy(opts)
    requested = opts.epochs
    sec_per_step = None
    if opts.max_minutes > 0:
        sec_per_step = _probe_seconds_per_step(opts, dev, x_tr, y_tr, gen)
        eval_s = (0.1 if dev.type == "cuda" else 1.0) if val is not None else 0.0
        fit = int(opts.max_minutes * 60 / (steps_per_epoch * sec_per_step * 1.08 + eval_s))
        opts.epochs = max(1, min(opts.epochs, fit))
        log.info(
            "%.2f ms/step, %d steps/epoch: %d epochs fit in %.1f min (asked %d)",
            sec_per_step * 1e3,
            steps_per_epoch,
            fit,
            opts.max_minutes,
            requested,
        )
        gen.manual_seed(opts.seed)  # the probe must not shift the real run's random stream
    torch.manual_seed(opts.seed)
    tr = _Trainer(opts, dev)
    total = opts.epochs * steps_per_epoch
    warm = opts.warmup_epochs * steps_per_epoch
    history: list[dict] = []
    t_start = time.perf_counter()
    step = 0
    for epoch in range(opts.epochs):
        tr.student.train()
        if tr.teacher is not None:
            tr.teacher.train()
        perm = torch.randperm(len(y_tr), device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev)
        kd_w = opts.kd_weight * min(1.0, (epoch + 1) / max(1, opts.epochs // 4))
        for i in range(steps_per_epoch):
            idx = perm[i * opts.batch_size : (i + 1) * opts.batch_size]
            xb = augment(x_tr[idx].float().div_(255), opts, gen)
            yb = y_tr[idx]
            loss, logits = tr.step(xb, yb, _lr_at(step, total, warm, opts.lr), kd_w)
            loss_sum += loss
            correct += (logits.argmax(1) == yb).sum()
            step += 1
        row = {
            "epoch": epoch + 1,
            "lr": _lr_at(step - 1, total, warm, opts.lr),
            "train_loss": float(loss_sum) / steps_per_epoch,
            "train_acc": float(correct) / (steps_per_epoch * opts.batch_size),
            "elapsed_s": round(time.perf_counter() - t_start, 1),
        }
        if val is not None:
            row["val_acc"] = float(
                (predict_logits(tr.student, val[0]).argmax(1) == val[1]).float().mean()
            )
            if tr.teacher is not None:
                row["val_acc_teacher"] = float(
                    (predict_logits(tr.teacher, val[0]).argmax(1) == val[1]).float().mean()
                )
        history.append(row)
        log.info("epoch %s", row)
        if on_epoch is not None:
            on_epoch(row)
    student = tr.student.to(memory_format=torch.contiguous_format).float().cpu().eval()
    info = {
        "options": opts.to_dict(),
        "epochs_requested": requested,
        "sec_per_step_probe": sec_per_step,
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "history": history,
        "n_train": len(y_tr),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": str(torch.__version__),
    }
    if tr.teacher is not None:
        info["teacher_state_dict"] = {
            k: v.float().cpu() for k, v in tr.teacher.state_dict().items()
        }
    return student, info


def checkpoint(model: FaceNet, info: dict, command: str, metrics: dict | None) -> dict:
    """The shipped weight file's content: state_dict plus everything needed to use and trust it."""
    return {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
        "labels": list(LABELS),
        "input": {
            "shape": [1, INPUT_SIZE, INPUT_SIZE],
            "dtype": "float32",
            "range": "[0, 1] = uint8 / 255, grayscale",
            "normalisation": {"mean": PIXEL_MEAN, "std": PIXEL_STD, "inside_model": True},
        },
        "outputs": ["logits (N, 7) in `labels` order", f"embedding (N, {model.spec.embed_dim})"],
        "spec": model.spec.to_dict(),
        "training": {k: v for k, v in info.items() if k != "teacher_state_dict"},
        "command": command,
        "metrics": metrics or {},
    }
