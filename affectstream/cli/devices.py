"""List microphones and cameras (what `--mic` and `--camera` accept).

Audio input devices come from PortAudio (sounddevice): index, name, host API, input
channels and default rate. Cameras are probed by OpenCV index (0-3 by default), each with a
short timeout, since a busy or broken camera can block in its driver. A machine with neither
says so and exits 0: having no devices is an answer, not an error.
"""

from __future__ import annotations

import argparse
import json
import threading


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument(
        "--cameras",
        type=int,
        default=4,
        metavar="N",
        help="probe camera indexes 0..N-1 (default 4)",
    )
    p.add_argument(
        "--camera-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to wait for each camera probe (default 2)",
    )


def list_microphones() -> tuple[list[dict], str]:
    """(input devices, why there are none or "")."""
    from affectstream.realtime.sources.base import SourceError
    from affectstream.realtime.sources.microphone import input_devices

    try:
        devices = input_devices()
    except SourceError as e:
        return [], str(e)
    return devices, "" if devices else "PortAudio found no audio input device"


def _probe_camera(index: int, out: dict) -> None:
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        if not cap.isOpened():
            return
        ok, image = cap.read()
        out["index"] = index
        out["backend"] = cap.getBackendName()
        out["width"] = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        out["height"] = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        out["frame"] = bool(ok and image is not None)
    finally:
        cap.release()


def list_cameras(n: int = 4, timeout_s: float = 2.0) -> tuple[list[dict], list[int]]:
    """(cameras that opened, indexes whose probe timed out), probing 0..n-1 in turn."""
    from affectstream.realtime.sources.video import quiet_opencv

    found, timed_out = [], []
    with quiet_opencv():  # a failed probe makes OpenCV log several lines
        for i in range(n):
            out: dict = {}
            t = threading.Thread(
                target=_probe_camera, args=(i, out), daemon=True, name=f"probe-cam{i}"
            )
            t.start()
            t.join(timeout_s)
            if t.is_alive():
                timed_out.append(i)  # left running as a daemon thread; it ends with the process
            elif out:
                found.append(out)
    return found, timed_out


def run(args: argparse.Namespace) -> int:
    mics, mic_note = list_microphones()
    cams, cam_timeouts = list_cameras(args.cameras, args.camera_timeout)
    if args.json:
        print(
            json.dumps(
                {
                    "microphones": mics,
                    "microphones_note": mic_note,
                    "cameras": cams,
                    "cameras_timed_out": cam_timeouts,
                }
            )
        )
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if mics:
        t = Table(title="Audio inputs (use with --mic INDEX or --mic NAME)")
        for col in ("index", "name", "host API", "channels", "default rate", "default"):
            t.add_column(col)
        for d in mics:
            t.add_row(
                str(d["index"]),
                d["name"],
                d["hostapi"],
                str(d["channels"]),
                f"{d['default_rate']:.0f} Hz",
                "*" if d["default"] else "",
            )
        console.print(t)
    else:
        console.print(f"No audio input devices: {mic_note}.", markup=False)
    if cams:
        t = Table(title="Cameras (use with --camera INDEX)")
        for col in ("index", "backend", "size", "first frame"):
            t.add_column(col)
        for c in cams:
            t.add_row(
                str(c["index"]),
                c["backend"],
                f"{c['width']}x{c['height']}",
                "yes" if c["frame"] else "no",
            )
        console.print(t)
    else:
        console.print(f"No cameras opened at indexes 0-{args.cameras - 1}.", markup=False)
    if cam_timeouts:
        console.print(
            f"Camera probes timed out after {args.camera_timeout:g}s: {cam_timeouts}", markup=False
        )
    return 0
