"""`FusionSpec`, the fusion network's shape, as a plain dataclass with no torch: the live path
reads it from the weights file's header (`predictor.read_header`) to build its inputs, while
the network itself runs on ONNX Runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class FusionSpec:
    embed_dims: dict[str, int] = field(
        default_factory=lambda: {"face": 256, "voice": 128, "text": 256}
    )
    d: int = 48
    hidden: int = 64
    dropout: float = 0.1
    # dropout on the embeddings in training: the bank holds a few thousand items, and without
    # it the model learns to recognise items rather than what their embeddings say
    embed_dropout: float = 0.3
    # "mixture": the fused distribution is the relevance-weighted mixture of the modalities'
    # own (auxiliary) distributions, so the relevance is exactly how much each one counts;
    # "summary" (files before 2026-12-01): a head reads the relevance-weighted summaries
    head: str = "mixture"
    # members of an ensemble (1: a single network); needs the mixture head
    members: int = 1
    # "newest": each modality's attention query is a learned vector plus a projection of its
    # newest token, so the history is read in the light of what is there now (the tokens that
    # still look like it count most, and a change shows at once); "learned" (files before
    # 2026-12-02): one fixed query per modality, blind to which tokens resemble the newest
    query: str = "newest"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FusionSpec:
        # a file without `head` had the summary head; one without `query`, the fixed query
        return cls(**{"head": "summary", "query": "learned", **d})
