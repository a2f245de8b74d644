"""The scheduler: a fixed-rate tick that turns the newest data into one `Estimate`.

Each tick runs every stage once against its deadline, never queues work beyond the current
tick, marks stale or missing inputs, counts overruns, and emits an estimate every tick.
Two drivers share one `Pipeline.tick`: `run_realtime` on the monotonic clock, and
`run_stepped` on a media clock for replaying files as fast as possible.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from affectstream.core.clock import now_ns
from affectstream.core.config import SchedulerConfig
from affectstream.core.deadline import deadline
from affectstream.core.labels import MODALITIES, valence_arousal
from affectstream.core.messages import Estimate
from affectstream.realtime.fusion import confidence_fusion
from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage

log = logging.getLogger(__name__)

DEFAULT_STALE_MS, DEFAULT_MISSING_MS = 500.0, 1000.0  # for stages the config does not name


class StageWorker:
    """Runs one stage's calls on its own daemon thread, so a stage that hangs cannot hold up
    the tick: the scheduler waits for it only as long as the tick can afford, and a call
    that is still running is left to finish on its own (its result is taken when it comes).

    One call at a time; a handoff costs tens of microseconds (`bench` measures it).
    """

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self._cv = threading.Condition()
        self._job: int | None = None  # t_ns of the call to make
        self._due_ns: int | None = None  # perf_counter time its answer is needed by
        self._busy = False
        self._result: tuple | None = None  # (output, exception, duration_ms)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"stage-{stage.name}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy

    def start(self, t_ns: int, due_ns: int | None = None) -> None:
        """Call the stage for tick time `t_ns`; `due_ns` (perf_counter) is when the tick stops
        waiting for it: a batcher down the call holds the request no longer than that."""
        with self._cv:
            if self._busy:
                raise RuntimeError(f"stage {self.stage.name}: a call is still running")
            self._job, self._due_ns, self._busy, self._result = t_ns, due_ns, True, None
            self._cv.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Whether the running call finished within `timeout_s`."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._busy, max(0.0, timeout_s))

    def take(self) -> tuple | None:
        """The finished call's (output, exception, duration_ms), once; None if none is new."""
        with self._cv:
            if self._busy:
                return None
            r, self._result = self._result, None
            return r

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                t_ns, due_ns, self._job = self._job, self._due_ns, None
            s0 = time.perf_counter_ns()
            out, exc = None, None
            try:
                with deadline(due_ns):
                    out = self.stage.run(t_ns)
            except Exception as e:  # reported in the estimate; the stream goes on
                exc = e
            d_ms = (time.perf_counter_ns() - s0) / 1e6
            with self._cv:
                self._result, self._busy = (out, exc, d_ms), False
                self._cv.notify_all()


@dataclass
class _StageState:
    stage: Stage
    deadline_ms: float
    worker: StageWorker | None = None
    last: ModalityResult | None = None
    ema_ms: float = 0.0
    ran_last_tick: bool = False
    skipped: int = 0
    overruns: int = 0
    timeouts: int = 0
    errors: int = 0
    status: str = "ok"  # why the modality is missing, when it is: absent, timeout, error: ...
    started_ns: int = 0  # perf_counter time the running call began


