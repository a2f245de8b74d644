"""Run the live recognizer on a camera or a file and stream estimates as JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys

from affectstream.cli.args import add_input_arguments, build_stream
from affectstream.core.errors import OutputError


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

    out = _open_output(args.out)
    summary = RunSummary()
    written = 0
    try:
        for est in stream.estimates():
            try:
                out.write(est.to_json() + "\n")
                out.flush()  # each line whole on disk as it is made: a later failure keeps it
            except OSError as e:
                stream.stop()
                raise _output_error(args.out, e, written) from None
            written += 1
            summary.add(est)
            if args.duration is not None and est.t >= args.duration:
                stream.stop()
    except KeyboardInterrupt:
        stream.stop()
    finally:
        _close_output(out)
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


def _open_output(path: str | None):
    if not path:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by _close_output
    except OSError as e:
        raise OutputError(f"--out {path}: cannot open: {e.strerror or e}") from None


def _output_error(path: str | None, e: OSError, written: int) -> OutputError:
    where = f"--out {path}" if path else "stdout"
    if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:
        why = "the reader closed the pipe"
    else:
        why = e.strerror or str(e)
    return OutputError(f"{where}: {why}; the {written} estimates written before are intact")


def _close_output(out) -> None:
    """Close a file; after a broken stdout pipe, point stdout at /dev/null so that Python's
    own flush at exit does not raise a second time."""
    if out is sys.stdout:
        try:
            out.flush()
        except OSError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    with contextlib.suppress(OSError):  # the write that failed has already been reported
        out.close()
