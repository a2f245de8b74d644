"""Copy a labelled stream (`affectstream scenario make`) with harder media: a noisy room and
a poor webcam. For calibration work (fusion card, issue 22): the same segments and labels,
but the encoders err more, so the fused accuracy shifts, as it does on data no model saw.

    python3 scripts/degrade_stream.py SRC DST [--snr-db 10] [--colour white] [--blur 2.0]
        [--dim 0.6] [--grain 8] [--seed 0]

The degradations are `models/fusion/degrade.py`'s, which the fusion's training draws too.

- audio: noise (white by default) at `--snr-db` below the synthesised speech's level (`SPEECH_RMS`), over
  the whole track, silences included;
- video: each frame blurred (Gaussian, sigma `--blur` px), dimmed (`--dim` x brightness, a
  low-light webcam) and with fresh sensor grain (Gaussian, sigma `--grain` grey levels).

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
    from affectstream.models.fusion.degrade import COLOURS, noisy, poor_frame

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--snr-db", type=float, default=10.0)
    p.add_argument("--colour", choices=COLOURS, default="white", help="of the noise")
    p.add_argument("--blur", type=float, default=2.0)
    p.add_argument("--dim", type=float, default=0.6)
    p.add_argument("--grain", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src, dst = Path(a.src), Path(a.dst)
    labels = sc.read_labels(src)
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)

    x, sr = sf.read(str(src / labels["audio"]), dtype="float32")
    noise_rms = sc.SPEECH_RMS * 10 ** (-a.snr_db / 20)
    x = noisy(x, a.snr_db, rng, a.colour)
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
        writer.write(poor_frame(frame, a.blur, a.dim, a.grain, rng))
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
        "seed": a.seed,
    }
    (dst / "labels.json").write_text(json.dumps(labels, indent=1))
    print(f"wrote {dst}: {frames} frames, noise RMS {noise_rms:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
