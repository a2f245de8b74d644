"""Cross-session batching: the requests that several streams make of one shared model within a
few milliseconds become one backend call.

Every stream of a process (server sessions, `bench pipeline --streams`, `Recognizer`s sharing
models) calls the same predictors, each from its own stage thread. Without batching, N
streams make N calls of batch 1 per tick; on a GPU that wastes the device, and on a CPU each
call pays the runtime's fixed overhead. A `BatchingBackend` wraps a loaded backend and keeps
its contract (`infer`, `signature`, `name`, `describe`, `close`), so a predictor runs on it
unchanged.

How a batch forms (no thread of its own): the first request to arrive leads. It waits up to
`window_ms` (config `batch`) for the others, and stops waiting as soon as every stream that called in the last
second has asked (`active_s`), the batch is full (`max_batch`), or waiting longer would make a
pending request miss its deadline (`core.deadline`, set by the scheduler for each stage call,
less the time a batch takes, measured). It then makes one call, splits the outputs and wakes
the others. Requests whose shapes cannot share a call (voice windows of different lengths)
go in separate calls of the same round; axes the model masks (text tokens) are zero-padded
to the longest. Each request is checked against the signature in its own thread first, so a
bad feed fails alone, with the backend's message.

With one stream there is nobody to wait for: the call goes straight through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from affectstream.core import deadline
from affectstream.core.config import BatchConfig
from affectstream.core.stats import BatchStats

Feed = Mapping[str, np.ndarray]


@dataclass
class _Request:
    feed: Feed
    arrived_ns: int
    latest_ns: int | None  # start the call by then, or the answer comes too late
    done: bool = False
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


def shape_key(feed: Feed, padded: Sequence[str], signature) -> tuple:
    """What must match for two feeds to share a call: every input's shape past the batch axis,
    with the axes that may be zero-padded left out."""
    key = []
    for spec in signature.inputs:
        shape = feed[spec.name].shape
        key.append(
            tuple(
                None if isinstance(name, str) and name in padded else size
                for name, size in zip(spec.shape[1:], shape[1:], strict=True)
            )
        )
    return tuple(key)


def merge_feeds(feeds: Sequence[Feed], signature, padded: Sequence[str]) -> tuple[dict, list]:
    """One feed of the requests' rows, stacked on the batch axis; padded axes zero-filled to
    the longest. Returns (feed, [(rows, {axis name: own size}) per request])."""
    own: list[tuple[int, dict[str, int]]] = []
    for f in feeds:
        sizes: dict[str, int] = {}
        for spec in signature.inputs:
            for name, size in zip(spec.shape, f[spec.name].shape, strict=True):
                if isinstance(name, str):
                    sizes[name] = size
        own.append((next(iter(f.values())).shape[0], sizes))
    merged: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        parts = [f[spec.name] for f in feeds]
        widest = [max(p.shape[a] for p in parts) for a in range(parts[0].ndim)]
        padded_parts = []
        for p in parts:
            pad = [
                (0, widest[a] - p.shape[a]) if a > 0 and spec.shape[a] in padded else (0, 0)
                for a in range(p.ndim)
            ]
            padded_parts.append(np.pad(p, pad) if any(w for _, w in pad) else p)
        merged[spec.name] = np.concatenate(padded_parts, axis=0)
    return merged, own


def split_outputs(
    outputs: Mapping[str, np.ndarray], own: Sequence[tuple[int, dict[str, int]]], signature
) -> list[dict[str, np.ndarray]]:
    """Each request's rows of `outputs`, cropped back to its own size on padded axes."""
    results = []
    start = 0
    for rows, sizes in own:
        out = {}
        for spec in signature.outputs:
            a = outputs[spec.name][start : start + rows]
            crop = tuple(
                slice(0, sizes[name]) if isinstance(name, str) and name in sizes else slice(None)
                for name in spec.shape[1:]
            )
            out[spec.name] = a[(slice(None), *crop)]
        results.append(out)
        start += rows
    return results


