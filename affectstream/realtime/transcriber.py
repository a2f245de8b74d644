"""The transcriber thread: reads the audio ring, emits partial and final transcript segments.

It only ever reads the `SampleRing` (a capture thread never waits for it) and writes into its
own `RingBuffer[TranscriptSegment]`; the scheduler asks `recent_text(now)` for the committed
words of the last seconds and `speech_active` / `last_word_ns` to tell "nothing was said".

Backlog bound: when the audio not yet read exceeds `transcriber.max_backlog_s` (the CPU cannot
keep up), the thread skips ahead to the newest audio, abandons the open utterance, counts the
skip (`stats.skips`, `stats.skipped_s`) and logs a warning. Decoding runs in CTranslate2, which
releases the GIL, so the other threads keep running meanwhile.

Voice activity: given the stream's shared `VoiceActivity` (the voice stage reads the same one),
the thread brings it up to date (`vad.update(ring)`, a no-op for the frames the scheduler has
already evaluated) before it feeds new audio, and the utterance gate reads its frames; without
one the streaming transcriber runs a private VAD over the audio it reads. One pass either way.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from affectstream.core import priority
from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.clock import now_ns
from affectstream.core.config import TranscriberConfig
from affectstream.core.messages import TranscriptSegment, Word
from affectstream.core.ringbuffer import RingBuffer, SampleRing
from affectstream.models.stt.local_agreement import join_words
from affectstream.realtime.sources.base import Source, SourceError, SourceState

log = logging.getLogger(__name__)


def stream_options(cfg: TranscriberConfig):
    """The streaming policy and decode options a config describes."""
    from affectstream.models.stt.online import StreamOptions
    from affectstream.models.stt.whisper_model import DecodeOptions

    stream = StreamOptions(
        min_chunk_s=cfg.min_chunk_s,
        first_chunk_s=cfg.first_chunk_s,
        end_silence_s=cfg.end_silence_s,
        max_span_s=cfg.max_span_s,
        tail_keep_s=cfg.tail_keep_s,
        vad_threshold=cfg.vad_threshold,
        prompt_words=cfg.prompt_words,
    )
    decode = DecodeOptions(
        window_s=cfg.window_s, partial_window_s=cfg.partial_window_s, beam_size=cfg.beam_size
    )
    return stream, decode


def load_decoder(cfg: TranscriberConfig, live: bool = True):
    """The configured whisper model, ready to be shared by the transcribers of many streams
    (`models/stt/shared.py`: their spans are decoded together), in a process of its own
    unless `transcriber.process` is off (`models/stt/worker.py` says why); SourceError (one
    clear line) when it cannot be loaded.

    `live` False (a replay on a media clock, a file transcribed as fast as it can be): no
    idle scheduling class, whatever `transcriber.idle` says. A replay waits for each decode,
    and on a busy machine an idle-class decoder would get no CPU at all."""
    from affectstream.models.stt.shared import SharedDecoder
    from affectstream.models.stt.whisper_model import SttModelError, WhisperDecoder
    from affectstream.models.stt.worker import DecoderProcess

    _, decode = stream_options(cfg)
    before = priority.thread_ids()
    try:
        if cfg.process:
            decoder = DecoderProcess(
                cfg.model,
                cfg.compute_type,
                cfg.cpu_threads,
                options=decode,
                nice=cfg.nice,
                idle=cfg.idle and live,
            )
        else:
            decoder = WhisperDecoder(cfg.model, cfg.compute_type, cfg.cpu_threads, options=decode)
    except SttModelError as e:
        raise SourceError(str(e)) from None
    # In this process, CTranslate2 decodes on threads of its own, made as the model loads:
    # they yield to the ticks (core/priority.py)
    priority.lower(priority.thread_ids() - before, cfg.nice)
    return SharedDecoder(decoder)


@dataclass(frozen=True, slots=True)
class TranscriberStatus:
    """A snapshot for the summary and the benchmark."""

    speech_active: bool
    behind_s: float  # audio written but not yet read by the transcriber
    stats: dict


class Transcriber(Source):
    """Streaming speech-to-text on its own thread, reading `ring` from now on.

    Give a loaded `decoder` to share one model (tests, benchmarks); otherwise `start()` loads
    the configured one in the caller's thread, so a missing model fails there. Give the
    stream's `vad` (a `VoiceActivity` over `ring`) to share its frames with the voice stage.
    """

    name = "transcriber"

    def __init__(
        self,
        ring: SampleRing,
        config: TranscriberConfig | None = None,
        decoder=None,
        segments: RingBuffer[TranscriptSegment] | None = None,
        poll_s: float = 0.02,
        from_start: bool = False,
        stepped: bool = False,
        vad=None,
    ) -> None:
        super().__init__()
        if ring.sample_rate != MODEL_SAMPLE_RATE:
            raise ValueError(
                f"the transcriber needs a {MODEL_SAMPLE_RATE} Hz ring, got {ring.sample_rate}"
            )
        self.ring = ring
        self.config = config or TranscriberConfig()
        self.decoder = decoder
        self.segments: RingBuffer[TranscriptSegment] = (
            segments if segments is not None else RingBuffer(256, "transcript")
        )
        self.poll_s = poll_s
        self.from_start = from_start  # read the ring from index 0 instead of from now
        self.stepped = stepped  # no thread: the caller drives `step(t_ns)` on a media clock
        self.vad = vad  # shared VoiceActivity over `ring`, or None: the stream has its own
        self._online = None
        self._words: deque[Word] = deque(maxlen=512)  # committed words, for recent_text
        self._words_lock = threading.Lock()
        self._input_done = threading.Event()
        self._next = 0
        self._now = 0  # the stepped driver's clock
        self._last_input_ns = 0  # when new audio last arrived
        self.busy_s = 0.0  # time spent in decoding steps
        self.max_behind_s = 0.0
        self.errors = 0  # decoding steps that raised (the utterance was dropped, not the stream)
        self.last_error = ""
        self._last_error_ns = 0
        self._step_started_ns = 0  # 0 when no decoding step is running
        self.stall_s = 10.0  # a step running longer than this is reported as a stall

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> None:
        if self.decoder is None:
            self.decoder = load_decoder(self.config, live=not self.stepped)

    def start(self) -> Transcriber:
        """Load the model (errors reach the caller); start the thread unless `stepped`."""
        from affectstream.models.stt.online import OnlineTranscriber

        if self._online is None:
            self.open()
            stream, _ = stream_options(self.config)
            self._next = 0 if self.from_start else self.ring.written
            clock = (lambda: self._now) if self.stepped else now_ns
            self._online = OnlineTranscriber(
                self.decoder,
                stream,
                time_of=self.ring.time_of,
                clock=clock,
                origin=self._next,
                vad=self.vad,
            )
            self._last_input_ns = now_ns()
        if self.stepped:
            self._set_status(SourceState.RUNNING)
            return self
        super().start()
        return self

    def end_of_input(self) -> None:
        """The audio has ended (a file): finish the open utterance, then the thread ends."""
        self._input_done.set()

    def drain(self, timeout: float | None = None) -> bool:
        """`end_of_input` and wait for the last words; False if it did not end in time."""
        self.end_of_input()
        if self.stepped:
            self._publish(self._online.finish())
            self._set_status(SourceState.FINISHED)
            return True
        return self.join(timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the thread to end and wait for the decode it may be in: a process that exits
        while CTranslate2 still decodes on this thread aborts ("terminate called without an
        active exception"). A decode takes well under a second alone, but the streams of a
        host share one model and queue for it, hence the long bound."""
        return super().stop(timeout)

    # -- stepped driving ----------------------------------------------------------------
    def step(self, t_ns: int) -> None:
        """Stepped mode: transcribe the audio written up to now; `t_ns` stamps the output.

        Each due decode runs at once (a media clock has no backlog), so emission times are
        the latency a CPU that keeps up would give.
        """
        if self._online is None:
            raise RuntimeError("call start() before step()")
        self._now = t_ns
        self._consume(t_ns)
        while self._online.due():
            self._timed(self._online.step)
        self._end_if_quiet(t_ns)

    def idle(self) -> bool:
        """True when all audio written so far is transcribed and no utterance is open."""
        online = self._online
        if online is None:
            return True
        return self.ring.written <= self._next and not online.speech_active and not online.due()

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        priority.lower_this_thread(self.config.nice)  # the ticks come first (core/priority.py)
        online = self._online
        while not self._stop_event.is_set():
            done = self._input_done.is_set()
            now = now_ns()
            self._consume(now)
            if online.due():
                self._timed(online.step)
                continue
            if done and self.ring.written <= self._next:
                self._timed(online.finish)
                self._set_status(SourceState.FINISHED)
                return
            self._end_if_quiet(now)
            self._sleep(self.poll_s)

    def _consume(self, now: int) -> None:
        """Read the new audio into the stream, skipping ahead when too far behind."""
        online = self._online
        sr = MODEL_SAMPLE_RATE
        written = self.ring.written
        behind = written - self._next
        self.max_behind_s = max(self.max_behind_s, behind / sr)
        if behind > int(self.config.max_backlog_s * sr):
            target = written - int(online.opt.preroll_s * sr)
            log.warning(
                "transcriber %.1fs behind (limit %.1fs): skipping ahead",
                behind / sr,
                self.config.max_backlog_s,
            )
            self._publish(online.skip_to(target))
            self._next = target
        if written > self._next:
            x, first = self.ring.read(self._next, written)
            if first > self._next:  # overwritten before we read it
                self._publish(online.skip_to(first))
            if self.vad is not None:  # the frames of x, unless the scheduler did them already
                self.vad.update(self.ring)
            online.feed(x)
            self._next = first + len(x)
            self._last_input_ns = now

    def _end_if_quiet(self, now: int) -> None:
        """No audio at all for end_silence_s (a file ended, a device stalled): end the utterance."""
        online = self._online
        quiet_ns = (now - self._last_input_ns) - int(self.config.end_silence_s * 1e9)
        if online.speech_active and quiet_ns > int(self.poll_s * 1e9):
            self._timed(online.finish)

    def _timed(self, fn) -> None:
        """Run one decoding step. A step that raises drops its utterance, is counted and
        reported (`problem`), and the transcriber goes on with the audio after it."""
        t0 = self._step_started_ns = now_ns()
        try:
            segs = fn()
        except Exception as e:  # a decoder failure must not end the words for good
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"[:200]
            self._last_error_ns = now_ns()
            log.warning("transcriber step failed (%s); dropping the utterance", self.last_error)
            segs = self._online.abandon()
        finally:
            self._step_started_ns = 0
            self.busy_s += (now_ns() - t0) / 1e9
        self._publish(segs)

    def problem(self) -> str:
        """What is wrong with the words right now, for the text modality's status ("" if
        nothing): a failed transcriber, a decoding step that raised in the last few seconds,
        or one that has run for longer than `stall_s`."""
        st = self.status
        if st.state is SourceState.FAILED:
            return f"transcriber failed: {st.reason}"
        started = self._step_started_ns
        if started and (now_ns() - started) / 1e9 > self.stall_s:
            return f"transcriber stalled: decoding for {(now_ns() - started) / 1e9:.0f} s"
        if self._last_error_ns and now_ns() - self._last_error_ns < 5e9:
            return f"transcriber error: {self.last_error}"
        return ""

    def _publish(self, segs: list[TranscriptSegment]) -> None:
        for s in segs:
            self.segments.push(s, s.emitted_ns)
            if s.final:
                with self._words_lock:
                    self._words.extend(s.words)

    # -- what the scheduler reads -------------------------------------------------------
    def recent_text(self, now: int | None = None, seconds: float | None = None) -> str:
        """Committed words that ended within the last `seconds` (default: config.context_s)."""
        now = now_ns() if now is None else now
        seconds = self.config.context_s if seconds is None else seconds
        since = now - int(seconds * 1e9)
        with self._words_lock:
            words = [w.text for w in self._words if w.end_ns >= since]
        return join_words(words)

    @property
    def last_word_ns(self) -> int | None:
        """End time (stream clock) of the newest committed word, None before any."""
        with self._words_lock:
            return self._words[-1].end_ns if self._words else None

    @property
    def speech_active(self) -> bool:
        """True while an utterance is open (someone speaks or paused briefly)."""
        return bool(self._online is not None and self._online.speech_active)

    def snapshot(self) -> TranscriberStatus:
        online = self._online
        stats = online.stats.to_dict() if online is not None else {}
        stats["busy_s"] = round(self.busy_s, 3)
        stats["max_behind_s"] = round(self.max_behind_s, 3)
        stats["segments_overwritten"] = self.segments.overwritten
        behind = (self.ring.written - self._next) / MODEL_SAMPLE_RATE
        return TranscriberStatus(self.speech_active, behind, stats)

    def counters(self) -> dict[str, int]:
        """Drop counters in the scheduler's format (`Pipeline.counters`)."""
        s = self._online.stats if self._online is not None else None
        return {"transcriber_skips": s.skips if s else 0, "transcriber_errors": self.errors}


__all__ = ["Transcriber", "TranscriberStatus", "load_decoder", "stream_options", "SourceError"]
