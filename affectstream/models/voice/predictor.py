"""The voice model's one inference path: 16 kHz audio in, (probs, embedding) out, over any
backend.

`VoicePredictor` wraps any object with `infer(dict[str, np.ndarray]) -> dict[str, np.ndarray]`
(an `affectstream.export` backend; duck-typed, since models do not import export). It owns the
input and output names, the pre-processing (float32, finite, front-padded to `MIN_SAMPLES`) and
the softmax. The network's "logits" output is the log of the ensemble's mean probability; a
softmax of log-probabilities gives the probabilities back. The runtime stage, `eval voice`
and `bench voice` all call it; `affectstream.export.predictors` opens one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.labels import LABELS
from affectstream.core.numeric import softmax

N_FFT, HOP = 400, 160  # MelOptions defaults: 25 ms frames every 10 ms
MIN_FRAMES = 16  # the shortest input the CNN can pool over
# The one minimum input length, 0.175 s: shorter audio is zero-padded at the front. The
# export registry's `samples` range starts here too.
MIN_SAMPLES = N_FFT + (MIN_FRAMES - 1) * HOP
DEFAULT_WINDOW_S = 2.0  # the shipped weights' window (the file's own value wins when known)

INPUT = "wave"  # float32 (batch, samples)
LOGITS, EMBEDDING = "logits", "embedding"
OUTPUTS = (LOGITS, EMBEDDING)


def to_input(samples: np.ndarray, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """(N,) or (B, N) samples -> float32 (B, max(N, min_samples)), front-padded with zeros."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected (N,) or (B, N) samples, got shape {x.shape}")
    if x.shape[1] < min_samples:
        x = np.pad(x, ((0, 0), (min_samples - x.shape[1], 0)))
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or inf")
    return np.ascontiguousarray(x)


class VoicePredictor:
    """`predict(samples) -> (probs (B, 7) float32 in LABELS order, embedding (B, D))`.

    Attributes:
        backend: what runs the network.
        window_s: the window the weights were trained on (eval slides it over a clip).
        mel: the weights' `MelOptions` when known (eval aligns windows to its frames), else None.
        meta: the weights file's metadata (train/test actors...), {} when unknown.
        session: the weights' session head (`session.SessionHead`, read from
            `voice.session.npz` beside them), or None. `predict` never uses it: it is
            stateless; a caller that follows one session (the voice stage, `eval voice` per
            speaker) keeps a `session.new_session()` and reads `session.step(...)`.
        utterance_heads: the weights' utterance heads by feature set
            (`utterance.UtteranceHead`, read from `voice.egemaps.npz` / `voice.whisper.npz`
            beside them), possibly empty. `predict` never uses them either: a caller that has
            an utterance's speech extracts its features (`utterance.extractor`), reads them
            with `head.step(...)` in its session and fuses them with `head.fuse(...)`.
    """

    labels = LABELS
    sample_rate = MODEL_SAMPLE_RATE
    min_samples = MIN_SAMPLES

    def __init__(
        self,
        backend,
        window_s: float = DEFAULT_WINDOW_S,
        mel: Any = None,
        meta: dict | None = None,
        session: Any = None,
        utterance_heads: dict | None = None,
    ) -> None:
        self.backend = backend
        self.session = session
        self.utterance_heads = dict(utterance_heads or {})
        self.window_s = float(window_s)
        self.mel = mel
        self.meta = dict(meta or {})

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    @property
    def window_samples(self) -> int:
        """Samples of one window, on the front end's frame grid."""
        n = int(round(self.window_s * self.sample_rate))
        if self.mel is not None:
            return self.mel.samples(self.mel.frames(n))
        return N_FFT + max(0, (n - N_FFT) // HOP) * HOP

    def predict(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings for one window (N,) or a batch (B, N)."""
        out = self.backend.infer({INPUT: to_input(samples, self.min_samples)})
        return softmax(out[LOGITS]), np.asarray(out[EMBEDDING], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        d = getattr(self.backend, "describe", None)
        return {"model": "voice", "window_s": self.window_s, **(d() if callable(d) else {})}
