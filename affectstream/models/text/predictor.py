"""The text model's one inference path: words in, (probs, embedding) out, over any backend.

`TextPredictor` wraps any object with `infer(dict[str, np.ndarray]) -> dict[str, np.ndarray]`
(an `affectstream.export` backend; duck-typed, since models do not import export). It owns the
input and output names, the tokenizer (`[CLS] utterance [SEP] context [SEP]`, as the weights'
spec says), the empty-text rule and the softmax. The runtime stage, `eval text` and
`bench text` all call it; `affectstream.export.predictors` opens one.

Empty utterances raise ValueError: "no words" is the caller's state to report (the runtime
marks the text modality absent), not something to ask the model about.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.labels import LABELS
from affectstream.core.numeric import softmax

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # int64 (batch, tokens)
LOGITS, EMBEDDING = "logits", "embedding"
OUTPUTS = (LOGITS, EMBEDDING)


def read_header(path: str | Path) -> tuple[Any, dict]:
    """(TextModelSpec, info) of a weights file, read from its safetensors JSON header without
    loading the tensors."""
    from affectstream.models.text.spec import TextModelSpec

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text weights not found: {path}")
    with open(path, "rb") as f:
        try:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {}) or {}
        except (ValueError, UnicodeDecodeError, MemoryError, OverflowError):
            raise ValueError(f"{path} is not a text-encoder weights file") from None
    if "spec" not in meta:
        raise ValueError(f"{path} is not a text-encoder weights file (no spec metadata)")
    return TextModelSpec.from_json(meta["spec"]), json.loads(meta.get("info", "{}"))


class TextPredictor:
    """`predict(texts, contexts) -> (probs (N, 7) float32 in LABELS order, embedding (N, D))`.

    `contexts[i]` is the text heard before `texts[i]`; "" or None when there is none (ignored
    when the weights were trained without context).

    Attributes:
        backend: what runs the network.
        spec: the weights' `TextModelSpec`; info: their training record ({} when unknown).
        tokenizer: `models.text.encoder.Tokenizer` laid out for `spec`.
    """

    labels = LABELS

    def __init__(self, backend, spec, info: dict | None = None, tokenizer=None) -> None:
        self.backend = backend
        self.spec = spec
        self.info = dict(info or {})
        if tokenizer is None:
            from affectstream.models.text.encoder import Tokenizer

            tokenizer = Tokenizer(
                max_tokens=spec.max_tokens,
                context_tokens=spec.context_tokens if spec.use_context else 0,
            )
        self.tokenizer = tokenizer

    @property
    def use_context(self) -> bool:
        return bool(self.spec.use_context)

    @property
    def embedding_dim(self) -> int:
        return int(self.spec.hidden)

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def to_input(
        self, texts: Sequence[str], contexts: Sequence[str | None] | None = None
    ) -> dict[str, np.ndarray]:
        """The backend's feed; raises ValueError for an empty utterance."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty; 'no words' is for the caller to handle")
        ctx = [c or "" for c in contexts] if contexts is not None else [""] * len(texts)
        if len(ctx) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ctx)} contexts")
        arrays = self.tokenizer(texts, ctx if self.use_context else None)
        return dict(zip(INPUTS, arrays, strict=True))

    def predict(
        self, texts: Sequence[str], contexts: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        feed = self.to_input(texts, contexts)
        if feed[INPUTS[0]].shape[0] == 0:
            d = self.embedding_dim
            return np.zeros((0, len(LABELS)), np.float32), np.zeros((0, d), np.float32)
        out = self.backend.infer(feed)
        return softmax(out[LOGITS]), np.asarray(out[EMBEDDING], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        d = getattr(self.backend, "describe", None)
        return {"model": "text", "use_context": self.use_context, **(d() if callable(d) else {})}
