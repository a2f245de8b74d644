"""Keep a long-running server's native heap from growing as sessions come and go (glibc).

What grew: `affectstream serve` kept about 12-18 MB of resident memory per closed session
(docs/benchmarks.md, "The server under session churn"), while every session's Python objects
were freed and `malloc_trim` gave back only a tenth of it. The cause is glibc's *dynamic mmap
threshold*: a block of at least `M_MMAP_THRESHOLD` (128 KiB at start) is its own `mmap` and
goes back to the OS when freed, but each time such a block is freed glibc raises the
threshold to its size (up to 32 MiB). Loading the models frees blocks of megabytes, so from
then on every decoded frame (720x528 RGB is 1.1 MB, 24 a second per session), every audio
window and every whisper feature matrix is carved from the heaps of whichever of the ~16
per-thread arenas its thread uses. A session's threads interleave those big short-lived
blocks with small long-lived ones, the heaps fragment, and a heap only shrinks from its top:
each session leaves pages that no later one fills exactly.

`pin_mmap_threshold()` sets the threshold once (`mallopt`), which also turns the dynamic
adjustment off, so big blocks are mapped and unmapped again as glibc does at start: measured,
the growth stops (8 rounds of 4 sessions: round 8 within a few percent of round 2). Its price
is a page fault per 4 KiB of each big block, well under 1 % of a core per session.
`trim()` hands back the free pages left in the heaps after a session closes.

Both are no-ops where the C library is not glibc (musl, macOS, Windows): `available()` says.
A host that embeds streams in its own long-running process may call them too; the library does
not change a process-wide allocator setting behind a host's back, only the server does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, or None (another C library, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether this process's allocator is glibc's, the one these settings are for."""
    return _libc() is not None


def pin_mmap_threshold(nbytes: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Blocks of `nbytes` or more get their own mapping, for the rest of the process; the
    threshold no longer follows the frees. True if set (glibc)."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    if ok:
        log.debug("malloc mmap threshold pinned at %d bytes", nbytes)
    return ok


def trim() -> bool:
    """Return the free pages of every arena's heap to the OS; True if any was (glibc)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


__all__ = ["available", "pin_mmap_threshold", "trim"]
