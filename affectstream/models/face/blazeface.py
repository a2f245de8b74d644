"""BlazeFace, the face detector of MediaPipe, run by ONNX Runtime: every face in a frame.

Why this detector: the Haar cascade misses turned, tilted, dark and small faces (measured in
the face card, "Face detection"); BlazeFace is a small SSD-style network trained on such
faces, and the full-range variant reads a 192x192 image in a few milliseconds on one CPU
thread. The networks are Google's, Apache-2.0, from the `mediapipe` 0.10.21 wheel, converted
to ONNX by `scripts/blazeface_onnx.py` (checked against TFLite to 1e-4) and shipped in
`models/weights/` (`LICENSE.blazeface` beside them), so nothing of mediapipe is needed at run
time.

Per frame: the BGR frame is letterboxed into the network's square input (RGB in [-1, 1]),
the network scores every anchor, the boxes above `min_score` are decoded from their anchors
and merged by weighted non-maximum suppression (MediaPipe's own post-processing, re-written
here in numpy). A BlazeFace box spans brows to chin, tighter than the framing of FER2013's
crops that the expression model reads; `framing` maps it to the square box whose
`crop_face(box, crop_scale)` gives that framing (fitted on FER2013 Training faces, see
`fit_framing`), so the face stage and `crop_face` treat both detectors' boxes alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from affectstream.core.errors import SetupError, WeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlazeSpec:
    """One BlazeFace variant: its file, input side, anchor layout and score threshold
    (MediaPipe's `face_detection_*_range.pbtxt`)."""

    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per distinct stride
    min_score: float
    # BlazeFace box -> crop box, (dx, dy, side) in units of the BlazeFace box's larger side:
    # the centre moves by (dx, dy) and the square side is `side`. Fitted by `fit_framing` on
    # 2,000 FER2013 Training faces drawn into frames (face card, "Face detection").
    framing: tuple[float, float, float]


VARIANTS = {
    # faces from about 5 % of the frame's longer side up: a room, a meeting, a kiosk. Score
    # 0.6: over the whole frame and its three halves, 0.5 let in 6x the false faces for 7 %
    # more of the hard ones (chosen on `bench detect --seed 7`, reported on seed 0)
    "full": BlazeSpec("face_detect_full.onnx", 192, (4,), (1,), 0.6, (0.003, -0.05, 1.119)),
    # the selfie model: faces of at least ~20 % of the frame, cheaper
    "short": BlazeSpec("face_detect_short.onnx", 128, (8, 16), (2, 6), 0.5, (0.003, -0.104, 1.16)),
}
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold


def weights_dir() -> Path:
    return Path(str(resources.files("affectstream.models") / "weights"))


def anchors(spec: BlazeSpec) -> np.ndarray:
    """Anchor centres (A, 2) in [0, 1], in the network's output order (fixed size 1x1)."""
    out = []
    for stride, per in zip(spec.strides, spec.anchors_per_cell, strict=True):
        n = spec.size // stride
        ys, xs = np.mgrid[0:n, 0:n]
        c = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
        out.append(np.repeat(c, per, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every (x0, y0, x1, y1) box of `a` with every one of `b`."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, thr: float = NMS_IOU) -> list:
    """MediaPipe's WEIGHTED suppression: each cluster of overlapping boxes becomes one box,
    their score-weighted mean, with the best score. Returns [(x0, y0, x1, y1, score)]."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    left = np.ones(len(boxes), bool)
    out = []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        ov = iou_matrix(boxes[i : i + 1], boxes)[0]
        group = left & (ov > thr)
        group[i] = True
        w = scores[group][:, None]
        out.append((*(boxes[group] * w).sum(0) / w.sum(), float(scores[i])))
        left &= ~group
    return out


class BlazeFace:
    """`detect(image_bgr) -> [(x, y, w, h, score)]` in frame pixels, crop framing, best first.

    Attributes:
        variant: "full" (default) or "short" (`VARIANTS`).
        min_score: a face scored below this is not one.
        threads: ONNX Runtime's intra-op threads (the live path runs on one).
    """

    def __init__(
        self,
        variant: str = "full",
        min_score: float | None = None,
        threads: int = 1,
        path: str | Path | None = None,
        tiles: bool = True,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown BlazeFace variant {variant!r} (known: full, short)")
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a declared dependency
            raise SetupError("BlazeFace needs onnxruntime: pip install onnxruntime") from None
        self.variant = variant
        self.tiles = bool(tiles)
        self.spec = VARIANTS[variant]
        self.min_score = self.spec.min_score if min_score is None else float(min_score)
        path = Path(path) if path else weights_dir() / self.spec.file
        if not path.is_file():
            raise WeightsError(f"face detector not found: {path}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.anchors = anchors(self.spec)
        self._logit_min = float(np.log(self.min_score / (1 - self.min_score)))

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """The network input (1, S, S, 3) and the map back: frame = (input - pad) / scale."""
        S = self.spec.size
        h, w = image.shape[:2]
        scale = S / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        else:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        px, py = (S - nw) // 2, (S - nh) // 2
        canvas = np.zeros((S, S, 3), np.float32)  # MediaPipe pads with zeros, i.e. mid-grey
        canvas[py : py + nh, px : px + nw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        return canvas[None], scale, px, py

    def raw(self, image_bgr: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """The network's own boxes after suppression: [(x0, y0, x1, y1, score)] in frame
        pixels, brows to chin (no framing)."""
        x, scale, px, py = self._letterbox(image_bgr)
        boxes, logits = self.session.run(None, {"input": x})
        logits = np.clip(logits[0, :, 0], -100.0, 100.0)
        keep = np.flatnonzero(logits >= self._logit_min)
        if keep.size == 0:
            return []
        S = float(self.spec.size)
        r = boxes[0, keep, :4] / S
        a = self.anchors[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * S
        xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - px) / scale
        xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - py) / scale
        scores = 1.0 / (1.0 + np.exp(-logits[keep]))
        return weighted_nms(xyxy, scores)

    def views(self, width: int, height: int) -> list[tuple[int, int]]:
        """The column ranges the detector reads: the whole frame and, for a frame wider than
        tall, its left and right 60 % too. A face a tenth of a 640x480 frame wide is 19 px in
        the whole frame's 192 px input and 26 px in a side's, where the network finds many
        more of the small and the hard ones (face card, "Face detection"). The sides overlap
        by a fifth of the width, so a face narrower than that lies whole in one of them; a
        wider one is the whole frame's to find."""
        out = [(0, width)]
        if self.tiles and width >= 1.2 * height:
            side = int(round(0.6 * width))
            out += [(0, side), (width - side, width)]
        return out

    def raw_view(self, image_bgr: np.ndarray, view: tuple[int, int]) -> list[tuple]:
        """`raw` of the columns `view` (x0, x1) of the frame, in frame pixels."""
        x0, x1 = view
        if (x0, x1) == (0, image_bgr.shape[1]):
            return self.raw(image_bgr)
        return [(a + x0, b, c + x0, d, s) for a, b, c, d, s in self.raw(image_bgr[:, x0:x1])]

    def detect(self, image_bgr: np.ndarray, view: int | None = None) -> list[tuple]:
        """Faces as [(x, y, w, h, score)], square boxes in the crop framing, best first: of
        every view merged by the same suppression (`view` None), or of view number `view`
        only (the live tracker reads one view a frame, so no frame pays for all)."""
        h, w = image_bgr.shape[:2]
        views = self.views(w, h)
        chosen = views if view is None else [views[view % len(views)]]
        found = [b for v in chosen for b in self.raw_view(image_bgr, v)]
        if len(chosen) > 1 and found:
            a = np.array(found, np.float64)
            found = weighted_nms(a[:, :4], a[:, 4])
        return [(*frame_box(b[:4], self.spec.framing), b[4]) for b in found]


def frame_box(xyxy, framing: tuple[float, float, float]) -> tuple[float, ...]:
    """A BlazeFace box (x0, y0, x1, y1) -> the square (x, y, side, side) of the crop framing."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    s = max(x1 - x0, y1 - y0)
    dx, dy, k = framing
    cx, cy = (x0 + x1) / 2 + dx * s, (y0 + y1) / 2 + dy * s
    side = k * s
    return (cx - side / 2, cy - side / 2, side, side)


def fit_framing(detector: BlazeFace, faces: np.ndarray, crop_scale: float = 1.02, pad: int = 2):
    """The (dx, dy, side) that maps BlazeFace boxes onto FER2013's own framing: each 48x48
    face is drawn at 4x into a mid-grey frame, where its whole image is the crop we want
    (`crop_face(box, crop_scale)` of a box `1 / crop_scale` of it). Medians over the faces
    found; returns (framing, found fraction)."""
    rows, found = [], 0
    for f in faces:
        big = cv2.resize(f, (192, 192), interpolation=cv2.INTER_CUBIC)
        frame = np.full((192 * 3, 192 * 3), 110, np.uint8)
        frame[192 : 192 * 2, 192 : 192 * 2] = big
        dets = detector.raw(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        if not dets:
            continue
        found += 1
        x0, y0, x1, y1, _ = dets[0]
        s = max(x1 - x0, y1 - y0)
        target_side = 192 / crop_scale
        rows.append(((288 - (x0 + x1) / 2) / s, (288 - (y0 + y1) / 2) / s, target_side / s))
    if not rows:
        raise ValueError("no face found to fit the framing on")
    med = np.median(np.array(rows), 0)
    return tuple(round(float(v), 3) for v in med), found / max(1, len(faces))
