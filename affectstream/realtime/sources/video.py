"""Video sources: a camera by OpenCV index, a video file replayed, and frames pushed by a host.

Each writes `VideoFrame`s (or, pushed as JPEG/PNG bytes, `EncodedFrame`s) into a `RingBuffer`;
a capture thread never waits for the scheduler.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from affectstream.core.clock import now_ns
from affectstream.core.config import VideoConfig
from affectstream.core.messages import VideoFrame
from affectstream.core.ringbuffer import RingBuffer
from affectstream.realtime.sources.base import PushSource, Source, SourceError, SourceState

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's own logging for a block (failed camera probes print many lines)."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class CameraSource(Source):
    """A camera by OpenCV index. A camera that disappears is retried with backoff."""

    name = "camera"

    def __init__(
        self, ring: RingBuffer[VideoFrame], index: int = 0, config: VideoConfig | None = None
    ):
        super().__init__()
        self.ring = ring
        self.index = index
        self.config = config or VideoConfig()
        self.reconnects = 0
        self._cap = None

    def _open_capture(self):
        import cv2

        with quiet_opencv():  # OpenCV logs several lines per failed probe; we raise one
            cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            return None
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.camera_width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.camera_height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a backlog
        return cap

    def open(self) -> None:
        if self._cap is not None:
            return
        self._cap = self._open_capture()
        if self._cap is None:
            raise SourceError(
                f"camera {self.index} cannot be opened (no such device, or busy); "
                "see `affectstream devices`"
            )

    def _run(self) -> None:
        backoff = self.config.reconnect_initial_s
        index = 0
        while not self._stop_event.is_set():
            if self._cap is None:
                self._set_status(SourceState.RECONNECTING, f"camera {self.index} lost; retrying")
                if self._sleep(backoff):
                    return
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                self._cap = self._open_capture()
                if self._cap is not None:
                    self.reconnects += 1
                    self._set_status(SourceState.RUNNING)
                    backoff = self.config.reconnect_initial_s
                continue
            ok, image = self._cap.read()
            t = now_ns()
            if not ok or image is None:
                self._cap.release()
                self._cap = None
                continue
            self.ring.push(VideoFrame(t, index, image), t)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(Source):
    """A video file replayed at real time (a thread) or stepped by a driver (`read_until`).

    In real time each frame is pushed when its presentation time comes, stamped with the
    monotonic clock. Stepped ("as fast as possible"), frames are stamped on the media clock
    `start_ns + pts`, so latency figures stay meaningful without waiting. `loop` starts the
    file again at its end, frame times running on (benchmarks and soak runs).
    """

    name = "video"

    def __init__(
        self,
        path: str | Path,
        ring: RingBuffer[VideoFrame],
        realtime: bool = True,
        loop: bool = False,
    ):
        super().__init__()
        self.path = Path(path)
        self.ring = ring
        self.realtime = realtime
        self.loop = loop
        self.loops = 0  # times the file started again
        self.fps = 0.0
        self.frame_count = 0
        self.start_ns = 0
        self._cap = None
        self._next_index = 0
        self._pending: VideoFrame | None = None
        self._eof = False
        self._first: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0

    def open(self) -> None:
        if self._cap is not None:
            return
        import cv2

        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise SourceError(f"cannot decode video file {self.path} (corrupt or unsupported)")
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap = cap
        self._first = first

    def _read(self) -> np.ndarray | None:
        if self._first is not None:
            image, self._first = self._first, None
            return image
        ok, image = self._cap.read()
        if not ok and self.loop:
            import cv2

            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
            self.loops += ok
        return image if ok else None

    def _pts_ns(self, index: int) -> int:
        return int(index * 1e9 / self.fps)

    # -- stepped ("fast") replay ------------------------------------------------------
    def begin(self, start_ns: int) -> None:
        """Start stepped replay with media time 0 at `start_ns` (no thread)."""
        self.open()
        self.start_ns = start_ns
        self._set_status(SourceState.RUNNING)

    def read_until(self, t_ns: int) -> int:
        """Decode and push every frame whose media time is <= t_ns; returns how many."""
        pushed = 0
        while not self._eof:
            if self._pending is None:
                image = self._read()
                if image is None:
                    self._eof = True
                    self._set_status(SourceState.FINISHED)
                    break
                i = self._next_index
                self._pending = VideoFrame(self.start_ns + self._pts_ns(i), i, image)
                self._next_index += 1
            if self._pending.t_ns > t_ns:
                break
            self.ring.push(self._pending, self._pending.t_ns)
            self._pending = None
            pushed += 1
        return pushed

    # -- real-time replay -------------------------------------------------------------
    def _run(self) -> None:
        self.start_ns = now_ns()
        while not self._stop_event.is_set():
            image = self._read()
            if image is None:
                return
            i = self._next_index
            self._next_index += 1
            due = self.start_ns + self._pts_ns(i)
            wait = (due - now_ns()) / 1e9
            if wait > 0 and self._sleep(wait):
                return
            t = now_ns()
            self.ring.push(VideoFrame(t, i, image), t)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class EncodedFrame:
    """A pushed JPEG or PNG frame, decoded the first time a stage reads its `image`.

    A client sends more frames (24-30 a second) than the face stage reads (the newest one a
    tick: 10 a second by default), so a server that decoded each frame as it came spent most
    of its decoding on frames no stage looked at: at 4 sessions, a tenth of the server's
    CPU samples, and the hand-off of each decode to a thread and back cost as much again.
    The bytes were checked when they came (size, pixels, a whole file); what only a decoder
    finds makes `image` None and is told once to `on_bad`.
    """

    __slots__ = ("t_ns", "index", "payload", "_image", "_on_bad")

    def __init__(
        self, t_ns: int, index: int, payload: bytes, on_bad: Callable[[str], None] | None = None
    ) -> None:
        self.t_ns, self.index, self.payload = t_ns, index, payload
        self._image: np.ndarray | None = None
        self._on_bad = on_bad

    @property
    def image(self) -> np.ndarray | None:
        if self._image is None and self.payload:
            import cv2

            payload, self.payload = self.payload, b""  # decoded (or failed) once
            self._image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            if self._image is None and self._on_bad is not None:
                self._on_bad(
                    f"video message (t={self.t_ns / 1e9:.3f} s on the stream clock): "
                    f"cannot decode {len(payload)} bytes as JPEG or PNG"
                )
        return self._image


class PushVideoSource(PushSource):
    """Frames handed in by a host application (an agent that already has video).

    `push` may be called from any one thread; it validates the frame and stamps it with the
    capture time the host gives, or now.
    """

    name = "push-video"

    def __init__(self, ring: RingBuffer[VideoFrame]):
        super().__init__()
        self.ring = ring
        self._index = 0

    def push(self, image: np.ndarray, t_ns: int | None = None) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("push: frame must be a uint8 numpy array")
        if image.ndim == 2:
            import cv2

            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"push: frame must be (H, W, 3) BGR or (H, W) gray, got {image.shape}")
        t = now_ns() if t_ns is None else int(t_ns)
        self.ring.push(VideoFrame(t, self._index, image), t)
        self._index += 1

    def push_encoded(
        self, payload: bytes, t_ns: int | None = None, on_bad: Callable[[str], None] | None = None
    ) -> None:
        """A JPEG or PNG frame, decoded only if a stage reads it (`EncodedFrame`); the caller
        has checked its header. `on_bad` hears if it does not decode."""
        t = now_ns() if t_ns is None else int(t_ns)
        self.ring.push(EncodedFrame(t, self._index, payload, on_bad), t)
        self._index += 1
