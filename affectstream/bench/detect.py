"""Face detectors side by side on hard faces: recall, false positives and time per frame.

The set is composed from the corpora beside the checkout (`../shared`), none of it held out:
FER2013 *Training* faces (48x48, upscaled) and JAFFE's full photos (the head cut out around
a full-resolution Haar box, which finds all 213), pasted with a feathered edge into 640x480
frames made from messi5.jpg (its one face painted over), two faces a frame, under five
conditions:

- `frontal`: 90-200 px faces as they are;
- `rotated`: turned in the image plane by 20-40 degrees either way;
- `turned`: a head turn simulated by a perspective squeeze of one side to 55-75 % (FER2013
  also holds real turned faces);
- `dark`: the whole frame darkened (gamma 2-3, half the light) with sensor noise;
- `small`: 32-64 px faces (5-10 % of the width).

plus `none`, frames with no face (false positives only). A detection is a hit when its centre
lies within 0.35 of the face's side from the face's centre and its side is 0.5-2.2x the
face's; each face is matched once, every other detection is a false positive. Time per frame
is each detector's `detect` on the same frames (the live path's detection), alternating
detectors so load from other processes hits them alike, on one thread.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from affectstream.core.config import FaceConfig
from affectstream.core.stats import percentiles
from affectstream.models.face.detect import BlazeDetector, load_cascade, make_detector

CONDITIONS = ("frontal", "rotated", "turned", "dark", "small", "none")
FRAME_W, FRAME_H = 640, 480
MESSI_FACE = (227, 94, 37, 37)  # messi5.jpg's one face, painted over for backgrounds


def _background(messi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = MESSI_FACE
    mask = np.zeros(messi.shape[:2], np.uint8)
    cv2.rectangle(mask, (x - 12, y - 16), (x + w + 12, y + h + 24), 255, -1)
    clean = cv2.inpaint(messi, mask, 7, cv2.INPAINT_TELEA)
    big = cv2.resize(clean, (int(FRAME_W * 1.3), int(FRAME_H * 1.3)))
    ox, oy = (
        int(rng.integers(0, big.shape[1] - FRAME_W)),
        int(rng.integers(0, big.shape[0] - FRAME_H)),
    )
    frame = big[oy : oy + FRAME_H, ox : ox + FRAME_W].copy()
    return frame[:, ::-1].copy() if rng.random() < 0.5 else frame


def _jaffe_heads(photos: np.ndarray) -> list[np.ndarray]:
    """Square head cut-outs of JAFFE photos (the Haar box at full size, grown by 0.3 a side)
    with the face's box inside them as the last pixels' share: returns gray images whose
    central 1/1.6 is the face box."""
    cascade = load_cascade()
    out = []
    for p in photos:
        faces = cascade.detectMultiScale(p, 1.1, 5, minSize=(60, 60))
        if len(faces) == 0:
            continue
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        pad = int(0.3 * w)
        padded = cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        out.append(padded[y : y + h + 2 * pad, x : x + w + 2 * pad])
    return out


def _paste(frame, patch, face_frac, cx, cy, angle, squeeze, rng):
    """Paste gray `patch` (square; its face is the central `face_frac`) centred at (cx, cy),
    rotated and squeezed, with a feathered elliptical edge. Returns the face's box."""
    side = patch.shape[0]
    patch = cv2.cvtColor(patch, cv2.COLOR_GRAY2BGR).astype(np.float32)
    alpha = np.zeros((side, side), np.float32)
    cv2.ellipse(
        alpha, (side // 2, side // 2), (int(side * 0.46), int(side * 0.49)), 0, 0, 360, 1, -1
    )
    alpha = cv2.GaussianBlur(alpha, (0, 0), side * 0.04)
    if squeeze < 1.0:  # one side pushed back: a turn to the left or right
        s = side - 1
        k = (1 - squeeze) * s
        left = rng.random() < 0.5
        shift = -k / 2 if left else k / 2  # the face moves away from the pushed side
        dst = (
            [[0, 0], [s - k, 0.08 * k], [s - k, s - 0.08 * k], [0, s]]
            if left
            else [[k, 0.08 * k], [s, 0], [s, s], [k, s - 0.08 * k]]
        )
        M = cv2.getPerspectiveTransform(
            np.float32([[0, 0], [s, 0], [s, s], [0, s]]), np.float32(dst)
        )
        patch = cv2.warpPerspective(patch, M, (side, side), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(alpha, M, (side, side))
    else:
        shift = 0.0
    if angle:
        R = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        patch = cv2.warpAffine(patch, R, (side, side), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(alpha, R, (side, side))
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    roi = frame[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    a = alpha[..., None]
    frame[y0 : y0 + side, x0 : x0 + side] = (a * patch + (1 - a) * roi).astype(np.uint8)
    f = side * face_frac * (squeeze + 1) / 2 if squeeze < 1 else side * face_frac
    cx += shift
    return (cx - f / 2, cy - f / 2, f, f)


def hard_faces(
    fer: np.ndarray, jaffe: np.ndarray, messi: np.ndarray, frames_per: int = 40, seed: int = 0
) -> list[tuple[str, np.ndarray, list[tuple]]]:
    """[(condition, BGR frame, [face boxes])]: `frames_per` frames per condition."""
    rng = np.random.default_rng(seed)
    heads = _jaffe_heads(jaffe)
    out = []
    for cond in CONDITIONS:
        for _ in range(frames_per):
            frame = _background(messi, rng)
            boxes = []
            if cond != "none":
                lo, hi = (32, 64) if cond == "small" else (90, 200)
                sides = rng.integers(lo, hi + 1, 2)
                slots = [(FRAME_W * 0.27, FRAME_H * 0.5), (FRAME_W * 0.73, FRAME_H * 0.5)]
                for k, (sx, sy) in enumerate(slots):
                    face = int(sides[k])
                    if k == 0:  # a FER2013 face: the 48x48 image is all face
                        img = fer[int(rng.integers(len(fer)))]
                        frac = 1 / 1.25
                    else:
                        img = heads[int(rng.integers(len(heads)))]
                        frac = 1 / 1.6
                    side = int(round(face / frac))
                    patch = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
                    if k == 0:  # FER's tight crop: a border of its own edge pixels
                        pad = (side - face) // 2
                        core = cv2.resize(img, (face, face), interpolation=cv2.INTER_CUBIC)
                        patch = cv2.copyMakeBorder(
                            core,
                            pad,
                            side - face - pad,
                            pad,
                            side - face - pad,
                            cv2.BORDER_REFLECT_101,
                        )
                    jx = rng.uniform(-0.08, 0.08) * FRAME_W
                    jy = rng.uniform(-0.15, 0.15) * FRAME_H
                    cx = float(np.clip(sx + jx, side / 2 + 1, FRAME_W - side / 2 - 1))
                    cy = float(np.clip(sy + jy, side / 2 + 1, FRAME_H - side / 2 - 1))
                    angle = rng.uniform(20, 40) * rng.choice([-1, 1]) if cond == "rotated" else 0.0
                    squeeze = rng.uniform(0.55, 0.75) if cond == "turned" else 1.0
                    boxes.append(_paste(frame, patch, frac, cx, cy, angle, squeeze, rng))
            if cond == "dark":
                g = rng.uniform(2.0, 3.0)
                f = 255.0 * 0.5 * (frame.astype(np.float32) / 255.0) ** g
                f += rng.normal(0, 3.0, f.shape)
                frame = np.clip(f, 0, 255).astype(np.uint8)
            out.append((cond, frame, boxes))
    return out


def _hits(dets: list, faces: list) -> tuple[int, int]:
    """(faces found, false positives) of one frame."""
    used, hits = set(), 0
    for fx, fy, fw, _ in faces:
        cx, cy = fx + fw / 2, fy + fw / 2
        for j, (x, y, w, h, *_s) in enumerate(dets):
            if j in used:
                continue
            d = np.hypot(x + w / 2 - cx, y + h / 2 - cy)
            if d <= 0.35 * fw and 0.5 * fw <= max(w, h) <= 2.2 * fw:
                used.add(j)
                hits += 1
                break
    return hits, len(dets) - len(used)


DETECTORS = ("haar", "blazeface", "blazeface-full", "blazeface-whole", "blazeface-short")


def _detector(name: str):
    """A detector as the live path makes it (`face.detector`); "blazeface-full" is the
    default without the selfie model, "blazeface-whole" the default without the frame's two
    sides: what each part adds."""
    if name == "blazeface-whole":
        return BlazeDetector("full", tiles=False)
    if name == "blazeface-full":
        d = BlazeDetector("full")
        d.near = None
        return d
    cfg = FaceConfig()
    cfg.detector = name
    return make_detector(cfg)


def run_detect_bench(
    fer_npz: Path,
    jaffe_npz: Path,
    background: Path,
    frames_per: int = 40,
    seed: int = 0,
    detectors: tuple[str, ...] = DETECTORS,
) -> dict:
    """Recall and false positives per condition, and ms per frame, per detector."""
    if frames_per < 1:
        raise ValueError("frames per condition must be >= 1")
    cv2.setNumThreads(1)
    fer = np.load(fer_npz)["images"]
    jaffe = np.load(jaffe_npz)["images"]
    messi = cv2.imread(str(background))
    if messi is None:
        raise FileNotFoundError(f"cannot read the background image {background}")
    rng = np.random.default_rng(seed + 1)
    fer = fer[rng.choice(len(fer), 2000, replace=False)]
    frames = hard_faces(fer, jaffe, messi, frames_per, seed)
    dets = {name: _detector(name) for name in detectors}
    found = {n: {c: [0, 0, 0] for c in CONDITIONS} for n in detectors}  # hits, faces, fp
    ms = {n: [] for n in detectors}
    cpu = {n: [] for n in detectors}  # process CPU time: less shaken by other processes
    by_source = {n: {"fer2013": [0, 0], "jaffe": [0, 0]} for n in detectors}  # hard faces
    for _, frame, _ in frames[:5]:  # warm-up
        for d in dets.values():
            d.detect(frame)
    for cond, frame, boxes in frames:
        for n, d in dets.items():
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            got = d.detect(frame)
            ms[n].append((time.perf_counter_ns() - t0) / 1e6)
            cpu[n].append((time.process_time_ns() - c0) / 1e6)
            h, fp = _hits(got, boxes)
            if cond not in ("frontal", "none"):
                for src, box in zip(("fer2013", "jaffe"), boxes, strict=True):
                    by_source[n][src][0] += _hits(got, [box])[0]
                    by_source[n][src][1] += 1
            row = found[n][cond]
            row[0] += h
            row[1] += len(boxes)
            row[2] += fp
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "frames_per_condition": frames_per,
        "seed": seed,
        "sources": {
            "fer2013": str(fer_npz),
            "jaffe": str(jaffe_npz),
            "background": str(background),
        },
        "frame": [FRAME_W, FRAME_H],
        "detectors": {},
    }
    for n in detectors:
        per = {}
        for c, (h, f, fp) in found[n].items():
            per[c] = {
                "found": h,
                "faces": f,
                "recall": round(h / f, 3) if f else None,
                "false_positives": fp,
                "fp_per_frame": round(fp / frames_per, 3),
            }
        hard = [c for c in CONDITIONS if c not in ("frontal", "none")]
        hh = sum(found[n][c][0] for c in hard)
        hf = sum(found[n][c][1] for c in hard)
        result["detectors"][n] = {
            "conditions": per,
            "hard_recall": round(hh / hf, 3),
            "hard_recall_by_source": {k: round(a / b, 3) for k, (a, b) in by_source[n].items()},
            "false_positives": sum(found[n][c][2] for c in CONDITIONS),
            "ms_per_frame": percentiles(ms[n], (50, 95), 3),
            "cpu_ms_per_frame": percentiles(cpu[n], (50, 95), 3),
        }
    return result


def print_detect_bench(r: dict) -> None:
    names = list(r["detectors"])
    print(
        f"face detectors on {r['frames_per_condition']} frames per condition "
        f"({r['frame'][0]}x{r['frame'][1]}, 2 faces each), load {r['load_avg']}"
    )
    print(f"{'condition':10}" + "".join(f"{n:>22}" for n in names))
    for c in CONDITIONS:
        cells = []
        for n in names:
            v = r["detectors"][n]["conditions"][c]
            cells.append(
                f"{v['found']:>4}/{v['faces']:<4} fp {v['false_positives']:>3}"
                if c != "none"
                else f"fp {v['false_positives']:>3}"
            )
        print(f"{c:10}" + "".join(f"{x:>22}" for x in cells))
    print(f"{'hard recall':10}" + "".join(f"{r['detectors'][n]['hard_recall']:>22}" for n in names))
    for src in ("fer2013", "jaffe"):
        cells = [r["detectors"][n]["hard_recall_by_source"][src] for n in names]
        print(f"{'  ' + src:10}" + "".join(f"{c:>22}" for c in cells))
    for key, label in (("ms_per_frame", "ms p50/p95"), ("cpu_ms_per_frame", "CPU ms")):
        cells = [r["detectors"][n][key] for n in names]
        print(f"{label:10}" + "".join(f"{c['p50']:>15.2f} /{c['p95']:>5.1f}" for c in cells))
