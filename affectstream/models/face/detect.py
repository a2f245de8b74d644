"""Find and follow the main face in a video, cheaply, and cut the 48x48 crop the CNN expects.

Per frame cost is what matters in a live loop, so the OpenCV Haar cascade runs only every
`detect_every` frames on a copy downscaled to `detect_width` pixels; in between, the face is
followed by normalised cross-correlation of the last face template inside a small search
window around the previous box (about 0.2 ms). The main face is the largest one when
nothing is tracked; afterwards the detection that overlaps the tracked box best (IoU) keeps
it, so the crop does not jump to another person. A track that no detection confirms for
`track_max_frames` frames, or whose match score drops, is dropped: no face is a normal state.

Crop framing: run on FER2013's own images, the same cascade returns a box covering about
0.98 of the image, centred; so the crop is the detected box scaled by `crop_scale` (1.02),
converted to grayscale and resized to 48x48 (area interpolation), replicating the border
where the box leaves the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from affectstream.config import FaceConfig

log = logging.getLogger(__name__)

CROP_SIZE = 48
CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """The main face of one frame: `image` 48x48 uint8 grayscale, `box` (x, y, w, h) in frame
    pixels, `source` "detect" or "track", `score` (detections 1.0, tracking the NCC peak)."""

    image: np.ndarray
    box: tuple[int, int, int, int]
    source: str
    score: float


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def crop_face(
    image_bgr: np.ndarray, box: tuple[float, ...], scale: float = 1.02, size: int = CROP_SIZE
) -> np.ndarray:
    """Square crop around `box` (scaled about its centre), grayscale, `size` x `size` uint8."""
    x, y, w, h = box
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    H, W = image_bgr.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + s), min(H, y0 + s)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box} lies outside the {W}x{H} frame")
    roi = image_bgr[cy0:cy1, cx0:cx1]
    gray = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) if roi.ndim == 3 else roi
    if (cx0, cy0, cx1, cy1) != (x0, y0, x0 + s, y0 + s):
        gray = cv2.copyMakeBorder(
            gray, cy0 - y0, y0 + s - cy1, cx0 - x0, x0 + s - cx1, cv2.BORDER_REPLICATE
        )
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def load_cascade(name: str = CASCADE) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load Haar cascade {path} (opencv-python ships it)")
    return cascade


class FaceTracker:
    """`process(image_bgr) -> FaceCrop | None`, one call per frame, in frame order."""

    def __init__(self, config: FaceConfig | None = None):
        self.cfg = config or FaceConfig()
        if self.cfg.detect_every < 1:
            raise ValueError("face.detect_every must be >= 1")
        self.cascade = load_cascade()
        self.frames = 0
        self.detections = 0
        self.tracked = 0
        self.reset()

    def reset(self) -> None:
        """Forget the current face (e.g. after a camera reconnect or a scene cut)."""
        self._box: tuple[float, float, float, float] | None = None  # detection-scale coords
        self._template: np.ndarray | None = None
        self._unconfirmed = 0  # frames since a detection last confirmed the track
        self._since_detect = 0

    # -- detection ---------------------------------------------------------------------------
    def _small_gray(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = image_bgr.shape[:2]
        f = min(1.0, self.cfg.detect_width / w)
        small = image_bgr
        if f < 1.0:
            small = cv2.resize(image_bgr, (int(round(w * f)), int(round(h * f))), cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return gray, f

    def _detect(self, gray: np.ndarray) -> list[tuple[float, float, float, float]]:
        min_side = max(12, int(self.cfg.min_face_frac * gray.shape[1]))
        faces = self.cascade.detectMultiScale(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side)
        )
        return [tuple(float(v) for v in f) for f in faces]

    def _choose(self, faces: list) -> tuple | None:
        if not faces:
            return None
        if self._box is not None:
            best = max(faces, key=lambda f: iou(f, self._box))
            if iou(best, self._box) >= 0.2:
                return best
            if self._unconfirmed < self.cfg.track_max_frames:
                return None  # another face: keep following ours while it is fresh
        return max(faces, key=lambda f: f[2] * f[3])

    # -- tracking ----------------------------------------------------------------------------
    def _track(self, gray: np.ndarray) -> tuple[tuple, float] | None:
        x, y, w, h = self._box
        t = self._template
        th, tw = t.shape
        pad_x, pad_y = w * self.cfg.track_search, h * self.cfg.track_search
        H, W = gray.shape
        sx0, sy0 = max(0, int(x - pad_x)), max(0, int(y - pad_y))
        sx1, sy1 = min(W, int(x + w + pad_x) + 1), min(H, int(y + h + pad_y) + 1)
        if sx1 - sx0 < tw or sy1 - sy0 < th:
            return None
        res = cv2.matchTemplate(gray[sy0:sy1, sx0:sx1], t, cv2.TM_CCOEFF_NORMED)
        _, score, _, (mx, my) = cv2.minMaxLoc(res)
        return (float(sx0 + mx), float(sy0 + my), float(tw), float(th)), float(score)

    def _set_template(self, gray: np.ndarray, box: tuple) -> None:
        x, y, w, h = (int(round(v)) for v in box)
        H, W = gray.shape
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        self._template = gray[y0:y1, x0:x1].copy() if x1 - x0 > 4 and y1 - y0 > 4 else None
        if self._template is not None:
            self._box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    # -- per frame ---------------------------------------------------------------------------
    def process(self, image_bgr: np.ndarray) -> FaceCrop | None:
        """The main face of this frame, or None (no face, or a lost track)."""
        self.frames += 1
        gray, f = self._small_gray(image_bgr)
        due = self._box is None or self._since_detect + 1 >= self.cfg.detect_every
        box, source, score = None, "detect", 1.0
        if due:
            self._since_detect = 0
            chosen = self._choose(self._detect(gray))
            if chosen is not None:
                box = chosen
                self._box = chosen
                self._set_template(gray, chosen)
                self._unconfirmed = 0
        else:
            self._since_detect += 1
        if box is None and self._box is not None and self._template is not None:
            self._unconfirmed += 1
            tracked = self._track(gray) if self._unconfirmed <= self.cfg.track_max_frames else None
            if tracked is not None and tracked[1] >= self.cfg.track_min_score:
                box, score = tracked
                source = "track"
                self._box = box
            else:
                log.debug("face track lost at frame %d", self.frames)
                self.reset()
                return None
        if box is None:
            return None
        if source == "detect":
            self.detections += 1
        else:
            self.tracked += 1
        full = tuple(v / f for v in box)
        crop = crop_face(image_bgr, full, self.cfg.crop_scale)
        return FaceCrop(crop, tuple(int(round(v)) for v in full), source, score)
