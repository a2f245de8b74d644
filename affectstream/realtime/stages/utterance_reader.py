"""An utterance head of the voice reading, live: once per second of an utterance, not per tick.

The voice model card's shipped reading (`eval voice`) fuses each utterance's eGeMAPS
functionals and Whisper-encoder statistics, standardised by the speaker's session, into the
CNN path (`models.voice.utterance.UtteranceHead`). Each costs 10-20 ms of CPU per second of
speech, too much for every 10 Hz tick, so this reader runs its extractor on a worker thread of
its own:

- while an utterance goes on, every `every_s` seconds of it (from `min_s` on), the newest
  `max_s` seconds of it are read against the session so far; that reading is fused into each
  tick until the next one arrives;
- when the utterance ends, the whole of it (its newest `max_s` seconds) joins the session once,
  as `eval voice` adds each clip once; the next utterance starts with the CNN path alone.

The worker only extracts features; the session and the readings change on the stage's thread,
in the order the jobs were submitted. A reading lands on the first tick after the extractor is
done, so when it lands depends on the machine's speed, even in a file stepped on the media
clock (`--fast`): there a stage that waited for it would overrun its deadline instead.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from affectstream.core.ringbuffer import SampleRing

log = logging.getLogger(__name__)


class UtteranceReader:
    """Per-stream readings of the current utterance by one utterance head (one per head and
    voice stage)."""

    def __init__(
        self,
        ring: SampleRing,
        head,
        every_s: float = 1.0,
        min_s: float = 1.0,
        max_s: float = 4.0,
        extract=None,
    ) -> None:
        """`head`: an `UtteranceHead`. `extract`: samples -> (F,) features (default: the
        head's extractor, `utterance.extractor`, made on the worker thread, which alone calls
        it)."""
        self.ring = ring
        self.head = head
        self.every = int(every_s * ring.sample_rate)
        self.min = int(min_s * ring.sample_rate)
        self.max = int(max_s * ring.sample_rate)
        self._extract = extract
        # one worker, made at the first job; its thread ends when this reader is freed
        self._pool: ThreadPoolExecutor | None = None
        # (kind, utterance number, the session it belongs to, seconds, features)
        self._jobs: deque[tuple[str, int, object, float, Future]] = deque()
        self.norm = head.new_session()
        self.reading: np.ndarray | None = None  # (1, 7) of the current utterance, or None
        self.reading_s = 0.0  # seconds of speech the reading covers
        self._start: int | None = None  # ring index where the current utterance began
        self._utterance = 0  # counts utterances, so a late read never lands on the next one
        self._last_read = 0

    def reset_session(self) -> None:
        self.norm = self.head.new_session()

    def speech(self, start_hint: int) -> None:
        """The stage heard speech this tick; `start_hint`: where it began, if it just began."""
        self._collect()
        end = self.ring.written
        if self._start is None:
            self._start, self._last_read = start_hint, start_hint
            self._utterance += 1
            self.reading, self.reading_s = None, 0.0
        reading = any(job[0] == "read" for job in self._jobs)  # one read in flight at most
        if not reading and end - self._start >= self.min and end - self._last_read >= self.every:
            self._last_read = end
            self._submit("read", self._start, end)

    def silence(self) -> None:
        """No speech this tick: an utterance that was going on ends and joins the session."""
        if self._start is not None:
            end = self.ring.written
            if end - self._start >= self.min:
                self._submit("session", self._start, end)
            self._start = None
            self.reading, self.reading_s = None, 0.0
        self._collect()

    def _submit(self, kind: str, start: int, end: int) -> None:
        from affectstream.models.voice.utterance import utterance_span

        x, _ = self.ring.read(max(start, end - self.max), end)
        s, e = utterance_span(x, self.ring.sample_rate)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="utterance")
        seconds = (e - s) / self.ring.sample_rate
        job = self._pool.submit(self._features, x[s:e])
        self._jobs.append((kind, self._utterance, self.norm, seconds, job))

    def _features(self, x: np.ndarray) -> np.ndarray:
        if self._extract is None:
            from affectstream.models.voice.utterance import extractor

            self._extract = extractor(self.head.features, self.ring.sample_rate)
        return self._extract(x)

    def _collect(self) -> None:
        """Apply finished jobs, oldest first (a later job waits for an earlier one)."""
        while self._jobs and self._jobs[0][4].done():
            kind, utterance, norm, seconds, job = self._jobs.popleft()
            try:
                feats = job.result()
            except Exception as e:  # a span the extractor cannot read: keep the CNN path
                log.warning("%s of a %.1f s span failed: %s", self.head.features, seconds, e)
                continue
            if kind == "session":  # the session it was heard in, even after a reset
                self.head.add(norm, feats, seconds)
            elif self._start is not None and utterance == self._utterance:  # still going on
                self.reading, self.reading_s = self.head.read(self.norm, feats), seconds

    def wait(self, timeout: float = 10.0) -> None:
        """Block until every submitted job has been applied (for tests: a repeatable order)."""
        from concurrent.futures import wait

        wait([job[4] for job in self._jobs], timeout)
        self._collect()
