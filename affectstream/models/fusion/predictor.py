"""The fusion model's one inference path: token histories in, fused estimate out, any backend.

`FusionPredictor` wraps a backend (`infer(dict) -> dict`, as the encoders' predictors do) and
owns the input layout (`inputs`: a `TokenHistory` of `[embedding, probs]` vectors ->
`{m}_x`, `{m}_age`, `{m}_mask` arrays) and the outputs (fused probabilities, relevance per
modality, each modality's auxiliary probabilities). It is stateless: each stream keeps its own
`TokenHistory` (`realtime/fusion.py`), so one predictor serves every stream of a process.

Weights file (`fusion.pt`): a torch dict with `state` (the state dict), `spec`
(`FusionSpec`), `history` (`HistorySpec`) and `info` (the training record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from affectstream.core.labels import LABELS, MODALITIES
from affectstream.core.numeric import softmax
from affectstream.models.fusion.tokens import HistorySpec, TokenHistory

LOGITS, RELEVANCE, AUX = "logits", "relevance", "aux_logits"
OUTPUTS = (LOGITS, RELEVANCE, AUX)
WEIGHTS_FILE = "fusion.pt"


def default_weights_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("affectstream") / "models" / "weights" / WEIGHTS_FILE))


def load_weights(path: str | Path) -> dict:
    """The weights file's dict, checked; raises ValueError naming what is wrong."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fusion weights not found: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not its own
        raise ValueError(f"{path} is not a fusion weights file ({type(e).__name__})") from None
    if not isinstance(d, dict) or not {"state", "spec", "history"} <= set(d):
        raise ValueError(f"{path} is not a fusion weights file (needs state, spec, history)")
    return d


def read_header(path: str | Path) -> tuple[Any, HistorySpec, dict]:
    """(FusionSpec, HistorySpec, info) of a weights file, without importing torch
    (`models/weights_header.py`)."""
    from affectstream.models.fusion.spec import FusionSpec
    from affectstream.models.weights_header import read_plain

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fusion weights not found: {path}")
    d = read_plain(path, "fusion weights file")
    if not {"state", "spec", "history"} <= set(d):
        raise ValueError(f"{path} is not a fusion weights file (needs state, spec, history)")
    return FusionSpec.from_json(d["spec"]), HistorySpec.from_json(d["history"]), d.get("info", {})


def read_calibration(path: str | Path) -> np.ndarray | None:
    """The per-tick calibration fitted for the weights file `path` (`calibration.COMPANION`
    beside it, `models/fusion/calibration.py`), or None: no such file, or one fitted for other
    weights (a retrained `fusion.pt` keeps its own single temperature until it is refitted)."""
    from affectstream.models.fusion import calibration as cal

    return cal.load_for(Path(path).with_name(cal.COMPANION), path)


def build_net(path: str | Path | None):
    """The FusionNet of a weights file (eval mode), or an untrained one for `path` None; its
    `history` attribute is the HistorySpec it reads (the export signature's token counts)."""
    from affectstream.models.fusion.net import FusionNet, FusionSpec

    if path is None:
        net = FusionNet(FusionSpec())
        net.history = HistorySpec.default()
        return net.eval()
    d = load_weights(path)
    net = FusionNet(FusionSpec.from_json(d["spec"]))
    net.load_state_dict(d["state"])
    net.history = HistorySpec.from_json(d["history"])
    return net.eval()


def save_weights(net, history: HistorySpec, info: dict, path: str | Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state": net.state_dict(),
            "spec": net.spec.to_json(),
            "history": history.to_json(),
            "info": info,
        },
        path,
    )
    return path


class FusionPredictor:
    """`predict(feed) -> (probs (B, 7), relevance (B, 3), aux probs (B, 3, 7))`, and
    `inputs(history, now_ns)` to build one row's feed from a stream's token history."""

    labels = LABELS

    def __init__(
        self,
        backend,
        embed_dims: dict[str, int],
        history: HistorySpec,
        calibration: np.ndarray | None = None,
    ) -> None:
        self.backend = backend
        self.embed_dims = dict(embed_dims)
        self.history = history
        # weights of the per-tick temperature (`calibration.py`); None: the network's own
        # single temperature, already in its logits
        self.calibration = calibration

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def token(self, m: str, embedding: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
        """One token's vector `[embedding, probs]` (a missing embedding is zeros)."""
        e = np.zeros(self.embed_dims[m], np.float32) if embedding is None else embedding
        e = np.asarray(e, np.float32).reshape(-1)
        if e.shape[0] != self.embed_dims[m]:
            raise ValueError(
                f"fusion: {m} embedding has {e.shape[0]} values, the model reads "
                f"{self.embed_dims[m]} (weights of another encoder? re-run train fusion)"
            )
        return np.concatenate([e, np.asarray(probs, np.float32).reshape(-1)])

    def inputs(self, history: TokenHistory, now_ns: int) -> dict[str, np.ndarray]:
        feed = {}
        for m in MODALITIES:
            vectors, ages, mask = history.view(m, now_ns)
            k, dim = self.history.max_tokens[m], self.embed_dims[m] + len(LABELS)
            x = np.zeros((1, k, dim), np.float32)
            if vectors:
                x[0, k - len(vectors) :] = np.stack(vectors)
            feed[f"{m}_x"], feed[f"{m}_age"], feed[f"{m}_mask"] = x, ages[None], mask[None]
        return feed

    def predict(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.backend.infer(feed)
        aux = softmax(np.asarray(out[AUX], np.float32), axis=-1)
        rel = np.asarray(out[RELEVANCE], np.float32)
        if self.calibration is None:
            probs = softmax(np.asarray(out[LOGITS], np.float32), axis=-1)
        else:  # the same mixture, with a temperature per row: the fused class is unchanged
            from affectstream.models.fusion import calibration as cal

            mix = (rel[..., None] * aux).sum(1)
            temp = cal.temperature(self.calibration, cal.features(rel, aux, mix))
            probs = cal.calibrated(mix, temp)
        return probs, rel, aux

    def describe(self) -> dict[str, Any]:
        d = getattr(self.backend, "describe", None)
        return {"model": "fusion", **(d() if callable(d) else {})}
