"""Opening a model's predictor: the one inference path that `run`, `eval` and `bench` share.

A predictor (`models/<m>/predictor.py`) owns a model's pre- and post-processing and runs over
any backend. Two ways to open one:

- `open_predictor(name, config)`: what the runtime stages run, from the config's `backend`
  section and the model's `weights` (on a CPU with backend auto/onnxruntime and no weights or
  exported folder of the user's, the face model is the shipped int8 one when
  `config.face.int8_on_cpu`).
- `open_eval_predictor(name, backend, ...)`: explicit backend name, exported folder, weights
  and threads, for `eval` and `bench`; `backend="torch"` is the PyTorch reference through
  `TorchBackend`, so every backend runs the same predictor class as the runtime.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from affectstream.core.config import Config

log = logging.getLogger(__name__)

INT8_FACE = "face.int8.onnx"


def weights_dir() -> Path:
    return Path(str(resources.files("affectstream") / "models" / "weights"))


def shipped(name: str) -> Path | None:
    """A shipped weight file by name, or None when it is not in the package."""
    p = weights_dir() / name
    return p if p.is_file() else None


def resolve_weights(weights: str | Path | None) -> str | None:
    """None for the shipped default; a bare file name that is not a file here means one of the
    shipped weight files (e.g. `voice.ensemble3.pt`); anything else is a path."""
    if not weights:
        return None
    p = Path(weights)
    if not p.exists() and p.parent == Path("."):
        found = shipped(p.name)
        if found is not None:
            return str(found)
    return str(p)


def wrap(name: str, backend, weights: str | Path | None = None, tta: bool = False):
    """The predictor of model `name` over a loaded `backend`; `weights` (None: the shipped
    file) supplies what the predictor reads from the weights file (voice window, text spec)."""
    weights = resolve_weights(weights)
    if name == "face":
        from affectstream.models.face.predictor import FacePredictor

        return FacePredictor(backend, tta=tta)
    if name == "voice":
        from affectstream.models.voice import utterance
        from affectstream.models.voice.encoder import default_weights_path, read_header
        from affectstream.models.voice.predictor import VoicePredictor
        from affectstream.models.voice.session import load_companion

        path = weights or default_weights_path()
        window_s, mel, meta = read_header(path)
        session = load_companion(path)
        return VoicePredictor(
            backend,
            window_s=window_s,
            mel=mel,
            meta=meta,
            session=session,
            utterance_heads=utterance.load_companions(path),
        )
    if name == "text":
        from affectstream.models.text.predictor import TextPredictor, read_header
        from affectstream.models.text.spec import default_weights_path

        spec, info = read_header(weights or default_weights_path())
        return TextPredictor(backend, spec, info)
    if name == "fusion":
        from affectstream.models.fusion.predictor import (
            FusionPredictor,
            default_weights_path,
            read_header,
        )
        from affectstream.models.fusion.tokens import HistorySpec

        path = weights or default_weights_path()
        if Path(path).is_file():
            from affectstream.models.fusion.predictor import read_calibration

            spec, history, _ = read_header(path)
            return FusionPredictor(backend, spec.embed_dims, history, read_calibration(path))
        from affectstream.models.fusion.net import FusionSpec

        return FusionPredictor(backend, FusionSpec().embed_dims, HistorySpec.default())
    from affectstream.export import registry

    registry.get(name)  # unknown names: RegistryError naming the known ones
    raise NotImplementedError(f"model {name!r} has no predictor yet")


def open_eval_predictor(
    name: str,
    backend: str = "torch",
    *,
    onnx_dir: str | Path | None = None,
    onnx_file: str | Path | None = None,
    weights: str | Path | None = None,
    threads: int = 1,
    device: str = "cpu",
    tta: bool = False,
) -> Any:
    """A predictor on an explicitly named backend ("torch", "onnxruntime", "tensorrt", "auto").

    Args:
        onnx_dir: folder written by `affectstream export` (None: export into the cache).
        onnx_file: one ONNX file run by ONNX Runtime on the CPU (e.g. the int8 face model);
            its signature is read off the file. Overrides `backend` and `onnx_dir`.
        weights: a weights file or a shipped file's name; None: the shipped weights.
        threads: CPU threads of the backend.
    """
    weights = resolve_weights(weights)
    if onnx_file is not None:
        from affectstream.export.onnxrt import OnnxRuntimeBackend

        b = OnnxRuntimeBackend(name, onnx_file, threads=max(1, int(threads))).load()
    else:
        from affectstream.export.select import open_backend

        b = open_backend(
            name,
            backend,
            onnx_dir=onnx_dir or None,
            weights=weights,
            threads=max(1, int(threads)),
            device=device,
        )
    log.info("%s encoder runs on %s", name, b.name)  # wording tests and users grep for
    return wrap(name, b, weights, tta=tta)


def _int8_face(config: Config) -> Path | None:
    b = config.backend
    int8 = shipped(INT8_FACE)
    if (
        config.face.int8_on_cpu
        and not config.face.weights
        and not b.onnx_dir  # exported files named by the user come first
        and b.device == "cpu"
        and b.name in ("auto", "onnxruntime")
    ):
        return int8
    return None


def open_predictor(name: str, config: Config) -> Any:
    """The predictor the runtime stage of model `name` runs, as the config says. It opens only
    what is ready (`select.ready_backend`): a live stream never exports or measures. Its
    backend batches the requests of the streams that share it where batching is on
    (`export.batching`, config `batch`: by default on a GPU)."""
    from affectstream.export.batching import batching
    from affectstream.export.registry import get

    b = config.backend
    threads = max(1, int(b.threads))
    weights = resolve_weights(getattr(getattr(config, name, None), "weights", "") or None)
    int8 = _int8_face(config) if name == "face" else None
    if int8 is not None:
        from affectstream.export.onnxrt import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(name, int8, threads=threads).load()
        log.info("face encoder runs on onnxruntime (shipped int8 model)")
    else:
        from affectstream.export.select import ready_backend

        backend = ready_backend(
            name,
            b.name,
            onnx_dir=b.onnx_dir or None,
            weights=weights,
            threads=threads,
            device=b.device,
        )
        log.info("%s encoder runs on %s", name, backend.name)  # wording tests and users grep for
    return wrap(name, batching(backend, config.batch, get(name).paddable, b.device), weights)


def module_predictor(
    name: str, module: Any, threads: int | None = None, weights: str | Path | None = None
) -> Any:
    """The predictor over an in-memory torch module (a model just trained, in eval mode),
    through the PyTorch reference backend: training scores the same code path as `eval`."""
    from affectstream.export import registry
    from affectstream.export.torch_backend import TorchBackend

    entry = registry.get(name)
    module = module.eval()
    b = TorchBackend(
        name, entry.signature(module), lambda: module, threads=threads, paddable=entry.paddable
    ).load()
    return wrap(name, b, weights)
