"""VoiceEncoder: the shipped voice-emotion model behind one `predict` call.

Input is raw 16 kHz float32 audio: one window (N,) or a batch of equal-length windows (B, N),
normally the most recent `window_s` seconds of speech. Output is class probabilities in the
common label order and an embedding for fusion. The log-mel front end is part of the torch
module (conv1d STFT), so an exported ONNX graph takes the same raw samples.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "affectstream-voice/1"


def default_weights_path() -> Path:
    return Path(str(resources.files("affectstream") / "models" / "weights" / "voice.pt"))


class VoiceEncoder:
    """Loads the weight file once; `predict` is cheap and thread-compatible (no state)."""

    def __init__(self, model, window_s: float, meta: dict | None = None) -> None:
        self.model = model.eval()
        self.window_s = float(window_s)
        self.meta = meta or {}
        self.mel = model.opt.mel
        self.sample_rate = self.mel.sample_rate
        self.window_samples = self.mel.samples(
            self.mel.frames(int(round(self.window_s * self.sample_rate)))
        )
        self.min_samples = self.mel.samples(16)  # shortest input the CNN can pool over
        self.labels = LABELS
        self.emb_dim = model.emb_dim
        self.backend = None  # set by use_backend

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int | None = None) -> VoiceEncoder:
        """Load a weight file: a path, the name of a shipped file (`voice.ensemble3.pt`), or
        None for the default `voice.pt`. `threads` sets torch's CPU threads."""
        import torch

        from .net import NetOptions, VoiceEnsemble, VoiceNet, fuse_batchnorm

        given = Path(path) if path else default_weights_path()
        path = given
        if not path.is_file() and path.parent == Path("."):
            path = default_weights_path().parent / path  # a shipped file by name
        if not path.is_file():
            raise FileNotFoundError(f"voice weights not found: {given}")
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a broken or foreign file
            raise ValueError(f"{path}: not a voice weight file ({e.__class__.__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: not a voice weight file ({WEIGHTS_FORMAT})")
        if tuple(blob["labels"]) != LABELS:
            raise ValueError(f"{path}: labels {blob['labels']} differ from {LABELS}")
        opt = NetOptions.from_dict(blob["net"])
        members = []
        for state in blob["members"]:
            net = VoiceNet(opt)
            net.load_state_dict(state)
            members.append(fuse_batchnorm(net.eval()))
        model = VoiceEnsemble(members)
        meta = json.loads(blob.get("meta", "{}"))
        log.info(
            "voice encoder %s: %d member(s), window %.2f s", path, len(members), blob["window_s"]
        )
        return cls(model, blob["window_s"], meta)

    def predict(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs (B, 7) in LABELS order, embedding (B, emb_dim)) for one window or a batch."""
        import torch

        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"expected (N,) or (B, N) samples, got shape {x.shape}")
        if x.shape[1] < self.min_samples:
            x = np.pad(x, ((0, 0), (self.min_samples - x.shape[1], 0)))
        if not np.isfinite(x).all():
            raise ValueError("samples contain NaN or inf")
        if self.backend is not None:
            out = self.backend.infer({"wave": np.ascontiguousarray(x)})
            logp = out["logits"] - out["logits"].max(axis=1, keepdims=True)
            probs = np.exp(logp)
            return probs / probs.sum(axis=1, keepdims=True), out["embedding"]
        with torch.inference_mode():
            logp, emb = self.model(torch.from_numpy(np.ascontiguousarray(x)))
        return torch.exp(logp).numpy(), emb.numpy()

    def use_backend(self, backend) -> VoiceEncoder:
        """Run `predict` through an `affectstream.export` backend (same inputs and outputs)."""
        self.backend = backend
        return self
