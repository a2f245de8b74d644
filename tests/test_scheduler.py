import json
import time

import numpy as np

from affectstream.core.config import SchedulerConfig
from affectstream.core.labels import LABELS
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
    assert 30 <= e.age_ms["face"] < 80 and e.age_ms["text"] is None
    assert abs(e.t - 4 * period / 1e9) < 0.05
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
    cfg = SchedulerConfig(rate_hz=20, deadline_ms={"slow": 5.0})
    slow = Scripted("slow", lambda t: ModalityResult(HAPPY, t_ns=t, confidence=0.5), cost_s=0.02)
    p = Pipeline([slow], cfg)
    ests = list(run_stepped(p, lambda t: None, done=lambda: p.ticks >= 6, start_ns=0))
    assert slow.calls == 3  # runs, is skipped the next tick, runs again ...
    assert ests[-1].dropped["slow_skipped"] == 3
    assert ests[-1].dropped["slow_overruns"] == 3


def test_realtime_driver_skips_ticks_when_behind_and_keeps_rate():
    cfg = SchedulerConfig(rate_hz=50)
    calls = []

    def script(t):
        calls.append(t)
        if len(calls) == 3:
            time.sleep(0.1)  # one very slow tick: 5 periods
        return ModalityResult(HAPPY, t_ns=t, confidence=0.5)

    p = Pipeline([Scripted("face", script)], cfg)
    t0 = time.monotonic()
    ests = list(run_realtime(p, done=lambda: p.ticks >= 10))
    elapsed = time.monotonic() - t0
    assert len(ests) == 10
    assert ests[-1].dropped["ticks_skipped"] >= 3  # the schedule jumped, no burst of catch-up
    assert ests[-1].dropped["tick_overruns"] >= 1
    assert elapsed >= (10 + 3) / 50 * 0.9
