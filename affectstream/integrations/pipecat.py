"""`AffectProcessor`: affectstream as a pipecat `FrameProcessor` (extra `affectstream[pipecat]`).

A voice agent built on pipecat already has the user's audio and camera frames, and usually a
speech-to-text service, flowing through its pipeline. Put the processor after the input
transport (and after the STT service, to read its transcripts):

    from affectstream.integrations.pipecat import AffectEstimateFrame, AffectProcessor

    pipeline = Pipeline([transport.input(), stt, AffectProcessor(), ..., transport.output()])

It reads, without changing or holding back any frame:

- `InputAudioRawFrame` (and its subclass `UserAudioRawFrame`): PCM16 at any rate and channel
  count, pushed with `Recognizer.push_audio`;
- `InputImageRawFrame` (and `UserImageRawFrame`): raw RGB/RGBA/BGR/gray bytes, or an encoded
  JPEG/PNG, pushed with `Recognizer.push_video`;
- `TranscriptionFrame` (final transcripts) and `InterimTranscriptionFrame` (the STT's
  hypothesis while the user speaks, which the next one replaces: the text modality reads the
  words as they are said instead of after the sentence), spoken from the
  `UserStartedSpeakingFrame` before them (or, without a VAD in the pipeline, from the previous
  final transcript) to their time. With `words="pipeline"` (the default) these are the text
  modality's words and our own speech-to-text does not run: the agent already pays for one.

and pushes an `AffectEstimateFrame` downstream at the recognizer's rate (10 Hz by default),
carrying `Estimate.to_dict()`: the fused emotion and probabilities, valence, arousal, the
relevance and status of face, voice and words, ages and latencies. With `rtvi=True` each
estimate also goes to the pipecat client as an RTVI server message (below).

**Pipecat's clock.** Every input is stamped on the pipeline's clock (`get_clock()`, ns since
the pipeline started): a frame's `pts` where the transport set one, otherwise the clock's time
when the frame reaches this processor (for audio: minus the piece's duration, so the stamp is
its first sample). The first stamp is aligned with the recognizer's clock and every later one
keeps its offset (`Recognizer`'s host clock), so the ages in an estimate are gaps on pipecat's
clock. Each `AffectEstimateFrame` carries its tick's time on the same clock, as its `pts` and
as `estimate["pipeline_t"]` (seconds); before the first input, the clock's time at emission.

**What is refused, and what cannot be told.** A frame whose declared size or format
contradicts its bytes is passed on unchanged but not read: counted in `rejected` (per kind in
`rejected_by_kind`), and each kind is logged once, the first time, through pipecat's logger
(loguru), with both what the frame declares and what its bytes or timing say:

- audio whose byte count is not whole PCM16 frames of its channel count;
- audio whose declared rate and channel count contradict its timing: 16 kHz labelled 48 kHz,
  or mono labelled 2 channels, carries a third or a half of the seconds that pass between
  the frames. Told from `pts` where frames have them, else from their arrival, once 2 s have
  passed (the first 2 s are read as declared). A rate and a channel count cannot be told
  apart by timing (mono at 16 kHz labelled stereo is the same bytes as stereo at 8 kHz), so
  the message names both. A pipeline that replays audio faster than real time without `pts`
  would be refused too: give such frames a `pts`;
- a raw image whose byte count is not width x height x channels, or that has no pixels;
- a raw image with width and height swapped: the byte count cannot tell (720x528 and 528x720
  are the same bytes), the rows can: read at the declared width, a camera picture's rows line
  up (neighbouring rows differ little); at the wrong width they do not. Checked on the first
  frames of each declared size; a flat or noise-like picture passes as declared;
- encoded bytes (JPEG, PNG) that OpenCV cannot decode.

**Words expected and never seen.** With `words="pipeline"`, when the user has been heard
(voice present) for `WORDS_GRACE_S` and no transcription frame has come, the text modality's
status becomes `missing: no transcription frames received` and one warning is logged: put a
speech-to-text service before this processor, or use `words="own"`.

**Sharing models.** Each processor opens its own models (168 MB of resident memory on a
CPU, as issue 25 measured); a bot that runs one pipeline per call passes the first one's:
`AffectProcessor(models=first.models)` (0.6 MB more). The second one takes them when its
pipeline sets it up, once the first's have opened (no `wait_models()` needed).

**Estimates to the client.** `rtvi=True` pushes, beside each `AffectEstimateFrame`, an
`RTVIServerMessageFrame` with `data={"type": "affect.estimate", "estimate": {...}}`; pipecat's
RTVI observer sends it to the client as a `server-message` (in the client SDKs,
`onServerMessage`).

The engine is `affectstream.Recognizer(push=True)` on its own thread; its models open in the
background, so estimates start at once and each modality joins when its model is ready.
"""

