"""`affectstream bench audio`: the audio path's timings (bench/audio.py), as a table and JSON.

Defaults come from the checkout's `../shared/media` (resolved when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audio",
        type=Path,
        help="speech file or folder with librivox/*.wav (default: the checkout's "
        "../shared/media/speech, resolved when the command runs)",
    )
    p.add_argument(
        "--media",
        type=Path,
        help="file whose audio decoding is timed (default: ../shared/media/Megamind.avi "
        "beside the checkout if present, else the first speech file)",
    )
    p.add_argument("--tick-ms", type=float, default=100.0, help="scheduler tick for the VAD (100)")
    p.add_argument("--repeat", type=int, default=3, help="passes over the audio (3)")
    p.add_argument("--out", type=Path, default=Path("bench_audio.json"), help="JSON output")


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from affectstream.bench.audio import measure
    from affectstream.cli.defaults import fill_shared_defaults, shared_dir
    from affectstream.core.errors import UsageError

    fill_shared_defaults(args, {"audio": ("--audio FILE", "media/speech")})
    speech = Path(args.audio)
    media = args.media
    if media is None:
        megamind = shared_dir() / "media" / "Megamind.avi"  # AC-3 48 kHz stereo: decode + resample
        files = sorted(speech.glob("librivox/*.wav")) if speech.is_dir() else [speech]
        media = megamind if megamind.is_file() else (files[0] if files else None)
    if media is None:
        raise UsageError(f"no speech found in {speech}; pass --audio FILE")
    result = measure(speech, media, tick_ms=args.tick_ms, repeat=args.repeat)
    rows = result["results"]
    title = f"audio path ({result['speech_s']:.1f} s of speech, {args.repeat} passes)"
    table = Table(title=title)
    for col in ("what", "calls", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for name, s in rows.items():
        table.add_row(name, str(s["calls"]), f"{s['median_ms']:.3f}", f"{s['p95_ms']:.3f}")
    Console().print(table)
    from affectstream.cli.args import write_json

    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0
