"""Preallocated, timestamped ring buffers: one writer, many readers, the oldest overwritten.

A writer never blocks and never waits for a reader. Readers detect a slot that was
overwritten while they read it (a sequence lock) and skip it rather than return a torn item.

- `RingBuffer` holds messages (frames, transcript segments) in a fixed list of slots.
- `SampleRing` holds mono audio samples in one preallocated float32 array.

Overflow policy of both: drop oldest, keep newest. What a reader missed is counted by its
`Reader.dropped`; what the buffer overwrote before anyone read it is `RingBuffer.overwritten`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Slot(Generic[T]):
    seq: int
    t_ns: int
    item: T


class RingBuffer(Generic[T]):
    """Fixed-capacity ring of timestamped items with sequence numbers."""

    def __init__(self, capacity: int, name: str = "ring") -> None:
        if capacity < 1:
            raise ValueError(f"{name}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._items: list[T | None] = [None] * capacity
        self._times = np.zeros(capacity, dtype=np.int64)
        self._seqs = np.full(capacity, -1, dtype=np.int64)
        self._head = 0  # sequence number of the next write
        self.overwritten = 0

    def __len__(self) -> int:
        return min(self._head, self.capacity)

    @property
    def written(self) -> int:
        return self._head

    def push(self, item: T, t_ns: int) -> int:
        """Write one item (single writer only); returns its sequence number."""
        seq = self._head
        i = seq % self.capacity
        if seq >= self.capacity:
            self.overwritten += 1
        self._seqs[i] = -1  # invalidate while writing
        self._items[i] = item
        self._times[i] = t_ns
        self._seqs[i] = seq
        self._head = seq + 1
        return seq

    def _read(self, seq: int) -> Slot[T] | None:
        i = seq % self.capacity
        s1 = int(self._seqs[i])
        item = self._items[i]
        t = int(self._times[i])
        s2 = int(self._seqs[i])
        if s1 != seq or s2 != seq:
            return None  # overwritten (or being written) while we read
        return Slot(seq, t, item)  # type: ignore[arg-type]

    def _span(self, first: int, head: int) -> list[Slot[T]]:
        out = []
        for seq in range(max(first, head - self.capacity, 0), head):
            slot = self._read(seq)
            if slot is not None:
                out.append(slot)
        return out

    def latest(self, n: int = 1) -> list[Slot[T]]:
        """The newest `n` items, oldest first."""
        head = self._head
        return self._span(head - n, head)

    def newest(self) -> Slot[T] | None:
        items = self.latest(1)
        return items[0] if items else None

    def window(self, t0_ns: int, t1_ns: int) -> list[Slot[T]]:
        """Items with t0_ns <= t_ns <= t1_ns, oldest first."""
        return [s for s in self._span(0, self._head) if t0_ns <= s.t_ns <= t1_ns]

    def reader(self) -> Reader[T]:
        """A cursor that returns each item once and counts what it missed."""
        return Reader(self)


class Reader(Generic[T]):
    def __init__(self, ring: RingBuffer[T]) -> None:
        self.ring = ring
        self.next_seq = ring.written
        self.dropped = 0

    def read_new(self) -> list[Slot[T]]:
        head = self.ring.written
        if head <= self.next_seq:
            return []
        slots = self.ring._span(self.next_seq, head)
        expected = head - self.next_seq
        self.dropped += expected - len(slots)
        self.next_seq = head
        return slots


class SampleRing:
    """Preallocated ring of mono float32 samples, with the capture time of each write.

    `write` is called from a device callback: it only copies. `latest(n)` returns a copy of
    the newest n samples and the capture time of the first one, or raises nothing and
    returns fewer samples when fewer exist.
    """

    def __init__(self, seconds: float, sample_rate: int, name: str = "audio") -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.capacity = int(round(seconds * sample_rate))
        if self.capacity < 1:
            raise ValueError(f"{name}: ring of {seconds}s at {sample_rate} Hz holds no sample")
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # samples fully written
        self._writing_upto = 0  # samples claimed by the writer (>= _written)
        self._anchor_index = 0  # sample index of the newest write ...
        self._anchor_t_ns = 0  # ... and its capture time
        self.torn_reads = 0
        self._lock = threading.Lock()  # guards the anchor pair only; never held while copying

    @property
    def written(self) -> int:
        return self._written

    def write(self, samples: np.ndarray, t_ns: int) -> None:
        """Append samples captured at t_ns (time of the first sample). Single writer."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = len(x)
        if n == 0:
            return
        start = self._written
        if n > self.capacity:  # only the newest samples fit; indexes still advance by all n
            skip = n - self.capacity
            x, t_ns, start, n = (
                x[skip:],
                t_ns + int(skip * 1e9 / self.sample_rate),
                start + skip,
                self.capacity,
            )
        self._writing_upto = start + n
        i = start % self.capacity
        k = min(n, self.capacity - i)
        self._buf[i : i + k] = x[:k]
        if k < n:
            self._buf[: n - k] = x[k:]
        with self._lock:
            self._anchor_index, self._anchor_t_ns = start, t_ns
        self._written = start + n

    def time_of(self, index: int) -> int:
        """Capture time of sample `index`, extrapolated from the newest write."""
        with self._lock:
            ai, at = self._anchor_index, self._anchor_t_ns
        return at + int((index - ai) * 1e9 / self.sample_rate)

    def latest(self, n: int) -> tuple[np.ndarray, int]:
        """(copy of the newest n samples, capture time of the first); fewer if fewer exist."""
        end = self._written
        out, first = self.read(max(0, end - n), end)
        return out, self.time_of(first)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Copy of samples [start, stop) by absolute index, and the index of the first returned.

        The first index is later than `start` when those samples were already overwritten; a
        reader that tracks its own position (e.g. the VAD) uses it to count what it missed.
        """
        for _ in range(10):
            stop_ = min(stop, self._written)
            start_ = min(max(start, stop_ - self.capacity, 0), stop_)
            n = stop_ - start_
            out = np.empty(n, dtype=np.float32)
            i = start_ % self.capacity
            k = min(n, self.capacity - i)
            out[:k] = self._buf[i : i + k]
            if k < n:
                out[k:] = self._buf[: n - k]
            if self._writing_upto <= start_ + self.capacity:
                return out, start_
            self.torn_reads += 1  # the writer overwrote part of our span: read again
            start = self._writing_upto - self.capacity
        return np.empty(0, dtype=np.float32), self._written

    def since(self, index: int) -> tuple[np.ndarray, int]:
        """Samples from absolute index `index` to now (clamped to what is still held), and the
        capture time of the first one returned."""
        out, first = self.read(index, self._written)
        return out, self.time_of(first)
