"""The whisper model in a process of its own, so a decode never holds this process's lock.

Why: a decode is not only CTranslate2 (which releases Python's global interpreter lock); the
features, the tokens and the word alignment around it are Python and numpy, run under that
lock. The transcriber threads run at a lower OS priority (`core/priority.py`), so on a busy
CPU the kernel preempts them, sometimes while they hold the lock; every tick of every stream
then waits for a low-priority thread to be scheduled again: priority inversion, measured as
the tail of the face and voice ages at 4 streams on 2 cores. In a child process the model has
a lock of its own, and the whole process yields to the ticks: by its niceness, and with
`transcriber.idle` (the default) in Linux's idle scheduling class, so that it runs only on
CPU time nothing else wants (measured against niceness alone in docs/benchmarks.md).

`DecoderProcess` keeps the decoder's contract (`decode`, `decode_each`, `model_path`). The
child is `python -m affectstream.models.stt.worker FD`, started with `subprocess` (not
`multiprocessing`, which would re-run the host program's main module in the child: an agent's
script without a `__main__` guard would start itself again). Requests and results travel as
pickles over a private socket pair. The child ends when the parent closes its end or dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from affectstream.core import allocator, priority
from affectstream.models.stt.whisper_model import (
    DecodeOptions,
    Hypothesis,
    Span,
    SttModelError,
    WhisperDecoder,
)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # importing faster-whisper and loading the model; seconds on a CPU


class DecoderProcess:
    """A `WhisperDecoder` in a child process; one call at a time (`SharedDecoder` batches)."""

    name = "whisper-process"

    def __init__(
        self,
        model: str = "",
        compute_type: str = "int8",
        cpu_threads: int = 1,
        options: DecodeOptions | None = None,
        nice: int = 0,
        idle: bool = False,
    ) -> None:
        """`nice`: the child's niceness; `idle`: it also runs in the idle scheduling class
        (Linux), only on CPU time the ticks leave (`core/priority.py`)."""
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[3])  # the same affectstream
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(cpu_threads))  # numpy's features: no pool of its own
        # Every span length is a new input shape. oneDNN (in CTranslate2) keeps a compiled
        # primitive per shape (up to 1024) and MKL keeps the buffers it freed: together they
        # made this process grow by about 0.6 MB a server session (measured, soak serve)
        env.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
        env.setdefault("MKL_DISABLE_FAST_MM", "1")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._conn.send((model, compute_type, cpu_threads, options or DecodeOptions(), nice, idle))
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise SttModelError(f"the speech model process did not start in {START_TIMEOUT_S:g} s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            code = self._proc.wait(5)
            raise SttModelError(
                f"the speech model process ended at start (exit code {code})"
            ) from None
        if kind == "error":
            self.close()
            raise SttModelError(value)
        self.model_path = value
        self.options = options or DecodeOptions()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def decode_each(self, spans: list[Span]) -> list[Hypothesis | Exception]:
        with self._lock:
            try:
                self._conn.send(list(spans))
                return self._conn.recv()
            except (EOFError, OSError) as e:
                code = self._proc.poll()
                raise RuntimeError(
                    f"the speech model process is gone (exit code {code}): {e or 'closed'}"
                ) from None

    # one span through `decode_each`, as the model in this process does it
    decode = WhisperDecoder.decode

    def close(self, timeout_s: float = 5.0) -> None:
        """End the child (it finishes the decode it is in first)."""
        with contextlib.suppress(OSError):
            self._conn.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __del__(self) -> None:  # a forgotten decoder must not leave its child behind
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, AttributeError):
                self._conn.close()


def _picklable(e: Exception) -> Exception:
    """The exception itself when it crosses the pipe, else its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes a plain one
        return RuntimeError(f"{type(e).__name__}: {e}")


def serve(conn: Connection) -> None:
    """The child's loop: load the model as told, then decode each batch of spans sent."""
    model, compute_type, cpu_threads, options, nice, idle = conn.recv()
    try:
        decoder = WhisperDecoder(model, compute_type, cpu_threads, options=options)
    except SttModelError as e:
        conn.send(("error", str(e)))
        return
    # every thread of this process: the model's, and those numpy's libraries made at import
    threads = priority.thread_ids()
    priority.lower(threads, nice)
    if idle:
        priority.idle(threads)
    conn.send(("ready", decoder.model_path))
    allocator.pin_mmap_threshold()  # it outlives the sessions it decodes for (core/allocator.py)
    while True:
        try:
            spans = conn.recv()
        except (EOFError, OSError):  # the parent closed its end, or died
            return
        out = decoder.decode_each(spans)
        conn.send([o if isinstance(o, Hypothesis) else _picklable(o) for o in out])
        # the freed decode buffers go back to the OS: without it this process grew ~4 MB a
        # round of 4 sessions, with it ~2 (docs/benchmarks.md, "The server under session churn")
        allocator.trim()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    serve(Connection(int(sys.argv[1])))
