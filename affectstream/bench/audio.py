"""Benchmark of the audio path: VAD per tick, resampling per block, file decoding, pushes.

`affectstream bench audio` prints a table and writes JSON. Per-call times are medians and
95th percentiles over real speech (a recording of the project's test media, or any file).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

DEFAULT_SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "speech"


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", type=Path, help="speech file (default: the shared test speech)")
    p.add_argument("--media", type=Path, help="file whose audio decoding is timed (Megamind.avi)")
    p.add_argument("--tick-ms", type=float, default=100.0, help="scheduler tick for the VAD (100)")
    p.add_argument("--repeat", type=int, default=3, help="passes over the audio (3)")
    p.add_argument("--out", type=Path, default=Path("bench_audio.json"), help="JSON output")


def _speech(path: Path | None) -> np.ndarray:
    from affectstream.core.errors import UsageError
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.realtime.sources.audio_file import AudioFileSource
    from affectstream.realtime.sources.base import SourceError

    files = [path] if path else sorted(DEFAULT_SPEECH.glob("librivox/*.wav"))
    if not files:
        raise UsageError(f"no speech found in {DEFAULT_SPEECH}; pass --audio FILE")
    parts = []
    for f in files:
        ring = SampleRing(600, 16000)
        try:
            src = AudioFileSource(f, ring, realtime=False).begin(0)
        except SourceError as e:
            raise UsageError(str(e)) from None
        while not src.done:
            src.read_until(10**18)
        parts.append(ring.read(0, ring.written)[0])
    return np.concatenate(parts)


def _stats(times_s: list[float]) -> dict:
    a = np.asarray(times_s) * 1e3
    return {
        "calls": len(a),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
    }


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from affectstream.core.audio import StreamResampler
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.realtime.sources.audio_file import AudioFileSource
    from affectstream.realtime.sources.push_audio import PushAudioSource
    from affectstream.realtime.vad import VoiceActivity

    x = _speech(args.audio)
    rows: dict[str, dict] = {}

    tick = int(16000 * args.tick_ms / 1000)
    vad, t = VoiceActivity(), []
    for r in range(args.repeat):
        vad.reset()
        for i in range(0, len(x) - tick + 1, tick):
            t0 = time.perf_counter()
            vad.feed(x[i : i + tick], t_ns=(r * len(x) + i) * 62_500)
            t.append(time.perf_counter() - t0)
    rows[f"vad: one {args.tick_ms:g} ms tick"] = _stats(t)

    for rate in (48000, 44100):
        at_rate = StreamResampler(16000, rate).process(x)
        block = rate // 50
        res, t = StreamResampler(rate, 16000), []
        for _ in range(args.repeat):
            for i in range(0, len(at_rate) - block + 1, block):
                t0 = time.perf_counter()
                res.process(at_rate[i : i + block])
                t.append(time.perf_counter() - t0)
        rows[f"resample {rate} -> 16000 Hz: one 20 ms block"] = _stats(t)

    ring = SampleRing(10, 16000)
    push, t = PushAudioSource(ring).start(), []
    x16 = (x * 32767).astype(np.int16)
    for _ in range(args.repeat):
        for i in range(0, len(x16) - 320 + 1, 320):
            t0 = time.perf_counter()
            push.push(x16[i : i + 320], t_ns=i * 62_500)
            t.append(time.perf_counter() - t0)
    rows["push int16 16 kHz: one 20 ms block"] = _stats(t)

    megamind = DEFAULT_SPEECH.parent / "Megamind.avi"  # AC-3 48 kHz stereo: decode + resample
    media = args.media or (megamind if megamind.is_file() else args.audio)
    if media is None:
        media = sorted(DEFAULT_SPEECH.glob("librivox/*.wav"))[0]
    t0 = time.perf_counter()
    src = AudioFileSource(media, SampleRing(600, 16000), realtime=False).begin(0)
    while not src.done:
        src.read_until(10**18)
    el = time.perf_counter() - t0
    audio_s = src.samples_written / 16000
    rows[f"decode {Path(media).name}"] = {
        "calls": 1,
        "median_ms": el * 1e3,
        "p95_ms": el * 1e3,
        "x_realtime": audio_s / el if el else None,
    }

    table = Table(title=f"audio path ({len(x) / 16000:.1f} s of speech, {args.repeat} passes)")
    for col in ("what", "calls", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for name, s in rows.items():
        table.add_row(name, str(s["calls"]), f"{s['median_ms']:.3f}", f"{s['p95_ms']:.3f}")
    Console().print(table)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "speech_s": len(x) / 16000,
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0
