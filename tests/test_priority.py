"""Background threads yield to the ticks (core/priority.py): the speech model's own decoding
threads and the transcriber's thread run at a lower OS priority (config transcriber.nice)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from affectstream.core import priority
from affectstream.core.config import load_config
from affectstream.realtime.transcriber import load_decoder

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")


@linux
def test_a_thread_lowers_its_own_priority_and_no_other():
    seen = {}

    def worker() -> None:
        priority.lower_this_thread(7)
        seen["mine"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["mine"] == 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 7  # this one kept its own


@linux
def test_the_whisper_models_own_threads_run_at_the_configured_niceness():
    cfg = load_config().transcriber
    cfg.process = False  # in this process (tests/test_stt_shared.py checks the child's)
    before = priority.thread_ids()
    decoder = load_decoder(cfg)
    new = priority.thread_ids() - before
    assert new, "CTranslate2 made no threads of its own"
    assert all(os.getpriority(os.PRIO_PROCESS, t) >= cfg.nice for t in new)
    assert decoder is not None


def test_zero_leaves_threads_alone():
    assert priority.lower([threading.get_native_id()], 0) == 0
