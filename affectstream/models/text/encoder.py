"""The text model's tokenizer: the newest utterance and, optionally, the text heard before it
(a few seconds of transcript), which the model was trained to use as context.

Inference (tokenize, empty-text rule, softmax) is `predictor.TextPredictor`, over any backend;
the export registry builds the torch module from `net.load_net`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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

        from affectstream.models.text.spec import base_model_path

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
