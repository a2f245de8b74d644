"""affectstream: real-time multimodal emotion recognition with measured latency.

Importing the package is cheap: heavy dependencies (torch, onnxruntime, faster-whisper,
sounddevice) are imported where they are used.
"""

from affectstream.core.labels import LABELS
from affectstream.core.version import __version__

__all__ = ["LABELS", "__version__"]
