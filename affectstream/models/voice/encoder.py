"""VoiceEncoder: loads a voice weight file into its torch module (an ensemble of VoiceNets).

The log-mel front end is part of the torch module (conv1d STFT), so an exported ONNX graph
takes the same raw 16 kHz samples. Inference (padding, softmax) is `predictor.VoicePredictor`,
over any backend; the export registry builds its torch module from `VoiceEncoder.load`.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from affectstream.core.labels import LABELS
from affectstream.models.voice.predictor import MIN_SAMPLES
from affectstream.models.weights_header import read_plain

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "affectstream-voice/1"


def default_weights_path() -> Path:
    return Path(str(resources.files("affectstream") / "models" / "weights" / "voice.pt"))


def _find(path: str | Path | None) -> Path:
    """A path, the name of a shipped file (`voice.ensemble3.pt`), or None for `voice.pt`."""
    given = Path(path) if path else default_weights_path()
    path = given
    if not path.is_file() and path.parent == Path("."):
        path = default_weights_path().parent / path  # a shipped file by name
    if not path.is_file():
        raise FileNotFoundError(f"voice weights not found: {given}")
    return path


def _read_blob(path: Path) -> dict:
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a broken or foreign file
        raise ValueError(f"{path}: not a voice weight file ({e.__class__.__name__})") from None
    return _checked(path, blob)


def _read_plain(path: Path) -> dict:
    """A voice weight file's plain fields (format, labels, window_s, net, meta), without
    importing torch (`models/weights_header.py`)."""
    return _checked(path, read_plain(path, "voice weight file"))


def _checked(path: Path, blob) -> dict:
    """`blob` if it is a voice weight file in LABELS order, else ValueError naming `path`."""
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a voice weight file ({WEIGHTS_FORMAT})")
    if tuple(blob["labels"]) != LABELS:
        raise ValueError(f"{path}: labels {blob['labels']} differ from {LABELS}")
    return blob


def read_header(path: str | Path | None = None) -> tuple[float, object, dict]:
    """(window_s, MelOptions, meta) of a weight file, without building the networks or
    importing torch."""
    from .options import MelOptions

    blob = _read_plain(_find(path))
    return (
        float(blob["window_s"]),
        MelOptions(**blob["net"]["mel"]),
        json.loads(blob.get("meta", "{}")),
    )


def _networks(blob: dict) -> list:
    """The weight file's member networks (eval mode, batch norm not folded)."""
    from .net import NetOptions, VoiceNet

    opt = NetOptions.from_dict(blob["net"])
    nets = []
    for state in blob["members"]:
        net = VoiceNet(opt)
        net.load_state_dict(state)
        nets.append(net.eval())
    return nets


def load_networks(path: str | Path | None = None) -> list:
    """The member networks of a weight file as trainable `VoiceNet`s (to fine-tune them)."""
    return _networks(_read_blob(_find(path)))


class VoiceEncoder:
    """The loaded torch module and what the weight file says about it."""

    def __init__(self, model, window_s: float, meta: dict | None = None) -> None:
        self.model = model.eval()
        self.window_s = float(window_s)
        self.meta = meta or {}
        self.mel = model.opt.mel
        self.sample_rate = self.mel.sample_rate
        self.window_samples = self.mel.samples(
            self.mel.frames(int(round(self.window_s * self.sample_rate)))
        )
        self.min_samples = MIN_SAMPLES  # shortest input the CNN can pool over
        self.labels = LABELS
        self.emb_dim = model.emb_dim

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int | None = None) -> VoiceEncoder:
        """Load a weight file: a path, the name of a shipped file (`voice.ensemble3.pt`), or
        None for the default `voice.pt`. `threads` sets torch's CPU threads."""
        import torch

        from .net import VoiceEnsemble, fuse_batchnorm

        path = _find(path)
        if threads is not None:
            torch.set_num_threads(threads)
        blob = _read_blob(path)
        members = [fuse_batchnorm(net) for net in _networks(blob)]
        model = VoiceEnsemble(members)
        meta = json.loads(blob.get("meta", "{}"))
        log.info(
            "voice encoder %s: %d member(s), window %.2f s", path, len(members), blob["window_s"]
        )
        return cls(model, blob["window_s"], meta)
