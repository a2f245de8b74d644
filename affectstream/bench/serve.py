"""The server benchmark: N real websocket clients push real media at real pace to a real
`affectstream serve` (push mode), and every estimate that comes back is counted.

For each session count a fresh server process starts on a free loopback port (so one run's
sessions, arenas and batch counters do not leak into the next), N clients connect at once,
each pushes the media's JPEG frames at its frame rate and its audio in 40-ms pieces, stamped
with their capture times, for `seconds`; then each asks for a status (which carries the
server's batch counts) and closes. Measured: per session and overall, the estimate age per
modality (emit minus capture time, as the server computes it: the same figure as
`bench pipeline`), connect to first estimate, estimates a second, messages the server
dropped for a slow reader, error replies; per model, the batches the server formed; CPU and
resident memory of the server process (with its children) and of the clients' process.

`measure(...)` returns a dict; `affectstream bench serve` prints it, writes JSON and a plot.
The server is started by a `launch(port, sessions) -> argv` the caller may replace (the Ray
server, `serve --ray`, is another command line on the same clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affectstream.bench.pipeline import BUDGET_MODALITIES, ProcessTree, ResourceSampler
from affectstream.core.labels import MODALITIES
from affectstream.core.machine import cpu_model
from affectstream.core.stats import percentiles

PIECE_S = 0.04  # audio sent in pieces of 40 ms, as examples/client.py does
Launch = Callable[[int, int, str], list[str]]  # (port, sessions, token) -> server argv


@dataclass
class Media:
    """What every client pushes: JPEG frames at `fps`, mono int16 audio at `rate`."""

    frames: list[bytes]
    fps: float
    pcm: np.ndarray
    rate: int


def load_media(path: str | Path, jpeg_quality: int = 85, audio: str | Path | None = None) -> Media:
    """Decode the file once (frames to JPEG, audio to mono int16) so the clients only send.
    `audio`: take the audio from this file instead (a silent video beside a speech file)."""
    import av
    import cv2

    from affectstream.realtime.sources.audio_file import frame_to_mono

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1])
    cap.release()
    parts, rate = [], 16000
    with av.open(str(audio if audio is not None else path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            rate = stream.rate
            for packet in container.demux(stream):
                try:  # a damaged packet is skipped, as the file source does
                    parts += [frame_to_mono(f) for f in packet.decode()]
                except av.error.FFmpegError:
                    continue
    pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    if not frames and not pcm16.size:
        raise ValueError(f"{path}: no video frames and no audio")
    return Media([f.tobytes() for f in frames], float(fps), pcm16, int(rate))


def default_launch(
    port: int, sessions: int, token: str, transcribe: bool = True, extra: Sequence[str] = ()
) -> list[str]:
    """`affectstream serve` on 127.0.0.1:`port` for `sessions` sessions (push mode); `extra`:
    more of its flags (`--device cuda`, `--backend ...`, `--config FILE`)."""
    argv = [sys.executable, "-m", "affectstream", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--token", token, "--max-sessions", str(sessions)]
    return argv + ([] if transcribe else ["--no-transcribe"]) + list(extra)


RAY_HOST = "127.0.0.2"  # a local Ray cluster's head: never 127.0.0.1 (docs/serving.md)


def ray_launch(
    port: int,
    sessions: int,
    token: str,
    address: str = "",
    transcribe: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """`affectstream serve --ray [ADDRESS]` on 127.0.0.2:`port`: the Ray Serve application on
    the cluster at `address`, or on a local one it starts."""
    argv = default_launch(port, sessions, token, transcribe, extra)
    return [*argv[:4], "--ray", *([address] if address else []), "--host", RAY_HOST, *argv[6:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SessionTrace:
    """What one client saw."""

    connect_s: float | None = None  # connect to the first estimate
    ages: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODALITIES})
    estimates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    close: tuple[int | None, str] = (None, "")

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "connect_to_first_estimate_s": self.connect_s,
            "estimates": self.estimates,
            "estimate_rate_hz": round(self.estimates / seconds, 3),
            "age_ms": {m: percentiles(v, (50, 99), 2) for m, v in self.ages.items()},
            "errors": self.errors,
            "dropped": self.status.get("dropped"),
            "close": list(self.close),
        }


async def _client(url: str, token: str, media: Media, seconds: float, trace: SessionTrace):
    """One session: push the media at real pace for `seconds`, read everything that comes."""
    from websockets.asyncio.client import connect

    t_connect = time.monotonic()
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        status_seen = asyncio.Event()

        async def reader() -> None:
            async for message in ws:
                msg = json.loads(message)
                kind = msg.get("type")
                if kind == "estimate" or "probs" in msg:
                    if trace.connect_s is None:
                        trace.connect_s = round(time.monotonic() - t_connect, 3)
                    trace.estimates += 1
                    for m, age in (msg.get("age_ms") or {}).items():
                        if age is not None and m in trace.ages:
                            trace.ages[m].append(age)
                elif kind == "error":
                    code = msg.get("code", "?")
                    trace.errors[code] = trace.errors.get(code, 0) + 1
                elif kind == "status":
                    trace.status = msg
                    status_seen.set()

        task = asyncio.create_task(reader())
        await ws.send(json.dumps({"type": "hello"}))
        await _push(ws, media, seconds)
        await ws.send(json.dumps({"type": "status"}))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(status_seen.wait(), 10.0)
        await ws.close()
        with contextlib.suppress(Exception):
            await task
        trace.close = (ws.close_code, ws.close_reason or "")


async def _push(ws, media: Media, seconds: float) -> None:
    """Frames at the video's rate and audio in 40-ms pieces, looped, stamped with the
    monotonic time they are 'captured' (kinds 0x11 and 0x12 of docs/server.md).

    As from a real microphone, a piece is sent once it has been recorded, stamped with the
    time its recording began. (Sent at its start, it would reach the server 40 ms before its
    end was "recorded"; the server's clock mapping, which never maps a time after its
    arrival, would then date every frame 40 ms older than it is.)"""
    step = int(media.rate * PIECE_S)
    t0, i, k = time.monotonic(), 0, 0
    while (now := time.monotonic()) - t0 < seconds:
        if media.frames and now >= t0 + i / media.fps:
            jpeg = media.frames[i % len(media.frames)]
            await ws.send(b"\x11" + struct.pack("<d", now) + jpeg)
            i += 1
        if media.pcm.size and now >= t0 + (k + 1) * PIECE_S:
            start = (k * step) % max(1, media.pcm.size - step)
            piece = media.pcm[start : start + step]
            began = now - PIECE_S
            await ws.send(b"\x12" + struct.pack("<dI", began, media.rate) + piece.tobytes())
            k += 1
        due = min(t0 + i / media.fps if media.frames else 1e18, t0 + (k + 1) * PIECE_S)
        await asyncio.sleep(max(0.0, due - time.monotonic()))


class ServerTree(ProcessTree):
    """The server process with its children (Ray starts some; the whisper model decodes in
    one), summed: the `extra` of a `pipeline.ResourceSampler`, which samples this (the
    clients') process itself."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(server_pid)
        self.sample()  # the first cpu_percent of each process only starts its interval

    def __call__(self) -> dict[str, float]:
        cpu, rss = self.sample()
        return {"server_cpu_percent": cpu, "server_rss_mb": round(rss, 1)}


def resources(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The server tree's and the clients' CPU, and the server's largest RSS, over a run."""

    def col(k: str) -> list[float]:
        return [s[k] for s in samples]

    return {
        "server_cpu_percent": percentiles(col("server_cpu_percent"), (50, 95), 1),
        "server_rss_mb": {"max": max(col("server_rss_mb"), default=None)},
        "clients_cpu_percent": percentiles(col("cpu_percent"), (50, 95), 1),
    }


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 300.0) -> float:
    """Seconds until the server prints its `affectstream serve: ws://...` line (once it
    serves: Ray Serve's proxy takes connections before the application is up); raises if it
    exits or never does."""
    t0, line = time.monotonic(), []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if line and line[0].startswith(b"affectstream serve:"):
        return time.monotonic() - t0
    if proc.poll() is not None:
        raise RuntimeError(f"the server exited with {proc.returncode} before listening")
    raise RuntimeError(f"the server did not listen on port {port} within {timeout_s:.0f} s")


def run_sessions(
    n: int, media: Media, seconds: float, launch: Launch, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """One server process, `n` clients at once; the measured dict for this count."""
    port, token = free_port(), secrets.token_hex(8)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        launch(port, n, token), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        startup_s = wait_listening(port, proc)
        traces = [SessionTrace() for _ in range(n)]
        url = f"ws://{host}:{port}"

        async def all_clients() -> list:
            return await asyncio.gather(
                *(_client(url, token, media, seconds, tr) for tr in traces),
                return_exceptions=True,
            )

        with ResourceSampler(extra=ServerTree(proc.pid), children=False) as sampler:
            outcomes = asyncio.run(all_clients())
        failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    return summarize(traces, seconds) | {
        "sessions": n,
        "server_startup_s": round(startup_s, 2),
        "client_failures": failures,
        "resources": resources(sampler.samples),
        "server_log_tail": (err or b"").decode(errors="replace").splitlines()[-5:],
    }


def summarize(traces: Sequence[SessionTrace], seconds: float) -> dict[str, Any]:
    """Per session and over all of them; batches from the newest status any session got."""
    ages = {m: [a for tr in traces for a in tr.ages[m]] for m in MODALITIES}
    connects = [tr.connect_s for tr in traces if tr.connect_s is not None]
    errors: dict[str, int] = {}
    for tr in traces:
        for k, v in tr.errors.items():
            errors[k] = errors.get(k, 0) + v
    statuses = [tr.status for tr in traces if tr.status]
    overall = {
        "age_ms": {m: percentiles(v, (50, 99), 2) for m, v in ages.items()},
        "connect_to_first_estimate_s": percentiles(connects, (50,), 3, with_max=True),
        "estimate_rate_hz": round(sum(tr.estimates for tr in traces) / len(traces) / seconds, 3),
        "dropped": sum(int(tr.status.get("dropped") or 0) for tr in traces),
        "errors": errors,
        "batches": max(statuses, key=lambda s: s.get("estimates", 0)).get("batches", {})
        if statuses
        else {},
    }
    vals = [overall["age_ms"][m]["p99"] for m in BUDGET_MODALITIES]
    overall["age_p99_ms"] = max((v for v in vals if v is not None), default=None)
    return {"overall": overall, "per_session": [tr.summary(seconds) for tr in traces]}


def measure(
    media_path: str | Path,
    seconds: float,
    sessions: Sequence[int] = (1,),
    budget_ms: float = 150.0,
    launch: Launch = default_launch,
    progress: Callable[[int], None] | None = None,
    label: str = "in-process server (affectstream serve)",
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Every session count in `sessions`, `seconds` each; see the module docstring.
    `progress(n)` is called as the run with `n` sessions starts."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if not sessions or any(n < 1 for n in sessions):
        raise ValueError(f"session counts must be >= 1, got {list(sessions)}")
    media = load_media(media_path)
    rows = []
    for n in sessions:
        if progress is not None:
            progress(n)
        rows.append(run_sessions(n, media, seconds, launch, host))
    within = [
        r["sessions"]
        for r in rows
        if r["overall"]["age_p99_ms"] is not None and r["overall"]["age_p99_ms"] <= budget_ms
    ]
    return {
        "command": "affectstream bench serve",
        "server": label,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "media": str(media_path),
        "seconds": seconds,
        "budget_ms": budget_ms,
        "runs": rows,
        "max_sessions_within_budget": max(within) if within else 0,
    }


def plot(result: dict[str, Any], out: str | Path) -> Path:
    """p99 age per modality and server CPU against the session count."""
    from affectstream.bench.pipeline import pyplot, save

    plt = pyplot()
    fig, (ax_a, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = [r["sessions"] for r in result["runs"]]
    for m in MODALITIES:
        ys = [r["overall"]["age_ms"][m]["p99"] for r in result["runs"]]
        if any(y is not None for y in ys):
            ax_a.plot(ns, [np.nan if y is None else y for y in ys], "o-", label=f"{m} age p99")
    ax_a.axhline(result["budget_ms"], color="k", ls="--", lw=0.8, label="budget")
    ax_a.set(xlabel="sessions", ylabel="ms", title="estimate age p99")
    ax_a.legend(fontsize=8)
    cpu = [r["resources"]["server_cpu_percent"]["p50"] for r in result["runs"]]
    ax_c.plot(ns, cpu, "o-", label="server CPU % p50 (100 = one core)")
    ax_c.set(xlabel="sessions", ylabel="%", title="server process")
    ax_c.legend(fontsize=8)
    fig.suptitle(
        f"bench serve: {result['server']}, {Path(result['media']).name}, "
        f"{result['seconds']:g} s, {result['machine']['cpu']}",
        fontsize=9,
    )
    return save(fig, out)


__all__ = ["Media", "default_launch", "ray_launch", "load_media", "measure", "plot", "run_sessions"]
