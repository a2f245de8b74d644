"""Audio of a file replayed into the `SampleRing`: WAV, FLAC, or any container PyAV decodes.

The audio track of a video works too (`--media talk.mp4`). Samples are decoded with PyAV,
mixed to mono, resampled to the ring's rate when needed (soxr, stateful) and written in
blocks of `audio.block_ms`. Timing follows the sample count from the first decoded sample;
container timestamps are not used, so a file with gaps in its packets plays gap-free.
A packet that fails to decode (a damaged frame) is skipped and counted in `decode_errors`.

Two ways to replay (see `VideoFileSource` for the same pair):

- real time (`realtime=True`, `start()`): a thread writes block k when its last sample
  "has been captured", `t0 + (k+1) * block` after the start, stamped with the monotonic time
  of its first sample `t0 + k * block`.
- stepped (`realtime=False`, `begin(start_ns)` then `read_until(t_ns)`): no thread; the driver
  asks for everything up to media time t_ns and block k is stamped `start_ns + k * block` on
  the media clock. A fast offline driver interleaves it with scheduler ticks deterministically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from affectstream.core.audio import StreamResampler, to_mono_float32
from affectstream.core.clock import now_ns
from affectstream.core.config import AudioConfig
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import Source, SourceError, SourceState

log = logging.getLogger(__name__)


def frame_to_mono(frame) -> np.ndarray:
    """Mono float32 samples of one PyAV AudioFrame, whatever its sample format and layout."""
    a = frame.to_ndarray()
    channels = frame.layout.nb_channels
    # planar: (channels, samples); packed: (1, samples * channels), interleaved
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    return to_mono_float32(a)


class AudioFileSource(Source):
    """Replays the audio of `path` into `ring` at the ring's rate.

    `realtime=True`: `start()` runs a thread paced by the monotonic clock. `realtime=False`:
    call `begin()` (or `start()`, which does the same without a thread), then `read_until`.
    `start_ns` is media time 0 on the stream clock in stepped mode (default: now at `begin`).
    After `open()`: `file_rate`, `file_channels`, `codec` and `duration_s` (from the container,
    0 when unknown) describe the file.
    """

    name = "audio-file"

    def __init__(
        self,
        path: str | Path,
        ring: SampleRing,
        config: AudioConfig | None = None,
        realtime: bool = True,
        start_ns: int | None = None,
        loop: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.ring = ring
        self.config = config or AudioConfig()
        self.realtime = realtime
        self.loop = loop  # start again at the end, sample times running on
        self.loops = 0
        self.start_ns = start_ns
        self.block = max(1, int(round(ring.sample_rate * self.config.block_ms / 1000)))
        self.file_rate = 0
        self.file_channels = 0
        self.codec = ""
        self.duration_s = 0.0
        self.decode_errors = 0
        self.samples_written = 0  # samples (at the ring's rate) written so far
        self.overflows = 0  # a file never overflows; counters the scheduler reads
        self.dropped_samples = 0
        self._container = None
        self._chunks: Iterator[np.ndarray] | None = None
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._eof = False

    # -- opening and decoding ---------------------------------------------------------
    def open(self) -> None:
        """Open the file and decode its first audio, so a bad file fails in the caller."""
        if self._container is not None:
            return
        if not self.path.is_file():
            raise SourceError(f"audio file not found: {self.path}")
        try:
            import av
        except ImportError:  # pragma: no cover - av is a dependency
            raise SourceError("decoding audio files needs PyAV: pip install av") from None
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise SourceError(f"cannot decode audio in {self.path}: {e}") from None
        if not container.streams.audio:
            container.close()
            raise SourceError(f"no audio track in {self.path}")
        stream = container.streams.audio[0]
        self._container = container
        self.codec = stream.codec_context.name
        self.file_rate = int(stream.rate or 0)
        self.file_channels = int(stream.channels or 0)
        if container.duration:
            self.duration_s = container.duration / 1e6  # av.time_base is microseconds
        self._chunks = self._decode(container, stream)
        try:
            first = next(self._chunks, None)
        except SourceError:
            self.close()
            raise
        if first is None:
            self.close()
            raise SourceError(
                f"cannot decode audio in {self.path}: no audio frame could be decoded"
            )
        self._add(first)

    def _decode(self, container, stream) -> Iterator[np.ndarray]:
        """Mono float32 chunks at the ring's rate; damaged packets are skipped and counted."""
        import av

        resampler: StreamResampler | None = None
        decoded_any = False
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # a broken container: end here, say so
                if not decoded_any:
                    raise SourceError(f"cannot decode audio in {self.path}: {e}") from None
                log.warning("%s: demuxing stopped early: %s", self.path, e)
                self.decode_errors += 1
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                self.decode_errors += 1
                log.debug("%s: skipped a packet that does not decode: %s", self.path, e)
                continue
            for frame in frames:
                x = frame_to_mono(frame)
                if resampler is None or resampler.in_rate != frame.sample_rate:
                    if resampler is not None:  # the rate changed mid-file
                        yield resampler.flush()
                    resampler = StreamResampler(frame.sample_rate, self.ring.sample_rate)
                decoded_any = True
                yield resampler.process(x)
        if resampler is not None:
            yield resampler.flush()

    def _add(self, x: np.ndarray) -> None:
        if len(x):
            self._pending.append(x)
            self._n_pending += len(x)

    def _fill(self) -> int:
        """Decode until a whole block is pending (or the file ends); the next block's size."""
        while self._n_pending < self.block and not self._eof:
            chunk = next(self._chunks, None) if self._chunks is not None else None
            if chunk is None and self.loop and self._container is not None:
                self.close()
                self.open()  # decodes the first audio again into the pending blocks
                self.loops += 1
                continue
            if chunk is None:
                self._eof = True
            else:
                self._add(chunk)
        return min(self.block, self._n_pending)

    def _write_block(self, n: int) -> None:
        joined = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        block, rest = joined[:n], joined[n:]
        self._pending = [rest] if len(rest) else []
        self._n_pending = len(rest)
        self.ring.write(block, self._t_of(self.samples_written))
        self.samples_written += n

    def _t_of(self, index: int) -> int:
        return self.start_ns + int(round(index * 1e9 / self.ring.sample_rate))

    # -- stepped replay ---------------------------------------------------------------
    def begin(self, start_ns: int | None = None) -> AudioFileSource:
        """Start stepped replay (no thread): media time 0 is `start_ns` on the stream clock."""
        if self.realtime:
            raise RuntimeError("begin() is for stepped replay; construct with realtime=False")
        self.open()
        if start_ns is not None:
            self.start_ns = start_ns
        elif self.start_ns is None:
            self.start_ns = now_ns()
        self._set_status(SourceState.RUNNING)
        return self

    def read_until(self, t_ns: int) -> int:
        """Decode and write every block whose last sample lies at or before media time t_ns.

        Returns the samples written. At the end of the file the status becomes FINISHED.
        """
        if self.realtime:
            raise RuntimeError("read_until() is for stepped replay; construct with realtime=False")
        if self.status.state is not SourceState.RUNNING:
            return 0
        before = self.samples_written
        while True:
            n = self._fill()
            if n == 0:
                self._set_status(SourceState.FINISHED)
                self.close()
                break
            if self._t_of(self.samples_written + n) > t_ns:
                break
            self._write_block(n)
        return self.samples_written - before

    # -- real-time replay -------------------------------------------------------------
    def start(self) -> AudioFileSource:
        if not self.realtime:
            return self.begin()
        return super().start()

    def stop(self, timeout: float = 2.0) -> bool:
        if self.realtime:
            return super().stop(timeout)
        if self.status.state is SourceState.RUNNING:
            self._set_status(SourceState.STOPPED)
        self.close()
        return True

    def _run(self) -> None:
        self.start_ns = now_ns()
        while not self._stop_event.is_set():
            n = self._fill()
            if n == 0:
                return
            wait = (self._t_of(self.samples_written + n) - now_ns()) / 1e9
            if wait > 0 and self._sleep(wait):
                return
            self._write_block(n)

    def close(self) -> None:
        container, self._container = self._container, None
        self._chunks = None
        if container is not None:
            container.close()
