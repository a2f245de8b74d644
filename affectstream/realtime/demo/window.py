"""The demo's window loop: one OpenCV highgui window, fed by a stream on its own thread.

The stream (`AffectStream`) runs `estimates()` on a background thread, which hands each
estimate to a `History`; the calling thread (the main thread: GUI toolkits want it) draws
`overlay.render` of the newest frame, face box and estimate at up to `max_fps`, shows it and
reads the keys. Pausing freezes the picture while the input runs on (a camera cannot be
paused); the modality keys switch a stage off through its `StageTap`.

The window is placed at the screen's top-left, and placed there again after the 10th and
25th pictures: Qt under an X server without a window manager (Xvfb, a kiosk) sometimes never
paints a window whose first update came before the server exposed it, and a move makes it
repaint (measured under Xvfb: 1 in 5 launches stayed black without the moves, 0 in 16 with).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from affectstream.core.labels import MODALITIES
from affectstream.core.messages import Estimate
from affectstream.realtime.demo.history import History
from affectstream.realtime.demo.overlay import LAYOUT, MODALITY_KEYS, Layout, View, render
from affectstream.realtime.demo.taps import StageTap, tap_stages

log = logging.getLogger(__name__)

TITLE = "affectstream"
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q, Esc
PAUSE_KEYS = {ord("p"), ord("P"), ord(" ")}
PLACE_AGAIN_AT = (10, 25)  # pictures after which the window is moved to its place again


class DemoWindow:
    """Show `stream` live until `q`, the window is closed, or `duration_s` have passed.

    When the inputs end (a file replayed once), the last picture stays with a note until
    the user quits (or `duration_s`). `run()` returns the number of pictures shown.
    """

    def __init__(
        self,
        stream,
        *,
        title: str = TITLE,
        duration_s: float | None = None,
        max_fps: float = 25.0,
        layout: Layout = LAYOUT,
    ) -> None:
        if max_fps <= 0:
            raise ValueError(f"max_fps must be positive, got {max_fps}")
        self.stream = stream
        self.title = title
        self.duration_s = duration_s
        self.period_s = 1.0 / max_fps
        self.layout = layout
        self.history = History()
        self.taps: dict[str, StageTap] = tap_stages(stream.stages, stream.forget)
        self.paused = False
        self.latest: Estimate | None = None
        self.error: BaseException | None = None
        self.shown = 0
        self._ended = threading.Event()
        self._shown_at: deque[float] = deque(maxlen=25)  # for the view's own fps
        self._frozen: View | None = None

    # -- the stream's thread ----------------------------------------------------------
    def _feed(self) -> None:
        try:
            for est in self.stream.estimates():
                self.history.add(est)
                self.latest = est
        except Exception as e:  # shown on the picture and raised by run()
            self.error = e
            log.exception("the demo's stream failed")
        finally:
            self._ended.set()

    # -- the window's thread ----------------------------------------------------------
    def view(self) -> View:
        """What the picture shows now (or, paused, what it showed when paused)."""
        enabled = {m: self.taps[m].enabled if m in self.taps else False for m in MODALITIES}
        if self.paused and self._frozen is not None:
            self._frozen.enabled, self._frozen.paused = enabled, True
            return self._frozen
        frame = None
        ring = self.stream.video_ring
        slot = ring.newest() if ring is not None else None
        if slot is not None:
            frame = slot.item.image
        face = self.taps.get("face")
        note = ""
        if self.error is not None:
            note = f"stream failed: {self.error}"[:70]
        elif self._ended.is_set():
            note = "end of input: q to quit"
        elif self.latest is None:
            note = "starting..."
        view = View(
            frame=frame,
            box=face.box() if face is not None and face.enabled else None,
            faces=face.faces() if face is not None and face.enabled else (),
            estimate=self.latest,
            trail=self.history.trail(),
            latency=self.history.latency(),
            rate_hz=self.history.rate_hz(),
            fps=self._fps(),
            enabled=enabled,
            paused=self.paused,
            note=note,
        )
        self._frozen = view
        return view

    def _fps(self) -> float | None:
        t = self._shown_at
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else None

    def key(self, code: int) -> bool:
        """Act on one key code; False when it asks to quit."""
        if code < 0:
            return True
        code &= 0xFF
        if code in QUIT_KEYS:
            return False
        if code in PAUSE_KEYS:
            self.paused = not self.paused
        for m, k in MODALITY_KEYS.items():
            if code in (ord(k), ord(k.upper())) and m in self.taps:
                self.taps[m].enabled = not self.taps[m].enabled
                log.info("%s %s", m, "on" if self.taps[m].enabled else "off")
        return True

    def picture(self) -> np.ndarray:
        return render(self.view(), self.layout)

    def run(self) -> int:
        import cv2

        feeder = threading.Thread(target=self._feed, name="affectstream-demo", daemon=True)
        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.moveWindow(self.title, 0, 0)
        start = time.monotonic()
        feeder.start()
        try:
            while True:
                t0 = time.monotonic()
                cv2.imshow(self.title, self.picture())
                self.shown += 1
                if self.shown in PLACE_AGAIN_AT:
                    cv2.moveWindow(self.title, 0, 0)
                self._shown_at.append(t0)
                wait_ms = max(1, round((self.period_s - (time.monotonic() - t0)) * 1000))
                if not self.key(cv2.waitKey(wait_ms)):
                    break
                if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    break  # closed with the window's own button
                if self.duration_s is not None and time.monotonic() - start >= self.duration_s:
                    break
        finally:
            self.stream.stop()
            feeder.join(5.0)
            for tap in self.taps.values():
                tap.remove()
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # lets highgui process the close
        if self.error is not None:
            raise self.error  # the stream thread's own exception, for the caller to report
        return self.shown
