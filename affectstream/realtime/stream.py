"""`AffectStream`: sources, ring buffers, stages and the scheduler wired together.

This is the library entry point for hosts (agents, the CLI, the server): build one from a
config and inputs, iterate `estimates()`, stop it. Missing inputs are ordinary states.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from affectstream.config import Config
from affectstream.realtime.clock import now_ns
from affectstream.realtime.messages import Estimate, VideoFrame
from affectstream.realtime.ringbuffer import RingBuffer
from affectstream.realtime.scheduler import Pipeline, run_realtime, run_stepped
from affectstream.realtime.sources.base import Source, SourceError
from affectstream.realtime.sources.video import CameraSource, PushVideoSource, VideoFileSource

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What to listen to and watch. At most one video input; `realtime` paces file replay."""

    camera: int | None = None
    video: str | Path | None = None
    push_video: bool = False
    realtime: bool = True


class AffectStream:
    """Build with `AffectStream(config, Inputs(...))`, then `for est in s.estimates(): ...`."""

    def __init__(self, config: Config, inputs: Inputs) -> None:
        self.config = config
        self.inputs = inputs
        self.sources: list[Source] = []
        self.video_ring: RingBuffer[VideoFrame] | None = None
        self.video_source: Source | None = None
        self._stop = False
        self.stages = []
        self._build()

    # -- construction -----------------------------------------------------------------
    def _build(self) -> None:
        cfg, inp = self.config, self.inputs
        n_video = sum(x is not None and x is not False for x in (inp.camera, inp.video, inp.push_video or None))
        if n_video > 1:
            raise ValueError("choose one video input: camera, video file or pushed frames")
        if n_video:
            self.video_ring = RingBuffer(cfg.video.ring_frames, "video")
            if inp.camera is not None:
                self.video_source = CameraSource(self.video_ring, inp.camera, cfg.video)
            elif inp.video is not None:
                self.video_source = VideoFileSource(inp.video, self.video_ring, realtime=inp.realtime)
                self.video_source.open()  # a missing or corrupt file fails here, not later
            else:
                self.video_source = PushVideoSource(self.video_ring)
            self.sources.append(self.video_source)
            if cfg.face.enabled:
                self.stages.append(self._face_stage())
        if not self.sources:
            raise ValueError("no input: give a camera, a video file, or push frames")
        self.pipeline = Pipeline(self.stages, cfg.scheduler)

    def _face_stage(self):
        from affectstream.models.face.detect import FaceTracker
        from affectstream.models.face.encoder import FaceEncoder
        from affectstream.realtime.face_stage import FaceStage

        weights = self.config.face.weights or None
        return FaceStage(self.video_ring, FaceTracker(self.config.face), FaceEncoder.load(weights))

    # -- host-facing ------------------------------------------------------------------
    @property
    def stepped(self) -> bool:
        return not self.inputs.realtime and isinstance(self.video_source, VideoFileSource)

    def push_frame(self, image, t_ns: int | None = None) -> None:
        if not isinstance(self.video_source, PushVideoSource):
            raise RuntimeError("push_frame needs Inputs(push_video=True)")
        self.video_source.push(image, t_ns)

    def _done(self) -> bool:
        files = [s for s in self.sources if isinstance(s, VideoFileSource)]
        return bool(files) and all(s.done for s in files)

    def stop(self) -> None:
        self._stop = True

    def estimates(self) -> Iterator[Estimate]:
        """Start the sources, yield one estimate per tick until the inputs end or stop()."""
        try:
            if self.stepped:
                start = now_ns()
                self.video_source.begin(start)
                yield from run_stepped(
                    self.pipeline,
                    self.video_source.read_until,
                    self._done,
                    start,
                    stop=lambda: self._stop,
                )
            else:
                for s in self.sources:
                    s.start()
                yield from run_realtime(self.pipeline, self._done, stop=lambda: self._stop)
        finally:
            for s in self.sources:
                s.stop()

    def __enter__(self) -> AffectStream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for s in self.sources:
            s.stop()


__all__ = ["AffectStream", "Inputs", "SourceError"]
