"""Run the live recognizer on a camera or a file and stream estimates as JSON lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--out", metavar="FILE.jsonl", help="write estimates here (default: stdout)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no summary table")


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Inputs, pace, rate, config and backend flags: shared by `run` and `serve`."""
    src = p.add_argument_group("inputs")
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index")
    src.add_argument("--video", metavar="FILE", help="replay a video file")
    src.add_argument(
        "--mic",
        nargs="?",
        const="",
        metavar="DEVICE",
        help="microphone: index or name (default device without a value)",
    )
    src.add_argument(
        "--audio", metavar="FILE", help="replay an audio file (WAV, FLAC, any PyAV container)"
    )
    src.add_argument(
        "--media", metavar="FILE", help="replay the video and audio tracks of one file"
    )
    src.add_argument("--no-video", action="store_true", help="ignore video inputs")
    src.add_argument("--no-audio", action="store_true", help="ignore audio inputs")
    words = p.add_mutually_exclusive_group()
    words.add_argument(
        "--transcribe",
        dest="transcribe",
        action="store_true",
        default=True,
        help="live transcript and text emotion (default)",
    )
    words.add_argument(
        "--no-transcribe",
        dest="transcribe",
        action="store_false",
        help="no speech-to-text, no text modality",
    )
    from affectstream.cli import add_pace_arguments

    add_pace_arguments(p)
    p.add_argument("--rate", type=float, metavar="HZ", help="estimates per second (default 10)")
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the shipped preset)")
    from affectstream.export.cli import add_backend_arguments

    add_backend_arguments(p)


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


def apply_backend_arguments(config, args: argparse.Namespace) -> None:
    """`--backend/--device/--onnx-dir/--threads` override the config's backend section."""
    b = config.backend
    b.name = args.backend or b.name
    b.device = args.device or b.device
    b.onnx_dir = args.onnx_dir or b.onnx_dir
    b.threads = args.threads or b.threads


def has_input(args: argparse.Namespace) -> bool:
    """Whether the command line names a camera, microphone or file input."""
    files = (args.video, args.audio, args.media)
    return args.camera is not None or args.mic is not None or any(files)


def build_stream(args: argparse.Namespace, push: bool = False):
    """An `AffectStream` from the flags of `add_input_arguments`.

    `push`: with no input flag, take pushed frames and audio (`serve`) instead of failing.
    """
    from affectstream.cli import UsageError
    from affectstream.config import load_config
    from affectstream.realtime.stream import AffectStream, Inputs

    config = load_config(args.config)
    apply_backend_arguments(config, args)
    if args.rate is not None:
        if args.rate <= 0:
            raise UsageError(f"--rate must be positive, got {args.rate}")
        config.scheduler.rate_hz = args.rate
    files = {"--video": args.video, "--audio": args.audio, "--media": args.media}
    pushed = push and not has_input(args)
    if not pushed and not has_input(args):
        raise UsageError(
            "no input: give --camera N, --mic, --video FILE, --audio FILE or --media FILE"
        )
    for flag, path in files.items():
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag}: file not found: {path}")
    mic = args.mic
    if mic is not None and mic.isdigit():
        mic = int(mic)
    inputs = Inputs(
        camera=args.camera,
        video=args.video,
        media=args.media,
        audio=args.audio,
        mic=mic or None,
        use_mic=args.mic is not None,
        push_video=pushed,
        push_audio=pushed,
        no_video=args.no_video,
        no_audio=args.no_audio,
        transcribe=args.transcribe,
        realtime=args.realtime,
    )
    try:
        return AffectStream(config, inputs)
    except ValueError as e:
        raise UsageError(str(e)) from None
