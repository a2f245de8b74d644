"""The streaming transcription state machine: samples in, partial and final segments out.

No threads and no clock of its own, so the real-time thread (`realtime.transcriber`), the
as-fast-as-possible CLI and the tests drive the same code. Per utterance (cut by the VAD):

1. While it is quiet nothing is decoded; only a short pre-roll of audio is kept.
2. Once speech starts, the span from the utterance start is decoded every `min_chunk_s` of
   new audio, the committed words of the span forced as the decoder prefix.
3. Words two consecutive decodes agree on are committed (final); the rest is the partial.
4. After `end_silence_s` of silence the span is decoded once more and everything is final.
5. A span longer than `max_span_s` (speech without pauses) is cut after a committed word;
   the words before the cut become the prompt, so no decode ever sees more than ~max_span_s.

Indices are absolute sample numbers of the stream; `time_of(index)` maps them to the stream
clock and `clock()` stamps emission, both given by the caller.

Voice activity comes from one `VoiceActivity` per stream (`models.stt.vad`). Given one that
another reader shares (the voice stage, in `AffectStream`), the caller keeps it fed up to the
samples it feeds here and the transcriber only reads its frames; without one it feeds a
private one with the samples themselves. Either way each frame is evaluated once.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.messages import TranscriptSegment, Word
from affectstream.models.stt.guards import guard_words
from affectstream.models.stt.local_agreement import LocalAgreement, join_words
from affectstream.models.stt.vad import VadGate, VoiceActivity
from affectstream.models.stt.whisper_model import HypWord, WhisperDecoder

log = logging.getLogger(__name__)

_SENTENCE_END = (".", "?", "!")


@dataclass
class StreamOptions:
    """Streaming policy (see the module docstring).

    Attributes:
      min_chunk_s: new audio between two decodes of an utterance.
      first_chunk_s: speech before the first decode of an utterance (the first partial).
      end_silence_s: silence after which an utterance ends and all its words are final.
      max_span_s: longest audio one decode sees; longer speech is cut after committed words.
      preroll_s: audio kept before the detected speech onset.
      tail_keep_s: audio decoded after the last voiced VAD window (the rest is silence).
      vad_threshold: Silero speech probability that counts as voice.
      prompt_words: committed words given to the decoder as context (0: none).
    """

    min_chunk_s: float = 0.5
    first_chunk_s: float = 0.3
    end_silence_s: float = 0.4
    max_span_s: float = 8.0
    preroll_s: float = 0.3
    tail_keep_s: float = 0.1
    vad_threshold: float = 0.5
    prompt_words: int = 40


@dataclass
class StreamStats:
    """Counters of one stream, echoed by the CLI and the benchmark."""

    audio_s: float = 0.0  # audio fed
    decodes: int = 0
    decode_s: float = 0.0  # time spent decoding (busy time)
    utterances: int = 0
    committed_words: int = 0
    trims: int = 0  # spans cut because speech ran past max_span_s
    skipped_s: float = 0.0  # audio dropped to bound the backlog
    skips: int = 0
    guards: Counter = field(default_factory=Counter)  # cut hypotheses by reason
    part_s: Counter = field(default_factory=Counter)  # decoding time by part (encode, ...)

    @property
    def loops(self) -> int:
        return self.guards["repetition"] + self.guards["too-dense"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["guards"] = dict(self.guards)
        d["part_s"] = {k: round(v, 3) for k, v in self.part_s.items()}
        d["loops"] = self.loops
        return d


@dataclass(frozen=True, slots=True)
class _Committed:
    text: str
    start: int  # absolute sample index
    end: int


class OnlineTranscriber:
    """Feed contiguous 16 kHz samples with `feed`, call `step` often, `finish` at the end."""

    def __init__(
        self,
        decoder: WhisperDecoder,
        options: StreamOptions | None = None,
        time_of: Callable[[int], int] | None = None,
        clock: Callable[[], int] | None = None,
        origin: int = 0,
        vad: VoiceActivity | None = None,
    ) -> None:
        from affectstream.core.clock import now_ns

        self.decoder = decoder
        self.opt = options or StreamOptions()
        self.time_of = time_of or (lambda i: int(i * 1e9 / MODEL_SAMPLE_RATE))
        self.clock = clock or now_ns
        self.stats = StreamStats()
        sr = MODEL_SAMPLE_RATE
        self._preroll = int(self.opt.preroll_s * sr)
        self._min_chunk = int(self.opt.min_chunk_s * sr)
        self._first_chunk = int(self.opt.first_chunk_s * sr)
        self._end_silence = int(self.opt.end_silence_s * sr)
        self._max_span = int(self.opt.max_span_s * sr)
        self._tail_keep = int(self.opt.tail_keep_s * sr)
        cap = self._max_span + self._preroll + 4 * self._min_chunk + 4 * sr
        self._buf = np.zeros(cap, dtype=np.float32)  # audio from _buf_start to end
        # the VAD's frames (shared, fed by the caller; or private, fed here) decided by the gate
        self._feed_vad = vad is None
        self._vad = vad if vad is not None else VoiceActivity(self.opt.vad_threshold, history_s=4.0)
        self._gate = VadGate(self.opt.vad_threshold, origin)
        self._agree = LocalAgreement()
        self._context: deque[str] = deque(maxlen=max(self.opt.prompt_words, 1))
        self._last_end = origin  # end index of the last committed word of earlier spans
        self._reset_stream(origin)

    # -- state ---------------------------------------------------------------------------
    def _reset_stream(self, origin: int) -> None:
        self._buf_start = origin
        self.end = origin  # index after the last fed sample
        self._gate.reset(origin)  # a private VAD restarts by itself: the next index jumps
        self._idle_since = origin  # speech before this index does not start an utterance
        self._end_utterance_state()

    def _end_utterance_state(self) -> None:
        self.active = False  # inside an utterance
        self._span_start = -1
        self._span_words: list[_Committed] = []  # committed words inside the span (the prefix)
        self._last_decode_end = -1
        self._partial_shown = False
        self._agree.reset()

    @property
    def speech_active(self) -> bool:
        """True while an utterance is open (speech, or a pause shorter than end_silence_s)."""
        return self.active

    @property
    def last_committed_end(self) -> int:
        return self._span_words[-1].end if self._span_words else self._last_end

    # -- input ---------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """Append samples that follow the previous ones directly (index `self.end`).

        With a shared VAD, feed it first (`VoiceActivity.update`): frames it has not yet
        evaluated are decided on a later call.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        # a second at a time: any size fits the buffer
        for k in range(0, len(x), MODEL_SAMPLE_RATE):
            piece = x[k : k + MODEL_SAMPLE_RATE]
            self._make_room(len(piece))
            i = self.end - self._buf_start
            self._buf[i : i + len(piece)] = piece
            self.end += len(piece)
            self.stats.audio_s += len(piece) / MODEL_SAMPLE_RATE
            if self._feed_vad:
                start = self.end - len(piece)
                self._vad.feed(piece, self.time_of(start), index=start)
            self._gate.push(*self._vad.probs_between(self._gate.processed, self.end))
            if not self.active:
                if self._gate.voiced_end > self._idle_since:
                    self._start_utterance(max(self._gate.onset, self._idle_since))
                else:
                    self._drop_before(self.end - self._preroll)

    def _make_room(self, n: int) -> None:
        used = self.end - self._buf_start
        if used + n <= len(self._buf):
            return
        # only reachable if a span was not trimmed in time: keep the newest audio
        keep_from = self.end + n - len(self._buf)
        if self.active and keep_from > self._span_start:
            log.warning(
                "stt buffer full: span start moved %.2fs",
                (keep_from - self._span_start) / MODEL_SAMPLE_RATE,
            )
            self._span_start = keep_from
            self._span_words = [w for w in self._span_words if w.start >= keep_from]
        self._drop_before(keep_from)

    def _drop_before(self, index: int) -> None:
        index = min(index, self.end)
        k = index - self._buf_start
        if k <= 0:
            return
        used = self.end - self._buf_start
        self._buf[: used - k] = self._buf[k:used]
        self._buf_start = index

    def _start_utterance(self, onset: int) -> None:
        self.active = True
        self.stats.utterances += 1
        self._span_start = max(self._buf_start, onset - self._preroll)
        self._span_words = []
        # the first decode comes first_chunk_s after the onset, the later ones min_chunk_s apart
        self._last_decode_end = onset - self._min_chunk + self._first_chunk
        self._agree.reset()
        log.debug("utterance starts at %.2fs", onset / MODEL_SAMPLE_RATE)

    # -- decoding ------------------------------------------------------------------------
    def due(self) -> bool:
        """True when `step` would decode now."""
        if not self.active:
            return False
        return self._utterance_over() or self.end - self._last_decode_end >= self._min_chunk

    def _utterance_over(self) -> bool:
        return (
            not self._gate.voiced
            and self._gate.voiced_end >= 0
            and self._gate.silence_samples >= self._end_silence
        )

    def step(self) -> list[TranscriptSegment]:
        """Decode if due; returns the segments to emit (final first, then the partial)."""
        if not self.due():
            return []
        if self._utterance_over():
            return self._finalize()
        out = self._decode_and_agree()
        if self.end - self._span_start > self._max_span:
            out += self._trim_span()
        return out

    def finish(self) -> list[TranscriptSegment]:
        """End of stream: make every word of an open utterance final."""
        return self._finalize() if self.active else []

    def skip_to(self, index: int) -> list[TranscriptSegment]:
        """Drop the stream up to `index` (backlog bound): the open utterance is abandoned.

        Words already committed stay; the partial is cleared. Returns a clearing partial.
        """
        if index <= self.end:
            return []
        self.stats.skipped_s += (index - self.end) / MODEL_SAMPLE_RATE
        self.stats.skips += 1
        out = self._clear_partial()
        if self._span_words:
            self._last_end = self._span_words[-1].end
            self._context.extend(w.text for w in self._span_words)
        self._reset_stream(index)
        return out

    def abandon(self) -> list[TranscriptSegment]:
        """Drop the open utterance (its decoding failed) and go on from the audio after it.

        Words already committed stay; the partial is cleared. Returns a clearing partial.
        """
        out = self._clear_partial()
        if self._span_words:
            self._last_end = self._span_words[-1].end
            self._context.extend(w.text for w in self._span_words)
        self._reset_stream(self.end)
        return out

    def _decode(self, final: bool) -> list[HypWord]:
        # trailing silence invites whisper to repeat itself: decode up to shortly after the
        # last voiced window; the zero padding then tells the model where speech ended
        stop = self.end
        voiced_end = self._gate.voiced_end
        if voiced_end > self._span_start and self.end - voiced_end > self._tail_keep:
            stop = voiced_end + self._tail_keep
        audio = self._buf[self._span_start - self._buf_start : stop - self._buf_start]
        prefix = [w.text for w in self._span_words]
        prefix_end = (
            (self._span_words[-1].end - self._span_start) / MODEL_SAMPLE_RATE
            if self._span_words
            else 0.0
        )
        prompt = join_words(self._context) if self.opt.prompt_words > 0 else ""
        hyp = self.decoder.decode(audio, prompt, prefix, prefix_end, final=final)
        self.stats.decodes += 1
        self.stats.decode_s += sum(hyp.timings_ms.values()) / 1e3
        for part, ms in hyp.timings_ms.items():
            self.stats.part_s[part] += ms / 1e3
        self._last_decode_end = self.end
        voice_end = (voiced_end - self._span_start) / MODEL_SAMPLE_RATE if voiced_end >= 0 else None
        words, reason = guard_words(hyp.words, hyp.duration, prefix_end, prefix, voice_end)
        if reason:
            self.stats.guards[reason] += 1
            log.debug("hypothesis cut (%s): %s", reason, " ".join(w.text for w in hyp.words))
        return words

    def _decode_and_agree(self) -> list[TranscriptSegment]:
        words = self._decode(final=False)
        if not words and not self._span_words:  # nothing heard yet: look again sooner
            self._last_decode_end += self._first_chunk - self._min_chunk
        committed, tail = self._agree.insert(words)
        out = self._commit(committed)
        out += self._partial(tail)
        return out

    def _finalize(self) -> list[TranscriptSegment]:
        words = self._decode(final=True)
        out = self._commit(words)
        out += self._clear_partial()
        if self._span_words:
            self._last_end = self._span_words[-1].end
            self._context.extend(w.text for w in self._span_words)
        self._end_utterance_state()
        self._idle_since = self.end
        self._drop_before(self.end - self._preroll)
        return out

    def _trim_span(self) -> list[TranscriptSegment]:
        """Cut the span after a committed word so the next decode sees at most ~half of it."""
        out: list[TranscriptSegment] = []
        if not self._span_words:  # nothing agreed for max_span_s: force all but the last word
            forced = self._agree.previous[:-1]
            out += self._commit(forced)
            self._agree.previous = self._agree.previous[len(forced) :]
            if not self._span_words:
                return out
        words = self._span_words
        target = self.end - self._max_span // 2  # leave at most half a span to decode
        later = self._agree.previous
        best = None
        for k, w in enumerate(words):
            if w.end < target and k < len(words) - 1:
                continue
            if k + 1 < len(words):
                nxt = words[k + 1].start
            elif later:
                nxt = self._to_index(later[0].start)
            else:
                nxt = w.end
            gap = max(nxt - w.end, 0)
            score = (w.text.endswith(_SENTENCE_END), gap > 0.1 * MODEL_SAMPLE_RATE, w.end)
            if best is None or score > best[0]:
                best = (score, k, w.end + gap // 2)
        _, k, cut = best
        moved = words[: k + 1]
        self._context.extend(w.text for w in moved)
        self._span_words = words[k + 1 :]
        shift = (cut - self._span_start) / MODEL_SAMPLE_RATE
        self._span_start = cut
        # the tentative words keep span-relative times: shift them to the new span start
        self._agree.previous = [
            HypWord(w.text, w.start - shift, w.end - shift, w.probability)
            for w in self._agree.previous
        ]
        self._drop_before(cut)
        self.stats.trims += 1
        log.debug("span trimmed at %.2fs after %r", cut / MODEL_SAMPLE_RATE, moved[-1].text)
        return out

    # -- output --------------------------------------------------------------------------
    def _to_index(self, seconds: float) -> int:
        return self._span_start + int(round(seconds * MODEL_SAMPLE_RATE))

    def _commit(self, words: list[HypWord]) -> list[TranscriptSegment]:
        if not words:
            return []
        floor = self.last_committed_end
        done: list[_Committed] = []
        for w in words:
            start = max(self._to_index(w.start), floor)
            end = max(self._to_index(w.end), start)
            done.append(_Committed(w.text, start, end))
            floor = end
        self._span_words.extend(done)
        self.stats.committed_words += len(done)
        probs = [w.probability for w in words]
        return [self._segment(done, probs, final=True)]

    def _partial(self, words: list[HypWord]) -> list[TranscriptSegment]:
        if not words:
            return self._clear_partial()
        floor = self.last_committed_end
        items = []
        for w in words:
            start = max(self._to_index(w.start), floor)
            end = max(self._to_index(w.end), start)
            items.append(_Committed(w.text, start, end))
            floor = end
        self._partial_shown = True
        return [self._segment(items, [w.probability for w in words], final=False)]

    def _clear_partial(self) -> list[TranscriptSegment]:
        if not self._partial_shown:
            return []
        self._partial_shown = False
        t = self.time_of(self.end)
        return [TranscriptSegment(t, t, "", (), final=False, emitted_ns=self.clock())]

    def _segment(
        self, items: list[_Committed], probs: list[float], final: bool
    ) -> TranscriptSegment:
        words = tuple(
            Word(c.text, self.time_of(c.start), self.time_of(c.end), float(p))
            for c, p in zip(items, probs, strict=True)
        )
        return TranscriptSegment(
            t_start_ns=words[0].start_ns,
            t_end_ns=words[-1].end_ns,
            text=join_words([c.text for c in items]),
            words=words,
            final=final,
            emitted_ns=self.clock(),
        )
