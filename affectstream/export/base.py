"""The backend contract: errors, tensor signatures and the `Backend` base class.

A backend runs one model: `infer({name: array}) -> {name: array}` with numpy arrays in and
out. Its `Signature` declares every input's name, shape and dtype (dynamic axes by name, with
their allowed range), and `infer` checks a feed against it before any engine sees it, so a
wrong shape is a one-line error naming the input, not a crash deep inside a runtime.
Lifecycle: `load()` and `close()` are idempotent; a backend is also a context manager.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend that cannot be built or run here; the message says why and what to install."""


class BackendUnavailable(BackendError):
    """The backend's runtime (package, GPU) is missing on this machine."""


class InputError(ValueError):
    """A feed that does not match the model's signature (name, dtype, rank, size)."""


@dataclass(frozen=True)
class DimRange:
    """Allowed sizes of one dynamic axis; `opt` is what TensorRT tunes for."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"need 1 <= min <= opt <= max, got {self}")

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: `shape` holds ints (fixed) and axis names (dynamic, e.g. "batch")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class Signature:
    """Inputs, outputs and the ranges of the dynamic axes they name."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, DimRange] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "dims": {k: v.to_dict() for k, v in self.dims.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            {k: DimRange(**v) for k, v in d.get("dims", {}).items()},
        )

    def check(self, feed: Mapping[str, Any]) -> dict[str, int]:
        """Validate `feed`; return the size of every dynamic axis. Raises InputError."""
        names = set(self.input_names)
        missing = [n for n in self.input_names if n not in feed]
        extra = sorted(set(feed) - names)
        if missing or extra:
            raise InputError(
                f"inputs {sorted(feed)} do not match the model's {self.input_names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            a = feed[spec.name]
            if not isinstance(a, np.ndarray):
                raise InputError(
                    f"input {spec.name}: expected a numpy array, got {type(a).__name__}"
                )
            if a.dtype != np.dtype(spec.dtype):
                raise InputError(f"input {spec.name}: dtype {a.dtype}, expected {spec.dtype}")
            if a.ndim != len(spec.shape):
                raise InputError(
                    f"input {spec.name}: shape {a.shape}, expected rank {len(spec.shape)} "
                    f"{_fmt_shape(spec.shape)}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, a.shape, strict=True)):
                if isinstance(want, int):
                    if got != want:
                        raise InputError(
                            f"input {spec.name}: shape {a.shape}, expected {_fmt_shape(spec.shape)}"
                        )
                    continue
                if want in sizes and sizes[want] != got:
                    raise InputError(
                        f"input {spec.name}: axis {axis} ({want}) is {got} but another input "
                        f"has {want}={sizes[want]}"
                    )
                rng = self.dims.get(want)
                if rng is not None and not rng.min <= got <= rng.max:
                    raise InputError(
                        f"input {spec.name}: {want}={got} outside the exported range "
                        f"{rng.min}..{rng.max}"
                    )
                sizes[want] = got
        return sizes


def _fmt_shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


class Backend:
    """Base class. Subclasses set `name`, implement `_load`, `_infer` and may override `_close`.

    `infer` validates against `signature` (known after `load()`), then calls `_infer`, which
    returns outputs in signature order.
    """

    name = "backend"

    def __init__(self, model: str, signature: Signature | None = None) -> None:
        self.model = model
        self.signature = signature
        self._loaded = False

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> Backend:
        """Build the runtime objects (idempotent). Raises BackendError/BackendUnavailable."""
        if not self._loaded:
            self._load()
            if self.signature is None:
                raise BackendError(f"{self.name}: no signature for {self.model} after load")
            self._loaded = True
            log.debug("%s backend loaded for %s", self.name, self.model)
        return self

    def close(self) -> None:
        """Release the runtime objects (idempotent)."""
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference ----------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on `feed` (validated first); outputs by name, as numpy arrays."""
        if not self._loaded:
            self.load()
        self.signature.check(feed)
        outs = self._infer(feed)
        return dict(zip(self.signature.output_names, outs, strict=True))

    def describe(self) -> dict[str, Any]:
        """What runs, for logs and benchmark JSON (subclasses add device, providers...)."""
        return {"backend": self.name, "model": self.model}

    # -- for subclasses -----------------------------------------------------------------
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _close(self) -> None:
        pass
