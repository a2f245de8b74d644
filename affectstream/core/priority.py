"""Lower the OS scheduling priority of background threads (Linux), so latency-bound work wins.

A tick must answer within its period; speech-to-text commits its words seconds after they are
spoken anyway. On a busy CPU both compete for the cores, and without a priority the kernel
shares them evenly, so every tick waits behind a whisper decode now and then: that wait is
the tail of the estimate age. Lowering the niceness of the decoding threads (CTranslate2's own
native threads, and the transcriber's Python thread) lets the kernel run a tick first and the
decode in the time left over. Per thread, not per process: on Linux `setpriority` with a
thread id touches that thread only. Elsewhere it does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)


def thread_ids() -> set[int]:
    """The native ids of this process's threads now (Linux; empty elsewhere)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def lower(tids, niceness: int) -> int:
    """Raise the niceness of each thread in `tids` to `niceness` (never lower it: that needs
    privileges and is not ours to take). Returns how many threads were changed."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return 0
    changed = 0
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                changed += 1
        except OSError as e:  # a thread that ended meanwhile, or a sandbox that forbids it
            log.debug("cannot lower the priority of thread %d: %s", tid, e)
    return changed


def lower_this_thread(niceness: int) -> int:
    """`lower` for the calling thread."""
    return lower([threading.get_native_id()], niceness)


def idle(tids) -> int:
    """Put each thread in `tids` in Linux's idle scheduling class (SCHED_IDLE): it runs only
    on CPU time no other thread wants, and threads it makes afterwards inherit that. Stronger
    than any niceness: on a saturated CPU a niced thread still takes a share of each core,
    and so delays the ticks (measured: docs/benchmarks.md). Returns how many were changed
    (0 where the class does not exist or is refused)."""
    if not hasattr(os, "SCHED_IDLE"):
        return 0
    changed = 0
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            changed += 1
        except OSError as e:  # a thread that ended meanwhile, or a sandbox that forbids it
            log.debug("cannot put thread %d in the idle class: %s", tid, e)
    return changed


__all__ = ["idle", "lower", "lower_this_thread", "thread_ids"]
