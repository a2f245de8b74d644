"""`AffectStream`: sources, ring buffers, stages and the scheduler wired together.

This is the library entry point for hosts (agents, the CLI, the server): build one from a
config and inputs, iterate `estimates()`, stop it. Missing inputs are ordinary states.

Models load in the background (`realtime/loading.py`): a live stream ticks at once, and each
modality joins when its model is open (status `loading` until then, `error: ...` if it cannot
be opened). Stepped file replay (`realtime=False`) opens them all before the first tick, so
its results do not depend on load timing. A weights file or speech model the config names
explicitly is checked at construction: a missing one fails there, before any thread starts.

Freed when closed: no callback the stream hands its stages, pipeline or loader names the
stream itself (they take the parts they need, or a weak reference), so once a closed stream's
last reference goes, reference counting frees it and its buffers at once (a video ring of
decoded frames, 30 s of audio, the VAD history: ~15 MB). With a cycle it waited for Python's
full collection, which a server with tens of thousands of objects runs rarely: every session
that closed stayed in memory for minutes (docs/benchmarks.md, "The server under session
churn"; tests/test_server_churn.py holds this).

    stream = AffectStream(load_config(), Inputs(push_video=True, push_audio=True))
    stream.push_frame(bgr_image); stream.push_audio(pcm, 48000)
    for est in stream.estimates(): ...
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectstream.core.clock import now_ns
from affectstream.core.config import Config, check_config
from affectstream.core.messages import Estimate, VideoFrame
from affectstream.core.ringbuffer import RingBuffer, SampleRing
from affectstream.realtime.loading import ModelLoader
from affectstream.realtime.scheduler import Pipeline, run_realtime, run_stepped
from affectstream.realtime.sources.base import Source, SourceError, SourceState
from affectstream.realtime.sources.video import CameraSource, PushVideoSource, VideoFileSource

log = logging.getLogger(__name__)

LOADER_CLOSE_WAIT_S = 30.0  # the longest close() waits for a model that is opening


@dataclass
class Inputs:
    """What to watch and listen to: at most one video and one audio input.

    `media` names one file whose video and audio tracks are both used. `realtime` paces file
    replay; without it files are replayed as fast as possible on the media clock.
    """

    camera: int | None = None
    video: str | Path | None = None
    media: str | Path | None = None
    mic: int | str | None = None
    use_mic: bool = False
    audio: str | Path | None = None
    push_video: bool = False
    push_audio: bool = False
    push_transcript: bool = False  # the host pushes its own words (`push_transcript`); no STT
    no_video: bool = False
    no_audio: bool = False
    transcribe: bool = True
    realtime: bool = True
    loop: bool = False  # start files again at their end (benchmarks, soak runs)


class AffectStream:
    """Build with `AffectStream(config, Inputs(...))`, then `for est in s.estimates(): ...`."""

    def __init__(
        self, config: Config, inputs: Inputs, predictors: Mapping[str, Any] | None = None
    ) -> None:
        """`predictors`: models already open (`export.predictors.open_predictor`, and "stt":
        a loaded whisper decoder), by name, shared with other streams in the process (server
        sessions, `bench pipeline`): those are used at once. The others are opened from
        `config` (in the background unless stepped) and added as they open; a host that
        shares them with its next streams waits for them first (`wait_models`).

        `config` gets the check a config file gets (a value set after it was made included):
        a bad value is a ConfigError naming the key, before anything opens."""
        self.config = check_config(config)
        self.inputs = inputs
        self.predictors = dict(predictors or {})
        self.loader = ModelLoader()
        self._words_lock = threading.Lock()
        self._running = False  # estimates() has started the sources
        self._words_started = False
        self.sources: list[Source] = []
        self.video_ring: RingBuffer[VideoFrame] | None = None
        self.audio_ring: SampleRing | None = None
        self.video_source: Source | None = None
        self.audio_source: Source | None = None
        self.transcriber = None
        self.words = None  # what the text stage reads: the transcriber, or the pushed words
        self.stages = []
        self._stop = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- construction -----------------------------------------------------------------
    def _build(self) -> None:
        cfg, inp = self.config, self.inputs
        video_inputs = [
            x for x in (inp.camera, inp.video, inp.media, inp.push_video or None) if x is not None
        ]
        audio_inputs = [
            x
            for x in (
                inp.use_mic or None,  # mic=None with use_mic is the default device
                inp.audio,
                inp.media,
                inp.push_audio or None,
            )
            if x is not None
        ]
        if inp.no_video:
            video_inputs = []
        if inp.no_audio:
            audio_inputs = []
        if len(video_inputs) > 1:
            raise ValueError(
                "choose one video input: camera, video file, media file or pushed frames"
            )
        if len(audio_inputs) > 1:
            raise ValueError(
                "choose one audio input: microphone, audio file, media file or pushed audio"
            )
        if audio_inputs:
            check_voice_extras(cfg)  # before any device or file opens
        if video_inputs:
            self._build_video()
        if audio_inputs:
            self._build_audio()
        if inp.push_transcript:
            self._build_pushed_words()
        if not self.sources:
            raise ValueError(
                "no input: give a camera, a video/audio/media file, a microphone, or push data"
            )
        fuse = self._fusion()
        if self.stepped:
            self.loader.load_all()  # before the first tick: results independent of timing
        else:
            self.loader.start()
        # No closure here names `self`: a stream must be freed when its last reference goes
        # (module docstring, "Freed when closed")
        counters = [functools.partial(source_counters, self.audio_source, self.words)]
        transcript = None
        if self.words is not None:
            transcript = functools.partial(_recent_text, self.words, cfg.transcriber.context_s)
        self.pipeline = Pipeline(
            self.stages,
            cfg.scheduler,
            counters=counters,
            transcript=transcript,
            fuse=fuse,
            align_ticks=cfg.batch.on(cfg.backend.device) and cfg.batch.align_ticks,
        )

    def _build_video(self) -> None:
        cfg, inp = self.config, self.inputs
        self.video_ring = RingBuffer(cfg.video.ring_frames, "video")
        if inp.camera is not None:
            self.video_source = CameraSource(self.video_ring, inp.camera, cfg.video)
            self.video_source.open()  # a missing camera fails before models load
        elif inp.video is not None or inp.media is not None:
            path = inp.video if inp.video is not None else inp.media
            self.video_source = VideoFileSource(
                path, self.video_ring, realtime=inp.realtime, loop=inp.loop
            )
            self.video_source.open()  # a missing or corrupt file fails here, not later
        else:
            self.video_source = PushVideoSource(self.video_ring)
        self.sources.append(self.video_source)
        if cfg.face.enabled:
            from affectstream.models.face.detect import FaceTracker
            from affectstream.models.face.primary import PrimaryFace
            from affectstream.realtime.stages.face import FaceStage

            primary = PrimaryFace(cfg.face.primary_switch_s)
            stage = FaceStage(self.video_ring, FaceTracker(cfg.face), None, primary)
            stage.on_primary_change = weakly(self.forget, "face")  # follow the new person
            self._attach("face", stage)
            stage.problem = lambda src=self.video_source: source_problem(src)
            self.stages.append(stage)

    def _build_audio(self) -> None:
        cfg, inp = self.config, self.inputs
        self.audio_ring = SampleRing(cfg.audio.ring_seconds, cfg.audio.sample_rate, "audio")
        if inp.use_mic:
            from affectstream.realtime.sources.microphone import MicrophoneSource

            self.audio_source = MicrophoneSource(self.audio_ring, inp.mic, cfg.audio)
        elif inp.audio is not None or inp.media is not None:
            from affectstream.realtime.sources.audio_file import AudioFileSource

            path = inp.audio if inp.audio is not None else inp.media
            self.audio_source = AudioFileSource(
                path, self.audio_ring, cfg.audio, realtime=inp.realtime, loop=inp.loop
            )
            self.audio_source.open()
        else:
            from affectstream.realtime.sources.push_audio import PushAudioSource

            self.audio_source = PushAudioSource(self.audio_ring, cfg.audio.sample_rate)
        self.sources.append(self.audio_source)
        # one VAD for the stream: the voice stage and the transcriber read the same frames
        vad = None
        if cfg.voice.enabled:
            from affectstream.models.stt.vad import VoiceActivity
            from affectstream.realtime.stages.voice import VoiceStage

            history_s = max(60.0, cfg.audio.ring_seconds + 1.0)  # all the transcriber can read
            vad = VoiceActivity(threshold=cfg.voice.vad_threshold, history_s=history_s)
            src = self.audio_source
            stage = VoiceStage(
                self.audio_ring,
                vad,
                None,
                window_s=cfg.voice.window_s,
                available=lambda: src.status.state is not SourceState.RECONNECTING,
                session_norm=cfg.voice.session_norm,
                utterance=voice_utterance_heads(cfg.voice),
            )
            self._attach("voice", stage)
            self.stages.append(stage)
        for stage in self.stages:
            if stage.name == "voice":
                stage.problem = lambda src=self.audio_source: source_problem(src)
        if inp.transcribe and not inp.push_transcript and cfg.transcriber.enabled:
            self._build_words(vad)

    def _build_words(self, vad=None) -> None:
        cfg = self.config
        from affectstream.realtime.transcriber import Transcriber

        self.transcriber = Transcriber(
            self.audio_ring,
            cfg.transcriber,
            decoder=self.predictors.get("stt"),  # a whisper model shared by the host's streams
            from_start=True,
            stepped=self.stepped,
            vad=vad,
        )
        if self.transcriber.decoder is None:
            check_speech_model(cfg)
            self.loader.add("stt", self._open_words)
        self.sources.append(self.transcriber)
        self._build_text(self.transcriber, self.audio_source)

    def _build_pushed_words(self) -> None:
        """Words from the host's own speech-to-text (`push_transcript`), not from ours."""
        from affectstream.realtime.sources.push_transcript import PushTranscript

        self.sources.append(PushTranscript())
        self._build_text(self.sources[-1], None)

    def _build_text(self, words, audio: Source | None) -> None:
        cfg = self.config
        self.words = words
        if cfg.text.enabled:
            from affectstream.realtime.stages.text import TextStage

            stage = TextStage(words, None, cfg.transcriber.context_s, cfg.text.min_words)
            self._attach("text", stage)
            stage.problem = lambda: source_problem(audio) or words.problem()
            if words is self.transcriber:  # no words before the whisper model is open either
                stage.model_status = functools.partial(self.loader.status, "text", "stt")
            self.stages.append(stage)

    def _fusion(self):
        """This stream's fusion step. The learned model opens in the background like the
        encoders (after the voice model); until it is open the confidence rule fuses."""
        from affectstream.realtime.fusion import LearnedFusion, make_fusion

        method = self.config.fusion.method
        if method != "learned":
            return make_fusion(method)
        fusion = LearnedFusion(self.predictors.get("fusion"))
        if fusion.predictor is None:
            check_weights(self.config, "fusion")

            def load() -> None:
                from affectstream.export.predictors import open_predictor

                predictor = open_predictor("fusion", self.config)
                self.predictors["fusion"] = predictor
                fusion.attach(predictor)

            self.loader.add("fusion", load)
        return fusion

    def _attach(self, name: str, stage) -> None:
        """Give `stage` its predictor: the host's shared one at once, else a load job that
        opens it, warms it up and hands it over (the stage is not run until then)."""
        shared = self.predictors.get(name)
        if shared is not None:
            _set_torch_threads(self.config.backend.threads)
            stage.predictor = shared
            stage.warmup()
            return
        check_weights(self.config, name)

        def load() -> None:
            from affectstream.export.predictors import open_predictor

            predictor = open_predictor(name, self.config)
            _set_torch_threads(self.config.backend.threads)
            stage.predictor = predictor
            stage.warmup()
            self.predictors[name] = predictor

        self.loader.add(name, load)
        stage.model_status = functools.partial(self.loader.status, name)

    def _open_words(self) -> None:
        """The whisper model's load job; a live stream's transcriber starts once it is open."""
        self.transcriber.open()
        self.predictors.setdefault("stt", self.transcriber.decoder)
        self._start_words()

    def _start_words(self) -> None:
        """Start the transcriber's thread once both the stream runs and its model is open
        (whichever comes last calls this). It reads the audio ring from its start, so the
        words said while the model loaded are transcribed too."""
        with self._words_lock:
            t = self.transcriber
            if self._words_started or not self._running or self._stop:
                return
            if t.decoder is None:
                return
            self._words_started = True
            t.start()

    def wait_models(self, timeout: float | None = None) -> bool:
        """Wait until every model this stream opens is open (or failed: its status says why);
        False if `timeout` (s) passed first. Hosts that share `predictors` between streams
        call it before handing them on."""
        return self.loader.wait(timeout)

    # -- host-facing ------------------------------------------------------------------
    @property
    def stepped(self) -> bool:
        """Files replayed as fast as possible, stepped on the media clock (no live input)."""
        inp = self.inputs
        has_file = any(x is not None for x in (inp.video, inp.audio, inp.media))
        live = inp.camera is not None or inp.use_mic or inp.push_video or inp.push_audio
        live = live or inp.push_transcript
        return has_file and not inp.realtime and not live

    def push_frame(self, image, t_ns: int | None = None) -> None:
        if not isinstance(self.video_source, PushVideoSource):
            raise RuntimeError("push_frame needs Inputs(push_video=True)")
        self.video_source.push(image, t_ns)

    def push_encoded_frame(
        self, payload: bytes, t_ns: int | None = None, on_bad: Callable[[str], None] | None = None
    ) -> None:
        """A JPEG or PNG frame whose header the caller checked, decoded only if the face stage
        reads it; `on_bad(message)` is called (on the stage's thread) if it does not decode."""
        if not isinstance(self.video_source, PushVideoSource):
            raise RuntimeError("push_encoded_frame needs Inputs(push_video=True)")
        self.video_source.push_encoded(payload, t_ns, on_bad)

    def push_audio(self, samples, sample_rate: int | None = None, t_ns: int | None = None) -> None:
        from affectstream.realtime.sources.push_audio import PushAudioSource

        if not isinstance(self.audio_source, PushAudioSource):
            raise RuntimeError("push_audio needs Inputs(push_audio=True)")
        self.audio_source.push(samples, sample_rate, t_ns)

    def push_transcript(self, text: str, start_ns: int, end_ns: int, interim: bool = False) -> None:
        """Words the host's speech-to-text committed (or, `interim`, its hypothesis so far),
        spoken from `start_ns` to `end_ns`."""
        from affectstream.realtime.sources.push_transcript import PushTranscript

        if not isinstance(self.words, PushTranscript):
            raise RuntimeError("push_transcript needs Inputs(push_transcript=True)")
        self.words.push(text, start_ns, end_ns, interim)

    def _file_sources(self) -> list[Source]:
        return [
            s
            for s in (self.video_source, self.audio_source)
            if s is not None and hasattr(s, "read_until")
        ]

    def _done(self) -> bool:
        """Files have ended and the transcriber has committed their last words."""
        files = self._file_sources()
        if not files or not all(s.done for s in files):
            return False
        if self.transcriber is None or self.transcriber.done or self.loader.failed("stt"):
            return True
        if self.stepped:
            self.transcriber.drain()  # commits the last words at once; one more tick shows them
            return False
        self.transcriber.end_of_input()  # real time: keep ticking until it has finished
        return False

    def _step(self, t_ns: int) -> None:
        for s in self._file_sources():
            s.read_until(t_ns)
        if self.transcriber is not None and not self.transcriber.done:
            self.transcriber.step(t_ns)

    def stop(self) -> None:
        """Ask `estimates()` to end after the current tick."""
        self._stop = True

    def forget(self, modality: str) -> None:
        """The fusion drops what it still holds of `modality` (a voice is held for a moment
        after the speaker stops): for a modality switched off, which must leave at once."""
        pipeline = getattr(self, "pipeline", None)
        forget = getattr(pipeline.fuse, "forget", None) if pipeline is not None else None
        if forget is not None:
            forget(modality)

    def set_primary_face(self, face_id: int | None) -> None:
        """The face the fused estimate follows: `face_id` (an id of the estimate's `faces`)
        while it is in view; None: the largest face again. Safe from any thread."""
        stage = next((s for s in self.stages if s.name == "face"), None)
        if stage is None:
            raise RuntimeError("set_primary_face needs the face modality (video and face on)")
        stage.primary.pin(face_id)

    def close(self) -> None:
        # A model still opening is native code (ONNX Runtime building a session) on the
        # loader's thread: let it return, so a process that exits right after does not abort
        # in it ("terminate called without an active exception"); the loader opens no more.
        self.loader.close(wait_s=LOADER_CLOSE_WAIT_S)
        with self._words_lock:
            self._stop = True  # a whisper model that opens after this starts no thread
        for s in self.sources:
            s.stop()
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()

    def estimates(self) -> Iterator[Estimate]:
        """Start the sources, yield one estimate per tick until the inputs end or stop()."""
        try:
            if self.stepped:
                start = now_ns()
                for s in self._file_sources():
                    s.begin(start)
                if self.transcriber is not None:
                    self.transcriber.start()
                yield from run_stepped(
                    self.pipeline, self._step, self._done, start, stop=lambda: self._stop
                )
            else:
                for s in self.sources:
                    if s is not self.transcriber:
                        s.start()
                if self.transcriber is not None:
                    with self._words_lock:
                        self._running = True
                    self._start_words()
                yield from run_realtime(self.pipeline, self._done, stop=lambda: self._stop)
        finally:
            self.close()

    def __enter__(self) -> AffectStream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()


