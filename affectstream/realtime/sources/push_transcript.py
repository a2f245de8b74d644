"""Words handed in by a host that runs its own speech-to-text (a voice agent's transcriber).

The text stage reads what it reads from our transcriber: `last_word_ns` (the end of the newest
words) and `recent_text(now, seconds)` (the words that ended within the last seconds), and the
stream asks `problem()` for the text modality's status and `counters()` for `dropped`. Each
push is one committed piece of text with its start and end on the stream clock.

Bounded: the newest `capacity` pieces are kept; older ones are overwritten and counted
(`dropped`, reported as `transcript_dropped`).

Interim words (`push_interim`): a host's speech-to-text revises its hypothesis while the user
speaks, seconds before it commits it. The newest interim piece is read after the committed
words, replaced by the next interim and dropped by the next committed push, so no word counts
twice and the text modality reads what is being said instead of waiting for the end of the
sentence. `expect(reason)`: the host expected words and none came; until the next push,
`problem()` says why (the text modality's status is then `missing: <reason>`).
"""

from __future__ import annotations

import threading
from collections import deque

from affectstream.core.clock import now_ns
from affectstream.core.messages import Word
from affectstream.models.stt.local_agreement import join_words
from affectstream.realtime.sources.base import PushSource, SourceState


class PushTranscript(PushSource):
    """Committed words pushed by a host; no thread of its own. `push` is thread-safe."""

    name = "push-transcript"

    def __init__(self, capacity: int = 512) -> None:
        super().__init__()
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._words: deque[Word] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._last_end_ns: int | None = None
        self.pushed = 0
        self.dropped = 0  # pieces overwritten by newer ones (the deque is full)
        self.refused = 0  # pieces pushed while the stream was not running
        self.interims = 0  # interim pieces pushed
        self._interim: Word | None = None  # the newest interim piece, until words commit
        self._expected = ""  # why words were expected and did not come (`expect`)

    def push(self, text: str, start_ns: int, end_ns: int, interim: bool = False) -> bool:
        """Add `text`, spoken from `start_ns` to `end_ns` (stream clock). Returns False when
        it was not kept (blank text, or the stream is not running). Raises ValueError for a
        non-string text or an end before the start. `interim`: a hypothesis that the next
        push replaces (module docstring)."""
        if not isinstance(text, str):
            raise ValueError(f"push_transcript: text must be a str, got {type(text).__name__}")
        start_ns, end_ns = int(start_ns), int(end_ns)
        if end_ns < start_ns:
            raise ValueError(
                f"push_transcript: end is {(start_ns - end_ns) / 1e9:.3f} s before start"
            )
        text = " ".join(text.split())
        self._expected = ""  # words came, blank or not
        if not text:
            return False
        if self.status.state is not SourceState.RUNNING:
            self.refused += 1
            return False
        with self._lock:
            if interim:
                self._interim = Word(text, start_ns, end_ns)
                self.interims += 1
                if self._last_end_ns is None or end_ns > self._last_end_ns:
                    self._last_end_ns = end_ns
                return True
            self._interim = None
            if len(self._words) == self._words.maxlen:
                self.dropped += 1
            self._words.append(Word(text, start_ns, end_ns))
            self.pushed += 1
            if self._last_end_ns is None or end_ns > self._last_end_ns:
                self._last_end_ns = end_ns
        return True

    # -- what the text stage and the stream read (the transcriber's interface) ----------
    @property
    def last_word_ns(self) -> int | None:
        """End time (stream clock) of the newest pushed words, None before any."""
        with self._lock:
            return self._last_end_ns

    def recent_text(self, now: int | None = None, seconds: float | None = None) -> str:
        """Pushed words that ended within the last `seconds` before `now` (default: 8 s)."""
        now = now_ns() if now is None else now
        since = now - int((8.0 if seconds is None else seconds) * 1e9)
        with self._lock:
            words = [w.text for w in self._words if w.end_ns >= since]
            if self._interim is not None and self._interim.end_ns >= since:
                words.append(self._interim.text)
        return join_words(words)

    @property
    def speech_active(self) -> bool:
        return False  # the host's transcriber knows; we only see committed words

    def expect(self, reason: str) -> None:
        """The host expected words and none came: `problem()` is `reason` until a push."""
        self._expected = reason

    def problem(self) -> str:
        return self._expected

    def counters(self) -> dict[str, int]:
        return {"transcript_dropped": self.dropped}


__all__ = ["PushTranscript"]