from __future__ import annotations

import asyncio
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from loguru import logger
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InputAudioRawFrame,
        InputImageRawFrame,
        InterimTranscriptionFrame,
        StartFrame,
        SystemFrame,
        TranscriptionFrame,
        UserStartedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "affectstream.integrations.pipecat needs pipecat: pip install 'affectstream[pipecat]'"
    ) from e

from affectstream.core.config import Config, load_config
from affectstream.core.labels import MODALITIES
from affectstream.realtime.recognizer import Recognizer

WORDS = ("pipeline", "own", "off")
WORDS_GRACE_S = 5.0  # voice heard this long with no transcription frame: words are missing
NO_WORDS = "no transcription frames received"
TIMING_MIN_S = 2.0  # audio timing is judged over at least this much time
TIMING_TOLERANCE = 1.5  # declared seconds over elapsed seconds beyond this factor: refused
ORIENTATION_CHECKS = 3  # frames of each declared image size checked for swapped sides
_CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "L": 1, "GRAY": 1}


class FrameRejected(ValueError):
    """A frame this adapter will not read; `kind` names the kind of problem (logged once)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class AffectEstimateFrame(SystemFrame):
    """One affectstream estimate, as `Estimate.to_dict()` gives it, plus `pipeline_t`.

    A system frame: telemetry about the user that an interruption must not drop, and that
    waits in no queue. `estimate["emotion"]` is the fused class, `estimate["status"]` says
    per modality why it is or is not present. `pts` is the tick's time on pipecat's clock.
    """

    estimate: dict[str, Any]

    @property
    def emotion(self) -> str:
        return self.estimate["emotion"]

    def __str__(self) -> str:
        e = self.estimate
        return f"{self.name}(t: {e['t']}, emotion: {e['emotion']}, present: {e['present']})"


class SharedModels:
    """The models a processor opened, for other processors in the process (`first.models`).

    `wait()` returns them once they are open (or failed: the others are still shared), so a
    processor built before the first one's models opened still shares them.
    """

    def __init__(self, recognizer: Recognizer) -> None:
        self._stream = recognizer.stream

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        self._stream.wait_models(timeout)
        return dict(self._stream.predictors)


class AffectProcessor(FrameProcessor):
    """Reads the user's audio, images and transcripts; pushes `AffectEstimateFrame`s.

    Every option is a keyword of its own (an unknown one is a TypeError):

    Args:
        config: an affectstream config (`Config`, YAML path, or None for the shipped preset);
            the options below override it.
        rate_hz: estimates a second (default: the config's, 10).
        modalities: which of "face", "voice", "text" run: names, or a mapping to bool
            (default: all the config enables).
        words: where the text modality's words come from: "pipeline" (its transcription
            frames; our speech-to-text off), "own" (our whisper on the pipeline's audio) or
            "off" (no text modality).
        models: another processor's `models`, to share its open models (module docstring).
        rtvi: also send each estimate to the client as an RTVI server message.
        name: the processor's name in pipecat's logs.
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        rate_hz: float | None = None,
        modalities: Iterable[str] | Mapping[str, bool] | None = None,
        words: str = "pipeline",
        models: SharedModels | None = None,
        rtvi: bool = False,
        name: str | None = None,
    ) -> None:
        if words not in WORDS:
            raise ValueError(f"words must be one of {', '.join(WORDS)}; got {words!r}")
        if models is not None and not isinstance(models, SharedModels):
            raise TypeError(
                f"models takes another processor's `.models`, got {type(models).__name__}"
            )
        if not isinstance(rtvi, bool):
            raise TypeError(f"rtvi must be True or False, got {rtvi!r}")
        self._config = processor_config(config, rate_hz, modalities, words)
        super().__init__(name=name)
        self.words = words
        self.rtvi = rtvi
        self.rejected = 0  # frames that could not be read (still passed on)
        self.rejected_by_kind: dict[str, int] = {}
        self.estimates = 0  # estimate frames pushed
        self.recognizer: Recognizer | None = None
        self._shared = models
        if models is None:  # our own models start opening now, in the background
            self.recognizer = self._build(None)
        self._forward: asyncio.Task | None = None
        self._checks = FrameChecks()
        self._speech_start: float | None = None  # pipeline time the user started speaking
        self._last_words_end: float | None = None
        self._words_seen = False
        self._voice_since: float | None = None  # pipeline time voice was first present
        self._words_flagged = False

    @property
    def models(self) -> SharedModels:
        """This processor's models, for `AffectProcessor(models=...)` in other pipelines (the
        ones it shares, where it was given some)."""
        return self._shared if self._shared is not None else SharedModels(self.recognizer)

    def _build(self, predictors: Mapping[str, Any] | None) -> Recognizer:
        return Recognizer(
            self._config,
            push=True,
            push_transcript=self.words == "pipeline",
            transcribe=self.words != "off",
            predictors=predictors,
        )

    # -- lifecycle ----------------------------------------------------------------------
    async def setup(self, setup) -> None:
        """Start the recognizer (pipecat sets processors up concurrently, before StartFrame);
        a processor that shares models builds its recognizer here, once they are open."""
        await super().setup(setup)
        if self.recognizer is None:
            predictors = await asyncio.to_thread(self._shared.wait)
            self.recognizer = await asyncio.to_thread(self._build, predictors)
        await asyncio.to_thread(self.recognizer.start)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop()

    async def _stop(self) -> None:
        if self._forward is not None:
            await self.cancel_task(self._forward)
            self._forward = None
        if self.recognizer is not None:
            await asyncio.to_thread(self.recognizer.close)

    async def _forward_estimates(self) -> None:
        async for est in self.recognizer:
            pts = self._pipeline_ns(est.emitted_ns)
            estimate = est.to_dict()
            estimate["pipeline_t"] = round(pts / 1e9, 4)
            self._watch_words(estimate, pts / 1e9)
            frame = AffectEstimateFrame(estimate=estimate)
            frame.pts = pts
            await self.push_frame(frame)
            if self.rtvi:
                await self.push_frame(rtvi_message(estimate))
            self.estimates += 1

    # -- pipecat's clock ----------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().get_time() / 1e9

    def _frame_t(self, frame: Frame, span_s: float = 0.0) -> float:
        """A frame's time on the pipeline clock (s): its pts, or its arrival minus `span_s`."""
        if frame.pts is not None:
            return frame.pts / 1e9
        return self._now_s() - span_s

    def _pipeline_ns(self, stream_ns: int) -> int:
        """A stream-clock time on the pipeline clock (via the recognizer's host clock)."""
        offset = self.recognizer.clock.offset_ns
        return self.get_clock().get_time() if offset is None else stream_ns - offset

    # -- frames -------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if self._forward is None:
                self._forward = self.create_task(self._forward_estimates(), "estimates")
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()  # no estimate follows the end downstream
        elif direction is FrameDirection.DOWNSTREAM and self.recognizer.running:
            self._read(frame)
        await self.push_frame(frame, direction)

    def _read(self, frame: Frame) -> None:
        rec = self.recognizer
        try:
            if isinstance(frame, InputAudioRawFrame):
                pcm = pcm16(frame.audio, frame.num_channels)
                span = len(pcm) / frame.sample_rate if frame.sample_rate > 0 else 0.0
                t = self._frame_t(frame, span)
                self._checks.audio_timing(frame, len(pcm), t)
                rec.push_audio(pcm, frame.sample_rate, t)
            elif isinstance(frame, InputImageRawFrame):
                image = self._checks.image(frame.image, frame.size, frame.format)
                rec.push_video(image, self._frame_t(frame))
            elif isinstance(frame, UserStartedSpeakingFrame):
                self._speech_start = self._frame_t(frame)
            elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
                self._words_seen = True
                if self.words == "pipeline":
                    self._push_words(frame)
        except FrameRejected as e:
            self._reject(e.kind, frame, e)
        except ValueError as e:  # the recognizer's own checks (times going back, ...)
            self._reject(type(frame).__name__, frame, e)
        except RuntimeError:
            if rec.running:
                raise  # not the end of the pipeline closing the recognizer meanwhile

    def _reject(self, kind: str, frame: Frame, error: Exception) -> None:
        self.rejected += 1
        n = self.rejected_by_kind[kind] = self.rejected_by_kind.get(kind, 0) + 1
        if n == 1:  # each kind once; `rejected_by_kind` counts the rest
            logger.warning(f"{self}: {frame.name} not read ({kind}): {error}")

    def _push_words(self, frame: TranscriptionFrame | InterimTranscriptionFrame) -> None:
        interim = isinstance(frame, InterimTranscriptionFrame)
        end = self._frame_t(frame)
        start = self._speech_start if self._speech_start is not None else self._last_words_end
        start = end if start is None else min(start, end)
        if not interim:
            self._speech_start, self._last_words_end = None, end
        if frame.text.strip():
            self.recognizer.push_transcript(frame.text, start, end, interim=interim)

    def _watch_words(self, estimate: dict, now_s: float) -> None:
        """words="pipeline": the user was heard for a while and no transcription came."""
        if self.words != "pipeline" or self._words_seen or self._words_flagged:
            return
        if not estimate["present"].get("voice"):
            return
        if self._voice_since is None:
            self._voice_since = now_s
        if now_s - self._voice_since < WORDS_GRACE_S:
            return
        self._words_flagged = True
        self.recognizer.stream.words.expect(NO_WORDS)
        logger.warning(
            f"{self}: words='pipeline' but {NO_WORDS} in {WORDS_GRACE_S:g} s of speech: put a "
            "speech-to-text service before this processor, or use words='own'"
        )


