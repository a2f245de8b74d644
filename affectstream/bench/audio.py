"""Benchmark of the audio path: VAD per tick, resampling per block, file decoding, pushes.

`measure` returns the results as a dict; `affectstream bench audio` (cli/bench_audio.py)
prints them and writes JSON. Per-call times are `core.stats.latency_ms` records (calls,
median, p95, p99, max) over real speech (a recording of the project's test media, or any file).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.stats import latency_ms


def _speech(path: Path) -> np.ndarray:
    """One speech file, or every `librivox/*.wav` under a folder, decoded at 16 kHz."""
    from affectstream.core.errors import UsageError
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.realtime.sources.audio_file import AudioFileSource
    from affectstream.realtime.sources.base import SourceError

    files = sorted(Path(path).glob("librivox/*.wav")) if Path(path).is_dir() else [Path(path)]
    if not files:
        raise UsageError(f"no speech found in {path}; pass --audio FILE")
    parts = []
    for f in files:
        ring = SampleRing(600, MODEL_SAMPLE_RATE)
        try:
            src = AudioFileSource(f, ring, realtime=False).begin(0)
        except SourceError as e:
            raise UsageError(str(e)) from None
        while not src.done:
            src.read_until(10**18)
        parts.append(ring.read(0, ring.written)[0])
    return np.concatenate(parts)


def _stats(times_s: list[float]) -> dict:
    """core.stats.latency_ms of times in seconds; 4 digits: a resampled block takes ~10 us."""
    return latency_ms(np.asarray(times_s) * 1e3, digits=4)


def measure(speech: Path, media: Path, tick_ms: float = 100.0, repeat: int = 3) -> dict:
    """Time the audio path over `speech` (a file, or a folder with `librivox/*.wav`); `media`:
    the file whose decoding is timed. Returns machine, speech_s and per-row results."""
    from affectstream.core.audio import StreamResampler
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.models.stt.vad import VoiceActivity
    from affectstream.realtime.sources.audio_file import AudioFileSource
    from affectstream.realtime.sources.push_audio import PushAudioSource

    x = _speech(speech)
    rows: dict[str, dict] = {}

    tick = int(MODEL_SAMPLE_RATE * tick_ms / 1000)
    vad, t = VoiceActivity(), []
    for r in range(repeat):
        vad.reset()
        for i in range(0, len(x) - tick + 1, tick):
            t0 = time.perf_counter()
            vad.feed(x[i : i + tick], t_ns=(r * len(x) + i) * 1_000_000_000 // MODEL_SAMPLE_RATE)
            t.append(time.perf_counter() - t0)
    rows[f"vad: one {tick_ms:g} ms tick"] = _stats(t)

    for rate in (48000, 44100):
        at_rate = StreamResampler(MODEL_SAMPLE_RATE, rate).process(x)
        block = rate // 50
        res, t = StreamResampler(rate, MODEL_SAMPLE_RATE), []
        for _ in range(repeat):
            for i in range(0, len(at_rate) - block + 1, block):
                t0 = time.perf_counter()
                res.process(at_rate[i : i + block])
                t.append(time.perf_counter() - t0)
        rows[f"resample {rate} -> {MODEL_SAMPLE_RATE} Hz: one 20 ms block"] = _stats(t)

    ring = SampleRing(10, MODEL_SAMPLE_RATE)
    push, t = PushAudioSource(ring).start(), []
    x16 = (x * 32767).astype(np.int16)
    for _ in range(repeat):
        for i in range(0, len(x16) - 320 + 1, 320):
            t0 = time.perf_counter()
            push.push(x16[i : i + 320], t_ns=i * 1_000_000_000 // MODEL_SAMPLE_RATE)
            t.append(time.perf_counter() - t0)
    rows["push int16 16 kHz: one 20 ms block"] = _stats(t)

    t0 = time.perf_counter()
    src = AudioFileSource(media, SampleRing(600, MODEL_SAMPLE_RATE), realtime=False).begin(0)
    while not src.done:
        src.read_until(10**18)
    el = time.perf_counter() - t0
    audio_s = src.samples_written / MODEL_SAMPLE_RATE
    rows[f"decode {Path(media).name}"] = {
        **_stats([el]),
        "x_realtime": audio_s / el if el else None,
    }

    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "speech_s": len(x) / MODEL_SAMPLE_RATE,
        "repeat": repeat,
        "results": rows,
    }
