"""affectstream: real-time multimodal emotion recognition with measured latency.

Importing the package is cheap: heavy dependencies (torch, onnxruntime, faster-whisper,
sounddevice) are imported where they are used.
"""

from affectstream.labels import LABELS

__all__ = ["LABELS", "__version__"]
__version__ = "0.1.0"
