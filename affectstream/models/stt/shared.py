"""One whisper model shared by the transcribers of many streams, decoding their spans together.

The streams of a process (server sessions, `bench pipeline --streams`, several `Recognizer`s
sharing models) each run a transcriber thread that asks the one model to decode a span every
half second or so. The model takes one call at a time, so under load the requests queue. A
`SharedDecoder` turns that queue into batches: a caller that finds the model free decodes at
once (alone, nothing is waited for); requests that arrive while it is busy wait, and the next
caller takes all of them (up to `max_batch`) into one `WhisperDecoder.decode_each` call. No
request waits for a batch to fill, so one stream pays nothing, and many streams pay one
encoder, one generate and one alignment call per round instead of one each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from affectstream.core.clock import now_ns
from affectstream.core.stats import BatchStats
from affectstream.models.stt.whisper_model import Hypothesis, Span

MAX_BATCH = 8  # spans per call; more would make the first in the round wait too long


@dataclass
class _Request:
    span: Span
    arrived_ns: int
    result: Hypothesis | Exception | None = None
    done: bool = False


class SharedDecoder:
    """`decode(...)` as `WhisperDecoder` has it, safe to call from many threads at once."""

    def __init__(self, decoder, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.decoder = decoder
        self.max_batch = max_batch
        self.stats = BatchStats()  # spans per call, and how long each waited for its call
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False

    @property
    def name(self) -> str:
        return getattr(self.decoder, "name", "whisper")

    def __getattr__(self, attr):  # model_path, options, tokenizer, encode_text ...
        if attr == "decoder":  # not set yet (a copy being made): no recursion
            raise AttributeError(attr)
        return getattr(self.decoder, attr)

    def decode(self, audio, prompt="", prefix=(), prefix_end=0.0, final=True) -> Hypothesis:
        request = _Request(Span(audio, prompt, tuple(prefix), prefix_end, final), now_ns())
        with self._cond:
            self._queue.append(request)
            while not request.done:
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._busy = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if isinstance(request.result, Exception):
            raise request.result
        return request.result

    def _run(self, batch: list[_Request]) -> None:
        """Decode `batch` outside the lock; every request gets its result or its error."""
        started = now_ns()
        self.stats.add(len(batch), [(started - r.arrived_ns) / 1e6 for r in batch])
        try:
            results = self.decoder.decode_each([r.span for r in batch])
        except Exception as e:  # noqa: BLE001 - reaches each waiting caller, not this one only
            results = [e] * len(batch)
        for request, result in zip(batch, results, strict=True):
            request.result = result
            request.done = True
