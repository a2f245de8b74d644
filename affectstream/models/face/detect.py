"""Find and follow every face in a video, cheaply, and cut the 48x48 crops the CNN expects.

Two detectors behind one `detect(image) -> [(x, y, w, h, score)]`: BlazeFace (the default,
`blazeface.py`: MediaPipe's network through ONNX Runtime, which finds turned, tilted, dark
and small faces) and the OpenCV Haar cascade (`face.detector: haar`, the fallback that needs
nothing but OpenCV; it runs on a copy downscaled to `detect_width` pixels). Measured side by
side in the face card ("Face detection").

Per frame cost is what matters in a live loop, so the detector reads the whole frame only
every `detect_every` frames, and BlazeFace's two sides of a wide frame (which find the small
faces) take turns on the frame after it: no frame pays for more than one network run. In
between, each face is followed by normalised cross-correlation of
its last template inside a small search window around its previous box (about 0.2 ms a
face). Detections are matched to the tracks by overlap (IoU, greedily, best pair first): a
matched track takes the detected box, an unmatched detection starts a new track with a new
id (up to `max_faces`, largest first), a track that no detection confirms for
`track_max_frames` frames, or whose match score drops, ends. An ended track's id can still be
taken up again by a detection on its last box within `BRIDGE` frames (a missed detection, a
blink of an occluder); after that the face is a new one with a new id. Ids are never reused.
No face is a normal state.

Crop framing: run on FER2013's own images, the Haar cascade returns a box covering about
0.98 of the image, centred; so the crop is the detected box scaled by `crop_scale` (1.02),
converted to grayscale and resized to 48x48 (area interpolation), replicating the border
where the box leaves the frame. BlazeFace boxes are mapped onto the same framing
(`blazeface.BlazeSpec.framing`).
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
DETECTORS = ("blazeface", "blazeface-short", "haar")


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """One face of one frame: `image` 48x48 uint8 grayscale, `box` (x, y, w, h) in frame
    pixels, `source` "detect" or "track", `score` (the detector's, or the NCC peak while
    tracked), `id` the track's id (stable while the face stays in view)."""

    image: np.ndarray
    box: tuple[int, int, int, int]
    source: str
    score: float
    id: int = 0


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


# -- detectors --------------------------------------------------------------------------------
class HaarDetector:
    """OpenCV's frontal-face Haar cascade on the frame downscaled to `detect_width`: faces of
    at least `min_face_frac` of the width, score 1.0. Needs nothing beyond OpenCV."""

    name = "haar"

    def __init__(self, config: FaceConfig | None = None) -> None:
        self.cfg = config or FaceConfig()
        if self.cfg.detect_width < 48:
            raise ValueError("face.detect_width must be >= 48")
        self.cascade = load_cascade()

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

    def views(self, width: int, height: int) -> list[tuple[int, int]]:
        return [(0, width)]  # the whole frame only

    def detect(self, image_bgr: np.ndarray, view: int | None = None) -> list[tuple]:
        """The whole frame at `detect_width`, largest face first."""
        w = image_bgr.shape[1]
        f = min(1.0, self.cfg.detect_width / w)
        lo = max(24, int(self.cfg.min_face_frac * w * f))
        faces = [(*b, 1.0) for b in self._haar(_gray(image_bgr), f, lo)]
        return sorted(faces, key=lambda b: -b[2] * b[3])


class BlazeDetector:
    """BlazeFace (`blazeface.py`) on the frame's views: every face, best first.

    `face.detector: blazeface` reads the whole frame with both of MediaPipe's models, the
    selfie one (`short`, faces of a fifth of the frame and up: a webcam at a desk, the
    scenario streams' faces, of which the full-range model alone finds a third) and the
    full-range one, and the left and right 60 % of a wide frame with the full-range model
    (small faces). `blazeface-short` is the selfie model alone, on every view.
    """

    SHORT_SCORE = 0.6  # the selfie model beside the full-range one (bench detect --seed 7)

    def __init__(self, variant: str = "full", tiles: bool = True) -> None:
        from affectstream.models.face.blazeface import BlazeFace

        self.name = "blazeface" if variant == "full" else f"blazeface-{variant}"
        self.net = BlazeFace(variant, threads=1, tiles=tiles)
        self.near = None  # the selfie model on the whole frame, beside the full-range one
        if variant == "full":
            self.near = BlazeFace("short", min_score=self.SHORT_SCORE, threads=1, tiles=False)

    def views(self, width: int, height: int) -> list[tuple[int, int]]:
        return self.net.views(width, height)

    def detect(self, image_bgr: np.ndarray, view: int | None = None) -> list[tuple]:
        found = self.net.detect(image_bgr, view)
        if self.near is not None and view in (None, 0):
            found = _merge(found + self.near.detect(image_bgr, 0))
        return found


