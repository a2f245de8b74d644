"""Fixtures for the audio tests: real speech files, and a PulseAudio daemon as a microphone.

`PulseMic` starts a private PulseAudio daemon (its own runtime folder and socket, nothing
system-wide) with a `module-pipe-source` reading s16le 16 kHz mono from a FIFO, and feeds
that FIFO from a thread at real time. Opened through sounddevice as the ALSA `pulse` device
(libasound2-plugins), it is a real capture path: PortAudio, ALSA, the PulseAudio client
library and server, with the exact samples of a recording coming out the other end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool, unavailable

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SPEECH = MEDIA / "speech"
LIBRIVOX = SPEECH / "librivox"


def speech_files() -> list[Path]:
    files = sorted(LIBRIVOX.glob("*.wav"))
    if not files:
        pytest.skip(f"test media missing: {LIBRIVOX}")
    return files


def read_speech(path: Path, dtype: str = "float32") -> np.ndarray:
    import soundfile as sf

    x, rate = sf.read(str(path), dtype=dtype)
    assert rate == 16000, f"{path} is {rate} Hz"
    return x


def speech_with_silence(n_files: int = 2, silence_s: float = 1.0) -> tuple[np.ndarray, list]:
    """Speech files joined by silence (also before and after), and the speech spans in s."""
    sil = np.zeros(int(silence_s * 16000), dtype=np.float32)
    parts, spans, pos = [sil], [], len(sil)
    for f in speech_files()[:n_files]:
        x = read_speech(f)
        spans.append((pos / 16000, (pos + len(x)) / 16000))
        parts += [x, sil]
        pos += len(x) + len(sil)
    return np.concatenate(parts), spans


def lag_of(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """(index in `captured` where `reference` starts, normalised correlation peak).

    Full cross-correlation by FFT; a negative index means `captured` starts inside it.
    """
    a = np.asarray(captured, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    c = np.concatenate([c[-(len(b) - 1) :], c[: len(a)]]) if len(b) > 1 else c[: len(a)]
    k = int(np.argmax(c))
    peak = float(c[k] / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return k - (len(b) - 1), peak


def fft_resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Band-limited resampling of a whole signal through its spectrum (numpy only).

    An independent reference for the streaming resampler under test.
    """
    n_out = int(round(len(x) * out_rate / in_rate))
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64))
    keep = min(len(spec), n_out // 2 + 1)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    out[:keep] = spec[:keep]
    return (np.fft.irfft(out, n_out) * (n_out / len(x))).astype(np.float32)


def cards() -> list[Path]:
    files = sorted((SPEECH / "cards").glob("*.wav"))
    if not files:
        pytest.skip(f"test media missing: {SPEECH / 'cards'}")
    return files


class PulseMic:
    """A private PulseAudio daemon whose default source plays what `feed` writes."""

    SOURCE = "affectstream_test_mic"

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        self.dir = Path(tempfile.mkdtemp(prefix="affectstream-pulse-"))
        self.socket = self.dir / "native"
        self.fifo = self.dir / "mic.fifo"
        self.proc: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        self._stop_feed = threading.Event()
        self.fed = 0

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    def start(self, timeout: float = 5.0) -> None:
        exe = shutil.which("pulseaudio")
        if exe is None:
            raise RuntimeError("pulseaudio is not installed (apt-get install pulseaudio)")
        for stale in (self.socket, self.fifo):  # left behind by a killed daemon
            if stale.exists():
                stale.unlink()
        env = dict(os.environ, HOME=str(self.dir), XDG_RUNTIME_DIR=str(self.dir))
        env.pop("PULSE_SERVER", None)
        cmd = [
            exe, "--daemonize=no", "--exit-idle-time=-1", "--system=false", "-n",
            "--disallow-exit", "--use-pid-file=no", "--log-target=stderr", "--log-level=error",
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            f"--load=module-pipe-source source_name={self.SOURCE} file={self.fifo} "
            f"format=s16le rate={self.rate} channels=1",
        ]  # fmt: skip
        self.log = open(self.dir / "pulse.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {self.log_text()}")
            if self.socket.exists() and self.fifo.exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"pulseaudio did not start within {timeout}s: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return (self.dir / "pulse.log").read_text()[-2000:].strip() or "(no output)"

    def feed(self, pcm: np.ndarray, block: int = 320) -> None:
        """Write mono samples into the FIFO at real time from a thread, then silence.

        Like a real microphone, the source never runs dry: after the recording it delivers
        zeros until `stop` (module-pipe-source produces nothing while nothing is written).
        `fed` counts the samples of the recording written so far.
        """
        if pcm.dtype != np.int16:
            pcm = np.clip(np.round(pcm * 32768), -32768, 32767).astype(np.int16)
        data = pcm.astype("<i2").tobytes()
        silence = bytes(block * 2)
        self._stop_feed.clear()
        self.fed = 0

        def run() -> None:
            try:  # non-blocking open fails at once, rather than hang, if the daemon is gone
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
            except OSError:
                return
            try:
                t0, done = time.monotonic(), 0
                while not self._stop_feed.is_set():
                    chunk = data[done * 2 : (done + block) * 2]
                    os.write(fd, chunk or silence)
                    if chunk:
                        self.fed += len(chunk) // 2
                    done += block
                    wait = t0 + done / self.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
            except OSError:  # the daemon went away (the reconnect test kills it)
                pass
            finally:
                os.close(fd)

        self._feeder = threading.Thread(target=run, name="pulse-feeder", daemon=True)
        self._feeder.start()

    def wait_fed(self, n: int, timeout: float = 30.0) -> None:
        """Wait until `n` samples of the recording went into the FIFO."""
        deadline = time.monotonic() + timeout
        while self.fed < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop_feed(self) -> None:
        self._stop_feed.set()
        if self._feeder is not None:
            self._feeder.join(2)
            self._feeder = None

    def kill(self) -> None:
        """Kill the daemon, as if the microphone were unplugged."""
        self.stop_feed()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stop_feed()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(name="pulse_mic")
def pulse_mic_fixture():
    """A running `PulseMic`, with this process's PortAudio pointed at it (or a skip)."""
    require_tool("pulseaudio", install="apt-get install pulseaudio libasound2-plugins")
    mic = PulseMic()
    try:
        mic.start()
    except (RuntimeError, OSError) as e:
        shutil.rmtree(mic.dir, ignore_errors=True)
        unavailable(f"PulseAudio cannot start here: {e}")
    old = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_SOURCE")}
    os.environ["PULSE_SERVER"] = mic.server
    os.environ["PULSE_SOURCE"] = PulseMic.SOURCE
    from affectstream.realtime.sources.microphone import rescan_devices

    rescan_devices()  # PortAudio lists devices once: list them again with the daemon up
    try:
        yield mic
    finally:
        mic.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        rescan_devices()
