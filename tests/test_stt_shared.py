"""Spans of several streams decoded together: `WhisperDecoder.decode_each` on real speech,
and `SharedDecoder`'s rounds (who waits, who leads, who gets which result)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from conftest import MEDIA

from affectstream.models.stt.shared import SharedDecoder
from affectstream.models.stt.whisper_model import Hypothesis, Span
from affectstream.realtime.sources.array_replay import load_audio

LIBRIVOX = MEDIA / "speech" / "librivox"


def clip(name: str) -> np.ndarray:
    return load_audio(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav")


@pytest.fixture(scope="module")
def decoder():
    from affectstream.models.stt.whisper_model import WhisperDecoder

    return WhisperDecoder(cpu_threads=1)


def words(hyp: Hypothesis) -> list[str]:
    return [w.text.lower().strip(".,") for w in hyp.words]


def test_spans_decoded_together_read_as_each_alone(decoder):
    a, b = clip("0930"), clip("0920")
    spans = [
        Span(a[: 16000 * 3], final=False),
        Span(b[: 16000 * 3], final=False),  # same padded length as the first: one call
        Span(b),  # a final span, longer: a call of its own
        Span(np.zeros(16000, np.float32), final=False),
        Span(a, prefix=("word",) * 500),  # too long a prefix: this span fails, alone
    ]
    out = decoder.decode_each(spans)
    assert isinstance(out[4], ValueError) and "too long" in str(out[4])
    for span, got in zip(spans[:4], out[:4], strict=True):
        alone = decoder.decode(span.audio, final=span.final)
        assert words(got) == words(alone)
        assert got.duration == alone.duration
    assert words(out[0]) and words(out[1]) and words(out[2])
    assert out[3].words == []  # silence stays silent beside speech
    assert all(0.0 <= w.start <= w.end <= out[2].duration for w in out[2].words)


def test_spans_with_earlier_text_of_different_lengths_share_a_call(decoder):
    """CTranslate2 wants the start token at the same place in every sequence of a call: the
    longer earlier text is cut to the shorter one's length, and both spans are decoded."""
    a, b = clip("0930"), clip("0920")
    short = Span(a[: 16000 * 3], prompt="Chapter one.", final=False)
    long = Span(
        b[: 16000 * 3], prompt="It was a long and tiring day at the park. " * 3, final=False
    )
    out = decoder.decode_each([short, long])
    assert all(isinstance(h, Hypothesis) for h in out)
    assert words(out[0]) == words(decoder.decode(short.audio, short.prompt, final=False))
    assert len(words(out[1])) >= 3


