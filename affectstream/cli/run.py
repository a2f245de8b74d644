"""Run the live recognizer on a camera or a file and stream estimates as JSON lines."""

from __future__ import annotations

import argparse
import sys

from affectstream.cli.args import add_input_arguments, build_stream


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--out", metavar="FILE.jsonl", help="write estimates here (default: stdout)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no summary table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from affectstream.realtime.summary import RunSummary

    stream = build_stream(args)

    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    summary = RunSummary()
    try:
        for est in stream.estimates():
            out.write(est.to_json() + "\n")
            summary.add(est)
            if args.duration is not None and est.t >= args.duration:
                stream.stop()
    except KeyboardInterrupt:
        stream.stop()
    finally:
        if out is not sys.stdout:
            out.close()
    face_stage = next((s for s in stream.stages if s.name == "face"), None)
    if face_stage is not None:
        summary.extra["face_found_frames"] = {
            "frames": face_stage.frames_seen,
            "with_face": face_stage.frames_with_face,
        }
    if not args.quiet:
        Console(stderr=True).print(summary.table())
    if args.summary_json:
        summary.write_json(args.summary_json)
    return 0