@dataclass
class Pipeline:
    """Stages plus fusion, called once per tick. Not thread-safe: one scheduler thread."""

    stages: list[Stage]
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    counters: list[Callable[[], dict[str, int]]] = field(default_factory=list)
    transcript: Callable[[int], str] | None = None
    fuse: Callable = confidence_fusion  # realtime.fusion.Fuse: -> (probs, relevance, readings)
    start_ns: int | None = None
    # A stage's model call may wait (up to its deadline) for other streams' calls to batch
    # with; a stepped replay never waits, so its results do not depend on other streams.
    wait_for_batches: bool = True
    # Ticks on multiples of the period, so the streams of a process tick together (when
    # they batch: config `batch.align_ticks`)
    align_ticks: bool = False

    def __post_init__(self) -> None:
        self._states = [
            _StageState(s, float(self.config.deadline_ms.get(s.name, 1e9))) for s in self.stages
        ]
        self.ticks = 0
        self.overruns = 0
        self.ticks_skipped = 0

    @property
    def period_ns(self) -> int:
        return int(1e9 / self.config.rate_hz)

    def tick(self, t_ns: int) -> Estimate:
        """Run one tick whose scheduled time is t_ns; the estimate is stamped t_ns + work time."""
        if self.start_ns is None:
            self.start_ns = t_ns
        w0 = time.perf_counter_ns()
        stages_ms: dict[str, float] = {}
        current: dict[str, ModalityResult] = {}
        stale: dict[str, bool] = {}
        age_ms: dict[str, float | None] = {m: None for m in MODALITIES}
        budget_ms = self.period_ns / 1e6
        for st in self._states:
            name = st.stage.name
            if st.worker is None:
                st.worker = StageWorker(st.stage)
            stages_ms[name] = 0.0
            if st.stage.model_problem():  # its model is still loading (or failed to): not run
                continue
            if st.worker.busy:  # a call from an earlier tick has not come back: a hang
                st.timeouts += 1
                st.status = f"timeout: no answer for {(time.perf_counter_ns() - st.started_ns) / 1e6:.0f} ms"
                st.ran_last_tick = False
            else:
                self._take(st)  # a late answer from an earlier tick counts now
                elapsed_ms = (time.perf_counter_ns() - w0) / 1e6
                would_overrun = st.ema_ms > st.deadline_ms or elapsed_ms + st.ema_ms > budget_ms
                if would_overrun and st.ran_last_tick:
                    st.skipped += 1  # skip this tick; keep the last result, which ages
                    st.ran_last_tick = False
                else:
                    st.started_ns = s0 = time.perf_counter_ns()
                    # wait as long as the tick can afford, and never less than the deadline
                    left_ms = max(st.deadline_ms, budget_ms - (s0 - w0) / 1e6)
                    due = s0 + int(st.deadline_ms * 1e6) if self.wait_for_batches else s0
                    st.worker.start(t_ns + (s0 - w0), due)
                    st.ran_last_tick = True
                    if st.worker.wait(left_ms / 1e3):
                        stages_ms[name] = self._take(st)
                    else:
                        stages_ms[name] = (time.perf_counter_ns() - s0) / 1e6
                        st.timeouts += 1
                        st.status = f"timeout: no answer within {left_ms:.0f} ms"
            if st.last is not None:
                current[name] = st.last

        f0 = time.perf_counter_ns()
        emit_ns = t_ns + (f0 - w0)
        present: dict[str, ModalityResult] = {}
        for name, r in current.items():
            age = (emit_ns - r.t_ns) / 1e6
            if age > self.config.missing_ms.get(name, DEFAULT_MISSING_MS):
                continue
            present[name] = r
            age_ms[name] = age
            stale[name] = age > self.config.stale_ms.get(name, DEFAULT_STALE_MS)
        probs, relevance, readings = self.fuse(present, emit_ns)
        valence, arousal = valence_arousal(probs)
        confidence = float(np.max(probs)) if relevance else 0.0  # it fused something
        stages_ms["fusion"] = (time.perf_counter_ns() - f0) / 1e6
        total_ns = time.perf_counter_ns() - w0
        stages_ms["total"] = total_ns / 1e6
        emit_ns = t_ns + total_ns
        for name in present:  # ages measured at the final emit time
            age_ms[name] = (emit_ns - present[name].t_ns) / 1e6
        overrun = total_ns > self.period_ns
        self.overruns += overrun
        dropped = {"ticks_skipped": self.ticks_skipped, "tick_overruns": self.overruns}
        status = {m: "off" for m in MODALITIES}
        for st in self._states:
            dropped[f"{st.stage.name}_skipped"] = st.skipped
            dropped[f"{st.stage.name}_overruns"] = st.overruns
            dropped[f"{st.stage.name}_timeouts"] = st.timeouts
            dropped[f"{st.stage.name}_errors"] = st.errors
            if st.stage.name in status:
                status[st.stage.name] = _status(st, st.stage.name in present, stale)
            dropped.update(st.stage.counters())
        for c in self.counters:
            dropped.update(c())
        est = Estimate(
            t=(emit_ns - self.start_ns) / 1e9,
            probs=probs,
            valence=valence,
            arousal=arousal,
            confidence=confidence,
            relevance={m: relevance.get(m, 0.0) for m in MODALITIES},
            present={m: m in present for m in MODALITIES},
            age_ms=age_ms,
            stages_ms=stages_ms,
            dropped=dropped,
            stale={m: stale.get(m, False) for m in MODALITIES},
            overrun=overrun,
            transcript=self.transcript(emit_ns) if self.transcript else "",
            tick=self.ticks,
            emitted_ns=emit_ns,
            status=status,
            modalities={
                m: {"probs": r.probs, **({"reading": readings[m]} if m in readings else {})}
                for m, r in present.items()
            },
            faces=list(present["face"].info.get("faces", ())) if "face" in present else [],
        )
        self.ticks += 1
        return est

    def _take(self, st: _StageState) -> float:
        """Fold a finished call into the stage's state; its duration in ms (0 if none)."""
        r = st.worker.take() if st.worker is not None else None
        if r is None:
            return 0.0
        out, exc, d_ms = r
        st.ema_ms = d_ms if st.ema_ms == 0 else 0.8 * st.ema_ms + 0.2 * d_ms
        if d_ms > st.deadline_ms:
            st.overruns += 1
        if exc is not None:
            st.errors += 1
            st.last = None
            st.status = f"error: {type(exc).__name__}: {exc}"[:200]
            log.warning("stage %s failed: %s", st.stage.name, st.status)
        elif out is ABSENT:
            st.last, st.status = None, "absent"
        elif out is not None:
            if _finite(out):
                st.last, st.status = out, "ok"
            else:
                st.errors += 1
                st.last, st.status = None, "error: non-finite output (NaN or inf)"
                log.warning("stage %s gave a non-finite output", st.stage.name)
        elif st.status.startswith(("timeout", "error")):
            st.status = "ok"  # answered again: nothing new, the last result keeps ageing
        return d_ms

    def close(self) -> None:
        """Stop the stage threads (a call still running finishes on its own, unobserved)."""
        for st in self._states:
            if st.worker is not None:
                st.worker.close()


