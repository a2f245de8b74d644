"""`Recognizer`: the embedding API for hosts (agents, avatars, robots) in ten lines of Python.

    from affectstream import Recognizer

    with Recognizer(push=True) as rec:            # or camera=True, mic=True, media="clip.mp4"
        rec.push_video(frame_bgr, t=time.monotonic())
        rec.push_audio(pcm_int16, 48000, t=time.monotonic())
        for est in rec: ...                        # or `async for`, rec.on_estimate(fn), rec.latest()

It wraps one `AffectStream`: the stream is built (devices and files opened, named weights
checked) in the constructor, so a bad config, no input or a missing file raises there, in the
caller; the models open in the background and each modality joins when its model is ready
(status `loading` until then).
`__enter__` (or `start()`) runs the stream on a background thread, which iterates
`AffectStream.estimates()` and hands each estimate to the three ways of receiving it:

- a bounded queue read by `for est in rec` and `async for est in rec`: the newest
  `queue_size` estimates are kept, older ones are dropped and counted (`rec.dropped`);
- callbacks registered with `on_estimate(fn)`, called on the recognizer's thread (an exception
  in one is logged and counted in `rec.callback_errors`, never fatal);
- `latest()`, the newest estimate or None, without waiting.

Host times. `push_video(..., t=)`, `push_audio(..., t=)` and `push_transcript(text, start,
end)` take capture times in seconds on the host's own clock (`time.monotonic()`, a media
clock, anything that runs at real pace). The first host time the recognizer sees is aligned
with the stream clock (`core.clock.now_ns`) at that moment (precisely: the newest instant of
that push, a frame's `t`, the end of an audio piece, the `end` of pushed words, is taken as
"now"), and every later one keeps its offset from it, so the gaps and lags the host reports
are preserved (a frame stamped 0.4 s before the audio beside it is 0.4 s older in `age_ms`). One mapping serves video, audio and words. Per input, a
time more than `time_tolerance_s` before the previous one is a ValueError. Without `t` the
stream stamps the push itself (now; audio: now minus its duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.clock import now_ns
from affectstream.core.config import Config, load_config
from affectstream.core.messages import Estimate
from affectstream.realtime.stream import AffectStream, Inputs

log = logging.getLogger(__name__)

_END = object()  # the queue's "no more estimates" marker
MAX_AUDIO_CHANNELS = 8
FLOAT_PEAK_LIMIT = 2.0  # float PCM is -1..1; a louder peak is int16 values passed as float


class HostClock:
    """Host times (seconds, any monotonic clock) to the stream clock (ns).

    The first push's newest instant (`t + span_s`: a frame's time, the end of an audio piece
    or of pushed words) is aligned with `now_ns()` then; every later time keeps its offset from
    it. Per input kind, a time more than `tolerance_s` before the previous one raises.
    """

    def __init__(self, tolerance_s: float = 0.05, clock: Callable[[], int] = now_ns) -> None:
        self.tolerance_s = float(tolerance_s)
        self._clock = clock
        self._offset_ns: int | None = None
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def offset_ns(self) -> int | None:
        """Stream time minus host time, fixed by the first host time (None before it)."""
        return self._offset_ns

    def to_stream_ns(self, t: float, kind: str = "push", span_s: float = 0.0) -> int:
        """The stream time of host time `t`, after checking it (ValueError naming `kind`).
        `span_s`: how long the push lasts from `t` (audio, words); the first push aligns its
        end with now."""
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
            raise ValueError(f"{kind}: t must be a finite number of seconds, got {t!r}")
        t = float(t)
        with self._lock:
            last = self._last.get(kind)
            if last is not None and t < last - self.tolerance_s:
                raise ValueError(
                    f"{kind}: t={t:.3f} s is {last - t:.3f} s before the previous one "
                    f"(t={last:.3f} s); host times must not go backwards "
                    f"(tolerance {self.tolerance_s:g} s)"
                )
            self._last[kind] = t if last is None else max(last, t)
            if self._offset_ns is None:
                self._offset_ns = self._clock() - round((t + span_s) * 1e9)
            return round(t * 1e9) + self._offset_ns


class _EstimateQueue:
    """Bounded, drop-oldest hand-over from the recognizer's thread to sync and async readers."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"queue_size must be positive, got {size}")
        self._items: deque[Estimate] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._closed = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.dropped = 0

    def put(self, item: Estimate) -> None:
        with self._cond:
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            self._wake()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._wake()

    def get(self) -> Estimate | object:
        """The oldest estimate, waiting for one; `_END` once closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait(0.5)  # a timeout keeps Ctrl-C responsive
            return self._items.popleft() if self._items else _END

    def poll(self, loop: asyncio.AbstractEventLoop) -> Estimate | object | asyncio.Future:
        """The oldest estimate, `_END`, or a future of `loop` resolved at the next put/close."""
        with self._cond:
            if self._items:
                return self._items.popleft()
            if self._closed:
                return _END
            fut = loop.create_future()
            self._waiters.append((loop, fut))
            return fut

    def discard(self, fut: asyncio.Future) -> None:
        with self._cond:
            self._waiters = [(lp, f) for lp, f in self._waiters if f is not fut]

    def _wake(self) -> None:  # holds the lock
        for loop, fut in self._waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its reader is gone
                loop.call_soon_threadsafe(_resolve, fut)
        self._waiters.clear()


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _open_config(config: Config | str | Path | None) -> Config:
    if config is None:
        return load_config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise TypeError(f"config must be a Config, a YAML path or None, got {type(config).__name__}")


def _device(value, what: str):
    """The CLI's rule: True is the default device, an int or a name picks one, None/False none."""
    if value is None or value is False:
        return None, False
    if value is True:
        return None, True
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) or (what == "mic" and isinstance(value, str)):
        return value, True
    kinds = "True, an index or a name" if what == "mic" else "True or an index"
    raise ValueError(f"{what}= takes {kinds}, got {value!r}")


