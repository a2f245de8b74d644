"""The flags several commands share, in one place, and what they build (a stream, a backend,
a transcriber config). Each command module adds its own flags beside these."""

from __future__ import annotations

import argparse
from pathlib import Path

from affectstream.core import jsonio
from affectstream.core.config import BACKEND_NAMES, DEVICE_NAMES, FUSION_METHODS


def add_pace_arguments(p: argparse.ArgumentParser) -> None:
    """`--realtime` (default) / `--fast`: how files are replayed, for every command that does."""
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="replay files at real time (default)",
    )
    pace.add_argument(
        "--fast",
        dest="realtime",
        action="store_false",
        help="replay files as fast as possible, on the media clock",
    )


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
    src.add_argument(
        "--sample",
        action="store_true",
        help="replay the bundled sample clip (a face and speech; as --media FILE)",
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
    add_pace_arguments(p)
    p.add_argument("--rate", type=float, metavar="HZ", help="estimates per second (default 10)")
    add_fusion_argument(p)
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the shipped preset)")
    add_backend_arguments(p)


def add_fusion_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fusion",
        choices=FUSION_METHODS,
        help="learned: the temporal-attention fusion model (default); confidence: each "
        "modality weighted by its own top probability, the earlier rule, for comparison",
    )


def positive_ints(text: str, what: str = "sizes", empty: bool = True) -> list[int]:
    """A comma-separated list of integers >= 1 (`--batches 1,8,64`, `--streams 1,2,4`), for
    argparse's `type=`; `empty=False` also refuses a list with none."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(v < 1 for v in values) or (not empty and not values):
        raise argparse.ArgumentTypeError(f"{what} must be >= 1, got {text!r}")
    return values


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """`--backend`, `--device`, `--onnx-dir`, `--threads`: for every command that runs models."""
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        help="inference backend (default: config backend.name, normally auto: "
        "the fastest that works here, measured at start-up)",
    )
    p.add_argument("--device", choices=DEVICE_NAMES, help="default: config backend.device")
    p.add_argument(
        "--onnx-dir",
        metavar="DIR",
        help="exported models (affectstream export); default: export into the cache",
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per model")


def apply_backend_arguments(config, args: argparse.Namespace) -> None:
    """`--backend/--device/--onnx-dir/--threads` override the config's backend section,
    through the config's own check (`--threads 0` is refused naming `backend.threads`)."""
    from affectstream.core.config import set_key

    for key, value, flag in (
        ("name", args.backend, "--backend"),
        ("device", args.device, "--device"),
        ("onnx_dir", args.onnx_dir, "--onnx-dir"),
        ("threads", args.threads, "--threads"),
    ):
        if value is not None and value != "":
            set_key(config, f"backend.{key}", value, flag)


def sample_media() -> Path:
    """The bundled sample clip (`affectstream/media/sample.mp4`; README.md beside it has the
    licences of its parts)."""
    return Path(__file__).resolve().parents[1] / "media" / "sample.mp4"


def has_input(args: argparse.Namespace) -> bool:
    """Whether the command line names a camera, microphone or file input."""
    files = (args.video, args.audio, args.media, getattr(args, "sample", False))
    return args.camera is not None or args.mic is not None or any(files)


def apply_sample(args: argparse.Namespace) -> None:
    """`--sample`: the bundled clip as `--media`; with another file input it is a UsageError."""
    from affectstream.core.errors import UsageError

    if not getattr(args, "sample", False):
        return
    given = [f for f in ("video", "audio", "media") if getattr(args, f) is not None]
    if given:
        raise UsageError(f"--sample replaces --{given[0]}: give one of them")
    args.media = str(sample_media())


def config_from_args(args: argparse.Namespace):
    """`--config FILE` loaded, then `--backend/--device/--onnx-dir/--threads` and, where the
    command has it, `--rate` and `--fusion` applied over it: each flag through the check a
    file's value gets (`--rate: scheduler.rate_hz must be > 0 and <= 1000, got 0`)."""
    from affectstream.core.config import load_config, set_key

    config = load_config(args.config)
    apply_backend_arguments(config, args)
    if getattr(args, "rate", None) is not None:
        set_key(config, "scheduler.rate_hz", args.rate, "--rate")
    if getattr(args, "fusion", None):
        set_key(config, "fusion.method", args.fusion, "--fusion")
    return config


