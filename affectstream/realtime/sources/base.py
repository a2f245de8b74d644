"""The lifecycle every source shares: start/stop, context manager, join with a timeout, status.

A subclass implements `_run()`, which loops until `self._stop_event` is set. Errors inside the
thread never escape into the host application: they set the status to FAILED with a reason,
and the scheduler sees the modality as missing.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source that cannot be opened (missing device, unreadable file): the message says which."""


class SourceState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    FINISHED = "finished"  # a file reached its end
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    state: SourceState
    reason: str = ""


class Source:
    """Base class: a named capture thread with an explicit, idempotent lifecycle."""

    name = "source"

    def __init__(self) -> None:
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = SourceStatus(SourceState.CREATED)
        self._status_lock = threading.Lock()

    # -- status -----------------------------------------------------------------------
    @property
    def status(self) -> SourceStatus:
        with self._status_lock:
            return self._status

    def _set_status(self, state: SourceState, reason: str = "") -> None:
        with self._status_lock:
            self._status = SourceStatus(state, reason)
        if state in (SourceState.FAILED, SourceState.RECONNECTING):
            log.warning("%s %s: %s", self.name, state.value, reason)

    @property
    def running(self) -> bool:
        return self.status.state in (SourceState.RUNNING, SourceState.RECONNECTING)

    @property
    def done(self) -> bool:
        """True once the source will produce nothing more (end of file, stopped, failed)."""
        return self.status.state in (SourceState.FINISHED, SourceState.STOPPED, SourceState.FAILED)

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Open the device or file in the caller's thread, so that errors reach the caller.

        Subclasses raise SourceError with a clear message; the default does nothing.
        """

    def start(self) -> Source:
        if self._thread is not None:
            return self
        self.open()
        self._stop_event.clear()
        self._set_status(SourceState.RUNNING)
        self._thread = threading.Thread(
            target=self._main, name=f"affectstream-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self._run()
        except Exception as e:  # a capture thread must not take the stream down
            log.exception("%s failed", self.name)
            self._set_status(SourceState.FAILED, f"{type(e).__name__}: {e}")
            return
        finally:
            self.close()
        if self.status.state in (SourceState.RUNNING, SourceState.RECONNECTING):
            self._set_status(
                SourceState.STOPPED if self._stop_event.is_set() else SourceState.FINISHED
            )

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; called on the source's own thread when it ends."""

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to end and join it; returns False if it did not end in time."""
        self._stop_event.set()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        alive = t.is_alive()
        if alive:
            log.warning("%s did not stop within %.1fs", self.name, timeout)
        return not alive

    def join(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for subclasses -------------------------------------------------------
    def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; returns True if a stop was requested."""
        return self._stop_event.wait(seconds)


class PushSource(Source):
    """A source the host feeds by calling its `push`: no thread. `start` marks it running,
    `stop` marks it stopped; subclasses that hold state flush it in `stop` first."""

    def start(self) -> PushSource:
        self._set_status(SourceState.RUNNING)
        return self

    def stop(self, timeout: float = 0.0) -> bool:
        if self.status.state is SourceState.RUNNING:
            self._set_status(SourceState.STOPPED)
        return True