def source_counters(audio: Source | None, words) -> dict[str, int]:
    """What the audio source dropped and the words source counted, for the estimates."""
    out: dict[str, int] = {}
    if audio is not None:
        out["audio_overflows"] = int(getattr(audio, "overflows", 0))
        out["audio_dropped_samples"] = int(getattr(audio, "dropped_samples", 0))
    if words is not None:
        out.update(words.counters())
    return out


def weakly(method, *args) -> Callable[..., None]:
    """`method(*args, *more)` as a callback `call(*more)` that does not keep its object alive
    (a stage that holds a callback of its stream, or a frame in a ring that holds its
    session's, would make a cycle); once the object is gone, a call does nothing."""
    ref = weakref.WeakMethod(method)

    def call(*more) -> None:
        m = ref()
        if m is not None:
            m(*args, *more)

    return call


def _recent_text(words, context_s: float, t_ns: int) -> str:
    return words.recent_text(t_ns, context_s)


def source_problem(source: Source | None) -> str:
    """A source's trouble in words ("" when it runs, or ended as a file does)."""
    if source is None:
        return ""
    st = source.status
    if st.state is SourceState.RECONNECTING:
        return (
            f"{source.name} reconnecting: {st.reason}"
            if st.reason
            else f"{source.name} reconnecting"
        )
    if st.state is SourceState.FAILED:
        return f"{source.name} failed: {st.reason}"
    return ""


