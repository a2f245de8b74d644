"""The deadline of the work running on this thread, so a batcher deep in a call can respect it.

The scheduler knows when a stage's answer stops being useful; the model call that a stage
makes several layers down (stage -> predictor -> backend) does not. Rather than thread a
deadline argument through every predictor, the stage's worker thread sets it here before the
call and clears it after, and a cross-session batcher (`export.batching`) reads it: a request
is never held for a batch past the point where its answer would come too late.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_local = threading.local()


@contextlib.contextmanager
def deadline(t_ns: int | None) -> Iterator[None]:
    """Within the block, `current()` on this thread is `t_ns` (a `perf_counter_ns` time)."""
    before = getattr(_local, "t_ns", None)
    _local.t_ns = t_ns
    try:
        yield
    finally:
        _local.t_ns = before


def current() -> int | None:
    """The `perf_counter_ns` time by which this thread's work must be done, or None."""
    return getattr(_local, "t_ns", None)


__all__ = ["current", "deadline"]
