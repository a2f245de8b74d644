"""Face model on posed faces it never met: JAFFE leave-subject-out cross-validation.

The shipped face file is the GPU model fine-tuned on FER2013 + JAFFE, its weights averaged
with the start (`--keep 0.7`). This runs that recipe once per fold, the fold's subjects kept
out (`train face --hold-out`), and scores each fold model on its held-out subjects, for
several `keep` values (the weight average is made after training, so one run per fold gives
them all), with the fold spread the model card reports.

    python3 scripts/face_jaffe_cv.py train --init GPU_MODEL.pt --work DIR     # 5 runs, resumable
    python3 scripts/face_jaffe_cv.py score --init GPU_MODEL.pt --work DIR --json OUT

GPU_MODEL.pt is the network before fine-tuning: `git show b449e10:affectstream/models/
weights/face.pt > face-gpu-b449e10.pt`. Each run is the shipped recipe at 1 thread (about 9
CPU-minutes on an unshared core; 20 minutes of wall time two at a time on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

JAFFE = "../shared/data/jaffe"
FER = "../shared/data/fer2013"
# the shipped fine-tuning recipe (model card), the fine-tuned weights kept (--keep 0)
RECIPE = shlex.split(
    "--steps 1000 --ft-lr 0.005 --extra-per-batch 16 --keep 0 --seed 0 --device cpu"
)
KEEPS = (0.0, 0.3, 0.5, 0.7, 1.0)  # 1.0: the start (GPU) model, which never saw JAFFE


def folds(subjects, k: int = 5) -> list[tuple[str, ...]]:
    """`k` disjoint folds covering every subject once: sorted subjects dealt round-robin."""
    names = sorted(set(map(str, subjects)))
    if len(names) < k:
        raise ValueError(f"{len(names)} subjects cannot make {k} folds")
    return [tuple(names[i::k]) for i in range(k)]


def fold_path(work: Path, fold: tuple[str, ...]) -> Path:
    return work / f"fold-{''.join(fold)}.pt"


def spread(values) -> dict:
    """Mean, sample sd, min and max of per-fold figures."""
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _subjects(args) -> np.ndarray:
    from affectstream.models.face.data import load_fer

    return load_fer(f"{args.jaffe}/originals.npz", size=None).subjects()


def cmd_train(args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for fold in folds(_subjects(args), args.folds):
        out = fold_path(work, fold)
        if out.is_file():
            print(f"{out} exists", file=sys.stderr)
            continue
        cmd = [sys.executable, "-m", "affectstream", "train", "face", "--data", args.fer,
               "--init", args.init, "--extra", f"{args.jaffe}/crops48.npz",
               "--extra-photos", f"{args.jaffe}/originals.npz", "--hold-out", ",".join(fold),
               *RECIPE, "--threads", str(args.threads), "--out", str(out)]  # fmt: skip
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return 0


def cmd_score(args) -> int:
    import torch

    from affectstream.models.face.data import load_fer
    from affectstream.models.face.detect import tracker_crops
    from affectstream.models.face.encoder import load_checkpoint, net_from_checkpoint
    from affectstream.models.face.finetune import interpolate
    from affectstream.models.face.train import predict_logits

    torch.set_num_threads(args.threads)
    start = net_from_checkpoint(load_checkpoint(args.init)).eval()
    photos = load_fer(f"{args.jaffe}/originals.npz", size=None)
    crops48 = load_fer(f"{args.jaffe}/crops48.npz")
    public = load_fer(f"{args.fer}/PublicTest.npz")
    # the live tracker's crops, as `eval face --tracker` cuts them
    tracked, found = tracker_crops(photos.images)
    t_subj, t_y = photos.subjects()[found], photos.labels[found]

    def correct(net, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        logits = predict_logits(net, torch.from_numpy(images)[:, None])
        return logits.argmax(1).numpy() == labels

    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "keeps": KEEPS,
        "folds": {},
        "photos_with_a_face": int(found.sum()),
        "photos": len(found),
    }
    pooled = {k: {"tracker": [], "crops": []} for k in KEEPS}
    for fold in folds(photos.subjects(), args.folds):
        tuned = net_from_checkpoint(load_checkpoint(fold_path(Path(args.work), fold))).eval()
        mt, mc = np.isin(t_subj, fold), np.isin(crops48.subjects(), fold)
        row = {}
        for k in KEEPS:
            net = start if k == 1.0 else interpolate(start, tuned, k)
            ct = correct(net, tracked[mt], t_y[mt])
            cc = correct(net, crops48.images[mc], crops48.labels[mc])
            pooled[k]["tracker"] += ct.tolist()
            pooled[k]["crops"] += cc.tolist()
            r = {"tracker": float(ct.mean()), "crops": float(cc.mean()), "n": int(mt.sum())}
            if k in (0.0, 0.7):  # what the fold model gives up on FER2013 for it
                r["publictest"] = float(correct(net, public.images, public.labels).mean())
            row[str(k)] = r
        report["folds"][",".join(fold)] = row
        print(",".join(fold), {k: round(v["tracker"], 3) for k, v in row.items()}, flush=True)
    report["summary"] = {}
    print(
        "| keep | unseen subjects, tracker crops: pooled | fold mean ± sd (min-max) "
        "| the corpus's crops, pooled | PublicTest, fold mean |"
    )
    print("|---|---|---|---|---|")
    for k in KEEPS:
        per = [f[str(k)]["tracker"] for f in report["folds"].values()]
        pub = [
            f[str(k)]["publictest"] for f in report["folds"].values() if "publictest" in f[str(k)]
        ]
        s = {
            "tracker_pooled": float(np.mean(pooled[k]["tracker"])),
            "tracker_folds": spread(per),
            "crops_pooled": float(np.mean(pooled[k]["crops"])),
            "crops_folds": spread([f[str(k)]["crops"] for f in report["folds"].values()]),
        }
        if pub:
            s["publictest_folds"] = spread(pub)
        report["summary"][str(k)] = s
        t = s["tracker_folds"]
        print(
            f"| {k} | {s['tracker_pooled']:.3f} | {t['mean']:.3f} ± {t['sd']:.3f} "
            f"({t['min']:.3f}-{t['max']:.3f}) | {s['crops_pooled']:.3f} | "
            f"{s['publictest_folds']['mean']:.4f} |"
            if pub
            else f"| {k} | {s['tracker_pooled']:.3f} | {t['mean']:.3f} ± {t['sd']:.3f} "
            f"({t['min']:.3f}-{t['max']:.3f}) | {s['crops_pooled']:.3f} | - |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["train", "score"])
    p.add_argument("--init", required=True, help="the face model before fine-tuning")
    p.add_argument("--work", required=True, help="folder of the fold models")
    p.add_argument("--jaffe", default=JAFFE)
    p.add_argument("--fer", default=FER)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    return {"train": cmd_train, "score": cmd_score}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
