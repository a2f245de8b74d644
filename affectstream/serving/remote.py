"""Models served by a Ray Serve deployment, behind the interfaces local ones have.

`RemoteBackend` keeps the backend contract (`name`, `signature`, `infer(feed) -> outputs`,
`describe()`, `close()`) over a `ModelServer` deployment handle, so a predictor (face, voice,
text, fusion) runs its own pre- and post-processing unchanged and only the network call is
remote. `RemoteDecoder` does the same for the whisper decoder (`decode(...)`).

`remote_predictors(config)` opens the predictors of every model the config places remote,
for a session host or for an agent's own `Recognizer` (`Recognizer(push=True,
predictors=remote_predictors(config))`, in a process connected to the cluster with
`ray.init(address=...)`): the agent keeps its session state and shares the cluster's models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from affectstream.core.config import Config

APP = "affectstream"  # the Serve application's name
ENCODERS = ("face", "voice", "text", "fusion")
CALL_TIMEOUT_S = 10.0  # a call that takes longer fails its stage (the stream goes on)


def deployment_name(model: str) -> str:
    return f"model-{model}"


class RemoteBackend:
    """The backend contract over a `ModelServer` deployment `handle`."""

    def __init__(self, model: str, handle) -> None:
        self.model = model
        self.handle = handle
        self.signature = handle.signature.remote().result(timeout_s=120)
        self.name = f"ray:{deployment_name(model)}"

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.check(feed)  # a bad feed fails here, before it travels
        return self.handle.infer.remote(dict(feed)).result(timeout_s=CALL_TIMEOUT_S)

    def describe(self) -> dict[str, Any]:
        return self.handle.describe.remote().result(timeout_s=CALL_TIMEOUT_S)

    def close(self) -> None:
        """The deployment stays up for the others; nothing is held here."""


class RemoteDecoder:
    """The whisper decoder's `decode` over a `WhisperServer` deployment `handle`."""

    name = "ray:model-stt"

    def __init__(self, handle) -> None:
        self.handle = handle

    def decode(self, audio, prompt="", prefix=(), prefix_end=0.0, final=True):
        audio = np.asarray(audio, dtype=np.float32)
        return self.handle.decode.remote(audio, prompt, tuple(prefix), prefix_end, final).result(
            timeout_s=CALL_TIMEOUT_S
        )


def handles(names: Iterable[str], app: str = APP) -> dict[str, Any]:
    """Deployment handles of the models `names` of the running application `app`."""
    from ray import serve

    return {n: serve.get_deployment_handle(deployment_name(n), app) for n in names}


def remote_predictors(
    config: Config, model_handles: Mapping[str, Any] | None = None, app: str = APP
) -> dict[str, Any]:
    """Predictors (and the "stt" decoder) of the models `config.serving.remote` places remote,
    each calling its deployment; `model_handles` by model name (default: those of the running
    application `app`, which needs `ray.init(address=...)` first)."""
    from affectstream.export.predictors import resolve_weights, wrap

    names = list(config.serving.remote)
    got = dict(model_handles) if model_handles is not None else handles(names, app)
    out: dict[str, Any] = {}
    for name in names:
        if name == "stt":
            out[name] = RemoteDecoder(got[name])
        else:
            weights = resolve_weights(getattr(getattr(config, name), "weights", "") or None)
            out[name] = wrap(name, RemoteBackend(name, got[name]), weights)
    return out


__all__ = ["APP", "RemoteBackend", "RemoteDecoder", "handles", "remote_predictors"]