def rtvi_message(estimate: dict) -> Frame:
    """The estimate as an RTVI server message (pipecat's RTVI observer sends it on)."""
    from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame

    return RTVIServerMessageFrame(data={"type": "affect.estimate", "estimate": estimate})


def processor_config(
    config: Config | str | Path | None,
    rate_hz: float | None,
    modalities: Iterable[str] | Mapping[str, bool] | None,
    words: str,
) -> Config:
    """The config a processor runs: `config` with its keyword options applied."""
    import copy

    if config is not None and not isinstance(config, (Config, str, Path)):
        raise TypeError(f"config must be a Config, a YAML path or None, got {config!r}")
    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(config)
    if rate_hz is not None:
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, numbers.Real):
            raise TypeError(f"rate_hz must be a number (Hz), got {rate_hz!r}")
        if not math.isfinite(rate_hz) or rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
        cfg.scheduler.rate_hz = float(rate_hz)
    if modalities is not None:
        if isinstance(modalities, str):
            raise TypeError(f"modalities takes names, e.g. ['face', 'voice'], got {modalities!r}")
        on = (
            dict(modalities) if isinstance(modalities, Mapping) else dict.fromkeys(modalities, True)
        )
        unknown = sorted(set(on) - set(MODALITIES))
        if unknown:
            raise ValueError(f"modalities: unknown {unknown}; known: {', '.join(MODALITIES)}")
        if not isinstance(modalities, Mapping):
            on = {m: m in on for m in MODALITIES}
        for m, flag in on.items():
            getattr(cfg, m).enabled = bool(flag)
    if words == "off":
        cfg.text.enabled = False
    return cfg


