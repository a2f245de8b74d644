"""Pure drawing of the demo view onto a numpy image: no window, no threads, no clock.

`render(view)` returns one BGR canvas (`LAYOUT.size`) with the video frame and the tracked
face box, the fused 7 class probabilities as bars, each modality's own top class, valence and
arousal as a point on the circumplex (the 7 classes placed where `core.labels.CIRCUMPLEX`
puts them), the relevance of face, voice and words as three bars, the rolling transcript, a
strip chart of the fused probabilities over the last 30 s, the measured latency and the
keys. Keeping it a function of a `View` makes every pixel testable without a display; the
window (`window.py`) only shows what this returns.

Bars are solid fills in fixed colours (`CLASS_COLORS`, `MODALITY_COLORS`) on a dark track,
so a screenshot can be checked by colour: the fused bars together span one full bar width
(the probabilities sum to 1), and so do the relevance bars whenever a modality is present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from affectstream.core.labels import CIRCUMPLEX, LABELS, MODALITIES
from affectstream.core.messages import Estimate

Rect = tuple[int, int, int, int]  # x, y, w, h on the canvas

BACKGROUND = (30, 30, 30)
TRACK = (60, 60, 60)  # the empty part of a bar
TEXT = (235, 235, 235)
DIM = (150, 150, 150)
FACE_BOX = (0, 255, 0)  # the primary face: the one the fused estimate follows
OTHER_FACE = (0, 200, 255)  # every other face in view
CLASS_COLORS: dict[str, tuple[int, int, int]] = {  # BGR
    "neutral": (180, 180, 180),
    "happy": (0, 215, 255),
    "sad": (220, 110, 30),
    "angry": (40, 40, 230),
    "fearful": (200, 70, 170),
    "disgusted": (40, 160, 40),
    "surprised": (0, 130, 255),
}
MODALITY_COLORS: dict[str, tuple[int, int, int]] = {
    "face": (120, 230, 120),
    "voice": (255, 170, 60),
    "text": (230, 90, 230),
}
MODALITY_NAMES = {"face": "face", "voice": "voice", "text": "words"}
MODALITY_KEYS = {"face": "f", "voice": "v", "text": "w"}  # the key that turns each on and off
KEYS = (
    ("p", "pause"),
    *((MODALITY_KEYS[m], MODALITY_NAMES[m]) for m in MODALITIES),
    ("q", "quit"),
)
STRIP_SECONDS = 30.0
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Layout:
    """Where each part goes on the canvas (x, y, w, h). Tests read it to find the parts."""

    size: tuple[int, int] = (1280, 760)  # width, height
    video: Rect = (0, 0, 800, 600)
    transcript: Rect = (10, 606, 780, 44)
    strip: Rect = (40, 660, 750, 92)
    bars: Rect = (820, 36, 450, 182)  # 7 rows of 26 px: label, then the bar
    bar_label_w: int = 110
    modalities: Rect = (820, 240, 450, 78)
    relevance: Rect = (820, 340, 450, 66)  # 3 rows of 22 px
    circumplex: tuple[int, int, int] = (1045, 515, 90)  # centre x, y, radius
    latency: Rect = (820, 656, 450, 50)
    keys: Rect = (820, 724, 450, 26)

    def bar_row(self, i: int, rows: int, rect: Rect) -> Rect:
        """The filled-bar area of row `i` of `rows` in `rect` (label column left out)."""
        x, y, w, h = rect
        step = h // rows
        return (x + self.bar_label_w, y + i * step + 4, w - self.bar_label_w - 50, step - 8)


LAYOUT = Layout()


@dataclass
class View:
    """Everything one picture shows; built by the window loop, drawn by `render`.

    `trail`: (t, probs, valence, arousal) of the estimates of the last 30 s, oldest first;
    `latency`: per modality {"p50", "p99"} of the estimate age in ms; `enabled`: which
    modalities the keys left on.
    """

    frame: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    # every face in view ({id, box, probs, primary}, as in `Estimate.faces`); when given, each
    # is drawn with its id and top class, the primary one marked, instead of `box` alone
    faces: Sequence[dict] = ()
    estimate: Estimate | None = None
    trail: Sequence[tuple[float, np.ndarray, float, float]] = ()
    latency: dict[str, dict] = field(default_factory=dict)
    rate_hz: float | None = None
    fps: float | None = None
    enabled: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(MODALITIES, True))
    paused: bool = False
    note: str = ""  # a line over the video: "end of input", "waiting for the first estimate"


def render(view: View, layout: Layout = LAYOUT) -> np.ndarray:
    """The whole demo picture for `view`, as a new BGR uint8 image."""
    w, h = layout.size
    canvas = np.empty((h, w, 3), np.uint8)
    _fill(canvas, (0, 0, w, h), BACKGROUND)
    est = view.estimate
    _video(canvas, layout, view)
    probs = est.probs if est is not None else np.zeros(len(LABELS), np.float32)
    title = f"fused: {est.emotion}  {est.confidence:.2f}" if est is not None else "fused: -"
    _text(canvas, title, (layout.bars[0], layout.bars[1] - 12), 0.65, TEXT, 2)
    _bars(canvas, layout, layout.bars, LABELS, probs, [CLASS_COLORS[c] for c in LABELS])
    _modalities(canvas, layout, est, view.enabled)
    x, y = layout.relevance[:2]
    _text(canvas, "relevance", (x, y - 8), 0.55, TEXT, 1)
    rel = [est.relevance.get(m, 0.0) if est is not None else 0.0 for m in MODALITIES]
    names = [MODALITY_NAMES[m] for m in MODALITIES]
    colors = [MODALITY_COLORS[m] for m in MODALITIES]
    _bars(canvas, layout, layout.relevance, names, rel, colors)
    _circumplex(canvas, layout, est, view.trail)
    _transcript(canvas, layout, est.transcript if est is not None else "")
    _strip(canvas, layout, view.trail)
    _latency(canvas, layout, view)
    _keys(canvas, layout, view)
    return canvas


# -- parts ----------------------------------------------------------------------------
def fit(frame_wh: tuple[int, int], rect: Rect) -> tuple[float, int, int]:
    """Scale and offset that fit a frame of `frame_wh` inside `rect`, aspect kept, centred."""
    fw, fh = frame_wh
    x, y, w, h = rect
    s = min(w / fw, h / fh)
    return s, x + (w - round(fw * s)) // 2, y + (h - round(fh * s)) // 2


def _video(canvas: np.ndarray, layout: Layout, view: View) -> None:
    x, y, w, h = layout.video
    _fill(canvas, layout.video, (0, 0, 0))
    frame = view.frame
    if frame is not None and frame.size:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        fh, fw = frame.shape[:2]
        s, ox, oy = fit((fw, fh), layout.video)
        dw, dh = round(fw * s), round(fh * s)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        canvas[oy : oy + dh, ox : ox + dw] = cv2.resize(frame, (dw, dh), interpolation=interp)
        if view.faces:
            _faces(canvas, view.faces, s, ox, oy, y)
        elif view.box is not None:
            bx, by, bw, bh = view.box
            p0 = (ox + round(bx * s), oy + round(by * s))
            p1 = (ox + round((bx + bw) * s), oy + round((by + bh) * s))
            cv2.rectangle(canvas, p0, p1, FACE_BOX, 3)
            face = view.estimate.modalities.get("face") if view.estimate else None
            if face is not None:
                label = _top(face["probs"])
                _label(canvas, label, (p0[0], max(y + 22, p0[1] - 8)), FACE_BOX)
    elif not view.note:
        _text(canvas, "no video", (x + w // 2 - 60, y + h // 2), 0.8, DIM, 2)
    if view.paused:
        _label(canvas, "PAUSED (p)", (x + 12, y + 32), (0, 200, 255))
    if view.note:
        _label(canvas, view.note, (x + 12, y + h - 16), TEXT)


def _faces(canvas: np.ndarray, faces: Sequence[dict], s: float, ox: int, oy: int, top: int):
    """Each face's box with its id and top class; the primary one green, thicker, starred."""
    for f in sorted(faces, key=lambda f: bool(f["primary"])):  # the primary drawn last
        bx, by, bw, bh = f["box"]
        p0 = (ox + round(bx * s), oy + round(by * s))
        p1 = (ox + round((bx + bw) * s), oy + round((by + bh) * s))
        color = FACE_BOX if f["primary"] else OTHER_FACE
        cv2.rectangle(canvas, p0, p1, color, 3 if f["primary"] else 2)
        mark = "*" if f["primary"] else ""
        _label(
            canvas, f"{mark}#{f['id']} {_top(f['probs'])}", (p0[0], max(top + 22, p0[1] - 8)), color
        )


