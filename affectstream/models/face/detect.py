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

from affectstream.core.config import FaceConfig
from affectstream.core.errors import SetupError

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
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise SetupError(
            f"OpenCV {cv2.__version__} has no Haar face cascades (5.x dropped them): "
            "pip install 'opencv-python<5'"
        )
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise SetupError(f"cannot load Haar cascade {path} (opencv-python < 5 ships it)")
    return cascade


def _region(
    box: tuple[float, ...], pad_frac: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Box grown by `pad_frac` of its larger side on every side, clipped: (x0, y0, x1, y1)."""
    x, y, w, h = box
    pad = pad_frac * max(w, h)
    return (
        max(0, int(x - pad)),
        max(0, int(y - pad)),
        min(width, int(np.ceil(x + w + pad))),
        min(height, int(np.ceil(y + h + pad))),
    )


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


class FaceTracker:
    """`process(image_bgr) -> FaceCrop | None`, one call per frame, in frame order.

    Boxes are kept in frame pixels. Only a full detection (no face tracked) converts and
    downscales the whole frame; re-detection and tracking touch only the region around the
    face, and tracking matches a template of at most `TEMPLATE_PX` pixels.
    """

    TEMPLATE_PX = 32
    NEAR_PX = 56

    def __init__(self, config: FaceConfig | None = None):
        self.cfg = config or FaceConfig()
        if self.cfg.detect_every < 1:
            raise ValueError("face.detect_every must be >= 1")
        if self.cfg.detect_width < 48:
            raise ValueError("face.detect_width must be >= 48")
        self.cascade = load_cascade()
        self.frames = 0
        self.detections = 0
        self.tracked = 0
        self.reset()

    def reset(self) -> None:
        """Forget the current face (e.g. after a camera reconnect or a scene cut)."""
        self._drop()
        self._since_detect = 0  # frames since the last detection, modulo detect_every

    def _drop(self) -> None:
        self._box: tuple[float, float, float, float] | None = None
        self._template: np.ndarray | None = None
        self._tscale = 1.0  # template pixels per frame pixel
        self._unconfirmed = 0  # frames since a detection last confirmed the track

    # -- detection ---------------------------------------------------------------------------
    def _haar(self, gray: np.ndarray, f: float, lo: int, hi: int = 0) -> list[tuple]:
        """Detect in `gray` downscaled by `f`; boxes returned in `gray`'s pixels."""
        if f < 1.0:
            h, w = gray.shape
            size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if min(gray.shape) < lo:
            return []
        # no histogram equalisation and 5 neighbours: on Megamind.avi, equalising at 320 px
        # lost a fifth of the faces and doubled the false detections
        faces = self.cascade.detectMultiScale(
            gray,
            scaleFactor=1.1,
            minNeighbors=5,
            minSize=(lo, lo),
            maxSize=(hi, hi) if hi else (0, 0),
        )
        return [tuple(float(v) / f for v in face) for face in faces]

    def _detect(self, image_bgr: np.ndarray) -> list[tuple]:
        """The whole frame at `detect_width`: faces of at least `min_face_frac` of the width."""
        w = image_bgr.shape[1]
        f = min(1.0, self.cfg.detect_width / w)
        lo = max(24, int(self.cfg.min_face_frac * w * f))
        return self._haar(_gray(image_bgr), f, lo)

    def _detect_near(self, image_bgr: np.ndarray, box: tuple) -> list[tuple]:
        """Only around the tracked box, at sizes near it: a fraction of a full detection."""
        H, W = image_bgr.shape[:2]
        x0, y0, x1, y1 = _region(box, self.cfg.track_search, W, H)
        # scale so the tracked face is NEAR_PX wide: sizes 0.6x..1.6x of it stay >= 24 px,
        # the cascade's own window, whatever the face's size in the frame
        f = min(1.0, self.NEAR_PX / max(box[2], box[3]))
        lo, hi = max(24, int(0.6 * self.NEAR_PX)), int(1.6 * self.NEAR_PX) + 1
        faces = self._haar(_gray(image_bgr[y0:y1, x0:x1]), f, lo, hi)
        return [(fx + x0, fy + y0, fw, fh) for fx, fy, fw, fh in faces]

    def _choose(self, faces: list) -> tuple | None:
        """Keep the tracked face (best IoU); with no track, take the largest."""
        if not faces:
            return None
        if self._box is not None:
            best = max(faces, key=lambda f: iou(f, self._box))
            return best if iou(best, self._box) >= 0.2 else None
        return max(faces, key=lambda f: f[2] * f[3])

    # -- tracking ----------------------------------------------------------------------------
    def _set_template(self, image_bgr: np.ndarray, box: tuple) -> None:
        H, W = image_bgr.shape[:2]
        x0, y0, x1, y1 = _region(box, 0.0, W, H)
        if x1 - x0 < 8 or y1 - y0 < 8:
            self._template = None
            return
        self._tscale = min(1.0, self.TEMPLATE_PX / max(x1 - x0, y1 - y0))
        g = _gray(image_bgr[y0:y1, x0:x1])
        size = (max(4, round((x1 - x0) * self._tscale)), max(4, round((y1 - y0) * self._tscale)))
        self._template = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        self._box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    def _track(self, image_bgr: np.ndarray) -> tuple[tuple, float] | None:
        """Best normalised cross-correlation of the template near the last box."""
        H, W = image_bgr.shape[:2]
        x0, y0, x1, y1 = _region(self._box, self.cfg.track_search, W, H)
        s = self._tscale
        size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
        th, tw = self._template.shape
        if size[0] < tw or size[1] < th:
            return None
        search = cv2.resize(_gray(image_bgr[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA)
        res = cv2.matchTemplate(search, self._template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (mx, my) = cv2.minMaxLoc(res)
        _, _, w, h = self._box
        return (x0 + mx / s, y0 + my / s, w, h), float(score)

    # -- per frame ---------------------------------------------------------------------------
    def process(self, image_bgr: np.ndarray) -> FaceCrop | None:
        """The main face of this frame, or None (no face, or a lost track)."""
        self.frames += 1
        due = self._since_detect == 0 or self._box is None  # no track: look on every frame
        self._since_detect = (self._since_detect + 1) % self.cfg.detect_every
        box, source, score = None, "detect", 1.0
        if due:
            if self._box is None:
                chosen = self._choose(self._detect(image_bgr))
            else:
                chosen = self._choose(self._detect_near(image_bgr, self._box))
            if chosen is not None:
                box = chosen
                self._box = chosen
                self._set_template(image_bgr, chosen)
                self._unconfirmed = 0
        if box is None and self._box is not None and self._template is not None:
            self._unconfirmed += 1
            tracked = None
            if self._unconfirmed <= self.cfg.track_max_frames:
                tracked = self._track(image_bgr)
            if tracked is None or tracked[1] < self.cfg.track_min_score:
                log.debug("face track lost at frame %d", self.frames)
                self._drop()
                # The face may have moved (a cut, a fast turn): look for it in the whole frame.
                box = self._choose(self._detect(image_bgr))
                if box is None:
                    return None
                self._box = box
                self._set_template(image_bgr, box)
                self._unconfirmed = 0
            else:
                box, score = tracked
                source = "track"
                self._box = box
        if box is None:
            return None
        if source == "detect":
            self.detections += 1
        else:
            self.tracked += 1
        crop = crop_face(image_bgr, box, self.cfg.crop_scale)
        return FaceCrop(crop, tuple(int(round(v)) for v in box), source, score)


def tracker_crops(
    photos: np.ndarray, config: FaceConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The crops the live tracker cuts from still photos: `(crops (M, 48, 48), found (N,) bool)`.

    Each photo (grayscale (H, W) or BGR) is one first frame of its own video (the tracker is
    reset between photos), so the crop is what `process` returns when the face appears: a full
    detection at `detect_width`, the main face, `crop_face` with `crop_scale`. `crops[k]` belongs
    to the k-th photo with `found` True; a photo with no face found yields no crop.
    """
    tracker = FaceTracker(config)
    crops, found = [], np.zeros(len(photos), bool)
    for i, photo in enumerate(photos):
        tracker.reset()
        frame = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR) if photo.ndim == 2 else photo
        face = tracker.process(frame)
        if face is not None:
            crops.append(face.image)
            found[i] = True
    shape = (0, CROP_SIZE, CROP_SIZE)
    return (np.stack(crops) if crops else np.zeros(shape, np.uint8)), found
