import threading

import numpy as np
import pytest

from affectstream.core.ringbuffer import RingBuffer, SampleRing


def test_ring_keeps_newest_and_counts_overwrites():
    r = RingBuffer(4)
    for i in range(10):
        r.push(i, 100 + i)
    assert [s.item for s in r.latest(10)] == [6, 7, 8, 9]
    assert [s.item for s in r.latest(2)] == [8, 9]
    assert r.newest().t_ns == 109
    assert r.overwritten == 6
    assert [s.item for s in r.window(107, 108)] == [7, 8]


def test_reader_counts_what_it_missed():
    r = RingBuffer(3)
    rd = r.reader()
    r.push("a", 1)
    assert [s.item for s in rd.read_new()] == ["a"]
    for i in range(5):
        r.push(i, 2 + i)
    got = [s.item for s in rd.read_new()]
    assert got == [2, 3, 4]
    assert rd.dropped == 2
    assert rd.read_new() == []


def test_empty_ring_and_bad_capacity():
    assert RingBuffer(2).latest(3) == []
    assert RingBuffer(2).newest() is None
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_concurrent_writer_and_readers_ordering_no_torn_reads_and_drops():
    """A fast writer and two readers: each reader sees increasing sequence numbers, items
    that match their timestamps (no torn reads), and read + dropped == written."""
    ring = RingBuffer(16)
    n = 50_000
    readers = [ring.reader() for _ in range(2)]
    seen = [[] for _ in readers]
    done = threading.Event()

    def write():
        for i in range(n):
            ring.push((i, -i), i)  # item and timestamp agree
        done.set()

    def read(k):
        rd = readers[k]
        while True:
            finished = done.is_set()
            for s in rd.read_new():
                assert s.item == (s.t_ns, -s.t_ns)
                seen[k].append(s.seq)
            if finished:
                return

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=read, args=(k,)) for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for k, rd in enumerate(readers):
        assert seen[k] == sorted(set(seen[k])), "out of order or duplicated"
        assert len(seen[k]) + rd.dropped == n
        assert seen[k][-1] == n - 1
    assert ring.overwritten == n - 16


def test_sample_ring_wraps_and_times_samples():
    r = SampleRing(seconds=1.0, sample_rate=10)  # 10 samples
    r.write(np.arange(6, dtype=np.float32), t_ns=0)
    r.write(np.arange(6, 12, dtype=np.float32), t_ns=600_000_000)
    x, t0 = r.latest(4)
    assert x.tolist() == [8, 9, 10, 11]
    assert t0 == 800_000_000
    x, _ = r.latest(100)  # only what is held
    assert x.tolist() == list(range(2, 12))
    x, t = r.since(10)
    assert x.tolist() == [10, 11] and t == 1_000_000_000


def test_sample_ring_concurrent_no_torn_blocks():
    """Writer writes constant-valued blocks; a reader's window must never mix a block with
    a later overwrite of the same positions (each block's samples all equal its index)."""
    block = 160
    r = SampleRing(seconds=0.1, sample_rate=16000)  # 1600 samples = 10 blocks
    n_blocks = 20_000
    done = threading.Event()
    bad = []

    def write():
        for i in range(n_blocks):
            r.write(np.full(block, float(i), np.float32), t_ns=i * 10_000_000)
        done.set()

    def read():
        while not done.is_set():
            x, t0 = r.latest(block * 5)
            if len(x) < block * 5 or len(x) % block:
                continue
            blocks = x.reshape(-1, block)
            first = int(round((t0) / 10_000_000))
            for j, b in enumerate(blocks):
                if not (b == b[0]).all() or b[0] != first + j:
                    bad.append((first, j, b[0]))

    tw, tr = threading.Thread(target=write), threading.Thread(target=read)
    tr.start()
    tw.start()
    tw.join(60)
    tr.join(60)
    assert not bad, bad[:3]


def test_sample_ring_oversized_write_keeps_indexes_and_times():
    r = SampleRing(seconds=1.0, sample_rate=10)
    r.write(np.arange(25, dtype=np.float32), t_ns=0)
    assert r.written == 25
    x, t0 = r.latest(10)
    assert x.tolist() == list(range(15, 25)) and t0 == 1_500_000_000
