import json
import threading
import time

import numpy as np
import pytest

from affectstream.core.config import SchedulerConfig
from affectstream.core.labels import LABELS
from affectstream.realtime.fusion import confidence_fusion
from affectstream.realtime.scheduler import Pipeline, run_realtime, run_stepped
from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage

HAPPY = np.eye(len(LABELS), dtype=np.float32)[1] * 0.7 + 0.3 / len(LABELS)
SAD = np.eye(len(LABELS), dtype=np.float32)[2] * 0.9 + 0.1 / len(LABELS)


class Scripted(Stage):
    """Returns results from a script keyed by tick; sleeps `cost_s` per run."""

    def __init__(self, name, script, cost_s=0.0):
        self.name, self.script, self.cost_s, self.calls = name, script, cost_s, 0

    def run(self, now_ns):
        self.calls += 1
        if self.cost_s:
            time.sleep(self.cost_s)
        out = self.script(now_ns)
        return out


def test_stepped_ticks_emit_every_tick_with_ages_and_relevance():
    period = 100_000_000
    face = Scripted("face", lambda t: ModalityResult(HAPPY, t_ns=t - 30_000_000, confidence=0.7))
    voice = Scripted("voice", lambda t: ModalityResult(SAD, t_ns=t - 10_000_000, confidence=0.9))
    p = Pipeline([face, voice], SchedulerConfig(rate_hz=10))
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 5, start_ns=0))
    assert len(ests) == 5
    e = ests[-1]
    assert e.present == {"face": True, "voice": True, "text": False}
    assert abs(sum(e.relevance.values()) - 1) < 1e-6 and e.relevance["text"] == 0
    assert e.relevance["voice"] > e.relevance["face"]  # more confident modality counts more
    # ages are measured at the emit time: each input's own offset plus the work since its stage
    # started (face runs first, so its input is older by 20 ms and more)
    assert e.age_ms["face"] >= 30 and e.age_ms["voice"] >= 10 and e.age_ms["text"] is None
    assert e.age_ms["face"] - e.age_ms["voice"] >= 20 - 1e-6
    # the estimate is stamped at its scheduled tick (a whole period) plus the tick's work
    assert [x.t for x in ests] == sorted(x.t for x in ests)
    ticks = (e.t - e.stages_ms["total"] / 1e3) / (period / 1e9)
    assert round(ticks) >= 4 and ticks == pytest.approx(round(ticks), abs=1e-3)
    d = json.loads(e.to_json())
    assert set(d["probs"]) == set(LABELS) and d["emotion"] in LABELS
    assert abs(sum(d["probs"].values()) - 1) < 1e-3
    assert -1 <= d["valence"] <= 1 and -1 <= d["arousal"] <= 1 and 0 <= d["confidence"] <= 1
    assert set(d["stages_ms"]) >= {"face", "voice", "fusion", "total"}


def test_old_results_become_stale_then_absent_and_absent_clears():
    cfg = SchedulerConfig(rate_hz=10, stale_ms={"face": 150}, missing_ms={"face": 350})
    first = ModalityResult(HAPPY, t_ns=0, confidence=0.7)
    face = Scripted("face", lambda t: first if face.calls == 1 else None)  # only tick 0 produces
    voice = Scripted("voice", lambda t: ABSENT)
    p = Pipeline([face, voice], cfg)
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 6, start_ns=0))
    assert [e.present["face"] for e in ests] == [True, True, True, True, False, False]
    assert [e.stale["face"] for e in ests[:4]] == [False, False, True, True]
    assert all(not e.present["voice"] for e in ests)
    assert ests[-1].confidence == 0.0  # nothing present: no confident guess
    assert np.allclose(ests[-1].probs, 1 / len(LABELS))


def test_slow_stage_is_skipped_and_counted_not_queued():
    # deadlines are per modality (config keys scheduler.deadline_ms.face, ...)
    cfg = SchedulerConfig(rate_hz=20, deadline_ms={"face": 5.0})
    slow = Scripted("face", lambda t: ModalityResult(HAPPY, t_ns=t, confidence=0.5), cost_s=0.02)
    p = Pipeline([slow], cfg)
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 6, start_ns=0))
    assert slow.calls == 3  # runs, is skipped the next tick, runs again ...
    assert ests[-1].dropped["face_skipped"] == 3
    assert ests[-1].dropped["face_overruns"] == 3


def test_realtime_driver_skips_ticks_when_behind_and_keeps_rate():
    cfg = SchedulerConfig(rate_hz=50)
    fused = []

    def slow_fusion(results, emit_ns):
        fused.append(1)
        if len(fused) == 3:
            time.sleep(0.1)  # one very slow tick: 5 periods (fusion runs on the tick itself)
        return confidence_fusion(results, emit_ns)

    face = Scripted("face", lambda t: ModalityResult(HAPPY, t_ns=t, confidence=0.5))
    p = Pipeline([face], cfg, fuse=slow_fusion)
    ests = list(run_realtime(p, done=lambda: p.ticks >= 10))
    assert len(ests) == 10
    assert ests[-1].dropped["ticks_skipped"] >= 3  # the schedule jumped, no burst of catch-up
    assert ests[-1].dropped["tick_overruns"] >= 1 and ests[2].overrun
    # the skipped ticks are periods that passed: the last tick ran no earlier than its slot
    assert [e.t for e in ests] == sorted(e.t for e in ests)
    assert ests[-1].t >= (len(ests) - 1 + ests[-1].dropped["ticks_skipped"]) / 50


