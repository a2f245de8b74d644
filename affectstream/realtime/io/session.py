"""Push-mode sessions: every connection gets its own stream, and all of them share the models.

A `Session` is one connection's `AffectStream` (its own sources, ring buffers, stages,
transcriber and fusion state), ticking on its own thread, so what one client pushes is never
seen by another. The `SessionFactory` opens the models once, when the server starts, and
hands the same predictors to every session's stream (as `bench pipeline --streams` does), so
a session costs buffers and threads, not another copy of the weights.

Capture times that clients send (the timed binary kinds) are on the client's clock; each
session maps them to the stream clock with its own `ClientClock`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from affectstream.core import allocator
from affectstream.core.config import Config, ConfigError, check_config
from affectstream.core.labels import MODALITIES
from affectstream.realtime.io.protocol import (
    DEFAULT_PROTOCOL,
    KIND_VIDEO,
    Budget,
    Limits,
    MessageError,
    check_image,
    close_reason,
    parse_audio,
)
from affectstream.realtime.stream import AffectStream, Inputs, weakly

log = logging.getLogger(__name__)


@dataclass
class SessionOptions:
    """What `session.update` may change: the tick rate and which modalities run."""

    rate_hz: float
    modalities: dict[str, bool] = field(default_factory=dict)

    def updated(self, msg: dict) -> SessionOptions:
        return SessionOptions(
            float(msg.get("rate_hz", self.rate_hz)),
            {**self.modalities, **msg.get("modalities", {})},
        )


class ClientClock:
    """A client's capture times (seconds, its own clock) to the stream clock (ns).

    Unlike an in-process host (`Recognizer`'s `HostClock`, which aligns the first push with
    now), a client's data comes over a network and through a busy server, so any one push can
    arrive late. The offset is the least (arrival - capture) seen so far: a message that
    arrives late never moves the mapping, one that arrives sooner than any before lowers it,
    and no time is mapped after its own arrival (a frame "from the future" would never be
    used). Gaps and lags between the client's times are kept. Per kind, a time more than
    `tolerance_s` before the previous one is a ValueError.
    """

    def __init__(self, tolerance_s: float = 0.05) -> None:
        self.tolerance_s = tolerance_s
        self.offset_ns: int | None = None
        self._last: dict[str, float] = {}

    def to_stream_ns(self, t: float, kind: str, span_s: float, arrived_ns: int) -> int:
        """Stream time of capture time `t` of a push lasting `span_s` that arrived then."""
        last = self._last.get(kind)
        if last is not None and t < last - self.tolerance_s:
            raise ValueError(
                f"{kind}: t={t:.3f} s is {last - t:.3f} s before the previous one "
                f"(t={last:.3f} s); capture times must not go backwards"
            )
        self._last[kind] = t if last is None else max(last, t)
        offset = arrived_ns - round((t + span_s) * 1e9)
        if self.offset_ns is None or offset < self.offset_ns:
            self.offset_ns = offset
        return round(t * 1e9) + self.offset_ns


class SessionFactory:
    """Builds each push session's stream from one `config`, sharing one set of predictors.

    `video`/`audio`: whether sessions take pushed frames and audio; `transcribe`: whether our
    speech-to-text gives the words of the text modality. `open()` builds one stream, waits for
    its models and closes it, so every model is loaded (and a bad config or weight file fails)
    before the server listens; sessions then only read the shared predictors. `predictors`:
    models opened elsewhere (`serving.remote`), used as they are.

    A server outlives many sessions, so `open()` also pins the allocator's mmap threshold
    (`core.allocator`): without it every closed session left ~15 MB of fragmented heap.
    """

    def __init__(
        self,
        config: Config,
        video: bool = True,
        audio: bool = True,
        transcribe: bool = True,
        predictors: Mapping[str, Any] | None = None,
    ) -> None:
        if not (video or audio):
            raise ValueError("a push session needs video or audio (not both off)")
        self.config = config
        self.video, self.audio, self.transcribe = bool(video), bool(audio), bool(transcribe)
        self.predictors: dict = dict(predictors or {})  # given ones (remote models) are kept
        self._opened = False
        self._lock = threading.Lock()

    def available(self) -> dict[str, bool]:
        """The modalities a session can have here: those of the config whose input exists."""
        cfg = self.config
        text = self.audio and self.transcribe and cfg.transcriber.enabled and cfg.text.enabled
        return {
            "face": self.video and cfg.face.enabled,
            "voice": self.audio and cfg.voice.enabled,
            "text": bool(text),
        }

    def defaults(self) -> SessionOptions:
        return SessionOptions(float(self.config.scheduler.rate_hz), self.available())

    def open(self) -> None:
        """Open every model once (a first stream, then closed) and keep its predictors;
        a model that cannot be opened is a ValueError that says why."""
        if self._opened:
            return
        stream = self.build(self.defaults())
        try:
            stream.wait_models()
            problem = stream.loader.status(*stream.predictors, "face", "voice", "text", "stt")
            if problem:
                raise ValueError(problem)
            with self._lock:
                self.predictors.update(stream.predictors)
                self._opened = True
        finally:
            stream.close()
        allocator.pin_mmap_threshold()  # after the loads, whose frees raised it

    def config_for(self, options: SessionOptions) -> Config:
        """The server's config with a session's `options` applied, through the check a config
        file gets: a ConfigError names the key (`scheduler.rate_hz`) a value breaks."""
        cfg = copy.deepcopy(self.config)
        cfg.scheduler.rate_hz = options.rate_hz
        on = options.modalities
        cfg.face.enabled, cfg.voice.enabled = on["face"], on["voice"]
        cfg.text.enabled = cfg.transcriber.enabled = on["text"]  # no words without their stage
        return check_config(cfg)

    def build(self, options: SessionOptions) -> AffectStream:
        """A session's stream with `options`, on the shared predictors (after `open()`)."""
        cfg = self.config_for(options)
        on = options.modalities
        inputs = Inputs(
            push_video=self.video, push_audio=self.audio, transcribe=self.transcribe and on["text"]
        )
        with self._lock:
            shared = dict(self.predictors)
        return AffectStream(cfg, inputs, predictors=shared)


