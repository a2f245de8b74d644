"""A server that outlives its sessions must not keep what they used.

Two causes were found and fixed (docs/benchmarks.md, "The server under session churn"): every
closed stream stayed in memory until Python's rare full collection (reference cycles through
callbacks that named the stream), and glibc's dynamic mmap threshold fragmented the heaps
(core/allocator.py). The first is held exactly: a closed stream is freed by reference counting
alone. Both are held by the command a user types: `soak serve` rounds against one server, the
last round's resident memory within 5 % of round 2's (memory, not time: no machine's speed
enters it).
"""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref

import numpy as np
import pytest

from affectstream.core import allocator
from affectstream.core.config import load_config
from affectstream.realtime.io.session import SessionFactory
from tests.conftest import affectstream


@pytest.fixture(scope="module")
def factory():
    f = SessionFactory(load_config())  # words on: the transcriber's callbacks are there too
    f.open()
    return f


def kept_without_the_cycle_collector(session) -> list[str]:
    """Run `session()` (it returns weak references to what a closed session used) with the
    cycle collector off; the names of the parts still alive 10 s later (the stage threads end
    a moment after the close), freed by reference counting alone or not at all."""
    gc.collect()
    gc.disable()
    try:
        refs = session()
        deadline = time.monotonic() + 10
        while any(r() is not None for r in refs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [k for k, r in refs.items() if r() is not None]
    finally:
        gc.enable()


def test_a_closed_session_stream_is_freed_without_the_cycle_collector(factory):
    def session() -> dict[str, weakref.ref]:
        stream = factory.build(factory.defaults())
        thread = threading.Thread(target=lambda: [None for _ in stream.estimates()])
        thread.start()
        frame = np.zeros((360, 480, 3), np.uint8)
        noise = np.random.default_rng(0).normal(0, 0.1, 1600).astype(np.float32)
        for _ in range(15):
            stream.push_frame(frame)
            stream.push_audio(noise, 16000)
            time.sleep(0.05)
        stream.stop()
        thread.join(30)
        parts = {"stream": stream, "audio ring": stream.audio_ring, "video ring": stream.video_ring}
        parts |= {f"{s.name} stage": s for s in stream.stages}
        parts["transcriber"] = stream.transcriber
        return {k: weakref.ref(v) for k, v in parts.items()}

    alive = kept_without_the_cycle_collector(session)
    assert alive == [], f"kept after close (a reference cycle?): {alive}"


def test_a_closed_session_that_was_pushed_jpegs_is_freed_without_the_cycle_collector(
    factory, megamind
):
    """The server's own path: `Session.push` of JPEG frames (kept encoded in the ring until the
    face stage decodes one, each with a callback to report a failed decode) and audio."""
    import asyncio

    import cv2

    from affectstream.core.clock import now_ns
    from affectstream.realtime.io.protocol import KIND_AUDIO, KIND_VIDEO, Limits
    from affectstream.realtime.io.session import Session

    cap = cv2.VideoCapture(str(megamind))
    jpegs = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(15)]
    cap.release()
    pcm = np.zeros(1600, np.int16).tobytes()
    audio = (16000).to_bytes(4, "little") + pcm

    async def session() -> dict[str, weakref.ref]:
        s = Session("churn", factory, Limits(), deliver=lambda text: None, failed=print)
        await s.start()
        for jpeg in jpegs:
            await s.push(KIND_VIDEO, None, jpeg, now_ns())
            await s.push(KIND_AUDIO, None, audio, now_ns())
            await asyncio.sleep(0.05)
        stream = s.stream
        await s.stop()
        parts = {"session": s, "stream": stream, "video ring": stream.video_ring}
        return {k: weakref.ref(v) for k, v in parts.items()}

    alive = kept_without_the_cycle_collector(lambda: asyncio.run(session()))
    assert alive == [], f"kept after close (a reference cycle?): {alive}"


def test_the_allocator_setting_is_glibcs():
    # this test machine runs glibc: the pin must take (elsewhere both are no-ops)
    assert allocator.available()
    assert allocator.pin_mmap_threshold() and isinstance(allocator.trim(), bool)


def test_soak_serve_rounds_do_not_grow_the_server(tmp_path, megamind):
    """Rounds of sessions against one `affectstream serve` (the bundled sample's speech)."""
    out = tmp_path / "churn.json"
    r = affectstream(
        "soak", "serve", "--media", megamind, "--sessions", "2", "--session-s", "3",
        "--gap-s", "1", "--rounds", "6", "--no-transcribe", "--sample-s", "0.5",
        "--json", out, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "last round vs round 2" in r.stdout
    d = json.loads(out.read_text())
    rows = d["per_round"]
    assert [x["round"] for x in rows] == list(range(1, 7)) and d["client_failures"] == 0
    assert all(n > 0 for x in rows for n in x["estimates"])  # every session was served
    assert d["rss_mb"]["round_2"] == rows[1]["rss_mb"] and d["rss_mb"]["last"] == rows[-1]["rss_mb"]
    assert d["rss_mb"]["growth_percent"] <= 5.0, [x["rss_mb"] for x in rows]


def test_soak_serve_usage_errors():
    r = affectstream("soak", "serve", "--rounds", "1", timeout=60)
    assert r.returncode == 2 and "--rounds must be at least 2" in r.stderr
