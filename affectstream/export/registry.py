"""Which models exist, how to build their torch module, their signature and example inputs.

One `ModelEntry` subclass per model, listed in `_ENTRIES`; adding the fusion model is one
more class and one more line there. An entry builds the module from its owner's public
classes (this package never edits them), from the shipped weights, from a weights file the
user names, or, when no weights exist yet, randomly initialised with a fixed seed: latency and
backend parity do not depend on the weights, and the manifest records which it was.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.export.base import DimRange, Signature, TensorSpec
from affectstream.models.face import predictor as face_predictor
from affectstream.models.fusion import predictor as fusion_predictor
from affectstream.models.text import predictor as text_predictor
from affectstream.models.voice import predictor as voice_predictor

log = logging.getLogger(__name__)

RANDOM_SEED = 0


class RegistryError(KeyError):
    """An unknown model name."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


@dataclass
class Built:
    """A built module and where its weights came from (recorded in the export manifest)."""

    module: Any  # torch.nn.Module in eval mode: forward(*inputs) -> tuple of outputs
    signature: Signature
    weights: dict[str, Any]  # {"path", "sha256"} or {"random_init": seed}


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, read once per process while its size and mtime stay the same:
    opening one model asks for it several times (export cache, auto cache, manifest)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_of(p, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _warn_random(model: str, path: str) -> None:
    """Once per model and process: a random model is fine for parity and latency only."""
    log.warning(
        "%s: no weights at %s; using a randomly initialised model (seed %d)",
        model,
        path,
        RANDOM_SEED,
    )


def weights_dir() -> Path:
    return Path(str(resources.files("affectstream") / "models" / "weights"))


class ModelEntry:
    """One model. Subclasses set the class attributes and implement `_build` and `signature`."""

    name = ""
    # Python modules whose code defines the network (their source is hashed into cache keys).
    sources: tuple[str, ...] = ()
    weights_file = ""  # shipped weights, under affectstream/models/weights/
    atol = 1e-4  # parity tolerance (max abs difference, float32 backends vs torch)
    fp16_atol = 5e-2  # the same for fp16 paths (CUDA, TensorRT FP16)
    # Axes that may be zero-padded (CUDA-graph buckets): rows are independent, and a padded
    # token is masked. A time axis without a mask (raw audio) is not paddable.
    paddable: tuple[str, ...] = ("batch",)

    def default_weights(self) -> Path:
        return weights_dir() / self.weights_file

    def source_hash(self) -> str:
        """Hash of the model's source files: an exported file goes stale when they change."""
        h = hashlib.sha256()
        for mod in (*self.sources, "affectstream.export.registry", "affectstream.export.wrappers"):
            spec = importlib.util.find_spec(mod)
            if spec is not None and spec.origin:
                h.update(Path(spec.origin).read_bytes())
        return h.hexdigest()

    def build(self, weights: str | Path | None = None) -> Built:
        """The module in eval mode. `weights`: a file; None: the shipped file, else random."""
        path = Path(weights) if weights else self.default_weights()
        if weights and not path.is_file():
            raise FileNotFoundError(f"{self.name} weights not found: {path}")
        if path.is_file():
            module = self._build(path)
            # A shipped file is named, not located: the package's own manifest must not
            # carry the path of the checkout it was exported in.
            shipped = path.resolve().parent == weights_dir().resolve()
            info: dict[str, Any] = {
                "path": path.name if shipped else str(path),
                "sha256": file_sha256(path),
            }
        else:
            import torch

            _warn_random(self.name, str(path))
            with torch.random.fork_rng():
                torch.manual_seed(RANDOM_SEED)
                module = self._build(None)
            info = {"random_init": RANDOM_SEED}
        module.eval()
        return Built(module, self.signature(module), info)

    def to_fp16(self, module: Any) -> Any:
        """A copy that computes in FP16 with the same float32 inputs and outputs."""
        from affectstream.export.wrappers import Fp16IO

        return Fp16IO(module)

    # -- for subclasses -----------------------------------------------------------------
    def _build(self, path: Path | None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def signature(self, module: Any) -> Signature:  # pragma: no cover - abstract
        raise NotImplementedError

    def example(
        self, sizes: Mapping[str, int], rng: np.random.Generator, signature: Signature
    ) -> dict[str, np.ndarray]:
        """Random inputs; `sizes` gives each dynamic axis (missing ones take `opt`)."""
        feed = {}
        for spec in signature.inputs:
            shape = _resolve(spec.shape, sizes, signature)
            feed[spec.name] = rng.random(shape, dtype=np.float32)
        return feed


def _resolve(shape, sizes: Mapping[str, int], signature: Signature) -> tuple[int, ...]:
    return tuple(
        s if isinstance(s, int) else int(sizes.get(s, signature.dims[s].opt)) for s in shape
    )


BATCH = DimRange(1, 16, 1024)


class FaceEntry(ModelEntry):
    """Face CNN: x float32 (batch, 1, 48, 48) in [0, 1] -> logits (batch, 7), embedding."""

    name = "face"
    sources = ("affectstream.models.face.net", "affectstream.models.face.encoder")
    weights_file = "face.pt"
    atol = 1e-4

    def _build(self, path: Path | None):
        from affectstream.models.face.encoder import FaceEncoder
        from affectstream.models.face.net import FaceNet

        enc = FaceEncoder.load(path) if path else FaceEncoder(FaceNet())
        return enc.model  # BatchNorm folded, channels-last: the fast eager model

    def signature(self, module) -> Signature:
        emb = module.spec.embed_dim
        return Signature(
            inputs=(TensorSpec(face_predictor.INPUT, ("batch", 1, 48, 48)),),
            outputs=(
                TensorSpec(face_predictor.LOGITS, ("batch", 7)),
                TensorSpec(face_predictor.EMBEDDING, ("batch", emb)),
            ),
            dims={"batch": BATCH},
        )


class VoiceEntry(ModelEntry):
    """Voice CNN on raw 16 kHz audio: wave (batch, samples) -> log-probs (batch, 7), embedding.

    A voice weights file may hold an ensemble; its output "logits" are then the log of the
    mean probability, which a softmax turns into probabilities like any logits.
    """

    name = "voice"
    sources = (
        "affectstream.models.voice.net",
        "affectstream.models.voice.features",
        "affectstream.models.voice.encoder",
    )
    weights_file = "voice.pt"
    atol = 2e-4
    # the predictor's minimum (16 mel frames, 0.175 s) to 10 s; the runtime window is 2 s.
    samples = DimRange(voice_predictor.MIN_SAMPLES, 32000, 160000)

    def _build(self, path: Path | None):
        from affectstream.models.voice.encoder import VoiceEncoder
        from affectstream.models.voice.net import VoiceEnsemble, VoiceNet, fuse_batchnorm

        if path is None:
            return VoiceEnsemble([fuse_batchnorm(VoiceNet().eval())])
        return VoiceEncoder.load(path).model

    def to_fp16(self, module):
        from affectstream.export.wrappers import VoiceFp16

        return VoiceFp16(module)

    def signature(self, module) -> Signature:
        return Signature(
            inputs=(TensorSpec(voice_predictor.INPUT, ("batch", "samples")),),
            outputs=(
                TensorSpec(voice_predictor.LOGITS, ("batch", 7)),
                TensorSpec(voice_predictor.EMBEDDING, ("batch", module.emb_dim)),
            ),
            dims={"batch": BATCH, "samples": self.samples},
        )

    def example(self, sizes, rng, signature):
        shape = _resolve(signature.inputs[0].shape, sizes, signature)
        return {voice_predictor.INPUT: (0.1 * rng.standard_normal(shape)).astype(np.float32)}


class TextEntry(ModelEntry):
    """MiniLM + emotion head: `[CLS] utterance [SEP] context [SEP]` token ids, attention mask
    and token types (segment 1 = context) -> logits (batch, 7), embedding (batch, hidden).

    A row whose mask is all zeros (a padding row in a batch) gives the head's output for a
    zero sentence vector, never NaN, in FP32 and FP16 (`wrappers.EmptyRowsSafe`); parity
    tests check such rows.
    """

    name = "text"
    sources = ("affectstream.models.text.net",)
    weights_file = "text.safetensors"
    atol = 2e-4
    vocab = 30522
    paddable = ("batch", "tokens")

    def _build(self, path: Path | None):
        from affectstream.export.wrappers import EmptyRowsSafe
        from affectstream.models.text.net import TextModelSpec, build_net, load_net

        # no weights: the MiniLM base (a mandatory dependency) under a random head
        net = build_net(TextModelSpec()) if path is None else load_net(path)[0]
        return EmptyRowsSafe(net.eval())

    def signature(self, module) -> Signature:
        spec = module.spec
        longest = spec.max_tokens + (getattr(spec, "context_tokens", 0) if spec.use_context else 0)
        return Signature(
            inputs=tuple(
                TensorSpec(n, ("batch", "tokens"), "int64") for n in text_predictor.INPUTS
            ),
            outputs=(
                TensorSpec(text_predictor.LOGITS, ("batch", 7)),
                TensorSpec(text_predictor.EMBEDDING, ("batch", spec.hidden)),
            ),
            dims={"batch": BATCH, "tokens": DimRange(1, min(32, longest), longest)},
        )

    def example(self, sizes, rng, signature):
        """Rows of random lengths: [CLS] utterance [SEP], sometimes context [SEP], padding."""
        b, n = _resolve(signature.inputs[0].shape, sizes, signature)
        ids = rng.integers(1000, self.vocab, size=(b, n), dtype=np.int64)
        lengths = rng.integers(min(2, n), n + 1, size=b)
        mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.int64)
        with_context = rng.random(b) < 0.5
        utt = np.where(with_context, np.maximum(2, lengths // 2), lengths)  # segment 0
        types = ((np.arange(n)[None, :] >= utt[:, None]) & (mask == 1)).astype(np.int64)
        ids[:, 0] = 101  # [CLS]
        ids[np.arange(b), np.maximum(utt - 1, 0)] = 102  # [SEP] after the utterance
        ids[np.arange(b), np.maximum(lengths - 1, 0)] = 102  # [SEP] after the context
        ids[mask == 0] = 0  # [PAD]
        return dict(zip(text_predictor.INPUTS, (ids, mask, types), strict=True))


class FusionEntry(ModelEntry):
    """Temporal-attention fusion: per modality tokens `{m}_x` (batch, K_m, E_m + 7), ages and
    masks (batch, K_m) -> fused logits (batch, 7), relevance (batch, 3), auxiliary logits
    (batch, 3, 7). K_m are fixed by the weights' history spec; only the batch axis is dynamic."""

    name = "fusion"
    sources = ("affectstream.models.fusion.net", "affectstream.models.fusion.predictor")
    weights_file = fusion_predictor.WEIGHTS_FILE
    atol = 1e-4

    def _build(self, path: Path | None):
        return fusion_predictor.build_net(path)

    def signature(self, module) -> Signature:
        from affectstream.core.labels import LABELS, MODALITIES
        from affectstream.models.fusion.tokens import HistorySpec

        # a net just trained (not from a file) has no history attribute: the default layout
        history = getattr(module, "history", None) or HistorySpec.default()
        inputs = []
        for m in MODALITIES:
            k, dim = history.max_tokens[m], module.spec.embed_dims[m] + len(LABELS)
            inputs += [
                TensorSpec(f"{m}_x", ("batch", k, dim)),
                TensorSpec(f"{m}_age", ("batch", k)),
                TensorSpec(f"{m}_mask", ("batch", k)),
            ]
        n = len(MODALITIES)
        return Signature(
            inputs=tuple(inputs),
            outputs=(
                TensorSpec(fusion_predictor.LOGITS, ("batch", 7)),
                TensorSpec(fusion_predictor.RELEVANCE, ("batch", n)),
                TensorSpec(fusion_predictor.AUX, ("batch", n, 7)),
            ),
            dims={"batch": BATCH},
        )

    def example(self, sizes, rng, signature):
        """Random tokens, ages of 0-3 s, and masks that leave some slots (and modalities) empty."""
        feed = {}
        for spec in signature.inputs:
            shape = _resolve(spec.shape, sizes, signature)
            if spec.name.endswith("_mask"):
                filled = rng.integers(0, shape[1] + 1, size=shape[0])
                feed[spec.name] = (np.arange(shape[1])[None] >= shape[1] - filled[:, None]).astype(
                    np.float32
                )
            elif spec.name.endswith("_age"):
                feed[spec.name] = (3 * rng.random(shape)).astype(np.float32)
            else:
                feed[spec.name] = rng.standard_normal(shape).astype(np.float32)
        return feed


_ENTRIES: tuple[type[ModelEntry], ...] = (FaceEntry, VoiceEntry, TextEntry, FusionEntry)


def names() -> list[str]:
    """Every known model."""
    return [e.name for e in _ENTRIES]


def get(name: str) -> ModelEntry:
    for e in _ENTRIES:
        if e.name == name:
            return e()
    raise RegistryError(f"unknown model {name!r} (known: {', '.join(names())})")
