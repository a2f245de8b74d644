"""`ModelLoader`: a stream's models opened on one background thread, so the stream ticks at once.

Opening every model before the first tick made the first estimate wait for all of them (1.6 s
on this 2-core CPU, 4.3 s on a first launch that measures the backends), although the face
model alone opens and warms up in tens of milliseconds. The loader opens them one after
another on its own thread while the scheduler already ticks; each modality joins the
estimates when its model is ready, and until then its status is `loading` (the scheduler does
not run a stage whose model is not open: `Stage.model_problem`). A model that fails to open
gives its modality the status `error: ...`; the others still load.

Order: cheapest first (`ORDER`), so the first modality joins as early as it can: the face
(its shipped int8 ONNX model does not even import torch, which takes 0.8 s here), then the
voice, the text model, and the whisper model last. One thread, not one per model: on two
cores, parallel loads only contend for the GIL and the CPU with the ticks already running.

Stepped runs (files replayed as fast as possible) call `load_all()` instead, in the caller's
thread before the first tick, so their results never depend on load timing, and a model that
cannot be opened raises there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

ORDER = ("face", "voice", "fusion", "text", "stt")  # names not listed load after these
LOADING = "loading"


class ModelLoader:
    """Named load jobs (`add`), run once each, in `ORDER`, by `start()` or `load_all()`."""

    def __init__(self) -> None:
        self._jobs: dict[str, Callable[[], None]] = {}
        self._state: dict[str, str] = {}  # name -> "" (open), "loading", "error: ..."
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()  # nothing to load yet
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, name: str, load: Callable[[], None]) -> None:
        """`load()` opens model `name` and hands it to whoever uses it (a stage, the
        transcriber); until it has returned, `status(name)` is "loading"."""
        with self._lock:
            self._jobs[name] = load
            self._state[name] = LOADING
            self._done.clear()

    def status(self, *names: str) -> str:
        """The first of `names` whose model is not open: "loading", or "error: ..." for one
        that could not be opened; "" when all are open (or were never added)."""
        with self._lock:
            for name in names:
                state = self._state.get(name, "")
                if state:
                    return state
        return ""

    def failed(self, name: str) -> bool:
        return self.status(name).startswith("error")

    def start(self) -> None:
        """Open the models on a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None or not self._jobs:
                return
            self._thread = threading.Thread(
                target=self._run, args=(False,), name="affectstream-models", daemon=True
            )
        self._thread.start()

    def load_all(self) -> None:
        """Open every model now, in this thread; the first that cannot be opened raises."""
        self._run(True)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether every model was opened (or failed) within `timeout` seconds."""
        return self._done.wait(timeout)

    def close(self, wait_s: float = 0.0) -> None:
        """Open no more models. One being opened finishes on its own thread, unused; with
        `wait_s`, wait up to that long for it (a model opening is native code that must not
        be running when the process exits)."""
        with self._lock:
            self._closed = True
            self._jobs.clear()  # their closures hold the stream: it must be free to go
            thread = self._thread
        if wait_s > 0 and thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)

    def _run(self, raise_errors: bool) -> None:
        try:
            for name in sorted(self._jobs, key=_rank):
                with self._lock:
                    if self._closed:
                        return
                    load = self._jobs.pop(name)
                try:
                    load()
                except Exception as e:
                    reason = f"error: {name} model failed to load: {type(e).__name__}: {e}"
                    with self._lock:
                        self._state[name] = reason[:200]
                    if raise_errors:
                        raise
                    log.warning("%s", reason)
                    continue
                with self._lock:
                    self._state[name] = ""
                log.debug("%s model ready", name)
        finally:
            self._done.set()


def _rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


__all__ = ["LOADING", "ModelLoader", "ORDER"]
