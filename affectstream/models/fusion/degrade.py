"""Harder media: a noisy room and a poor webcam, for the fusion's training and its tests.

A fusion model that has only seen clean media trusts a voice as much in a noisy room as in a
studio: on a stream with noise 10 dB below the speech and a blurred, dimmed webcam the shipped
model fell below the face alone (fusion card, "Calibration off the calibration data"). So the
fusion's training bank also encodes its items through these degradations
(`bank.build(..., degraded=True)`), and some simulated streams use them, so the relevance
learns to give a modality whose reading the room has spoiled less weight.
`scripts/degrade_stream.py` makes whole test streams with the same functions.

- `noisy`: stationary noise (white, pink or brown) at `snr_db` below the streams' speech
  level (`scenario.SPEECH_RMS`), over the whole signal, silence included, as a room's is;
- `poor_frame`: Gaussian blur, dimming (a low-light webcam) and fresh sensor grain;
- `Room` / `Webcam`: one draw of those settings, as one training item gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectstream.models.fusion.scenario import SPEECH_RMS

COLOURS = ("white", "pink", "brown")


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of unit-RMS noise; pink falls 3 dB and brown 6 dB per octave."""
    white = rng.normal(0.0, 1.0, n)
    if colour == "white":
        return white.astype(np.float32)
    slope = {"pink": 0.5, "brown": 1.0}.get(colour)
    if slope is None:
        raise ValueError(f"unknown noise colour {colour!r} (known: {', '.join(COLOURS)})")
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # no infinite gain at DC
    x = np.fft.irfft(spectrum / f**slope, n)
    x -= x.mean()
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def noise_rms(snr_db: float) -> float:
    """The RMS of noise `snr_db` below the streams' speech level."""
    return SPEECH_RMS * 10 ** (-snr_db / 20)


def noisy(
    x: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white"
) -> np.ndarray:
    """`x` with noise `snr_db` below the speech level, clipped to [-1, 1]."""
    rms = noise_rms(snr_db)
    if colour == "white":  # drawn as `scripts/degrade_stream.py` always has
        noise = rng.normal(0.0, rms, x.shape).astype(np.float32)
    else:
        noise = coloured_noise(x.size, colour, rng).reshape(x.shape) * rms
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


def poor_frame(
    frame: np.ndarray, blur: float, dim: float, grain: float, rng: np.random.Generator
) -> np.ndarray:
    """A BGR uint8 frame as a poor webcam gives it: blurred (sigma `blur` px), dimmed
    (x `dim`) and with grain of `grain` grey levels, fresh each frame."""
    import cv2

    f = frame.astype(np.float32)
    if blur > 0:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    f = f * dim + rng.normal(0.0, grain, f.shape[:2])[..., None]
    return np.clip(f, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Room:
    """A noisy room: noise of `colour` at `snr_db` below the speech."""

    snr_db: float
    colour: str

    @staticmethod
    def draw(rng: np.random.Generator) -> Room:
        """0-20 dB: from a loud fan or a street (0 dB: as loud as the speech) to a quiet
        office; the test streams use white noise at 10 and 3 dB."""
        return Room(float(rng.uniform(0.0, 20.0)), COLOURS[int(rng.integers(len(COLOURS)))])

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return noisy(x, self.snr_db, rng, self.colour)


@dataclass(frozen=True)
class Webcam:
    """A poor webcam: blur, dimming and grain (`poor_frame`)."""

    blur: float
    dim: float
    grain: float

    @staticmethod
    def draw(rng: np.random.Generator) -> Webcam:
        """Blur 1-3.5 px, brightness x0.35-0.8, grain 4-16 grey levels; the test streams use
        (2, 0.6, 8) and (3, 0.45, 14)."""
        return Webcam(
            float(rng.uniform(1.0, 3.5)), float(rng.uniform(0.35, 0.8)), float(rng.uniform(4, 16))
        )

    def apply(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return poor_frame(frame, self.blur, self.dim, self.grain, rng)
