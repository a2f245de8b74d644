"""Run the streaming transcriber over an array of audio, at real-time pace or as fast as possible.

Real time: an `ArrayReplay` thread writes the audio into a `SampleRing` like a microphone and
the `Transcriber` thread reads it, exactly as in the live pipeline; latencies are on the
monotonic clock. Fast: the same `OnlineTranscriber` is fed directly; the clock is the media
time of the audio fed so far plus the time the current decode has taken, i.e. the latency a
CPU that is never behind would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.clock import now_ns
from affectstream.core.config import TranscriberConfig
from affectstream.core.messages import TranscriptSegment

log = logging.getLogger(__name__)

_FEED = 320  # samples per feed in fast mode (20 ms, the audio block size)


@dataclass
class StreamRun:
    """The segments of one run and how it went."""

    segments: list[TranscriptSegment]
    t0_ns: int  # stream-clock time of sample 0
    audio_s: float
    busy_s: float  # time spent decoding
    wall_s: float  # from the first sample to the last segment
    stats: dict = field(default_factory=dict)
    realtime: bool = True

    @property
    def finals(self) -> list[TranscriptSegment]:
        return [s for s in self.segments if s.final]

    @property
    def text(self) -> str:
        from affectstream.models.stt.local_agreement import join_words

        return join_words([w.text for s in self.finals for w in s.words])

    @property
    def rtf(self) -> float:
        """Real-time factor: decoding time per second of audio (< 1 keeps pace)."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0


def stream_array(
    audio: np.ndarray,
    decoder,
    config: TranscriberConfig | None = None,
    realtime: bool = True,
    on_segment: Callable[[TranscriptSegment, int], None] | None = None,
    drain_timeout_s: float = 60.0,
) -> StreamRun:
    """Transcribe `audio` (16 kHz mono float32) as a stream.

    `on_segment(segment, t0_ns)` sees each segment as it is emitted; t0_ns is the stream-clock
    time of the first sample, so `segment.t_start_ns - t0_ns` is a time in the audio.
    """
    config = config or TranscriberConfig()
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if realtime:
        return _run_realtime(audio, decoder, config, on_segment, drain_timeout_s)
    return _run_fast(audio, decoder, config, on_segment)


def _run_fast(audio, decoder, config, on_segment) -> StreamRun:
    from affectstream.models.stt.online import OnlineTranscriber
    from affectstream.realtime.transcriber import stream_options

    stream, _ = stream_options(config)
    step_t0 = [0]

    def time_of(i: int) -> int:
        return int(round(i * 1e9 / MODEL_SAMPLE_RATE))

    online: OnlineTranscriber | None = None

    def clock() -> int:
        return time_of(online.end) + (now_ns() - step_t0[0])

    online = OnlineTranscriber(decoder, stream, time_of=time_of, clock=clock)
    segments: list[TranscriptSegment] = []
    busy = 0
    w0 = now_ns()

    def emit(segs):
        for s in segs:
            segments.append(s)
            if on_segment is not None:
                on_segment(s, 0)

    for i in range(0, len(audio), _FEED):
        online.feed(audio[i : i + _FEED])
        if online.due():
            step_t0[0] = now_ns()
            segs = online.step()
            busy += now_ns() - step_t0[0]
            emit(segs)
    step_t0[0] = now_ns()
    segs = online.finish()
    busy += now_ns() - step_t0[0]
    emit(segs)
    return StreamRun(
        segments,
        0,
        len(audio) / MODEL_SAMPLE_RATE,
        busy / 1e9,
        (now_ns() - w0) / 1e9,
        online.stats.to_dict(),
        realtime=False,
    )


def _run_realtime(audio, decoder, config, on_segment, drain_timeout_s) -> StreamRun:
    from affectstream.core.ringbuffer import RingBuffer, SampleRing
    from affectstream.realtime.sources.array_replay import ArrayReplay
    from affectstream.realtime.transcriber import Transcriber

    ring = SampleRing(30.0, MODEL_SAMPLE_RATE)
    seg_ring: RingBuffer[TranscriptSegment] = RingBuffer(8192, "transcript")
    reader = seg_ring.reader()
    tr = Transcriber(ring, config, decoder=decoder, segments=seg_ring, from_start=True)
    replay = ArrayReplay(audio, ring)
    segments: list[TranscriptSegment] = []

    def poll():
        for slot in reader.read_new():
            segments.append(slot.item)
            if on_segment is not None:
                on_segment(slot.item, replay.t0_ns)

    tr.start()
    replay.start()
    try:
        while not replay.join(0.05):
            poll()
        tr.end_of_input()
        deadline = now_ns() + int(drain_timeout_s * 1e9)
        while not tr.join(0.05) and now_ns() < deadline:
            poll()
        poll()
    finally:
        replay.stop()
        tr.stop()
    if reader.dropped:
        log.warning("%d transcript segments were overwritten before they were read", reader.dropped)
    last = max((s.emitted_ns for s in segments), default=replay.t0_ns)
    end_audio = replay.t0_ns + int(len(audio) * 1e9 / MODEL_SAMPLE_RATE)
    snap = tr.snapshot()
    stats = dict(snap.stats)
    stats["replay_late_ms_max"] = round(replay.late_ms_max, 2)
    stats["final_lag_s"] = round(max(last - end_audio, 0) / 1e9, 3)
    return StreamRun(
        segments,
        replay.t0_ns,
        len(audio) / MODEL_SAMPLE_RATE,
        tr.busy_s,
        (last - replay.t0_ns) / 1e9,
        stats,
        realtime=True,
    )
