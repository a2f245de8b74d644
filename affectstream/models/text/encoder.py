"""Text-emotion inference on CPU: words -> (7 probabilities, embedding for fusion).

Input is the newest utterance and, optionally, the text heard before it (a few seconds of
transcript), which the model was trained to use as context. Empty utterances raise ValueError:
"no words" is the caller's state to report (the runtime marks the text modality absent), not
something to ask the model about.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS

log = logging.getLogger(__name__)


class Tokenizer:
    """MiniLM's WordPiece tokenizer laid out as `[CLS] utterance [SEP] context [SEP]`.

    The utterance keeps its first `max_tokens` (special tokens included); the context keeps its
    newest `context_tokens` (the start is cut: the words just before the utterance matter most).
    """

    def __init__(
        self, base: Path | None = None, max_tokens: int = 64, context_tokens: int = 48
    ) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        from affectstream.models.text.net import base_model_path

        base = base or base_model_path()
        self._tok = _Tokenizer.from_file(str(base / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens
        self.cls_id = self._tok.token_to_id("[CLS]")
        self.sep_id = self._tok.token_to_id("[SEP]")
        self.pad_id = self._tok.token_to_id("[PAD]")

    def __call__(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, attention_mask, token_type_ids), int64 arrays (N, T) padded to longest."""
        texts = list(texts)
        utt = self._tok.encode_batch(texts, add_special_tokens=False)
        ctx = [None] * len(texts)
        if contexts is not None and self.context_tokens > 1:
            ctx = self._tok.encode_batch([c or "" for c in contexts], add_special_tokens=False)
        rows = []
        for u, c in zip(utt, ctx, strict=True):
            ids = [self.cls_id, *u.ids[: self.max_tokens - 2], self.sep_id]
            n0 = len(ids)
            if c is not None and c.ids:
                ids += [*c.ids[-(self.context_tokens - 1) :], self.sep_id]
            rows.append((ids, n0))
        width = max((len(r[0]) for r in rows), default=0)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (ids, n0) in enumerate(rows):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
            types[i, n0 : len(ids)] = 1
        return input_ids, mask, types


class TextEncoder:
    """`predict(texts, contexts)` -> (probs (N,7) in `LABELS` order, embedding (N,D)), on CPU.

    `contexts[i]` is the text heard before `texts[i]`; "" or None when there is none.
    """

    def __init__(self, net, info: dict | None = None, threads: int = 1) -> None:
        self.net = net.eval()
        self.spec = net.spec
        self.info = info or {}
        self.threads = threads
        self.backend = None  # set by use_backend: run there instead of the torch net
        self.tokenizer = Tokenizer(
            max_tokens=self.spec.max_tokens,
            context_tokens=self.spec.context_tokens if self.spec.use_context else 0,
        )

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1) -> TextEncoder:
        """Load `path` (default: the shipped weights) over the base MiniLM; no network."""
        from affectstream.models.text.net import load_net

        net, info = load_net(path)
        log.info("text encoder loaded from %s: %s", path or "shipped weights", net.spec)
        return cls(net, info, threads)

    def use_backend(self, backend) -> TextEncoder:
        """Run `predict` through an `affectstream.export` backend (same inputs and outputs)."""
        self.backend = backend
        return self

    @property
    def embedding_dim(self) -> int:
        return self.spec.hidden

    def describe(self) -> dict:
        return {"spec": asdict(self.spec), "info": self.info, "threads": self.threads}

    def predict(
        self, texts: Sequence[str], contexts: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty; 'no words' is for the caller to handle")
        ctx = [c or "" for c in contexts] if contexts is not None else [""] * len(texts)
        if len(ctx) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ctx)} contexts")
        if not texts:
            d = self.embedding_dim
            return np.zeros((0, len(LABELS)), np.float32), np.zeros((0, d), np.float32)
        arrays = self.tokenizer(texts, ctx if self.spec.use_context else None)
        if self.backend is not None:
            names = ("input_ids", "attention_mask", "token_type_ids")
            out = self.backend.infer(dict(zip(names, arrays, strict=True)))
            z = np.exp(out["logits"] - out["logits"].max(axis=1, keepdims=True))
            return (z / z.sum(axis=1, keepdims=True)).astype(np.float32), out["embedding"]
        prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                logits, emb = self.net(*(torch.from_numpy(a) for a in arrays))
                probs = torch.softmax(logits, dim=-1)
        finally:
            torch.set_num_threads(prev)
        return probs.numpy().astype(np.float32), emb.numpy().astype(np.float32)
