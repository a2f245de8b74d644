"""The live recognizer in a window (camera and microphone, files, or the bundled sample).

One window, `affectstream`: the image with the tracked face box, the fused 7 class
probabilities, each modality's own top class, valence/arousal on the circumplex, the
relevance of face, voice and words, the rolling transcript, the last 30 s and the measured
latency. Camera and microphone by default; `--media/--video/--audio FILE` show it on files,
`--sample` on the clip bundled with the package.
"""

from __future__ import annotations

import argparse
import os
import sys

from affectstream.cli.args import add_input_arguments, build_stream, has_input
from affectstream.core.errors import SetupError, UsageError

KEYS_HELP = (
    "keys in the window: p or space pause (the picture freezes, the input runs on), "
    "f face on/off, v voice on/off, w words on/off (a modality switched off leaves the "
    "fusion), q or Esc quit"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = " ".join(__doc__.split("\n\n", 1)[1].split())
    add_input_arguments(p)
    p.add_argument("--duration", type=float, metavar="S", help="close the window after S seconds")
    p.add_argument(
        "--fps", type=float, default=25.0, metavar="N", help="most pictures a second (25)"
    )
    p.epilog = KEYS_HELP


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, got {args.duration}")
    if args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    _check_display()
    if not has_input(args):  # the demo's default: the default camera and microphone
        args.camera, args.mic = 0, ""
    _check_gui()
    from affectstream.realtime.demo.window import DemoWindow

    stream = build_stream(args)
    try:
        shown = DemoWindow(stream, duration_s=args.duration, max_fps=args.fps).run()
    except KeyboardInterrupt:
        stream.stop()
        return 130
    print(f"affectstream demo: {shown} pictures shown", file=sys.stderr)
    return 0


def _check_display() -> None:
    """Qt aborts the process without a display; say so in one line instead."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise SetupError(
            "no display: the demo opens a window (DISPLAY is not set); "
            "use `affectstream run` for estimates as JSON lines"
        )


def _check_gui() -> None:
    """opencv-python-headless has no windows; name the package that has them."""
    import cv2

    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        raise SetupError(
            "this OpenCV build has no windows (opencv-python-headless?): pip install opencv-python"
        )