class FrameChecks:
    """What a frame declares against what its bytes and timing say (module docstring)."""

    def __init__(self) -> None:
        self._audio_format: tuple[int, int] | None = None
        self._audio_first_t: float | None = None
        self._audio_declared_s = 0.0
        self._audio_verdict: str = ""  # the refusal, once the timing contradicts the format
        self._orientation: dict[tuple, int] = {}  # declared size -> frames checked

    def audio_timing(self, frame: InputAudioRawFrame, samples: int, t: float) -> None:
        """Raise FrameRejected once the frames' declared rate and channels contradict the
        time that passes between them."""
        fmt = (int(frame.sample_rate), int(frame.num_channels))
        if fmt != self._audio_format:  # a new format starts a new judgement
            self._audio_format, self._audio_first_t = fmt, t
            self._audio_declared_s, self._audio_verdict = 0.0, ""
        if self._audio_verdict:
            raise FrameRejected("audio rate or channels contradict timing", self._audio_verdict)
        elapsed = t - self._audio_first_t
        if elapsed >= TIMING_MIN_S and self._audio_declared_s > 0:
            ratio = self._audio_declared_s / elapsed
            if not 1 / TIMING_TOLERANCE <= ratio <= TIMING_TOLERANCE:
                self._audio_verdict = timing_verdict(fmt, elapsed, self._audio_declared_s, frame)
                raise FrameRejected("audio rate or channels contradict timing", self._audio_verdict)
        self._audio_declared_s += samples / max(1, fmt[0])

    def image(self, data: bytes, size: tuple[int, int], fmt: str | None) -> np.ndarray:
        """`bgr_image`, and on the first frames of each size the swapped-sides check."""
        image = bgr_image(data, size, fmt)
        w, h = (int(v) for v in size)
        key = (w, h, fmt)
        checked = self._orientation.get(key, 0)
        if checked < ORIENTATION_CHECKS and w != h and _raw_mode(data, w, h, fmt):
            swapped = sides_swapped(image)
            if swapped is not None:  # a flat frame (black, one colour) tells nothing
                self._orientation[key] = checked + 1
            if swapped:
                raise FrameRejected(
                    "image width and height swapped",
                    f"image frame declared {w}x{h} (width x height), but its rows line up at "
                    f"width {h}: a {h}x{w} image with width and height swapped?",
                )
        return image


