"""Copy a labelled stream (`affectstream scenario make`) with harder media: a noisy room and
a poor webcam. For calibration work (fusion card, issue 22): the same segments and labels,
but the encoders err more, so the fused accuracy shifts, as it does on data no model saw.

    python3 scripts/degrade_stream.py SRC DST [--snr-db 10] [--colour white] [--blur 2.0]
        [--dim 0.6] [--grain 8] [--babble-dir DIR --talkers 3] [--downscale 1] [--jpeg 0]
        [--seed 0]

The noise, blur, dimming and grain are `models/fusion/degrade.py`'s, which the fusion's
training draws too; other talkers, a low resolution and JPEG blocks are this script's only,
to test on a shift the training never drew.

- audio: stationary noise (white by default), or `--talkers` other voices reading the speech
  of `--babble-dir`, at `--snr-db` below the synthesised speech's level (`SPEECH_RMS`), over
  the whole track, silences included;
- video: each frame blurred (Gaussian, sigma `--blur` px), dimmed (`--dim` x brightness, a
  low-light webcam) and with fresh sensor grain (Gaussian, sigma `--grain` grey levels), then
  shrunk by `--downscale` and enlarged back, then JPEG-compressed at quality `--jpeg`.

`labels.json` is copied with a `degraded` entry naming the settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import cv2
    import soundfile as sf

    from affectstream.models.fusion import scenario as sc
    from affectstream.models.fusion.degrade import COLOURS, noise_rms, noisy, poor_frame

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--snr-db", type=float, default=10.0)
    p.add_argument("--colour", choices=COLOURS, default="white", help="of the noise")
    p.add_argument("--blur", type=float, default=2.0)
    p.add_argument("--dim", type=float, default=0.6)
    p.add_argument("--grain", type=float, default=8.0)
    p.add_argument(
        "--babble-dir",
        metavar="DIR",
        help="instead of stationary noise: the .wav speech in DIR, --talkers voices at once "
        "(other people talking in the room: a shift the fusion's training never draws)",
    )
    p.add_argument("--talkers", type=int, default=3)
    p.add_argument("--downscale", type=float, default=1.0, help="a low-resolution camera")
    p.add_argument("--jpeg", type=int, default=0, help="JPEG quality of each frame (0: none)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src, dst = Path(a.src), Path(a.dst)
    labels = sc.read_labels(src)
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)

    x, sr = sf.read(str(src / labels["audio"]), dtype="float32")
    rms = noise_rms(a.snr_db)
    x = noisy(x, a.snr_db, rng, a.colour) if not a.babble_dir else x + babble(a, len(x), rms, rng)
    x = np.clip(x, -1, 1)
    sf.write(str(dst / labels["audio"]), x, sr, subtype="PCM_16")

    cap = cv2.VideoCapture(str(src / labels["video"]))
    fps = cap.get(cv2.CAP_PROP_FPS) or sc.FPS
    writer = cv2.VideoWriter(
        str(dst / labels["video"]), cv2.VideoWriter_fourcc(*"MJPG"), fps, sc.FRAME_SIZE
    )
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frame = poor_frame(frame, a.blur, a.dim, a.grain, rng)
        if a.downscale > 1:
            h, w = frame.shape[:2]
            small = (max(1, round(w / a.downscale)), max(1, round(h / a.downscale)))
            frame = cv2.resize(cv2.resize(frame, small, interpolation=cv2.INTER_AREA), (w, h))
        if a.jpeg > 0:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, a.jpeg])
            frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        writer.write(frame)
        frames += 1
    cap.release()
    writer.release()
    labels["degraded"] = {
        "from": str(src),
        "snr_db": a.snr_db,
        "colour": a.colour,
        "blur_px": a.blur,
        "dim": a.dim,
        "grain": a.grain,
        "babble_dir": a.babble_dir,
        "talkers": a.talkers if a.babble_dir else None,
        "downscale": a.downscale,
        "jpeg": a.jpeg,
        "seed": a.seed,
    }
    (dst / "labels.json").write_text(json.dumps(labels, indent=1))
    print(f"wrote {dst}: {frames} frames, noise RMS {rms:.5f}")
    return 0


def babble(a: argparse.Namespace, n: int, rms: float, rng: np.random.Generator) -> np.ndarray:
    """`a.talkers` voices reading the speech files of `a.babble_dir` one after another, each
    from its own start, summed and brought to RMS `rms`."""
    from affectstream.models.fusion import scenario as sc
    from affectstream.models.voice.data import load_audio

    files = sorted(Path(a.babble_dir).glob("*.wav"))
    if not files:
        raise SystemExit(f"no .wav files in {a.babble_dir}")
    clips = [load_audio(str(f)) for f in files]
    out = np.zeros(n, np.float32)
    for _ in range(a.talkers):
        order = [clips[int(i)] for i in rng.permutation(len(clips))]
        talk = np.concatenate(order * (n // sum(len(c) for c in order) + 2))
        start = int(rng.integers(len(talk) - n))
        out += talk[start : start + n]
    return sc._level(out, rms)


if __name__ == "__main__":
    sys.exit(main())