def _finite(r: ModalityResult) -> bool:
    if not np.all(np.isfinite(r.probs)):
        return False
    return r.embedding is None or bool(np.all(np.isfinite(r.embedding)))


def _status(st: _StageState, present: bool, stale: dict[str, bool]) -> str:
    """One word and a reason per modality: loading, ok, stale, absent, missing, timeout,
    error."""
    name = st.stage.name
    model = st.stage.model_problem()
    if model:
        return model  # "loading", or "error: ..." for a model that could not be opened
    if st.status.startswith(("timeout", "error")):
        return st.status
    problem = st.stage.input_problem()
    if present:
        if not stale.get(name):
            return "ok"
        return f"stale: {problem}" if problem else "stale"
    if problem:
        return f"missing: {problem}"
    if st.status == "absent":
        return "absent"
    return "missing: no recent input" if st.last is not None else "missing: no input yet"


class TickPhases:
    """Where in the tick period each stream of this process ticks, so their ticks take turns.

    Streams that do not batch gain nothing from ticking together: started at the same moment
    (a benchmark, sessions that connect together), their stages would all run at once and
    queue for the same cores, while the rest of the period sits idle. A stream that starts
    takes the middle of the widest free gap between the phases in use; it gives its phase
    back when it stops. Phases are fractions of the period, in [0, 1).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: list[float] = []

    def take(self) -> float:
        with self._lock:
            taken = sorted(self._taken)
            if not taken:
                phase = 0.0
            else:
                gaps = [(b - a, a) for a, b in zip(taken, taken[1:] + [taken[0] + 1.0], strict=True)]
                width, at = max(gaps, key=lambda g: (g[0], -g[1]))  # ties: the earliest
                phase = (at + width / 2) % 1.0
            self._taken.append(phase)
            return phase

    def give_back(self, phase: float) -> None:
        with self._lock:
            if phase in self._taken:
                self._taken.remove(phase)


TICK_PHASES = TickPhases()  # one per process: the streams that share its cores


def run_realtime(
    pipeline: Pipeline, done: Callable[[], bool], stop: Callable[[], bool] = lambda: False
) -> Iterator[Estimate]:
    """Tick on the monotonic clock until `done()` (sources finished) or `stop()`.

    A tick that overruns its period does not make the next ones queue up: the schedule
    jumps to the next period boundary and the skipped ticks are counted. With
    `align_ticks`, ticks fall on multiples of the period, so the streams of one process tick
    together and their calls of a shared model form one batch (`export.batching`).
    """
    period = pipeline.period_ns
    spin_ns = int(pipeline.config.spin_ms * 1e6)
    start = now_ns()
    phase = None
    if pipeline.align_ticks:  # the next multiple of the period on the monotonic clock
        start = -(-start // period) * period
    else:  # the next tick time at this stream's own phase, so the streams take turns
        phase = TICK_PHASES.take()
        offset = int(phase * period)
        start = -(-(start - offset) // period) * period + offset
    pipeline.start_ns = start
    k = 0
    try:
        while not stop():
            due = start + k * period
            _wait_until(due, spin_ns)
            yield pipeline.tick(now_ns())
            if done():
                return
            k += 1
            behind = (now_ns() - (start + k * period)) // period
            if behind > 0:
                pipeline.ticks_skipped += int(behind)
                k += int(behind)
    finally:
        if phase is not None:
            TICK_PHASES.give_back(phase)


def _wait_until(due_ns: int, spin_ns: int = 0) -> None:
    """Sleep until `spin_ns` before `due_ns`, then spin until it (spin_ns 0: sleep only)."""
    wait = (due_ns - spin_ns - now_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)
    while spin_ns and now_ns() < due_ns:
        time.sleep(0)  # yields the GIL (capture and transcriber threads run) but not the CPU


def run_stepped(
    pipeline: Pipeline,
    step_sources: Callable[[int], None],
    done: Callable[[], bool],
    start_ns: int = 0,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Estimate]:
    """Tick on a media clock: feed sources up to each tick's time, then tick, without waiting.

    The media clock advances by the work each tick really took, so the schedule is the one a
    real-time run on this machine would follow: a tick that overruns skips the ticks it
    covered, and estimate times stay increasing.
    """
    period = pipeline.period_ns
    pipeline.start_ns = start_ns
    pipeline.wait_for_batches = False
    k = 0
    while not stop():
        t = start_ns + k * period
        step_sources(t)
        est = pipeline.tick(t)
        yield est
        if done():
            return
        k += 1
        behind = -(-(est.emitted_ns - (start_ns + k * period)) // period)  # ceil
        if behind > 0:
            pipeline.ticks_skipped += int(behind)
            k += int(behind)
