"""Fine-tune a trained face CNN on FER2013 plus a second corpus (JAFFE), cheaply, on a CPU.

Why fine-tune and not retrain: the shipped network took 92 GPU epochs; a CPU affords about a
thousand small steps. Each step's batch mixes `base_per_batch` FER2013 Training faces (so the
network keeps what it knows about FER2013) with `extra_per_batch` faces of the other corpus
(drawn uniformly, so its ~200 faces are seen many times: the transfer augmentation of
`train.augment` keeps that from being memorisation). BatchNorm statistics stay frozen at the
trained values (batches of 64 would only add noise to them), the learning rate is small with
a short warm-up and cosine decay, and the step count is fixed in advance: nothing is chosen on
the validation data. The architecture, input contract and 256-d embedding are unchanged.

Distillation: with `teachers`, each step's loss is `(1 - kd_weight) * CE + kd_weight * T^2 *
KL(teacher_T || student_T)`, where the teacher's reading is the mean over the teacher networks
and the mirrored face of their tempered probabilities on the same augmented batch: an
ensemble with flip costs several network runs per face, the student one (the face budget of a
live tick), so this is how its accuracy is brought into the shipped size.

Resumable: with `resume` set, the whole state (weights, optimiser, random generators, step,
history) is written there at every log point, atomically, and a run that finds the file
continues from it, so a run stopped on a shared CPU loses at most `log_every` steps and ends
with the same weights as one that was never stopped.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectstream.models.face.data import FerData
from affectstream.models.face.net import INPUT_SIZE, FaceNet
from affectstream.models.face.train import TrainOptions, _lr_at, augment

log = logging.getLogger(__name__)


def transfer_augmentation() -> TrainOptions:
    """The augmentation used for fine-tuning: the training recipe's, plus pose (rotation to
    20 deg, shear/squeeze 0.15), side light and gamma, defocus blur and flat occluders."""
    return TrainOptions(
        rotate_deg=20.0,
        scale_range=(0.85, 1.15),
        shift_frac=0.08,
        jitter=0.3,
        erase_p=0.4,
        shear=0.15,
        light_p=0.4,
        blur_p=0.3,
        erase_solid=0.5,
    )


@dataclass
class FinetuneOptions:
    """Hyper-parameters, echoed into the checkpoint."""

    steps: int = 1000
    base_per_batch: int = 48  # FER2013 Training faces per step
    extra_per_batch: int = 16  # faces of the extra corpus per step
    lr: float = 0.005
    warmup_steps: int = 50
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    # weight-space ensemble with the start (WiSE-FT): the result is keep * start + (1 - keep)
    # * fine-tuned, which buys back FER2013 accuracy for part of the new corpus's gain
    keep: float = 0.0
    kd_weight: float = 0.5  # used only with teachers
    kd_temperature: float = 4.0
    aug: TrainOptions = field(default_factory=transfer_augmentation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aug"] = self.aug.to_dict()
        return d


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def teacher_probs(teachers: list[nn.Module], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The ensemble's tempered reading of a batch: the mean over the teachers and over the face
    and its mirror of softmax(logits / T)."""
    with torch.no_grad():
        views = (x, x.flip(-1))
        p = [torch.softmax(t(v)[0].float() / temperature, -1) for t in teachers for v in views]
    return torch.stack(p).mean(0)


def _tensor(data: FerData) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(data.images)).view(-1, 1, INPUT_SIZE, INPUT_SIZE)
    return x, torch.from_numpy(data.labels)