def add_looped_stream_arguments(p: argparse.ArgumentParser) -> None:
    """`--media FILE`, `--no-transcribe`, `--config` and the backend flags: for the commands
    that run the pipeline on a loop of one file (bench pipeline, soak)."""
    p.add_argument(
        "--media",
        type=Path,
        help="video with an audio track, looped (default: the bundled sample clip, as "
        "`run --sample`)",
    )
    p.add_argument(
        "--no-transcribe", action="store_true", help="no speech-to-text, no text modality"
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the shipped preset)")
    add_backend_arguments(p)


def add_budget_argument(p: argparse.ArgumentParser, counted: str) -> None:
    """`--budget-ms`: the p99 estimate age (face, voice) a stream or session count must keep,
    shared by `bench pipeline` and `bench serve`, which both name the largest count that does."""
    p.add_argument(
        "--budget-ms",
        type=float,
        default=150.0,
        metavar="MS",
        help=f"p99 estimate age (face, voice) a {counted} count must keep to count as "
        "sustained (150)",
    )


def looped_media(args: argparse.Namespace) -> Path:
    """`--media`, or the bundled sample, which every install has (a default under ../shared
    would fail outside a checkout); UsageError when the file is not there."""
    from affectstream.core.errors import UsageError

    media = Path(args.media or sample_media())
    if not media.is_file():
        raise UsageError(f"--media: file not found: {media}")
    return media


def build_stream(args: argparse.Namespace, push: bool = False):
    """An `AffectStream` from the flags of `add_input_arguments`.

    `push`: with no input flag, take pushed frames and audio (`serve`) instead of failing.
    """
    from affectstream.core.errors import UsageError
    from affectstream.realtime.stream import AffectStream, Inputs

    apply_sample(args)
    config = config_from_args(args)
    files = {"--video": args.video, "--audio": args.audio, "--media": args.media}
    pushed = push and not has_input(args)
    if not pushed and not has_input(args):
        raise UsageError(
            "no input: give --camera N, --mic, --video FILE, --audio FILE, --media FILE or --sample"
        )
    for flag, path in files.items():
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag}: file not found: {path}")
    mic = args.mic  # None: no --mic; "": --mic alone, the default device; else index or name
    if mic == "":
        mic = None
    elif mic is not None and mic.isdigit():
        mic = int(mic)  # device 0 included
    inputs = Inputs(
        camera=args.camera,
        video=args.video,
        media=args.media,
        audio=args.audio,
        mic=mic,
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


def add_eval_backend_arguments(p: argparse.ArgumentParser) -> None:
    """`--backend` and `--onnx-dir` for the eval commands (which have their own --threads)."""
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="torch",
        help="inference backend (default: torch, the reference)",
    )
    p.add_argument("--onnx-dir", metavar="DIR", help="exported models (affectstream export)")


def eval_predictor(args: argparse.Namespace, model: str, weights: str | None, **kw):
    """The predictor an eval or bench command asked for (`--backend`, `--onnx-dir`,
    `--threads`): the class the runtime stage runs; `--backend torch` is the PyTorch reference
    through export's TorchBackend. `kw` goes to `export.predictors.open_eval_predictor`."""
    from affectstream.export.predictors import open_eval_predictor

    return open_eval_predictor(
        model,
        getattr(args, "backend", "torch"),
        onnx_dir=getattr(args, "onnx_dir", None),
        weights=weights,
        threads=max(1, getattr(args, "threads", 1) or 1),
        **kw,
    )


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """`--model`, `--config`, `--threads`, read back by `transcriber_config`."""
    p.add_argument(
        "--model", metavar="PATH", help="whisper model folder or cached size (default: config)"
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the shipped preset)")
    p.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for decoding (default: config)"
    )


def transcriber_config(args):
    """The config's transcriber section with `--model` and `--threads` applied."""
    from affectstream.core.config import load_config, set_key

    config = load_config(args.config)
    if args.model is not None:
        set_key(config, "transcriber.model", args.model, "--model")
    if args.threads is not None:
        set_key(config, "transcriber.cpu_threads", args.threads, "--threads")
    return config.transcriber


def passed_on(args, names: tuple[str, ...]) -> list[str]:
    """`--name value` for each of `names` the user gave: the flags a benchmark hands on to the
    command it starts (`serve`, `run`), spelled as that command spells them."""
    flags = []
    for name in names:
        value = getattr(args, name)
        if value is not None and value is not False:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def write_outputs(args, result: dict, plot) -> None:
    """A benchmark's `--json OUT` (the record) and `--plot OUT.png` (drawn by `plot(result,
    path)`), each only where asked."""
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")


def write_json(path: str | Path | None, data: dict) -> None:
    """`--json OUT`: core.jsonio.write_json there (parent folders made); nothing without a path."""
    if path:
        jsonio.write_json(path, data)
