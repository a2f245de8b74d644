"""Transcribe an audio file as a live stream, printing words as they are committed.

Each final segment is printed when it is committed, as `[start-end] text (latency N ms)`:
times are seconds of the file, latency is from the end of the segment's last word in the
audio to its commit (real time: on the monotonic clock; --fast: on the media clock, i.e. the
latency a CPU that keeps up would give).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        metavar="FILE",
        help="audio file (WAV, FLAC, headerless 16 kHz .raw, or any PyAV reads)",
    )
    from affectstream.cli.args import add_model_arguments, add_pace_arguments

    add_pace_arguments(p)
    add_model_arguments(p)
    p.add_argument("--partials", action="store_true", help="also print the tentative words")
    p.add_argument(
        "--json", metavar="OUT", help="write every segment and the stream's counters here"
    )


def _segment_dict(seg, t0_ns: int) -> dict:
    def s(ns: int) -> float:
        return round((ns - t0_ns) / 1e9, 3)

    return {
        "start_s": s(seg.t_start_ns),
        "end_s": s(seg.t_end_ns),
        "text": seg.text,
        "final": seg.final,
        "latency_ms": round((seg.emitted_ns - seg.t_end_ns) / 1e6, 1) if seg.words else None,
        "words": [
            {
                "text": w.text,
                "start_s": s(w.start_ns),
                "end_s": s(w.end_ns),
                "p": round(w.probability, 3),
            }
            for w in seg.words
        ],
    }


def run(args: argparse.Namespace) -> int:
    from affectstream.cli.args import transcriber_config, write_json
    from affectstream.core.errors import UsageError
    from affectstream.realtime.sources.array_replay import load_audio
    from affectstream.realtime.transcribe_file import stream_array
    from affectstream.realtime.transcriber import load_decoder

    cfg = transcriber_config(args)
    if not Path(args.file).is_file():
        raise UsageError(f"audio file not found: {args.file}")
    audio = load_audio(args.file)
    if len(audio) == 0:
        raise UsageError(f"no audio in {args.file}")
    decoder = load_decoder(cfg, live=args.realtime)

    def show(seg, t0_ns: int) -> None:
        if not seg.words or not (seg.final or args.partials):
            return
        start = (seg.t_start_ns - t0_ns) / 1e9
        end = (seg.t_end_ns - t0_ns) / 1e9
        latency = (seg.emitted_ns - seg.t_end_ns) / 1e6
        mark = "" if seg.final else "  (partial)"
        print(f"[{start:6.2f}–{end:6.2f}] {seg.text}  (latency {latency:.0f} ms){mark}", flush=True)

    result = stream_array(audio, decoder, cfg, realtime=args.realtime, on_segment=show)
    finals = result.finals
    print(
        f"{sum(len(s.words) for s in finals)} words in {result.audio_s:.1f} s of audio; "
        f"real-time factor {result.rtf:.2f}; skipped {result.stats.get('skipped_s', 0.0):.1f} s",
        file=sys.stderr,
    )
    if args.json:
        data = {
            "file": str(args.file),
            "realtime": result.realtime,
            "model": decoder.model_path,
            "text": result.text,
            "rtf": round(result.rtf, 3),
            "stats": result.stats,
            "segments": [_segment_dict(s, result.t0_ns) for s in result.segments],
        }
        write_json(args.json, data)
    return 0
