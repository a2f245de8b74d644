"""The voice front end's settings as a plain dataclass, with no torch: the live path reads them
from a weights file's header (`encoder.read_header`) without importing PyTorch, which costs
seconds of a first launch's CPU while the stream is already running."""

from __future__ import annotations

from dataclasses import dataclass

from affectstream.core.audio import MODEL_SAMPLE_RATE


@dataclass(frozen=True)
class MelOptions:
    """Front-end settings; stored inside the weight file and echoed by the model card."""

    sample_rate: int = MODEL_SAMPLE_RATE
    n_fft: int = 400  # 25 ms
    hop: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    floor: float = 1e-6  # power floor before the log (digital silence)

    def frames(self, n_samples: int) -> int:
        """Number of frames for `n_samples` samples (no padding)."""
        return max(0, 1 + (n_samples - self.n_fft) // self.hop)

    def samples(self, n_frames: int) -> int:
        """Samples needed for exactly `n_frames` frames."""
        return self.n_fft + (n_frames - 1) * self.hop
