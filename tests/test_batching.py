"""Cross-session batching (`export.batching`): the requests of several streams to one shared
model become one call, each stream gets its own rows back, a deadline is never waited past,
and a bad feed fails alone. Real models (the shipped voice ONNX, the text model) and real
streams sharing predictors; no timing is asserted, only what was batched and returned."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from affectstream.core.config import BatchConfig, load_config
from affectstream.core.deadline import deadline
from affectstream.export.base import InputError
from affectstream.export.batching import BatchingBackend, merge_feeds, split_outputs
from affectstream.export.select import ready_backend


@pytest.fixture(scope="module")
def voice_backend():
    b = ready_backend("voice", "auto", threads=1)
    yield b
    b.close()


def speech_rows(n: int, samples: int = 32000) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"wave": (0.1 * rng.standard_normal((1, samples))).astype(np.float32)} for _ in range(n)]


def call_together(batcher, feeds, due_ns=None) -> list:
    """Each feed from its own thread at once, as the stage threads of n streams call."""
    results: list = [None] * len(feeds)
    go = threading.Barrier(len(feeds))

    def one(i: int) -> None:
        go.wait()
        with deadline(due_ns):
            try:
                results[i] = batcher.infer(feeds[i])
            except Exception as e:  # returned, for the test to look at
                results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_four_streams_get_one_call_and_each_its_own_rows(voice_backend):
    batcher = BatchingBackend(voice_backend, BatchConfig(window_ms=2000.0, active_s=600.0))
    feeds = speech_rows(4)
    alone = [voice_backend.infer(f) for f in feeds]
    for f in feeds:  # streams asked before: the first of the four waits for the others
        batcher.infer(f)
    before = batcher.stats.calls
    got = call_together(batcher, feeds)
    # all four arrived within the window, and the batcher knew to wait for all four
    assert batcher.stats.calls == before + 1, batcher.stats.summary()
    assert batcher.stats.summary()["max_batch"] == 4
    for mine, ref in zip(got, alone, strict=True):
        assert mine["logits"].shape == (1, 7)
        np.testing.assert_allclose(mine["logits"], ref["logits"], atol=1e-4)
        np.testing.assert_allclose(mine["embedding"], ref["embedding"], atol=1e-4)


def test_one_stream_alone_is_never_held(voice_backend):
    batcher = BatchingBackend(voice_backend, BatchConfig(window_ms=5000.0, active_s=600.0))
    feed = speech_rows(1)[0]
    for _ in range(3):
        batcher.infer(feed)  # would take 5 s each if it waited for a peer
    s = batcher.stats.summary()
    assert s["calls"] == 3 and s["batch_sizes"] == {"1": 3}
    assert s["wait_ms"]["p99"] == 0.0


def test_a_request_is_not_held_past_its_deadline(voice_backend):
    """Two active streams, but only one asks now, with its deadline already past: the batch
    is cut by the deadline, not by the (10-s) window or by the other stream's request."""
    batcher = BatchingBackend(voice_backend, BatchConfig(window_ms=10_000.0, active_s=600.0))
    feeds = speech_rows(2)
    call_together(batcher, feeds)  # both streams active
    batcher.stats.clear()
    done = threading.Event()

    def lonely() -> None:
        with deadline(time.perf_counter_ns()):
            batcher.infer(feeds[0])
        done.set()

    t = threading.Thread(target=lonely)
    t.start()
    assert done.wait(60), "the request never came back"  # a hang guard, not a timing
    t.join()
    assert batcher.stats.summary()["cut_by"] == {"deadline": 1}
    assert batcher.stats.summary()["batch_sizes"] == {"1": 1}


def test_shapes_that_cannot_share_a_call_go_in_separate_calls(voice_backend):
    batcher = BatchingBackend(voice_backend, BatchConfig(window_ms=2000.0, active_s=600.0))
    feeds = speech_rows(2, 32000) + speech_rows(2, 16000)
    for f in feeds:
        batcher.infer(f)
    got = call_together(batcher, feeds)
    assert all(isinstance(g, dict) and g["logits"].shape == (1, 7) for g in got), got
    sizes = batcher.stats.summary()["batch_sizes"]
    assert sizes.get("2") == 2  # one call per length, two rows each


def test_a_bad_feed_fails_alone_with_the_backends_message(voice_backend):
    batcher = BatchingBackend(voice_backend, BatchConfig(window_ms=200.0, active_s=600.0))
    good = speech_rows(2)
    bad = {"wave": np.zeros((1, 32000), np.float64)}  # wrong dtype
    got = call_together(batcher, [*good, bad])
    assert isinstance(got[2], InputError) and "wave" in str(got[2])
    assert all(isinstance(g, dict) for g in got[:2])


def test_padded_token_axes_are_merged_and_cropped_back():
    """Text feeds of different lengths share a call: tokens are zero-padded (masked) and the
    rows come back as each request's own."""
    b = ready_backend("text", "auto", threads=1)
    sig = b.signature
    from affectstream.export.predictors import wrap

    predictor = wrap("text", b)
    short = predictor.to_input(["I am so happy today"], [""])
    long = predictor.to_input(["this is a much longer sentence that says something sad"], [""])
    merged, own = merge_feeds([short, long], sig, ["tokens"])
    assert merged["input_ids"].shape[0] == 2
    outs = split_outputs(b.infer(merged), own, sig)
    for feed, out in zip([short, long], outs, strict=True):
        np.testing.assert_allclose(out["logits"], b.infer(feed)["logits"], atol=1e-4)
    b.close()


@pytest.mark.slow
def test_streams_sharing_predictors_batch_their_calls(megamind):
    """Three real streams on shared predictors, ticking together: the face model answers
    them in calls of more than one request."""
    from affectstream.realtime.stream import AffectStream, Inputs

    cfg = load_config()
    cfg.transcriber.enabled = cfg.text.enabled = False
    cfg.batch.enabled = True  # on a CPU it is off unless asked for (config `batch`)
    first = AffectStream(cfg, Inputs(video=megamind, realtime=True, no_audio=True))
    first.wait_models(120)
    shared = dict(first.predictors)
    first.close()
    streams = [
        AffectStream(cfg, Inputs(video=megamind, realtime=True, no_audio=True), predictors=shared)
        for _ in range(3)
    ]
    counts = [0, 0, 0]

    def consume(i: int) -> None:
        for est in streams[i].estimates():
            counts[i] += est.present["face"]
            if est.t > 4.0:
                streams[i].stop()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    face = shared["face"].backend.stats.summary()
    assert all(c > 0 for c in counts), counts
    assert face["max_batch"] >= 2, face
    assert face["requests"] > face["calls"], face
