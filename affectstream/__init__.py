"""affectstream: real-time multimodal emotion recognition with measured latency.

The public API::

    from affectstream import Recognizer, AffectStream, Estimate, load_config, LABELS

Importing the package is cheap: the names below load their modules on first use (PEP 562), and
heavy dependencies (torch, onnxruntime, faster-whisper, sounddevice) are imported where they
are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from affectstream.core.labels import LABELS
from affectstream.core.version import __version__

if TYPE_CHECKING:
    from affectstream.core.config import Config, load_config
    from affectstream.core.messages import Estimate
    from affectstream.realtime.recognizer import Recognizer
    from affectstream.realtime.stream import AffectStream, Inputs

# public name -> module that defines it
_LAZY = {
    "Recognizer": "affectstream.realtime.recognizer",
    "AffectStream": "affectstream.realtime.stream",
    "Inputs": "affectstream.realtime.stream",
    "Estimate": "affectstream.core.messages",
    "Config": "affectstream.core.config",
    "load_config": "affectstream.core.config",
}

__all__ = [
    "LABELS",
    "__version__",
    "Recognizer",
    "AffectStream",
    "Inputs",
    "Estimate",
    "Config",
    "load_config",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'affectstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
