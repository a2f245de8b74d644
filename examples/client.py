"""An example client of `affectstream serve` (push mode): push a video's frames and a sound
file's audio as if they were being captured now, and print the estimates that come back.

    python3 examples/client.py --video clip.mp4 --audio speech.wav [--url ws://HOST:PORT]
        [--token T] [--seconds S]

Frames are sent at the video's frame rate and audio in 40 ms pieces, each with its capture
time on this client's clock (binary kinds 0x11 and 0x12, docs/server.md). The token comes
from --token or $AFFECTSTREAM_TOKEN. Until the server listens (it may still be loading its
models) the client retries for --wait seconds. Needs websockets, OpenCV, numpy and soundfile,
all installed with affectstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time

import cv2
import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PIECE_S = 0.04  # audio sent in pieces of 40 ms


def video_message(jpeg: bytes, t: float) -> bytes:
    """Kind 0x11: float64 LE capture time (s), then the JPEG."""
    return b"\x11" + struct.pack("<d", t) + jpeg


def audio_message(pcm: np.ndarray, rate: int, t: float) -> bytes:
    """Kind 0x12: float64 LE time of the first sample, uint32 LE rate, int16 LE mono PCM."""
    return b"\x12" + struct.pack("<dI", t, rate) + pcm.astype("<i2").tobytes()


def read_audio(path: str | None) -> tuple[np.ndarray, int]:
    if path is None:
        return np.zeros(0, np.int16), 16000
    pcm, rate = sf.read(path, dtype="int16", always_2d=True)
    return pcm.mean(axis=1).astype(np.int16), rate  # mono


async def push(ws, video: str | None, audio: str | None, seconds: float) -> None:
    """Send the media at real pace, stamped with the time each piece is 'captured'."""
    cap = cv2.VideoCapture(video) if video else None
    if cap is not None and not cap.isOpened():
        raise SystemExit(f"cannot open video {video}")
    fps = (cap.get(cv2.CAP_PROP_FPS) or 25.0) if cap is not None else 25.0
    pcm, rate = read_audio(audio)
    step = int(rate * PIECE_S)
    t0, i, k = time.monotonic(), 0, 0
    while (now := time.monotonic()) - t0 < seconds:
        if cap is not None and now >= t0 + i / fps:
            ok, frame = cap.read()
            if not ok:
                break  # the video ended
            await ws.send(video_message(cv2.imencode(".jpg", frame)[1].tobytes(), now))
            i += 1
        while (k + 1) * step <= len(pcm) and t0 + (k + 1) * PIECE_S <= now:
            await ws.send(audio_message(pcm[k * step : (k + 1) * step], rate, t0 + k * PIECE_S))
            k += 1
        await asyncio.sleep(0.005)


def show(msg: dict) -> str:
    if "type" not in msg:  # an estimate
        status = " ".join(f"{m}={s.split(':')[0]}" for m, s in msg["status"].items())
        return (
            f"{msg['t']:6.2f} s  {msg['emotion']:9} {msg['confidence']:.2f}  "
            f"v {msg['valence']:+.2f} a {msg['arousal']:+.2f}  {status}  {msg['transcript'][-40:]}"
        )
    if msg["type"] == "error":
        return f"error {msg['code']}: {msg['message']}"
    return f"{msg['type']} {json.dumps(msg)}"


async def open_connection(url: str, token: str | None, wait_s: float):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await connect(url, additional_headers=headers)
        except InvalidStatus as e:
            raise SystemExit(
                f"{url} refused the connection: HTTP {e.response.status_code}"
            ) from None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {url} (waited {wait_s:g} s)") from None
            await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> int:
    ws = await open_connection(args.url, args.token, args.wait)
    counts: dict[str, int] = {}  # messages received, by type ("estimate" for estimates)

    async def receive():
        try:
            async for text in ws:
                msg = json.loads(text)
                kind = msg.get("type", "estimate")
                counts[kind] = counts.get(kind, 0) + 1
                print(show(msg), flush=True)
        except ConnectionClosed:
            pass

    async with ws:
        reader = asyncio.create_task(receive())
        await ws.send(json.dumps({"type": "hello"}))
        await push(ws, args.video, args.audio, args.seconds)
        await ws.send(json.dumps({"type": "status"}))
        await asyncio.sleep(0.5)  # the last estimates and the status reply
    await reader
    errors = counts.get("error", 0)
    print(f"{counts.get('estimate', 0)} estimates, {errors} errors", flush=True)
    return 1 if errors else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8765", help="the server (default %(default)s)")
    p.add_argument("--token", default=os.environ.get("AFFECTSTREAM_TOKEN"), help="bearer token")
    p.add_argument("--video", help="a video file whose frames are pushed")
    p.add_argument("--audio", help="a sound file (WAV, FLAC) whose audio is pushed")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to push (default 5)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the server")
    args = p.parse_args(argv)
    if not (args.video or args.audio):
        p.error("give --video, --audio or both")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