class Session:
    """One connection's stream. `deliver(text)` is called on the event loop with each
    estimate's JSON; `failed(reason)` once if the stream raises; `reply(error)` with an error
    found after its message was taken (a frame that does not decode when the face stage reads
    it)."""

    def __init__(
        self,
        session_id: str,
        factory: SessionFactory,
        limits: Limits,
        deliver: Callable[[str], None],
        failed: Callable[[str], None],
        reply: Callable[[dict], None] | None = None,
    ) -> None:
        self.id = session_id
        self.factory = factory
        self.limits = limits
        self.options = factory.defaults()
        self.stream: AffectStream | None = None
        self.estimates = 0
        self.clock = ClientClock()
        self.protocol = DEFAULT_PROTOCOL  # the connection's (its hello may ask for 2)
        self.primary_face: int | None = None  # session.update's; kept over restarts
        self.frames = Budget(limits.max_fps)
        self.audio_seconds = Budget(limits.max_audio_rate)
        self._deliver, self._failed = deliver, failed
        self._reply = reply or (lambda r: log.warning("session %s: %s", session_id, r["message"]))
        # what each pushed frame keeps to report a failed decode: a weak method, since the
        # stream's ring holds the frames (a strong one would be a cycle session -> stream ->
        # ring -> frame -> session, and a closed session's buffers would wait for a full GC)
        self._on_bad_frame = weakly(self._bad_frame)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> dict:
        """The `session` message; from protocol 2 on it echoes `primary_face`."""
        msg = {
            "type": "session",
            "id": self.id,
            "rate_hz": self.options.rate_hz,
            "modalities": {m: bool(self.options.modalities.get(m)) for m in MODALITIES},
        }
        if self.protocol >= 2:
            msg["primary_face"] = self.primary_face
        return msg

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stream = stream = await asyncio.to_thread(self.factory.build, self.options)
        if self.primary_face is not None and self.options.modalities.get("face"):
            stream.set_primary_face(self.primary_face)
        self._thread = threading.Thread(
            target=self._run, args=(stream,), name=f"affectstream-session-{self.id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """End the stream after its current tick and wait for its thread (idempotent); the
        heap pages the stream freed go back to the OS."""
        if self.stream is not None:
            self.stream.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            await asyncio.to_thread(allocator.trim)

    async def update(self, msg: dict) -> dict:
        """Apply a validated `session.update`; the stream restarts if an option changed
        (`primary_face` applies at once, without a restart)."""
        if "primary_face" in msg:
            if not self.options.modalities.get("face") or self.stream is None:
                raise MessageError("off", "primary_face: the face modality is off in this session")
            self.primary_face = msg["primary_face"]
            self.stream.set_primary_face(self.primary_face)
        options = self.options.updated(msg)
        available = self.factory.available()
        for m, on in options.modalities.items():
            if on and not available[m]:
                raise MessageError("off", f"{m} is not available on this server ({_why(m)})")
        try:  # the schema bounds the fields; the config's own check has the last word (NaN)
            self.factory.config_for(options)
        except ConfigError as e:
            raise MessageError("invalid", f'"session.update": {e}') from None
        if options != self.options:
            await self.stop()
            self.options = options
            await self.start()
        return self.describe()

    def _run(self, stream: AffectStream) -> None:
        loop = self._loop
        try:
            for est in stream.estimates():  # `faces` from protocol 2 on
                text = est.to_json(faces=self.protocol >= 2)
                loop.call_soon_threadsafe(self._count_and_deliver, text)
        except Exception as e:
            log.exception("session %s: the stream failed", self.id)
            reason = close_reason(f"session stream failed: {type(e).__name__}: {e}")
            loop.call_soon_threadsafe(self._failed, reason)

    def _count_and_deliver(self, text: str) -> None:
        self.estimates += 1
        self._deliver(text)

    # -- pushed data --------------------------------------------------------------------
    async def push(self, kind: int, t: float | None, payload: bytes, arrived_ns: int) -> None:
        """One pushed frame or audio piece, checked against this session's limits."""
        stream = self.stream
        if kind == KIND_VIDEO:
            if stream.video_source is None:
                raise MessageError("off", "video is off on this server (--no-video)")
            if not self.frames.take(1.0):
                raise MessageError(
                    "rate_limited", f"over {self.limits.max_fps:g} frames a second: frame dropped"
                )
            check_image(payload, self.limits.max_pixels)
            t_ns = arrived_ns if t is None else self._stream_ns(t, "video", 0.0, arrived_ns)
            stream.push_encoded_frame(payload, t_ns, on_bad=self._on_bad_frame)
            return
        if stream.audio_source is None:
            raise MessageError("off", "audio is off on this server (--no-audio)")
        pcm, rate = parse_audio(payload)
        seconds = len(pcm) / 2 / rate
        if not self.audio_seconds.take(seconds):
            raise MessageError(
                "rate_limited",
                f"over {self.limits.max_audio_rate:g} audio seconds a second: "
                f"{seconds:.3f} s dropped",
            )
        t_ns = None if t is None else self._stream_ns(t, "audio", seconds, arrived_ns)
        try:
            stream.push_audio(pcm, rate, t_ns)
        except ValueError as e:
            raise MessageError("bad_audio", f"audio message: {e}") from None

    def _bad_frame(self, message: str) -> None:
        """A pushed frame the face stage could not decode (its header had passed): the client
        hears it as an error reply, later than the message, on the event loop."""
        reply = MessageError("bad_image", message).reply()
        try:
            self._loop.call_soon_threadsafe(self._reply, reply)
        except RuntimeError:  # the loop closed (the server stopped): nobody left to tell
            log.warning("session %s: %s", self.id, message)

    def _stream_ns(self, t: float, kind: str, span_s: float, arrived_ns: int) -> int:
        try:
            return self.clock.to_stream_ns(t, kind, span_s, arrived_ns)
        except ValueError as e:
            raise MessageError("bad_time", str(e)) from None


def _why(modality: str) -> str:
    return {
        "face": "no video, or face off in its config",
        "voice": "no audio, or voice off in its config",
        "text": "no audio, --no-transcribe, or text off in its config",
    }[modality]


__all__ = ["ClientClock", "Session", "SessionFactory", "SessionOptions"]
