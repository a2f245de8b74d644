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
- `TranscriptionFrame` (final transcripts), pushed with `Recognizer.push_transcript`, spoken
  from the `UserStartedSpeakingFrame` before it (or, without a VAD in the pipeline, from the
  previous transcript) to its arrival. With `words="pipeline"` (the default) these are the
  text modality's words and our own speech-to-text does not run: the agent already pays for one.

and pushes an `AffectEstimateFrame` downstream at the recognizer's rate (10 Hz by default),
carrying `Estimate.to_dict()`: the fused emotion and probabilities, valence, arousal, the
relevance and status of face, voice and words, ages and latencies, and every face in view
(`faces`: id, box, own reading, which one the fused estimate follows). Frames are pushed on the
pipeline's time: everything is stamped when it arrives.

The engine is `affectstream.Recognizer(push=True)` on its own thread; its models open in the
background, so estimates start at once and each modality joins when its model is ready.
A frame this adapter cannot read (an unknown image format, odd PCM) is logged and counted in
`rejected`, and still passed on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InputAudioRawFrame,
        InputImageRawFrame,
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

from affectstream.core.config import Config
from affectstream.realtime.recognizer import Recognizer

log = logging.getLogger(__name__)

WORDS = ("pipeline", "own", "off")
_CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "L": 1, "GRAY": 1}


@dataclass
class AffectEstimateFrame(SystemFrame):
    """One affectstream estimate, as `Estimate.to_dict()` gives it.

    A system frame: telemetry about the user that an interruption must not drop, and that
    waits in no queue. `estimate["emotion"]` is the fused class, `estimate["status"]` says
    per modality why it is or is not present.
    """

    estimate: dict[str, Any]

    @property
    def emotion(self) -> str:
        return self.estimate["emotion"]

    def __str__(self) -> str:
        e = self.estimate
        return f"{self.name}(t: {e['t']}, emotion: {e['emotion']}, present: {e['present']})"


class AffectProcessor(FrameProcessor):
    """Reads the user's audio, images and transcripts; pushes `AffectEstimateFrame`s.

    Args:
        config: an affectstream config (object, YAML path, or None for the shipped preset).
        words: where the text modality's words come from: "pipeline" (its
            `TranscriptionFrame`s; our speech-to-text off), "own" (our whisper on the
            pipeline's audio) or "off" (no text modality).
        predictors: open models shared with other processors in the process (one per
            session of a bot server): see `AffectStream`.
        **kwargs: for `FrameProcessor` (`name=`).
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        words: str = "pipeline",
        predictors: Mapping[str, Any] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if words not in WORDS:
            raise ValueError(f"words must be one of {', '.join(WORDS)}; got {words!r}")
        self.recognizer = Recognizer(
            config,
            push=True,
            push_transcript=words == "pipeline",
            transcribe=words != "off",
            predictors=predictors,
        )
        self.words = words
        self.rejected = 0  # frames that could not be read (still passed on)
        self.estimates = 0  # estimate frames pushed
        self._forward: asyncio.Task | None = None
        self._speech_start: float | None = None  # host time the user started speaking
        self._last_words_end: float | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def setup(self, setup) -> None:
        """Start the recognizer (pipecat sets processors up concurrently, before StartFrame)."""
        await super().setup(setup)
        await asyncio.to_thread(self.recognizer.start)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop()

    async def _stop(self) -> None:
        if self._forward is not None:
            await self.cancel_task(self._forward)
            self._forward = None
        await asyncio.to_thread(self.recognizer.close)

    async def _forward_estimates(self) -> None:
        async for est in self.recognizer:
            await self.push_frame(AffectEstimateFrame(estimate=est.to_dict()))
            self.estimates += 1

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
                rec.push_audio(pcm16(frame.audio, frame.num_channels), frame.sample_rate)
            elif isinstance(frame, InputImageRawFrame):
                rec.push_video(bgr_image(frame.image, frame.size, frame.format))
            elif isinstance(frame, UserStartedSpeakingFrame):
                self._speech_start = time.monotonic()
            elif isinstance(frame, TranscriptionFrame) and self.words == "pipeline":
                self._push_words(frame.text)
        except ValueError as e:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 100 == 0:
                log.warning("could not read %s (%d so far): %s", frame, self.rejected, e)
        except RuntimeError:
            if rec.running:
                raise  # not the end of the pipeline closing the recognizer meanwhile

    def _push_words(self, text: str) -> None:
        end = time.monotonic()
        start = self._speech_start if self._speech_start is not None else self._last_words_end
        start = end if start is None else min(start, end)
        self._speech_start, self._last_words_end = None, end
        if text.strip():
            self.recognizer.push_transcript(text, start, end)


def pcm16(audio: bytes, channels: int) -> np.ndarray:
    """Pipecat's interleaved little-endian PCM16 bytes as (frames, channels) int16."""
    if channels < 1:
        raise ValueError(f"audio frame with {channels} channels")
    if len(audio) % (2 * channels):
        raise ValueError(
            f"audio frame of {len(audio)} bytes is not whole PCM16 frames of {channels} channels"
        )
    return np.frombuffer(audio, np.int16).reshape(-1, channels)


def bgr_image(data: bytes, size: tuple[int, int], fmt: str | None) -> np.ndarray:
    """An image frame's bytes as the (H, W, 3) BGR or (H, W) gray array affectstream takes.

    `fmt` is a PIL mode (RGB, RGBA, L; pipecat's transports give RGB) or BGR/BGRA; None means
    the mode the byte count implies; JPEG, PNG or any other format OpenCV reads is decoded.
    """
    w, h = (int(v) for v in size)
    mode = (fmt or "").upper()
    if mode not in _CHANNELS and not fmt:
        mode = {w * h * 3: "RGB", w * h * 4: "RGBA", w * h: "L"}.get(len(data), "")
    if mode in _CHANNELS:
        c = _CHANNELS[mode]
        if w <= 0 or h <= 0 or len(data) != w * h * c:
            raise ValueError(
                f"image frame: {len(data)} bytes is not {w}x{h} {mode} ({w * h * c} bytes)"
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
        raise ValueError(
            f"image frame: format {fmt!r} is neither raw RGB/RGBA/BGR/BGRA/L of {w}x{h} "
            "nor an image OpenCV can decode"
        )
    return img


__all__ = ["AffectEstimateFrame", "AffectProcessor", "WORDS", "bgr_image", "pcm16"]