class Faulty(Stage):
    """A face stage that behaves per tick as `mode(tick)` says: ok, hang, raise, nan, absent."""

    name = "face"

    def __init__(self, mode):
        self.mode, self.calls = mode, 0
        self.release, self.answered = threading.Event(), threading.Event()

    def run(self, now_ns):
        k, self.calls = self.calls, self.calls + 1
        m = self.mode(k)
        if m == "hang":
            self.release.wait(5.0)  # until the test lets it go
            self.answered.set()
        if m == "raise":
            raise RuntimeError("encoder exploded")
        if m == "nan":
            return ModalityResult(np.full(len(LABELS), np.nan, np.float32), t_ns=now_ns)
        if m == "absent":
            return ABSENT
        return ModalityResult(HAPPY, t_ns=now_ns, confidence=0.7)


def _voice():
    return Scripted("voice", lambda t: ModalityResult(SAD, t_ns=t, confidence=0.9))


def test_a_hanging_stage_does_not_hold_up_the_tick_and_recovers():
    face = Faulty(lambda k: "hang" if k == 2 else "ok")
    cfg = SchedulerConfig(rate_hz=20, stale_ms={"face": 120}, missing_ms={"face": 260})
    p = Pipeline([face, _voice()], cfg)
    ests = []
    for est in run_stepped(p, lambda t: None, done=lambda: p.ticks >= 14, start_ns=0):
        ests.append(est)
        if est.tick == 9:
            face.release.set()  # the stage answers again, before the next tick looks
            assert face.answered.wait(30)
    p.close()
    # the tick did not wait for the hang: it gave up on the call at once (tick 2), and while the
    # call stayed out the stage was not called again and cost the later ticks nothing; had a
    # tick waited, the call would have come back (after 5 s) and no "timeout" would follow
    assert ests[2].status["face"].startswith("timeout: no answer within")
    assert all(e.present["voice"] for e in ests)  # the other modality went on
    hung = ests[3:9]
    assert all(e.status["face"].startswith("timeout") for e in hung), [e.status for e in hung]
    assert all(e.stages_ms["face"] == 0.0 for e in hung) and face.calls >= 4
    assert not hung[-1].present["face"]  # its last result aged out: missing, with the reason
    assert ests[-1].present["face"] and ests[-1].status["face"] == "ok"
    assert ests[-1].dropped["face_timeouts"] >= 6


def test_a_stage_that_raises_or_gives_nan_is_missing_with_the_reason_then_recovers():
    modes = {2: "raise", 3: "raise", 5: "nan"}
    face = Faulty(lambda k: modes.get(k, "ok"))
    p = Pipeline([face, _voice()], SchedulerConfig(rate_hz=10))
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 8, start_ns=0))
    p.close()
    by_tick = {e.tick: e for e in ests}
    assert by_tick[2].status["face"] == "error: RuntimeError: encoder exploded"
    assert not by_tick[2].present["face"] and not by_tick[3].present["face"]
    assert by_tick[4].present["face"] and by_tick[4].status["face"] == "ok"
    assert by_tick[5].status["face"].startswith("error: non-finite output")
    assert not by_tick[5].present["face"]
    assert np.all(np.isfinite(by_tick[5].probs))  # no NaN reaches the estimate
    assert by_tick[7].status["face"] == "ok" and by_tick[7].dropped["face_errors"] == 3
    assert all(e.present["voice"] for e in ests)


def test_status_says_absent_stale_and_off():
    face = Faulty(lambda k: "absent")
    first = ModalityResult(SAD, t_ns=0, confidence=0.9)
    voice = Scripted("voice", lambda t: first if voice.calls == 1 else None)
    cfg = SchedulerConfig(rate_hz=10, stale_ms={"voice": 150}, missing_ms={"voice": 350})
    p = Pipeline([face, voice], cfg)
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 6, start_ns=0))
    p.close()
    assert [e.status["face"] for e in ests] == ["absent"] * 6
    assert [e.status["voice"] for e in ests] == ["ok", "ok"] + ["stale"] * 2 + [
        "missing: no recent input"
    ] * 2
    assert all(e.status["text"] == "off" for e in ests)
    assert json.loads(ests[-1].to_json())["status"]["face"] == "absent"


def test_tick_phases_spread_the_streams_over_the_period():
    from affectstream.realtime.scheduler import TickPhases

    phases = TickPhases()
    taken = [phases.take() for _ in range(4)]
    assert taken == [0.0, 0.5, 0.25, 0.75]  # each new stream in the middle of the widest gap
    phases.give_back(0.5)
    assert phases.take() == 0.5  # a stream that leaves frees its turn for the next one
    assert phases.take() in (0.125, 0.375, 0.625, 0.875)


def test_streams_started_together_tick_half_a_period_apart():
    """Two streams of one process, started at the same moment, take turns within the period
    (their stages would otherwise queue for the same cores at once); with `align_ticks`
    (batching) they tick together instead."""
    cfg = SchedulerConfig(rate_hz=20)
    period = int(1e9 / cfg.rate_hz)

    def ticks_of(align: bool) -> list[Pipeline]:
        pipes = [
            Pipeline([Scripted("face", lambda t: ABSENT)], cfg, align_ticks=align)
            for _ in range(2)
        ]
        barrier = threading.Barrier(2)

        def drive(p):
            barrier.wait()
            list(run_realtime(p, done=lambda: p.ticks >= 3))

        threads = [threading.Thread(target=drive, args=(p,)) for p in pipes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        return pipes

    a, b = ticks_of(align=False)
    gap = (a.start_ns - b.start_ns) % period
    assert gap in (period // 2, period - period // 2)
    a, b = ticks_of(align=True)
    assert a.start_ns % period == b.start_ns % period == 0