def test_streams_sharing_the_real_model_each_get_their_own_words(decoder):
    shared = SharedDecoder(decoder)
    names = ["0930", "0920", "0890", "0880"]
    alone = {n: words(decoder.decode(clip(n))) for n in names}
    got: dict[str, list[str]] = {}
    start = threading.Barrier(len(names))

    def stream(name: str) -> None:
        start.wait()
        got[name] = words(shared.decode(clip(name)))

    threads = [threading.Thread(target=stream, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == alone
    assert shared.stats.requests == len(names)
    assert shared.model_path == decoder.model_path  # the model's own attributes pass through


class Gated:
    """A decoder whose first call waits until `release` is set, so the test decides who
    queues behind it; records the spans of every call."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[list[Span]] = []

    def decode_each(self, spans):
        self.calls.append(list(spans))
        if len(self.calls) == 1:
            assert self.release.wait(30)
        return [
            ValueError(f"bad span {s.prompt}")
            if s.prompt == "bad"
            else Hypothesis([], len(s.audio))
            for s in spans
        ]


def test_requests_that_arrive_while_the_model_is_busy_go_as_one_batch():
    gated = Gated()
    shared = SharedDecoder(gated, max_batch=3)
    results: dict[int, object] = {}

    def call(i: int, prompt: str = "") -> None:
        try:
            results[i] = shared.decode(np.zeros(i + 1, np.float32), prompt=prompt)
        except ValueError as e:
            results[i] = e

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not gated.calls:  # the first caller found the model free: it decodes at once
        threading.Event().wait(0.01)
    others = [
        threading.Thread(target=call, args=(i, "bad" if i == 2 else "")) for i in (1, 2, 3, 4)
    ]
    for t in others:
        t.start()
    while len(shared._queue) < 4:  # all four wait behind the busy model
        threading.Event().wait(0.01)
    gated.release.set()
    for t in [first, *others]:
        t.join(30)
    sizes = [len(c) for c in gated.calls]
    assert sizes == [1, 3, 1]  # alone, then the waiting ones up to max_batch, then the rest
    summary = shared.stats.summary()
    assert (summary["calls"], summary["max_batch"], summary["batch_sizes"]) == (
        3,
        3,
        {"1": 2, "3": 1},
    )
    assert summary["wait_ms"]["max"] > 0  # the four behind the busy model waited
    for i in (0, 1, 3, 4):
        assert isinstance(results[i], Hypothesis) and results[i].duration == i + 1
    assert isinstance(results[2], ValueError)  # a bad span fails its own caller only


def test_a_failing_model_call_reaches_every_caller_of_that_round():
    class Broken:
        def decode_each(self, spans):
            raise RuntimeError("model gone")

    shared = SharedDecoder(Broken())
    with pytest.raises(RuntimeError, match="model gone"):
        shared.decode(np.zeros(10, np.float32))
    with pytest.raises(RuntimeError, match="model gone"):  # and the next call is not stuck
        shared.decode(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="max_batch"):
        SharedDecoder(Broken(), max_batch=0)


def test_the_model_in_its_own_process_reads_as_in_this_one(decoder):
    """`transcriber.process` (the default): the same words as the model in this process; a
    missing model is the same one-line error; the child ends when the decoder is closed."""
    from affectstream.models.stt.whisper_model import SttModelError
    from affectstream.models.stt.worker import DecoderProcess

    worker = DecoderProcess(nice=5)
    try:
        assert worker.model_path == decoder.model_path
        a = clip("0930")
        assert words(worker.decode(a)) == words(decoder.decode(a))
        out = worker.decode_each([Span(a[: 16000 * 3], final=False), Span(a, prefix=("w",) * 500)])
        assert words(out[0]) == words(decoder.decode(a[: 16000 * 3], final=False))
        assert isinstance(out[1], ValueError) and "too long" in str(out[1])
        import os

        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == max(5, own)  # yields to ticks
        assert os.sched_getscheduler(worker.pid) == os.sched_getscheduler(0)  # idle=False
    finally:
        worker.close()
    assert worker._proc.poll() is not None
    with pytest.raises(RuntimeError, match="process is gone"):
        worker.decode(clip("0930"))
    with pytest.raises(SttModelError, match="speech model folder not found"):
        DecoderProcess(model="/nonexistent/whisper")


def test_a_transcriber_config_gets_a_shared_model_in_a_child_process():
    from affectstream.core.config import TranscriberConfig
    from affectstream.models.stt.whisper_model import WhisperDecoder
    from affectstream.models.stt.worker import DecoderProcess
    from affectstream.realtime.transcriber import load_decoder

    shared = load_decoder(TranscriberConfig())
    try:
        assert isinstance(shared, SharedDecoder) and isinstance(shared.decoder, DecoderProcess)
        assert len(words(shared.decode(clip("0920")))) >= 3
        # the default: the child and its decoding threads run in the idle class
        pid = shared.decoder.pid
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert len(threads) > 1
        assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
        nice = TranscriberConfig().nice
        assert all(os.getpriority(os.PRIO_PROCESS, t) >= nice for t in threads)
    finally:
        shared.close()
    local = load_decoder(TranscriberConfig(process=False))
    assert isinstance(local.decoder, WhisperDecoder)
    # a replay waits for every decode: its decoder keeps the normal class on a busy machine
    replay = load_decoder(TranscriberConfig(), live=False)
    try:
        pid = replay.decoder.pid
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert os.SCHED_IDLE not in {os.sched_getscheduler(t) for t in threads}
    finally:
        replay.close()