def finetune(
    model: FaceNet,
    base: FerData,
    extra: FerData,
    opts: FinetuneOptions,
    on_log: Callable[[dict], None] | None = None,
    log_every: int = 100,
    resume: str | Path | None = None,
    teachers: list[nn.Module] | None = None,
) -> tuple[FaceNet, dict]:
    """Fine-tune a copy of `model` (unfused, as `FaceNet`); returns (it in eval mode, info).

    `resume`: a file for the run's state (see the module docstring); it is removed when the
    run ends. A file from another run (other options, start weights or corpus sizes) raises
    ValueError rather than mixing two runs."""
    if len(extra) == 0 or len(base) == 0:
        raise ValueError("fine-tuning needs faces in both the base and the extra corpus")
    torch.manual_seed(opts.seed)
    gen = torch.Generator()
    gen.manual_seed(opts.seed)
    net = copy.deepcopy(model).float().train()
    _freeze_bn(net)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    optim = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": opts.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=opts.lr,
        momentum=opts.momentum,
        nesterov=True,
    )
    xb_base, yb_base = _tensor(base)
    xb_extra, yb_extra = _tensor(extra)
    history: list[dict] = []
    t0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    first, spent = 0, 0.0
    state_file = Path(resume) if resume else None
    # what the run starts from: its options, the start weights and the two corpora's sizes
    run_id = {
        "options": opts.to_dict(),
        "start": [round(float(t.double().sum()), 6) for t in model.state_dict().values()],
        "n": [len(base), len(extra)],
        "teachers": [
            [round(float(t.double().sum()), 6) for t in m.state_dict().values()]
            for m in teachers or []
        ],
    }
    teachers = [copy.deepcopy(t).float().eval() for t in teachers or []]
    if state_file is not None and state_file.exists():
        first, spent, history = _load_state(state_file, run_id, net, optim, gen)
        log.info("fine-tuning resumed at step %d of %d from %s", first, opts.steps, state_file)
    for step in range(first, opts.steps):
        ib = torch.randint(len(yb_base), (opts.base_per_batch,), generator=gen)
        ie = torch.randint(len(yb_extra), (opts.extra_per_batch,), generator=gen)
        x = torch.cat([xb_base[ib], xb_extra[ie]]).float().div_(255)
        y = torch.cat([yb_base[ib], yb_extra[ie]])
        x = augment(x, opts.aug, gen)
        for g in optim.param_groups:
            g["lr"] = _lr_at(step, opts.steps, opts.warmup_steps, opts.lr)
        logits, _ = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=opts.label_smoothing)
        if teachers:
            t = opts.kd_temperature
            soft = teacher_probs(teachers, x, t)
            kd = F.kl_div(F.log_softmax(logits / t, -1), soft, reduction="batchmean") * t * t
            loss = (1 - opts.kd_weight) * loss + opts.kd_weight * kd
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if (step + 1) % log_every == 0 or step + 1 == opts.steps:
            row = {
                "step": step + 1,
                "lr": optim.param_groups[0]["lr"],
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "elapsed_s": round(spent + time.perf_counter() - t0, 1),
            }
            history.append(row)
            if state_file is not None:
                _save_state(
                    state_file, run_id, step + 1, row["elapsed_s"], history, net, optim, gen
                )
            log.info("step %s", row)
            if on_log is not None:
                on_log(row)
            loss_sum, correct, seen = 0.0, 0, 0
    net = interpolate(model, net.eval(), opts.keep)
    if state_file is not None:
        state_file.unlink(missing_ok=True)
    info = {
        "finetune_options": opts.to_dict(),
        "finetune_seconds": round(spent + time.perf_counter() - t0, 1),
        "finetune_history": history,
        "n_base": len(base),
        "n_extra": len(extra),
        "n_teachers": len(teachers),
        "extra": extra.path,
        "torch": str(torch.__version__),
    }
    return net.eval(), info


def _save_state(
    path: Path, run_id: dict, step: int, spent: float, history, net, optim, gen
) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "run": run_id,
            "step": step,
            "elapsed_s": spent,
            "history": history,
            "net": net.state_dict(),
            "optim": optim.state_dict(),
            "gen": gen.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
        },
        tmp,
    )
    os.replace(tmp, path)  # a run killed while writing leaves the previous state intact


def _load_state(path: Path, run_id: dict, net, optim, gen) -> tuple[int, float, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("run") != run_id:
        raise ValueError(
            f"{path}: state of another fine-tuning run (options, start weights or data differ);"
            " remove it to start afresh"
        )
    net.load_state_dict(state["net"])
    optim.load_state_dict(state["optim"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed_s"]), list(state["history"])


def interpolate(start: FaceNet, tuned: FaceNet, keep: float) -> FaceNet:
    """A copy of `tuned` with every float tensor `keep * start + (1 - keep) * tuned` (BatchNorm
    statistics are frozen during fine-tuning, so both share them); `keep` 0 returns `tuned`."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    if keep == 0.0:
        return tuned
    a, b = start.state_dict(), tuned.state_dict()
    mixed = {
        k: keep * a[k].float() + (1 - keep) * v.float() if v.is_floating_point() else v
        for k, v in b.items()
    }
    out = copy.deepcopy(tuned)
    out.load_state_dict(mixed)
    return out.eval()


def live_views(crops: FerData | None, photos: FerData | None) -> FerData:
    """A corpus as the network should see it: its own 48x48 crops and the live tracker's crops
    of its full photos (`detect.tracker_crops`), together; names kept, so subjects are too."""
    from affectstream.models.face.detect import tracker_crops

    parts = [crops] if crops is not None else []
    if photos is not None:
        images, found = tracker_crops(photos.images)
        names = None if photos.names is None else photos.names[found]
        parts.append(FerData(images, photos.labels[found], f"{photos.path}[tracker]", names))
    if not parts:
        raise ValueError("no crops and no photos given")
    out = parts[0]
    for p in parts[1:]:
        out = out.concat(p)
    return out


def split_subjects(data: FerData, held_out: set[str]) -> tuple[FerData, FerData]:
    """(faces of the other subjects, faces of the `held_out` subjects)."""
    subj = data.subjects()
    unknown = held_out - set(subj.tolist())
    if unknown:
        raise ValueError(f"{data.path}: no subject {sorted(unknown)} (has {sorted(set(subj))})")
    out = np.isin(subj, sorted(held_out))
    return data.take(~out), data.take(out)