def _bars(
    canvas: np.ndarray,
    layout: Layout,
    rect: Rect,
    names: Sequence[str],
    values: Sequence[float],
    colors: Sequence[tuple[int, int, int]],
) -> None:
    for i, (name, v, color) in enumerate(zip(names, values, colors, strict=True)):
        bx, by, bw, bh = layout.bar_row(i, len(names), rect)
        _text(canvas, name, (rect[0], by + bh - 3), 0.5, TEXT, 1)
        _fill(canvas, (bx, by, bw, bh), TRACK)
        v = float(np.clip(v, 0.0, 1.0)) if math.isfinite(v) else 0.0
        filled = round(v * bw)
        if filled:
            _fill(canvas, (bx, by, filled, bh), color)
        _text(canvas, f"{v:.2f}", (bx + bw + 6, by + bh - 3), 0.45, DIM, 1)


def _top(probs: np.ndarray) -> str:
    i = int(np.argmax(probs))
    return f"{LABELS[i]} {float(probs[i]):.2f}"


def _modalities(canvas: np.ndarray, layout: Layout, est: Estimate | None, enabled) -> None:
    x, y, w, h = layout.modalities
    _text(canvas, "each modality", (x, y), 0.55, TEXT, 1)
    step = (h - 6) // len(MODALITIES)
    for i, m in enumerate(MODALITIES):
        row_y = y + 6 + (i + 1) * step - 4
        view = est.modalities.get(m) if est is not None else None
        if not enabled.get(m, True):
            what, color = f"off (key {MODALITY_KEYS[m]})", DIM
        elif view is not None:
            # the newest output, and what the fusion mixed (its reading over the last
            # seconds), so fused = relevance x reading can be seen adding up
            what = _top(view["probs"])
            if view.get("reading") is not None:
                what += f"   mixed {_top(view['reading'])}"
            color = CLASS_COLORS[LABELS[int(np.argmax(view["probs"]))]]
        else:
            status = est.status.get(m, "off") if est is not None else "-"
            what, color = f"- ({status})"[:48], DIM
        cv2.circle(canvas, (x + 6, row_y - 5), 5, MODALITY_COLORS[m], -1, cv2.LINE_AA)
        _text(canvas, MODALITY_NAMES[m], (x + 18, row_y), 0.5, TEXT, 1)
        _text(canvas, what, (x + 90, row_y), 0.5, color, 1)