class BatchingBackend:
    """A loaded backend shared by several streams; see the module docstring."""

    def __init__(
        self, backend, options: BatchConfig | None = None, padded: Sequence[str] = ()
    ) -> None:
        self.inner = backend
        self.options = options or BatchConfig()
        self.padded = tuple(a for a in padded if a != "batch")
        self.stats = BatchStats()
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._leading = False
        self._callers: dict[int, int] = {}  # thread id -> when it last asked (ns)
        self._call_ns = 0.0  # how long a call takes (moving average), for deadlines

    # -- the backend contract ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return getattr(self.inner, "model", "")

    @property
    def signature(self):
        return self.inner.signature

    def describe(self) -> dict[str, Any]:
        d = getattr(self.inner, "describe", None)
        info = dict(d()) if d is not None else {"backend": self.name}
        info["batching"] = {
            "window_ms": self.options.window_ms,
            "max_batch": self.options.max_batch,
        }
        return info

    def close(self) -> None:
        self.inner.close()

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        """The model on `feed`, in a batch with other streams' requests where they come."""
        now = time.perf_counter_ns()
        with self._cv:
            self._callers[threading.get_ident()] = now
            alone = not self._pending and not self._leading and self._active(now) <= 1
        if alone:
            out = self._call([feed])[0]  # the backend checks the feed itself
            with self._cv:
                self.stats.add(1, [0.0])
            return out
        self.signature.check(feed)  # a bad feed fails alone, here, not in the batch
        due = deadline.current()
        req = _Request(feed, now, None if due is None else int(due - self._call_ns))
        with self._cv:
            self._pending.append(req)
            self._cv.notify_all()
        while True:
            with self._cv:
                self._cv.wait_for(lambda: req.done or not self._leading)
                if req.done:
                    break
                self._leading = True
                batch = self._gather()
            try:
                self._run(batch)
            finally:
                with self._cv:
                    self._leading = False
                    self._cv.notify_all()
        if req.error is not None:
            raise req.error
        return req.result

    # -- forming and running a batch ------------------------------------------------------
    def _active(self, now: int) -> int:
        horizon = now - int(self.options.active_s * 1e9)
        for tid in [t for t, seen in self._callers.items() if seen < horizon]:
            del self._callers[tid]
        return len(self._callers)

    def _gather(self) -> list[_Request]:
        """With the lock held: wait for the batch to fill (see the module docstring), then
        take up to `max_batch` pending requests."""
        end = time.perf_counter_ns() + int(self.options.window_ms * 1e6)
        while True:
            now = time.perf_counter_ns()
            n = len(self._pending)
            if n >= self.options.max_batch or n >= self._active(now):
                reason = "full" if n >= self.options.max_batch else "all_in"
                break
            latest = [r.latest_ns for r in self._pending if r.latest_ns is not None]
            until = min([end, *latest])
            if until <= now:
                reason = "window" if until == end else "deadline"
                break
            self._cv.wait((until - now) / 1e9)
        self.stats.cut_by[reason] = self.stats.cut_by.get(reason, 0) + 1
        batch = self._pending[: self.options.max_batch]
        del self._pending[: len(batch)]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        """One call per group of shapes that can share it; every request gets its answer."""
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            groups.setdefault(shape_key(r.feed, self.padded, self.signature), []).append(r)
        for group in groups.values():
            start = time.perf_counter_ns()
            try:
                results: list[Any] = self._call([r.feed for r in group])
                error = None
            except Exception as e:  # every request of the call sees the runtime's error
                results, error = [None] * len(group), e
            took = time.perf_counter_ns() - start
            self._call_ns = took if self._call_ns == 0 else 0.8 * self._call_ns + 0.2 * took
            with self._cv:
                self.stats.add(len(group), [(start - r.arrived_ns) / 1e6 for r in group])
                for r, out in zip(group, results, strict=True):
                    r.result, r.error, r.done = out, error, True
                self._cv.notify_all()

    def _call(self, feeds: list[Feed]) -> list[dict[str, np.ndarray]]:
        if len(feeds) == 1:
            return [self.inner.infer(feeds[0])]
        merged, own = merge_feeds(feeds, self.signature, self.padded)
        return split_outputs(self.inner.infer(merged), own, self.signature)


def batch_stats(predictors: Mapping[str, Any]) -> dict[str, BatchStats]:
    """Per predictor whose backend is a batcher, its `BatchStats` (the others have none); the
    shared whisper model ("stt", `models.stt.shared.SharedDecoder`) keeps one of its own."""
    out = {}
    for name, predictor in predictors.items():
        stats = getattr(getattr(predictor, "backend", None), "stats", None)
        if stats is None:
            stats = getattr(predictor, "stats", None)
        if isinstance(stats, BatchStats):
            out[name] = stats
    return out


def batching(
    backend, options: BatchConfig | None = None, padded: Sequence[str] = (), device: str = "cpu"
):
    """`backend` wrapped in a `BatchingBackend` where batching is on for `device`."""
    options = options or BatchConfig()
    return BatchingBackend(backend, options, padded) if options.on(device) else backend


__all__ = [
    "BatchStats",
    "batch_stats",
    "BatchingBackend",
    "batching",
    "merge_feeds",
    "shape_key",
    "split_outputs",
]
