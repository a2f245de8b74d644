"""The server soak: one `affectstream serve` (push mode) while sessions open and close at a
steady rate for minutes or hours, watching what a server that outlives its sessions must not
do: keep memory per closed session.

Sessions come in rounds: `sessions` real websocket clients connect at once, push the media at
real pace for `session_s` (the clients of `bench serve`), close, and after `gap_s` the next
round starts; `sessions / (session_s + gap_s)` sessions open (and close) a second. The server's
resident memory (with any children) is sampled every `sample_s` and once after each round,
when the server has logged every session of it as gone and `gap_s` more have passed: that
per-round figure, with no session open, is the one to compare (a busy server may take seconds
to close a session: a figure taken at a fixed time after the clients left counted some of
them still open, which read as growth that was not there). Round 1 still
fills caches and allocator pools, so growth is judged from round 2 (`growth_percent`: the last
round against round 2).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affectstream.bench.pipeline import ResourceSampler, pyplot, save
from affectstream.bench.serve import (
    Launch,
    Media,
    ServerTree,
    SessionTrace,
    _client,
    default_launch,
    free_port,
    wait_listening,
)
from affectstream.core.machine import cpu_model


def _round(url: str, token: str, media: Media, n: int, seconds: float) -> dict[str, Any]:
    """`n` clients at once for `seconds`; what they got."""
    traces = [SessionTrace() for _ in range(n)]

    async def clients() -> list:
        return await asyncio.gather(
            *(_client(url, token, media, seconds, tr) for tr in traces), return_exceptions=True
        )

    outcomes = asyncio.run(clients())
    return {
        "estimates": [tr.estimates for tr in traces],
        "failures": [repr(o) for o in outcomes if isinstance(o, BaseException)],
    }


class ServerLog:
    """The server's stderr in a temporary file (never a pipe that fills and stalls it), read
    as it grows: counts the sessions it has logged as gone."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by soak_serve()
        self._read = 0
        self._tail = b""
        self.left = 0  # "client left" lines so far: sessions stopped, streams closed

    def poll(self) -> int:
        self.file.seek(self._read)
        chunk = self._tail + self.file.read()
        self._read = self.file.tell()
        done, _, self._tail = chunk.rpartition(b"\n")
        self.left += done.count(b"client left:")
        return self.left

    def wait_gone(self, total: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> float:
        """Seconds until `total` sessions have gone (`timeout_s` at most)."""
        t0 = time.monotonic()
        while self.poll() < total and proc.poll() is None and time.monotonic() - t0 < timeout_s:
            time.sleep(0.2)
        return round(time.monotonic() - t0, 2)

    def tail(self, n: int = 5) -> list[str]:
        self.file.seek(0)
        return self.file.read().decode(errors="replace").splitlines()[-n:]


def soak_serve(
    media: Media,
    media_name: str,
    *,
    sessions: int = 4,
    session_s: float = 10.0,
    gap_s: float = 3.0,
    rounds: int | None = None,
    minutes: float | None = None,
    sample_s: float = 2.0,
    launch: Launch = default_launch,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Run the soak (module docstring): `rounds` rounds, or as many as start within
    `minutes`; `progress(round, elapsed_s)` after each."""
    if (rounds is None) == (minutes is None):
        raise ValueError("give rounds or minutes")
    if (rounds is not None and rounds < 2) or (minutes is not None and minutes <= 0):
        raise ValueError("rounds must be at least 2 (growth is judged from round 2), minutes > 0")
    if sessions < 1 or session_s <= 0 or gap_s < 0 or sample_s <= 0:
        raise ValueError("sessions >= 1, session_s > 0, gap_s >= 0 and sample_s > 0")
    port, token = free_port(), secrets.token_hex(8)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = launch(port, sessions, token)
    argv.insert(argv.index("serve"), "-v")  # its INFO lines say when each session has gone
    log = ServerLog()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log.file, env=env)
    rows: list[dict[str, Any]] = []
    try:
        startup_s = wait_listening(port, proc)
        tree = ServerTree(proc.pid)
        idle = tree()["server_rss_mb"]
        url = f"ws://127.0.0.1:{port}"
        t0 = time.monotonic()
        with ResourceSampler(sample_s, extra=tree, children=False) as sampler:
            k = 0
            while (rounds is not None and k < rounds) or (
                minutes is not None and time.monotonic() - t0 < minutes * 60
            ):
                k += 1
                got = _round(url, token, media, sessions, session_s)
                got["close_s"] = log.wait_gone(k * sessions, proc)
                time.sleep(gap_s)
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}")
                rss = tree()["server_rss_mb"]
                row = {"round": k, "t": round(time.monotonic() - t0, 1), "rss_mb": rss}
                row["main_rss_mb"] = round(tree.root.memory_info().rss / 2**20, 1)
                row["children_rss_mb"] = round(rss - row["main_rss_mb"], 1)  # the whisper worker
                rows.append(row)
                rows[-1].update(got)
                if progress is not None:
                    progress(k, time.monotonic() - t0)
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        tail = log.tail()
        log.file.close()
    second, last = rows[1]["rss_mb"], rows[-1]["rss_mb"]
    per_round = (last - second) / (len(rows) - 2) if len(rows) > 2 else 0.0
    return {
        "command": "affectstream soak serve",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load": os.getloadavg()},
        "media": media_name,
        "sessions": sessions,
        "session_s": session_s,
        "gap_s": gap_s,
        "sessions_per_minute": round(60.0 * sessions / (session_s + gap_s), 2),
        "rounds": len(rows),
        "wall_seconds": round(elapsed, 1),
        "server_startup_s": round(startup_s, 2),
        "rss_mb": {
            "idle": idle,
            "round_2": second,
            "last": last,
            "max": max((s["server_rss_mb"] for s in sampler.samples), default=None),
            "growth_percent": round(100.0 * (last - second) / second, 2),
            "per_session_after_round_2": round(per_round / sessions, 3),
        },
        "client_failures": sum(len(r["failures"]) for r in rows),
        "per_round": rows,
        "memory": sampler.samples,
        "server_log_tail": tail,
    }


def plot(result: dict[str, Any], out: str | Path) -> Path:
    """The server's resident memory over the run, with the per-round figures marked."""
    plt = pyplot()
    mem, rows = result["memory"], result["per_round"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([m["t"] / 60 for m in mem], [m["server_rss_mb"] for m in mem], lw=0.8,
            label="server RSS (MB), sampled")  # fmt: skip
    ax.plot([r["t"] / 60 for r in rows], [r["rss_mb"] for r in rows], "o", ms=3,
            label=f"after each round ({result['gap_s']:g} s after its sessions closed)")  # fmt: skip
    ax.axhline(result["rss_mb"]["round_2"], color="grey", ls=":", lw=0.8, label="round 2")
    ax.set(xlabel="minutes", ylabel="MB", ylim=(0, None))
    ax.legend(loc="lower right", fontsize=8)
    m = result["machine"]
    ax.set_title(
        f"soak serve: {result['rounds']} rounds of {result['sessions']} sessions x "
        f"{result['session_s']:g} s ({result['sessions_per_minute']:g}/min), "
        f"{Path(result['media']).name}; last round vs round 2: "
        f"{result['rss_mb']['growth_percent']:+.1f}%  [{m['cpu']}, {m['cores']} cores]",
        fontsize=8,
    )
    return save(fig, out)


__all__ = ["plot", "soak_serve"]