def _circumplex(canvas: np.ndarray, layout: Layout, est: Estimate | None, trail) -> None:
    cx, cy, r = layout.circumplex
    cv2.circle(canvas, (cx, cy), r, DIM, 1, cv2.LINE_AA)
    cv2.line(canvas, (cx - r, cy), (cx + r, cy), TRACK, 1)
    cv2.line(canvas, (cx, cy - r), (cx, cy + r), TRACK, 1)
    _text(canvas, "valence", (cx + r - 50, cy + 16), 0.4, DIM, 1)
    _text(canvas, "arousal", (cx + 4, cy - r - 6), 0.4, DIM, 1)

    def at(v: float, a: float) -> tuple[int, int]:
        return cx + round(v * r), cy - round(a * r)

    for name, (v, a) in zip(LABELS, CIRCUMPLEX, strict=True):
        p = at(float(v), float(a))
        cv2.circle(canvas, p, 4, CLASS_COLORS[name], -1, cv2.LINE_AA)
        _text(canvas, name[:4], (p[0] + 6, p[1] + 4), 0.35, CLASS_COLORS[name], 1)
    pts = [at(v, a) for _, _, v, a in trail[-30:]]  # the last 3 s at 10 Hz
    for p0, p1 in zip(pts, pts[1:], strict=False):
        cv2.line(canvas, p0, p1, (200, 200, 200), 1, cv2.LINE_AA)
    if est is not None:
        p = at(est.valence, est.arousal)
        cv2.circle(canvas, p, 8, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(canvas, p, 8, (0, 0, 0), 2, cv2.LINE_AA)
        _text(
            canvas,
            f"v {est.valence:+.2f}  a {est.arousal:+.2f}",
            (cx - r, cy + r + 22),
            0.45,
            TEXT,
            1,
        )


def _transcript(canvas: np.ndarray, layout: Layout, text: str) -> None:
    """The newest words that fit on two lines, wrapped at word boundaries."""
    x, y, w, h = layout.transcript
    if not text.strip():
        _text(canvas, "(no words yet)", (x, y + 18), 0.55, DIM, 1)
        return
    lines, line = [], ""
    for word in reversed(text.split()):
        trial = f"{word} {line}".strip()
        if cv2.getTextSize(trial, FONT, 0.6, 1)[0][0] <= w or not line:
            line = trial
            continue
        lines.insert(0, line)
        line = word
        if len(lines) == 2:
            break
    if len(lines) < 2:
        lines.insert(0, line)
    for i, ln in enumerate(lines[-2:]):
        _text(canvas, ln, (x, y + 18 + i * 22), 0.6, TEXT, 1)


def _strip(canvas: np.ndarray, layout: Layout, trail) -> None:
    """The fused probabilities of the last 30 s, one line per class, newest at the right."""
    x, y, w, h = layout.strip
    _fill(canvas, layout.strip, (20, 20, 20))
    for s in range(0, int(STRIP_SECONDS) + 1, 10):
        gx = x + w - round(s / STRIP_SECONDS * w)
        cv2.line(canvas, (gx, y), (gx, y + h - 1), TRACK, 1)
        _text(canvas, f"-{s}s" if s else "now", (gx - 14, y - 2), 0.35, DIM, 1)
    _text(canvas, "p", (x - 22, y + h // 2 + 4), 0.45, DIM, 1)
    if len(trail) < 2:
        return
    t_now = trail[-1][0]
    ts = np.array([t for t, *_ in trail], np.float64)
    keep = ts >= t_now - STRIP_SECONDS
    px = x + w - 1 - np.round((t_now - ts[keep]) / STRIP_SECONDS * (w - 1)).astype(np.int32)
    probs = np.stack([p for (_, p, _, _), k in zip(trail, keep, strict=True) if k])
    for c, name in enumerate(LABELS):
        py = y + h - 1 - np.round(np.clip(probs[:, c], 0, 1) * (h - 1)).astype(np.int32)
        pts = np.stack([px, py], axis=1).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, CLASS_COLORS[name], 1, cv2.LINE_AA)


def _latency(canvas: np.ndarray, layout: Layout, view: View) -> None:
    x, y, w, h = layout.latency
    _text(canvas, "latency: input age p50 / p99 (ms)", (x, y), 0.5, TEXT, 1)
    parts = []
    for m in MODALITIES:
        q = view.latency.get(m) or {}
        p50, p99 = q.get("p50"), q.get("p99")
        parts.append(f"{MODALITY_NAMES[m]} {_ms(p50)}/{_ms(p99)}")
    _text(canvas, "   ".join(parts), (x, y + 21), 0.45, TEXT, 1)
    rate = f"{view.rate_hz:.1f}" if view.rate_hz else "-"
    fps = f"{view.fps:.0f}" if view.fps else "-"
    _text(canvas, f"estimates {rate}/s   view {fps} fps", (x, y + 42), 0.45, TEXT, 1)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _keys(canvas: np.ndarray, layout: Layout, view: View) -> None:
    x, y, w, h = layout.keys
    parts = []
    for key, what in KEYS:
        m = next((m for m, k in MODALITY_KEYS.items() if k == key), None)
        state = "" if m is None else (" on" if view.enabled.get(m, True) else " off")
        parts.append(f"{key} {what}{state}")
    _text(canvas, "keys: " + "  ".join(parts), (x, y + 16), 0.45, DIM, 1)


def _fill(canvas: np.ndarray, rect: Rect, color) -> None:
    """A solid rectangle (cv2 fills in a tenth of a millisecond what numpy's broadcast
    assignment of a colour takes 3 ms for on the whole canvas)."""
    x, y, w, h = rect
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), color, -1)


def _text(canvas, s: str, org: tuple[int, int], scale: float, color, thickness: int) -> None:
    cv2.putText(canvas, s, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _label(canvas, s: str, org: tuple[int, int], color) -> None:
    """Text on a dark box, readable over any image."""
    (tw, th), base = cv2.getTextSize(s, FONT, 0.6, 2)
    x, y = org
    cv2.rectangle(canvas, (x - 3, y - th - 5), (x + tw + 3, y + base), (0, 0, 0), -1)
    _text(canvas, s, (x, y), 0.6, color, 2)