def timing_verdict(fmt: tuple[int, int], elapsed: float, declared: float, frame: Frame) -> str:
    """Why audio of format (rate, channels) that carried `declared` s in `elapsed` s is wrong."""
    rate, ch = fmt
    arrive = rate * declared / elapsed  # samples a second per channel, at the declared format
    clock = "pts" if frame.pts is not None else "arrival"
    what = f"{rate} Hz x {ch} channel{'s' * (ch > 1)}"
    if arrive < rate:
        guess = f"a {arrive:.0f} Hz stream labelled {rate} Hz"
        if ch > 1:
            n = max(1, ch // round(rate / arrive))
            guess += f", or {'mono' if n == 1 else f'{n} channels'} labelled {ch} channels"
    else:
        guess = f"a {arrive:.0f} Hz stream labelled {rate} Hz, or more channels than {ch}"
    return (
        f"declared {what}, but {elapsed:.2f} s of frames ({clock} times) carried "
        f"{declared:.2f} s of audio at that format: {arrive:.0f} samples a second per channel "
        f"arrive ({guess}?)"
    )


def _raw_mode(data: bytes, w: int, h: int, fmt: str | None) -> bool:
    mode = (fmt or "").upper()
    return mode in _CHANNELS or (not fmt and len(data) in (w * h, w * h * 3, w * h * 4))


def _row_jump(gray: np.ndarray) -> float:
    """Mean difference between neighbouring rows (one pair in 4): small for a picture."""
    upper, lower = gray[0:-1:4].astype(np.int16), gray[1::4].astype(np.int16)
    n = min(len(upper), len(lower))
    return float(np.abs(lower[:n] - upper[:n]).mean()) if n else 0.0


def sides_swapped(image: np.ndarray) -> bool | None:
    """Whether an (H, W[, C]) image read at width W looks like one of width H: its rows line
    up far better when its bytes are read the other way round. None when the picture cannot
    tell (square, or too flat: a black frame)."""
    gray = image[..., 0] if image.ndim == 3 else image
    h, w = gray.shape
    as_declared = _row_jump(gray)
    other = _row_jump(np.ascontiguousarray(gray).reshape(w, h))
    if h == w or max(as_declared, other) < 8.0:
        return None
    return other < 0.5 * as_declared


def pcm16(audio: bytes, channels: int) -> np.ndarray:
    """Pipecat's interleaved little-endian PCM16 bytes as (frames, channels) int16."""
    if channels < 1:
        raise FrameRejected("audio channel count", f"audio frame with {channels} channels")
    if len(audio) % (2 * channels):
        raise FrameRejected(
            "audio bytes not whole frames",
            f"audio frame of {len(audio)} bytes is not whole PCM16 frames of {channels} "
            f"channels ({2 * channels} bytes each)",
        )
    return np.frombuffer(audio, np.int16).reshape(-1, channels)


def bgr_image(data: bytes, size: tuple[int, int], fmt: str | None) -> np.ndarray:
    """An image frame's bytes as the (H, W, 3) BGR or (H, W) gray array affectstream takes.

    `fmt` is a PIL mode (RGB, RGBA, L; pipecat's transports give RGB) or BGR/BGRA; None means
    the mode the byte count implies; JPEG, PNG or any other format OpenCV reads is decoded.
    """
    w, h = (int(v) for v in size)
    if not data:
        raise FrameRejected("image without bytes", f"image frame of {w}x{h} with no bytes")
    mode = (fmt or "").upper()
    if mode not in _CHANNELS and not fmt:
        mode = {w * h * 3: "RGB", w * h * 4: "RGBA", w * h: "L"}.get(len(data), "")
    if mode in _CHANNELS:
        c = _CHANNELS[mode]
        if w <= 0 or h <= 0:
            raise FrameRejected(
                "image without pixels",
                f"image frame declared {w}x{h} {mode}: no pixels, but {len(data)} bytes came",
            )
        if len(data) != w * h * c:
            raise FrameRejected(
                "image size does not match its bytes",
                f"image frame declared {w}x{h} {mode} ({w * h * c} bytes), but {len(data)} "
                "bytes came",
            )
        x = np.frombuffer(data, np.uint8).reshape(h, w, c)
        if c == 1:
            return x[:, :, 0]
        if mode.startswith("RGB"):
            return np.ascontiguousarray(x[:, :, 2::-1])
        return np.ascontiguousarray(x[:, :, :3])
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameRejected(
            "image undecodable",
            f"image frame: format {fmt!r} is neither raw RGB/RGBA/BGR/BGRA/L of {w}x{h} "
            f"nor an image OpenCV can decode ({len(data)} bytes)",
        )
    return img


__all__ = [
    "AffectEstimateFrame",
    "AffectProcessor",
    "FrameRejected",
    "SharedModels",
    "WORDS",
    "bgr_image",
    "pcm16",
    "sides_swapped",
]
