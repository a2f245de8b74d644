import time

import numpy as np
import pytest

from affectstream.core.config import VideoConfig
from affectstream.core.ringbuffer import RingBuffer
from affectstream.realtime.sources.base import SourceError, SourceState
from affectstream.realtime.sources.video import CameraSource, PushVideoSource, VideoFileSource


def test_stepped_replay_pushes_every_frame_on_the_media_clock(megamind):
    ring = RingBuffer(4)
    src = VideoFileSource(megamind, ring, realtime=False)
    src.begin(start_ns=1_000)
    assert src.read_until(1_000) == 1  # frame 0 at media time 0
    n = src.read_until(1_000 + 1_000_000_000)  # first second
    assert n == int(src.fps)  # frames 1..23 at 23.976 fps
    total = 1 + n
    while not src.done:
        total += src.read_until(10**12)
    assert total == 270 == src.frame_count
    last = ring.newest()
    assert last.item.index == 269
    assert last.t_ns == 1_000 + int(269 * 1e9 / src.fps)
    assert last.item.image.shape == (528, 720, 3)
    assert src.status.state is SourceState.FINISHED


def test_realtime_replay_runs_on_its_thread_and_stops(megamind):
    ring = RingBuffer(4)
    with VideoFileSource(megamind, ring, realtime=True) as src:
        time.sleep(0.5)
        assert src.status.state is SourceState.RUNNING
        newest = ring.newest()
        assert newest is not None and ring.written >= 1
        # paced, not flooded: no frame is pushed before its time on the media clock
        assert newest.t_ns >= src.start_ns + newest.item.index * 1e9 / src.fps - 1
    assert src.status.state is SourceState.STOPPED


def test_missing_and_corrupt_video_files(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "none.avi", RingBuffer(2)).open()
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF" + bytes(1000))
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(bad, RingBuffer(2)).open()


def test_unreadable_camera_index_is_a_clear_error():
    with pytest.raises(SourceError, match="camera 57 cannot be opened"):
        CameraSource(RingBuffer(2), 57).open()


class FlakyCapture:
    """Stands in for a webcam (none on CI machines) that yields `frames` frames then dies."""

    def __init__(self, frames):
        self.frames = frames

    def read(self):
        if self.frames == 0:
            return False, None
        self.frames -= 1
        time.sleep(0.005)
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


def test_camera_that_disappears_is_retried_with_backoff():
    ring = RingBuffer(4)
    cfg = VideoConfig(reconnect_initial_s=0.02, reconnect_max_s=0.05)
    cam = CameraSource(ring, 0, cfg)
    opens = iter([FlakyCapture(5), None, None, FlakyCapture(1000)])
    cam._open_capture = lambda: next(opens)
    states = []
    with cam:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and cam.reconnects == 0:
            states.append(cam.status.state)
            time.sleep(0.002)
        time.sleep(0.05)
        assert cam.status.state is SourceState.RUNNING
    assert SourceState.RECONNECTING in states
    assert cam.reconnects == 1
    assert ring.written > 5  # frames kept coming after the reconnect


def test_push_source_validates_frames():
    ring = RingBuffer(2)
    src = PushVideoSource(ring).start()
    src.push(np.zeros((10, 12, 3), np.uint8), t_ns=5)
    src.push(np.zeros((10, 12), np.uint8))
    assert ring.written == 2 and ring.latest(2)[0].t_ns == 5
    assert ring.newest().item.image.shape == (10, 12, 3)
    with pytest.raises(ValueError, match="uint8"):
        src.push(np.zeros((10, 12, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        src.push(np.zeros((10, 12, 4), np.uint8))


def test_looped_replay_starts_again_with_frame_times_running_on(megamind):
    ring = RingBuffer(4)
    src = VideoFileSource(megamind, ring, realtime=False, loop=True)
    src.begin(start_ns=0)
    total = src.read_until(int(25e9))  # 25 s of media time: the 11.26 s file twice, and more
    assert src.loops == 2 and not src.done
    assert total == int(25 * src.fps) + 1
    last = ring.newest()
    assert last.item.index == total - 1  # indices and times go on across the loop
    assert last.t_ns == int((total - 1) * 1e9 / src.fps)
    assert last.item.image.shape == (528, 720, 3)