def _merge(boxes: list[tuple]) -> list[tuple]:
    """One box per face of several detections (x, y, w, h, score): weighted suppression."""
    from affectstream.models.face.blazeface import weighted_nms

    if len(boxes) < 2:
        return boxes
    a = np.array(boxes, np.float64)
    xyxy = np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], 1)
    return [(x0, y0, x1 - x0, y1 - y0, sc) for x0, y0, x1, y1, sc in weighted_nms(xyxy, a[:, 4])]


def make_detector(config: FaceConfig | None = None):
    """The detector `face.detector` names: blazeface (both models), blazeface-short, haar."""
    cfg = config or FaceConfig()
    name = getattr(cfg, "detector", "blazeface")
    if name == "haar":
        return HaarDetector(cfg)
    if name == "blazeface":
        return BlazeDetector("full")
    if name == "blazeface-short":
        return BlazeDetector("short")
    raise ValueError(f"face.detector: unknown {name!r} (known: {', '.join(DETECTORS)})")


# -- tracking ---------------------------------------------------------------------------------
class _Track:
    """One followed face: its id, box, template and how long no detection confirmed it."""

    TEMPLATE_PX = 32

    def __init__(self, tid: int, box: tuple, score: float) -> None:
        self.id = tid
        self.box = box
        self.score = score
        self.source = "detect"
        self.unconfirmed = 0
        self.template: np.ndarray | None = None
        self.tscale = 1.0  # template pixels per frame pixel

    def confirm(self, image_bgr: np.ndarray, box: tuple, score: float) -> None:
        self.box, self.score, self.source, self.unconfirmed = box, score, "detect", 0
        H, W = image_bgr.shape[:2]
        x0, y0, x1, y1 = _region(box, 0.0, W, H)
        if x1 - x0 < 8 or y1 - y0 < 8:
            self.template = None
            return
        self.tscale = min(1.0, self.TEMPLATE_PX / max(x1 - x0, y1 - y0))
        g = _gray(image_bgr[y0:y1, x0:x1])
        size = (max(4, round((x1 - x0) * self.tscale)), max(4, round((y1 - y0) * self.tscale)))
        self.template = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        # the template covers the clipped box: follow that one, as it is what is matched
        self.box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    def follow(self, image_bgr: np.ndarray, search: float, min_score: float) -> float | None:
        """Move to the best normalised cross-correlation of the template near the last box if
        it scores `min_score` or more (else stay, so an ended track keeps its last true box);
        its score, or None when it cannot be matched (no template, window too small)."""
        if self.template is None:
            return None
        H, W = image_bgr.shape[:2]
        x0, y0, x1, y1 = _region(self.box, search, W, H)
        s = self.tscale
        size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
        th, tw = self.template.shape
        if size[0] < tw or size[1] < th:
            return None
        window = cv2.resize(_gray(image_bgr[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA)
        res = cv2.matchTemplate(window, self.template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (mx, my) = cv2.minMaxLoc(res)
        if score >= min_score:
            _, _, w, h = self.box
            self.box, self.score, self.source = (x0 + mx / s, y0 + my / s, w, h), score, "track"
        return float(score)


def _match(tracks: list, boxes: list, min_iou: float = 0.2) -> list[tuple[int, int]]:
    """Greedy IoU matching, best pair first: [(track index, box index)]."""
    pairs = sorted(
        ((iou(t.box, b[:4]), i, j) for i, t in enumerate(tracks) for j, b in enumerate(boxes)),
        reverse=True,
    )
    used_t, used_b, out = set(), set(), []
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i in used_t or j in used_b:
            continue
        used_t.add(i)
        used_b.add(j)
        out.append((i, j))
    return out


class FaceTracker:
    """`process_all(image_bgr) -> [FaceCrop]` (every followed face, by id), one call per
    frame, in frame order; `process(image_bgr)` gives only the largest face, for callers
    that want one (photos, `tracker_crops`).

    Boxes are kept in frame pixels. `detector` defaults to the one `face.detector` names.
    """

    BRIDGE = 12  # frames an ended track's id waits for a detection on its last box

    def __init__(self, config: FaceConfig | None = None, detector=None):
        self.cfg = config or FaceConfig()
        if self.cfg.detect_every < 1:
            raise ValueError("face.detect_every must be >= 1")
        if self.cfg.detect_width < 48:
            raise ValueError("face.detect_width must be >= 48")
        self.max_faces = int(getattr(self.cfg, "max_faces", 4))
        if self.max_faces < 1:
            raise ValueError("face.max_faces must be >= 1")
        self.detector = detector if detector is not None else make_detector(self.cfg)
        self.frames = 0
        self.detections = 0  # faces given from a detection
        self.tracked = 0  # faces given from template tracking
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every face (e.g. after a camera reconnect or a scene cut)."""
        self.tracks: list[_Track] = []
        self._ended: list[tuple[int, tuple, int]] = []  # (id, last box, frame it ended)
        self._since_detect = 0  # frames since the reset: which view is read (`_view`)

    def _new_id(self, box: tuple) -> int:
        """An ended track's id when `box` is on its last box within the bridge, else new."""
        live = [e for e in self._ended if self.frames - e[2] <= self.BRIDGE]
        best = max(live, key=lambda e: iou(e[1], box), default=None)
        if best is not None and iou(best[1], box) >= 0.3:
            self._ended.remove(best)
            return best[0]
        tid, self._next_id = self._next_id, self._next_id + 1
        return tid

    def _end(self, track: _Track) -> None:
        log.debug("face %d lost at frame %d", track.id, self.frames)
        self._ended.append((track.id, track.box, self.frames))
        self.tracks.remove(track)

    def _detect(self, image_bgr: np.ndarray, view: int | None = 0) -> set[int]:
        """Match a detection of one view (0: the whole frame; None: every view) to the
        tracks; start tracks for new faces. Returns the ids it confirmed or started."""
        boxes = [b for b in self.detector.detect(image_bgr, view) if b[2] >= 4 and b[3] >= 4]
        if view:  # a side: a face cut by its inner edge is the whole frame's to find
            h, w = image_bgr.shape[:2]
            x0, x1 = self.detector.views(w, h)[view]
            boxes = [b for b in boxes if (x0 == 0 or b[0] > x0) and (x1 == w or b[0] + b[2] < x1)]
        pairs = _match(self.tracks, boxes)
        seen = set()
        for i, j in pairs:
            self.tracks[i].confirm(image_bgr, tuple(boxes[j][:4]), float(boxes[j][4]))
            seen.add(self.tracks[i].id)
        taken = {j for _, j in pairs}
        new = sorted((b for j, b in enumerate(boxes) if j not in taken), key=lambda b: -b[2] * b[3])
        for b in new:
            if len(self.tracks) >= self.max_faces:
                break
            if any(iou(t.box, b[:4]) > 0.3 for t in self.tracks):
                continue  # a second box on a face already followed
            t = _Track(self._new_id(tuple(b[:4])), tuple(b[:4]), float(b[4]))
            t.confirm(image_bgr, tuple(b[:4]), float(b[4]))
            self.tracks.append(t)
            seen.add(t.id)
        return seen

    def _view(self, image_bgr: np.ndarray) -> int | None:
        """Which view the detector reads on this frame (None: none; the frames between
        follow the faces by template). The whole frame every `detect_every` frames; a wide
        frame's sides take turns on the frame after it, so no frame pays for more than one
        view (with `detect_every` 1, every view every frame: -1). With no face followed, one
        view every frame, in turn."""
        h, w = image_bgr.shape[:2]
        n = len(self.detector.views(w, h))
        k, every = self._since_detect, self.cfg.detect_every
        if not self.tracks:
            return k % n
        if every == 1:
            return -1 if n > 1 else 0
        if k % every == 0:
            return 0
        if n > 1 and k % every == 1:
            return 1 + (k // every) % (n - 1)
        return None

    def process_all(self, image_bgr: np.ndarray) -> list[FaceCrop]:
        """Every face of this frame, by id (an empty list when there is none)."""
        self.frames += 1
        view = self._view(image_bgr)
        self._since_detect += 1
        due = view is not None
        confirmed = self._detect(image_bgr, None if view == -1 else view) if due else set()
        lost = False
        for t in list(self.tracks):
            if t.id in confirmed:
                continue
            t.unconfirmed += 1
            score = None
            if t.unconfirmed <= self.cfg.track_max_frames:
                score = t.follow(image_bgr, self.cfg.track_search, self.cfg.track_min_score)
            if score is None or score < self.cfg.track_min_score:
                self._end(t)
                lost = True
        if lost and view != 0 and view != -1:
            # a face may have moved (a cut, a fast turn): look for it in the whole frame now
            self._detect(image_bgr, 0)
        self._merge()
        out = []
        for t in sorted(self.tracks, key=lambda t: t.id):
            crop = crop_face(image_bgr, t.box, self.cfg.crop_scale)
            box = tuple(int(round(v)) for v in t.box)
            out.append(FaceCrop(crop, box, t.source, t.score, t.id))
            if t.source == "detect":
                self.detections += 1
            else:
                self.tracked += 1
        return out

    def _merge(self) -> None:
        """Two tracks that drifted onto one face: the older id keeps it."""
        for a in sorted(self.tracks, key=lambda t: t.id):
            for b in [t for t in self.tracks if t.id > a.id]:
                if a in self.tracks and iou(a.box, b.box) > 0.5:
                    self.tracks.remove(b)

    def process(self, image_bgr: np.ndarray) -> FaceCrop | None:
        """The largest face of this frame, or None (no face)."""
        faces = self.process_all(image_bgr)
        return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


def tracker_crops(
    photos: np.ndarray, config: FaceConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The crops the live tracker cuts from still photos: `(crops (M, 48, 48), found (N,) bool)`.

    Each photo (grayscale (H, W) or BGR) is one first frame of its own video (the tracker is
    reset between photos), so the crop is what `process` returns when the face appears: a full
    detection by `face.detector`, the largest face, `crop_face` with `crop_scale`. `crops[k]` belongs
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