def check_weights(config: Config, name: str) -> None:
    """A weights file the config names for model `name` must be there: WeightsError at
    construction, before any thread starts, rather than an `error:` status later. (The
    shipped defaults are opened by the load job, in the background.)"""
    from affectstream.core.errors import WeightsError
    from affectstream.export.predictors import resolve_weights

    weights = resolve_weights(getattr(config, name).weights)
    if weights and not Path(weights).is_file():
        raise WeightsError(f"{name}.weights: file not found: {weights}")


def voice_utterance_heads(voice) -> tuple[str, ...]:
    """The utterance heads the live voice stage reads, from `voice.egemaps` / `voice.whisper`."""
    from affectstream.models.voice.utterance import SHORT_NAMES

    return tuple(f for f, key in SHORT_NAMES.items() if getattr(voice, key))


def check_voice_extras(config: Config) -> None:
    """`voice.egemaps` needs the optional opensmile package: a SetupError naming it at
    construction, not a voice modality that silently lacks the branch."""
    if not (config.voice.enabled and config.voice.egemaps):
        return
    from affectstream.core.errors import SetupError
    from affectstream.models.voice.egemaps import INSTALL_HINT, available

    if not available():
        raise SetupError(f"voice.egemaps: {INSTALL_HINT}")


def check_speech_model(config: Config) -> None:
    """A speech model the config names (`transcriber.model`) must be there: SourceError at
    construction, as a missing model always failed (the default is opened in the background)."""
    if not config.transcriber.model:
        return
    from affectstream.models.stt.whisper_model import SttModelError, resolve_model_path

    try:
        resolve_model_path(config.transcriber.model)
    except SttModelError as e:
        raise SourceError(str(e)) from None


def _set_torch_threads(n: int) -> None:
    """Encoders run on the scheduler thread beside capture and transcription: keep torch's
    intra-op pool small (on a 2-core machine, more threads only contend). Called after a
    model opens, before its first call; a model that does not import torch (the shipped int8
    face model) does not pay the 0.8 s torch import."""
    if "torch" not in sys.modules:
        return
    import torch  # waits for an import another thread has begun (sys.modules has it early)

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


__all__ = ["AffectStream", "Inputs", "SourceError"]
