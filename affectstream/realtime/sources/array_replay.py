"""Audio for the transcriber's commands and benchmark: load a file, replay an array in time.

`load_audio` reads WAV/FLAC (soundfile), headerless `.raw` (16 kHz s16le mono, the CMU test
format) or anything PyAV decodes, as 16 kHz mono float32. `ArrayReplay` writes an array into a
`SampleRing` block by block at real time (a thread, like a microphone), stamping each block
with the stream-clock time of its first sample; `write_all` does it at once on a media clock.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.clock import now_ns
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import Source, SourceError

log = logging.getLogger(__name__)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == MODEL_SAMPLE_RATE:
        return x
    from affectstream.core.audio import StreamResampler

    r = StreamResampler(rate, MODEL_SAMPLE_RATE)
    return np.concatenate([r.process(x), r.flush()]).astype(np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """16 kHz mono float32 samples of `path`; raises SourceError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"audio file not found: {path}")
    if path.suffix.lower() in (".raw", ".pcm"):
        data = np.fromfile(path, dtype="<i2")
        return (data.astype(np.float32) / 32768.0).reshape(-1)
    try:
        import soundfile as sf

        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return _resample(x.mean(axis=1).astype(np.float32), int(rate))
    except (ImportError, RuntimeError):  # soundfile.LibsndfileError is a RuntimeError
        pass
    return _decode_av(path)


def _decode_av(path: Path) -> np.ndarray:
    """Any container PyAV reads (the audio track of a video too)."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise SourceError("decoding this file needs PyAV: pip install av") from None
    from affectstream.core.audio import StreamResampler
    from affectstream.realtime.sources.audio_file import frame_to_mono

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise SourceError(f"no audio track in {path}")
            stream = container.streams.audio[0]
            resampler = None
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:  # a damaged packet: skip it, as the file source does
                    log.debug("%s: skipped a packet that does not decode", path)
                    continue
                for frame in frames:
                    if resampler is None:
                        resampler = StreamResampler(frame.sample_rate, MODEL_SAMPLE_RATE)
                    chunks.append(resampler.process(frame_to_mono(frame)))
            if resampler is not None:
                chunks.append(resampler.flush())
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise SourceError(f"cannot decode audio in {path}: {e}") from None
    if not chunks:
        raise SourceError(f"cannot decode audio in {path}: no audio frame")
    return np.concatenate(chunks).astype(np.float32)


def join_with_pauses(parts: list[np.ndarray], pause_s: float) -> tuple[np.ndarray, list[int]]:
    """Concatenate clips with `pause_s` of silence after each; returns audio and clip starts."""
    gap = np.zeros(int(round(pause_s * MODEL_SAMPLE_RATE)), dtype=np.float32)
    starts, out, pos = [], [], 0
    for p in parts:
        starts.append(pos)
        out += [p.astype(np.float32), gap]
        pos += len(p) + len(gap)
    audio = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    return audio, starts


class ArrayReplay(Source):
    """Writes `audio` into `ring` in blocks of `block_ms`, each when it has been "captured".

    Block k is written at `t0 + (k+1) * block` and stamped `t0 + k * block` (its first
    sample), where t0 is the start time; `speed` > 1 shrinks the block time (faster than real
    time, as a CPU that cannot keep up would see it).
    """

    name = "array-replay"

    def __init__(
        self, audio: np.ndarray, ring: SampleRing, block_ms: float = 20.0, speed: float = 1.0
    ) -> None:
        super().__init__()
        if ring.sample_rate != MODEL_SAMPLE_RATE:
            raise ValueError(
                f"replay expects a {MODEL_SAMPLE_RATE} Hz ring, got {ring.sample_rate}"
            )
        self.audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.ring = ring
        self.block = max(1, int(round(MODEL_SAMPLE_RATE * block_ms / 1000)))
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed  # > 1 replays faster than real time (tests of the backlog bound)
        self.t0_ns = 0
        self.written = 0
        self.late_ms_max = 0.0  # worst lateness of a block write (a busy CPU shows here)

    def _t_of(self, index: int) -> int:
        return self.t0_ns + int(round(index * 1e9 / (MODEL_SAMPLE_RATE * self.speed)))

    def start(self) -> ArrayReplay:
        self.t0_ns = now_ns()
        return super().start()  # type: ignore[return-value]

    def _run(self) -> None:
        n = len(self.audio)
        while self.written < n and not self._stop_event.is_set():
            k = min(self.block, n - self.written)
            due = self._t_of(self.written + k)
            wait = (due - now_ns()) / 1e9
            if wait > 0 and self._sleep(wait):
                return
            self.late_ms_max = max(self.late_ms_max, (now_ns() - due) / 1e6)
            self.ring.write(self.audio[self.written : self.written + k], self._t_of(self.written))
            self.written += k

    def write_all(self, t0_ns: int = 0) -> None:
        """No pacing: write everything now, stamped on a media clock starting at t0_ns."""
        self.t0_ns = t0_ns
        n = len(self.audio)
        while self.written < n:
            k = min(self.block, n - self.written)
            self.ring.write(self.audio[self.written : self.written + k], self._t_of(self.written))
            self.written += k
