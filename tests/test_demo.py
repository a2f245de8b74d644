"""The demo's parts without a display: the drawing (a pure function of a View, checked by
its pixels), the rolling history, and the stage taps on a real stream of the sample clip."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from affectstream.cli.args import sample_media
from affectstream.core.config import load_config
from affectstream.core.labels import LABELS, MODALITIES
from affectstream.core.messages import Estimate
from affectstream.models.face.detect import iou
from affectstream.realtime.demo.history import History
from affectstream.realtime.demo.overlay import (
    BACKGROUND,
    CLASS_COLORS,
    FACE_BOX,
    LAYOUT,
    MODALITY_COLORS,
    View,
    fit,
    render,
)
from affectstream.realtime.demo.taps import tap_stages
from affectstream.realtime.demo.window import DemoWindow
from affectstream.realtime.stream import AffectStream, Inputs
from tests.test_run_cli import affectstream

SAMPLE = sample_media()


def sample_frame(index: int = 0) -> np.ndarray:
    cap = cv2.VideoCapture(str(SAMPLE))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    assert ok
    return frame


def estimate(probs, relevance, t=1.0, transcript="I am so happy") -> Estimate:
    probs = np.asarray(probs, np.float32)
    return Estimate(
        t=t,
        probs=probs,
        valence=0.5,
        arousal=0.3,
        confidence=float(probs.max()),
        relevance=relevance,
        present={m: relevance.get(m, 0) > 0 for m in MODALITIES},
        age_ms={m: 40.0 if relevance.get(m, 0) > 0 else None for m in MODALITIES},
        stages_ms={"total": 3.0},
        transcript=transcript,
        modalities={"face": {"probs": probs}},
        status={m: "ok" for m in MODALITIES},
    )


def bar_fills(img: np.ndarray, rect, colors) -> list[float]:
    """Each bar's filled fraction: its colour's run along the row's middle line."""
    fills = []
    for i, color in enumerate(colors):
        bx, by, bw, bh = LAYOUT.bar_row(i, len(colors), rect)
        line = img[by + bh // 2, bx : bx + bw]
        fills.append(float(np.all(line == color, axis=1).sum()) / bw)
    return fills


def test_render_draws_the_frame_box_bars_and_point():
    frame = sample_frame()
    probs = [0.1, 0.6, 0.05, 0.05, 0.05, 0.05, 0.1]
    rel = {"face": 0.5, "voice": 0.3, "text": 0.2}
    box = (150, 40, 100, 100)
    est = estimate(probs, rel)
    trail = [(t / 10, est.probs, 0.5, 0.3) for t in range(40)]
    img = render(View(frame=frame, box=box, estimate=est, trail=trail, rate_hz=10.0, fps=25.0))
    assert img.shape == (LAYOUT.size[1], LAYOUT.size[0], 3) and img.dtype == np.uint8
    # the frame fills the video rect (480x360 into 800x600), its face region unchanged but scaled
    s, ox, oy = fit((480, 360), LAYOUT.video)
    shown = img[oy : oy + round(360 * s), ox : ox + round(480 * s)]
    expected = cv2.resize(frame, (shown.shape[1], shown.shape[0]))
    inner = (slice(round(60 * s), round(130 * s)), slice(round(170 * s), round(240 * s)))
    assert np.abs(shown[inner].astype(int) - expected[inner]).mean() < 3
    # the face box: its left edge in FACE_BOX green at the scaled position
    x0, y0 = ox + round(box[0] * s), oy + round(box[1] * s)
    edge = img[y0 + 20 : y0 + round(box[3] * s) - 20, x0]
    assert np.all(edge == FACE_BOX)
    # bars: each fill is its probability, and they add up to one bar
    fills = bar_fills(img, LAYOUT.bars, [CLASS_COLORS[c] for c in LABELS])
    assert fills == pytest.approx(probs, abs=0.01)
    rels = bar_fills(img, LAYOUT.relevance, [MODALITY_COLORS[m] for m in MODALITIES])
    assert rels == pytest.approx([0.5, 0.3, 0.2], abs=0.01)
    # the valence/arousal point in white at (0.5, 0.3) on the circumplex
    cx, cy, r = LAYOUT.circumplex
    assert tuple(img[cy - round(0.3 * r), cx + round(0.5 * r)]) == (255, 255, 255)
    # the strip chart has the happy line at 0.6 near its right end
    sx, sy, sw, sh = LAYOUT.strip
    col = img[sy : sy + sh, sx + sw - 5]
    happy_rows = np.where(np.abs(col.astype(int) - CLASS_COLORS["happy"]).sum(axis=1) < 60)[0]
    assert happy_rows.size and abs(happy_rows.mean() - (sh - 1) * (1 - 0.6)) < 3


def test_render_without_anything_is_a_calm_empty_view():
    img = render(View())
    fills = bar_fills(img, LAYOUT.bars, [CLASS_COLORS[c] for c in LABELS])
    assert fills == [0.0] * 7
    x, y, w, h = LAYOUT.strip
    assert tuple(img[5, LAYOUT.size[0] - 5]) == BACKGROUND


def test_history_keeps_30_s_and_measures_ages_and_rate():
    h = History(seconds=30.0)
    for i in range(500):  # 50 s at 10 Hz
        h.add(estimate([1, 0, 0, 0, 0, 0, 0], {"face": 1.0}, t=i / 10))
    trail = h.trail()
    assert trail[0][0] == pytest.approx(49.9 - 30.0, abs=0.11) and len(h) == 301
    lat = h.latency()
    assert lat["face"] == {"p50": 40.0, "p99": 40.0} and lat["voice"] == {"p50": None, "p99": None}
    assert h.rate_hz() == pytest.approx(10.0)


@pytest.fixture(scope="module")
def sample_stream():
    """The sample replayed on the media clock, face and voice only (no words: quick)."""
    stream = AffectStream(load_config(), Inputs(media=SAMPLE, realtime=False, transcribe=False))
    yield stream
    stream.close()


def test_taps_give_the_face_box_and_switch_a_modality_off(sample_stream):
    taps = tap_stages(sample_stream.stages, sample_stream.forget)
    assert set(taps) == {"face", "voice"}
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes, off, voice_off = [], [], []
    voice_off_at = None
    for est in sample_stream.estimates():
        if est.tick == 40:
            taps["face"].enabled = False  # the `f` key
        if est.tick == 60:
            taps["face"].enabled = True
        if 42 <= est.tick < 60:
            off.append(est)
        if voice_off_at is None and est.tick >= 20 and est.present["voice"]:
            taps["voice"].enabled = False  # the `v` key, while someone speaks
            voice_off_at = est.tick
        elif voice_off_at is not None and est.tick < voice_off_at + 20:
            voice_off.append(est)  # within the 3 s the fusion would otherwise hold the voice
        elif voice_off_at is not None and est.tick == voice_off_at + 20:
            taps["voice"].enabled = True
        box = taps["face"].box()
        if est.tick in (10, 80) and box is not None:
            frame = sample_stream.video_ring.newest().item.image
            found = cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5)
            boxes.append((box, tuple(found[0])))
        if est.tick > 80:
            sample_stream.stop()
    assert len(boxes) == 2
    for tracked, detected in boxes:  # the tap's box is the face in the frame
        assert iou(tracked, detected) > 0.5, (tracked, detected)
    assert off and all(not e.present["face"] and e.relevance["face"] == 0 for e in off)
    # switched off means gone at once: the fusion does not hold a voice the user turned off
    assert len(voice_off) == 19 and all(e.relevance["voice"] == 0 for e in voice_off)
    assert all(e.status["face"] == "absent" for e in off)
    assert est.present["face"]  # back on
    for tap in taps.values():
        tap.remove()
    assert "run" not in vars(sample_stream.stages[0])


def test_keys_pause_toggle_and_quit(sample_stream):
    win = DemoWindow(sample_stream)
    assert win.key(-1) and win.key(ord("p")) and win.paused
    assert win.key(ord("v")) and not win.taps["voice"].enabled
    assert win.key(ord("w"))  # no words in this stream: nothing to switch, no error
    frozen = win.view()
    assert win.view() is frozen and frozen.enabled["voice"] is False and frozen.paused
    assert win.key(ord(" ")) and not win.paused
    assert not win.key(ord("q")) and not win.key(27)
    for tap in win.taps.values():
        tap.remove()


def test_demo_help_lists_the_keys_and_no_display_is_one_line():
    r = affectstream("demo", "--help", timeout=60)
    assert r.returncode == 0
    for key in ("p or space pause", "f face", "v voice", "w words", "q or Esc quit"):
        assert key in " ".join(r.stdout.split()), r.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run(
        [sys.executable, "-m", "affectstream", "demo", "--sample"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "affectstream: error: no display: the demo opens a window (DISPLAY is not set); "
        "use `affectstream run` for estimates as JSON lines"
    ]
