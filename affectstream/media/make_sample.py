"""Rebuild `sample.mp4`, the bundled clip behind `--sample` (a maintainer's tool, not a command).

A public-domain photograph (NASA, astronaut Eileen Collins, as shipped in scikit-image's
`skimage/data/astronaut.png`) is filmed with a slow pan and zoom, and espeak-ng speaks three
short sentences with a clear emotion each (joy, sadness, anger) over it; both go into one MP4
(H.264 video, AAC audio) that the file sources read (OpenCV for the frames, PyAV for the
sound). Every part may be redistributed: README.md beside this file says why.

    pip download scikit-image --no-deps -d /tmp/ski && unzip -j /tmp/ski/*.whl \
        skimage/data/astronaut.png -d /tmp/ski
    apt-get install espeak-ng
    python3 affectstream/media/make_sample.py --image /tmp/ski/astronaut.png
"""

from __future__ import annotations

import argparse
import math
import subprocess
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
# (words, espeak-ng pitch 0-99, words per minute): one emotion each, for words and voice
SENTENCES = (
    ("Hello! I am so happy to see you. This is wonderful!", 70, 165),
    ("Oh no. I feel so sad and lonely today.", 25, 120),
    ("Stop it! That makes me really angry!", 55, 185),
)
PAUSE_S = 0.7  # silence before, between and after the sentences
WIDTH, HEIGHT, FPS = 480, 360, 15


def speech(voice: str = "en-us") -> tuple[np.ndarray, int]:
    """The sentences as one int16 mono track with pauses, at espeak-ng's own rate."""
    parts, rate = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, pitch, wpm) in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-w", str(wav)]
            subprocess.run([*cmd, text], check=True)
            pcm, rate = sf.read(wav, dtype="int16")
            parts.append(pcm)
    gap = np.zeros(int(PAUSE_S * rate), np.int16)
    track = [gap]
    for p in parts:
        track += [p, gap]
    return np.concatenate(track), rate


def frames(image: np.ndarray, n: int):
    """`n` frames of a slow pan and zoom over `image`, the face staying whole in view."""
    h, w = image.shape[:2]
    for i in range(n):
        s = i / max(1, n - 1)
        crop_w = 380 - 50 * (0.5 - 0.5 * math.cos(2 * math.pi * s))  # zoom in and back out
        crop_h = crop_w * HEIGHT / WIDTH
        cx = 215 + 15 * math.sin(2 * math.pi * s)  # a gentle pan; the shuttle on the right
        cy = 180 + 8 * math.sin(4 * math.pi * s)  # stays mostly out (Haar takes it for a face)
        x0 = min(max(0.0, cx - crop_w / 2), w - crop_w)
        y0 = min(max(0.0, cy - crop_h / 2), h - crop_h)
        # an affine map from the crop to the output keeps sub-pixel motion smooth
        m = np.array(
            [[WIDTH / crop_w, 0, -x0 * WIDTH / crop_w], [0, HEIGHT / crop_h, -y0 * HEIGHT / crop_h]]
        )
        yield cv2.warpAffine(image, m, (WIDTH, HEIGHT), flags=cv2.INTER_AREA)


def write(out: Path, image_bgr: np.ndarray, pcm: np.ndarray, rate: int) -> None:
    n = math.ceil(len(pcm) / rate * FPS)
    with av.open(str(out), "w") as container:
        v = container.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        v.options = {"crf": "30", "preset": "veryslow", "tune": "stillimage"}
        a = container.add_stream("aac", rate=rate, layout="mono")
        a.bit_rate = 48_000
        for img in frames(image_bgr, n):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            container.mux(v.encode(frame))
        container.mux(v.encode())
        chunk = 1024
        for i in range(0, len(pcm), chunk):
            piece = pcm[i : i + chunk][None]
            frame = av.AudioFrame.from_ndarray(piece, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            container.mux(a.encode(frame))
        container.mux(a.encode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True, help="skimage's astronaut.png")
    p.add_argument("--out", type=Path, default=HERE / "sample.mp4")
    args = p.parse_args()
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    pcm, rate = speech()
    write(args.out, image, pcm, rate)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} kB, {len(pcm) / rate:.1f} s")


if __name__ == "__main__":
    main()