class Recognizer:
    """Emotion estimates from a camera, microphone, media file, or what the host pushes.

    `config`: a `Config`, a YAML path, or None for the defaults. Inputs (at most one video and
    one audio): `camera=` and `mic=` (True for the default device, or an index; `mic` also
    takes a name), `media=` (a file whose video and audio are both used; `realtime=False`
    replays it as fast as possible and iteration ends at its end), `push=True` (the host
    pushes frames and audio with `push_video` / `push_audio`, for whichever of video and
    audio no device or file gives). `push_transcript=True`: the host pushes the words of its
    own speech-to-text with `push_transcript`, and ours does not run (`transcribe=False`
    turns words off altogether). `predictors`: open models to share with other streams.
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        camera: bool | int | None = None,
        mic: bool | int | str | None = None,
        media: str | Path | None = None,
        push: bool = False,
        push_transcript: bool = False,
        transcribe: bool = True,
        realtime: bool = True,
        queue_size: int = 256,
        time_tolerance_s: float = 0.05,
        predictors: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = _open_config(config)
        camera_index, use_camera = _device(camera, "camera")
        mic_device, use_mic = _device(mic, "mic")
        has_media = media is not None
        push_video = bool(push) and not use_camera and not has_media
        push_audio = bool(push) and not use_mic and not has_media
        if push and not (push_video or push_audio):
            raise ValueError("push=True leaves nothing to push: camera/mic or media give both")
        self._queue = _EstimateQueue(queue_size)  # checks queue_size before models load
        self.clock = HostClock(time_tolerance_s)
        self.inputs = Inputs(
            camera=(camera_index or 0) if use_camera else None,
            media=media,
            mic=mic_device,
            use_mic=use_mic,
            push_video=push_video,
            push_audio=push_audio,
            push_transcript=bool(push_transcript),
            transcribe=bool(transcribe),
            realtime=bool(realtime),
        )
        self.stream = AffectStream(cfg, self.inputs, predictors=predictors)
        self._callbacks: list[Callable[[Estimate], Any]] = []
        self._latest: Estimate | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()  # the first estimate came, or the thread ended
        self._closed = False
        self._lock = threading.Lock()
        self.error: BaseException | None = None  # what ended the stream, if it failed
        self.count = 0  # estimates received from the stream
        self.callback_errors = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Recognizer:
        """Run the stream on a background thread; returns once it ticks (idempotent)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this Recognizer is closed; build a new one")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="affectstream-recognizer", daemon=True
                )
                self._thread.start()
        if not self._first.wait(timeout):
            log.warning("recognizer: no estimate within %.0f s of start", timeout)
        if self.error is not None and self.count == 0:
            raise RuntimeError(f"the stream failed to start: {self.error}") from self.error
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the stream and join its thread (idempotent; safe from a callback)."""
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread
        if first:
            self.stream.stop()
        if thread is None:
            if first:
                self.stream.close()  # never started: release devices and stage threads
                self._queue.close()
            return
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("recognizer thread did not end within %.1f s", timeout)

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive() and not self._closed

    @property
    def dropped(self) -> int:
        """Estimates dropped from the iteration queue because nobody read them in time."""
        return self._queue.dropped

    def __enter__(self) -> Recognizer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        gen = self.stream.estimates()
        try:
            for est in gen:
                self._latest = est
                self.count += 1
                self._first.set()
                self._queue.put(est)
                for fn in list(self._callbacks):
                    try:
                        fn(est)
                    except Exception:
                        self.callback_errors += 1
                        log.exception("on_estimate callback %r raised", fn)
        except Exception as e:
            self.error = e
            log.exception("the recognizer's stream failed")
        finally:
            gen.close()  # the stream's own cleanup (sources stopped, stage threads ended)
            self._queue.close()
            self._first.set()

    # -- estimates --------------------------------------------------------------------
    def on_estimate(self, fn: Callable[[Estimate], Any]) -> Callable[[Estimate], Any]:
        """Call `fn(estimate)` on the recognizer's thread for each estimate; keep it short
        (the next tick waits for it). Returns `fn`, so it works as a decorator."""
        if not callable(fn):
            raise TypeError(f"on_estimate takes a callable, got {type(fn).__name__}")
        self._callbacks.append(fn)
        return fn

    def set_primary_face(self, face_id: int | None) -> None:
        """Make the face with this id (one of `est.faces`) the one the fused estimate and the
        relevance follow while it is in view; None gives the choice back (the largest face,
        switched only after another stays larger for `face.primary_switch_s`). A face id
        that is not in view is kept and applies if it comes back within the tracker's
        bridge; ids are never reused. Safe from any thread."""
        self.stream.set_primary_face(face_id)

    def latest(self) -> Estimate | None:
        """The newest estimate, or None before the first; never waits."""
        return self._latest

    def __iter__(self) -> Iterator[Estimate]:
        """Estimates in order as they come (blocking); ends when the stream ends or close()."""
        if self._thread is None and not self._closed:
            self.start()
        while (est := self._queue.get()) is not _END:
            yield est
        self._raise_if_failed()

    def __aiter__(self) -> AsyncIterator[Estimate]:
        """`async for est in rec`: the same estimates, awaited without blocking the loop."""
        if self._thread is None and not self._closed:
            self.start()
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Estimate]:
        loop = asyncio.get_running_loop()
        while True:
            got = self._queue.poll(loop)
            if isinstance(got, asyncio.Future):
                try:
                    await got
                finally:
                    self._queue.discard(got)
                continue
            if got is _END:
                break
            yield got
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the recognizer's stream failed: {self.error}") from self.error

    # -- host pushes ------------------------------------------------------------------
    def _check_running(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{what}: this Recognizer is closed")
        if self._thread is None:
            raise RuntimeError(
                f"{what}: not started; use `with Recognizer(...) as rec:` or rec.start()"
            )

    def _stream_ns(self, t: float | None, kind: str, span_s: float = 0.0) -> int | None:
        return None if t is None else self.clock.to_stream_ns(t, kind, span_s)

    def push_video(self, frame_bgr: np.ndarray, t: float | None = None) -> None:
        """One BGR uint8 frame (H, W, 3), or gray (H, W), captured at host time `t` (s)."""
        if not self.inputs.push_video:
            raise RuntimeError("push_video needs Recognizer(push=True) without camera=/media=")
        if not isinstance(frame_bgr, np.ndarray):
            raise ValueError(
                f"push_video: frame must be a numpy array, got {type(frame_bgr).__name__}"
            )
        if frame_bgr.dtype != np.uint8:
            raise ValueError(f"push_video: frame must be uint8 BGR, got dtype {frame_bgr.dtype}")
        shape = frame_bgr.shape
        if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)) or 0 in shape:
            raise ValueError(f"push_video: frame must be (H, W, 3) BGR or (H, W), got {shape}")
        self._check_running("push_video")
        self.stream.push_frame(frame_bgr, self._stream_ns(t, "push_video"))

    def push_audio(self, pcm: np.ndarray, sample_rate: int, t: float | None = None) -> None:
        """PCM captured from host time `t` (s, its first sample): int16 or float32 (-1..1),
        1-D or (frames, channels); any rate (resampled to the model rate)."""
        if not self.inputs.push_audio:
            raise RuntimeError("push_audio needs Recognizer(push=True) without mic=/media=")
        if not isinstance(pcm, np.ndarray):
            raise ValueError(f"push_audio: pcm must be a numpy array, got {type(pcm).__name__}")
        if pcm.dtype not in (np.int16, np.float32, np.float64):
            raise ValueError(f"push_audio: pcm must be int16 or float32, got dtype {pcm.dtype}")
        channels_ok = pcm.ndim == 1 or (pcm.ndim == 2 and 1 <= pcm.shape[1] <= MAX_AUDIO_CHANNELS)
        if not channels_ok:
            hint = " (channels first? pass (frames, channels))" if pcm.ndim == 2 else ""
            raise ValueError(
                f"push_audio: pcm must be 1-D or (frames, channels) with at most "
                f"{MAX_AUDIO_CHANNELS} channels, got shape {pcm.shape}{hint}"
            )
        integral = isinstance(sample_rate, numbers.Integral) or (
            isinstance(sample_rate, float) and sample_rate.is_integer()
        )
        if isinstance(sample_rate, bool) or not integral:
            raise ValueError(f"push_audio: sample_rate must be an int (Hz), got {sample_rate!r}")
        if sample_rate <= 0:
            raise ValueError(f"push_audio: sample_rate must be positive, got {sample_rate}")
        if pcm.dtype == np.int16:
            x = pcm.astype(np.float32) / np.float32(32768.0)
        else:
            x = pcm.astype(np.float32, copy=False)
            if x.size and not np.all(np.isfinite(x)):
                raise ValueError("push_audio: pcm has NaN or infinite samples")
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            if peak > FLOAT_PEAK_LIMIT:
                raise ValueError(
                    f"push_audio: float PCM must be in -1..1, got a peak of {peak:g} "
                    "(int16 values as float? pass int16, or divide by 32768)"
                )
        self._check_running("push_audio")
        if x.size == 0:
            return
        duration_s = len(x) / int(sample_rate)
        self.stream.push_audio(x, int(sample_rate), self._stream_ns(t, "push_audio", duration_s))

    def push_transcript(self, text: str, start: float, end: float, interim: bool = False) -> None:
        """Words the host's own speech-to-text committed, spoken from host time `start` to
        `end` (s). Needs `Recognizer(push_transcript=True)`; the text modality reads them.
        `interim`: its hypothesis so far, which the next push replaces (a final one commits)."""
        if not self.inputs.push_transcript:
            raise RuntimeError("push_transcript needs Recognizer(push_transcript=True)")
        if not isinstance(text, str):
            raise ValueError(f"push_transcript: text must be a str, got {type(text).__name__}")
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"push_transcript: {name} must be seconds, got {v!r}")
        if end < start:
            raise ValueError(f"push_transcript: end ({end:.3f}) is before start ({start:.3f})")
        self._check_running("push_transcript")
        start_ns = self.clock.to_stream_ns(start, "push_transcript", float(end) - float(start))
        end_ns = start_ns + round((float(end) - float(start)) * 1e9)
        self.stream.push_transcript(text, start_ns, end_ns, interim)


__all__ = ["HostClock", "Recognizer"]
