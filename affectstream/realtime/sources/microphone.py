"""Microphone capture on sounddevice (PortAudio) into the audio `SampleRing`.

The PortAudio callback only copies: mono float32 blocks of `audio.block_ms` go straight into
the ring when the device runs at the configured rate (16 kHz). A device that cannot open at
that rate is opened at its default rate; the callback then copies into a small ring at the
device rate and the source's own thread resamples (soxr, stateful) into the output ring every
few milliseconds, so no filter work ever runs inside the audio callback.

Capture time of each block: PortAudio's `inputBufferAdcTime` relative to its `currentTime`
(both on PortAudio's clock, which is not the monotonic clock) gives how long ago the first
sample was captured; subtracting that from `time.monotonic_ns()` taken in the callback maps it
onto the stream clock. The delay is never taken as less than the block's duration (the whole
block was captured before the callback), which is also what is used where a host API reports
no usable ADC time (PortAudio's ALSA API through PulseAudio often reports a delay of 0). A `CaptureClock` smooths the result. PortAudio's input-overflow flags are counted in
`overflows`; when one comes with a jump of the clock, the jump is counted in `dropped_samples`.

A device that vanishes (its stream stops, or no block arrives for `audio.stall_timeout_s`)
is closed and reopened with exponential backoff (`audio.reconnect_initial_s` doubling up to
`audio.reconnect_max_s`); the status is RECONNECTING meanwhile, so the voice counts as
missing, not as silence.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from affectstream.core.audio import CaptureClock, TimedResampler
from affectstream.core.clock import now_ns
from affectstream.core.config import AudioConfig
from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import Source, SourceError, SourceState

log = logging.getLogger(__name__)

HINT = "see `affectstream devices`"


def import_sounddevice():
    """sounddevice, or a SourceError that says what to install."""
    try:
        import sounddevice
    except OSError as e:  # the Python package is there, the PortAudio library is not
        raise SourceError(
            f"PortAudio library not found ({e}); install it, e.g. apt-get install libportaudio2"
        ) from None
    except ImportError:
        raise SourceError("microphone capture needs sounddevice: pip install sounddevice") from None
    return sounddevice


def rescan_devices() -> None:
    """Make PortAudio enumerate devices again (it lists them once, at initialisation).

    This re-initialises PortAudio for the whole process: streams other code has open through
    sounddevice stop working. The microphone source calls it only when its device cannot be
    found again after a loss.
    """
    sd = import_sounddevice()
    sd._terminate()
    sd._initialize()


def input_devices() -> list[dict]:
    """Input devices PortAudio knows: index, name, host API, channels, default rate, default."""
    sd = import_sounddevice()
    try:
        default_in = sd.default.device[0]
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as e:
        raise SourceError(f"PortAudio cannot list devices: {e}") from None
    if default_in is None or default_in < 0:
        default_in = next(
            (a["default_input_device"] for a in apis if a["default_input_device"] >= 0), -1
        )
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append(
                {
                    "index": d["index"],
                    "name": d["name"],
                    "hostapi": apis[d["hostapi"]]["name"],
                    "channels": d["max_input_channels"],
                    "default_rate": float(d["default_samplerate"]),
                    "default": d["index"] == default_in,
                }
            )
    return out


class MicrophoneSource(Source):
    """A microphone (PortAudio input device) written into `ring` at the ring's rate.

    `device`: None for the default input, an index, or a (part of a) name as listed by
    `affectstream devices`. `device_rate`: open the device at this rate instead of trying the
    ring's rate first (the audio is then resampled). Counters for the scheduler: `overflows`
    (PortAudio input overflows), `dropped_samples` (samples the device or the resampler lost),
    `reconnects`. `device_name` and `device_rate_used` say what was opened.
    """

    name = "microphone"

    def __init__(
        self,
        ring: SampleRing,
        device: int | str | None = None,
        config: AudioConfig | None = None,
        device_rate: int | None = None,
    ) -> None:
        super().__init__()
        self.ring = ring
        self.device = device
        self.config = config or AudioConfig()
        self.device_rate = device_rate
        self.overflows = 0
        self.dropped_samples = 0
        self.reconnects = 0
        self.blocks = 0
        self.device_name = ""
        self.device_rate_used = 0
        self._stream = None
        self._channels = 1
        self._raw: SampleRing | None = None  # device-rate ring when resampling
        self._sink: SampleRing = ring
        self._raw_index = 0
        self._resampler: TimedResampler | None = None
        self._clock = CaptureClock(ring.sample_rate)
        self._last_block_ns = 0
        self._lost = threading.Event()  # set by PortAudio when the stream ends by itself

    # -- opening ----------------------------------------------------------------------
    def _describe(self) -> str:
        return "default microphone" if self.device is None else f"microphone {self.device!r}"

    def _resolve(self, sd) -> dict:
        try:
            if self.device is None:
                info = sd.query_devices(kind="input")
            else:
                info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as e:
            if self.device is None:
                raise SourceError(f"no audio input device found ({e}); {HINT}") from None
            raise SourceError(f"{self._describe()} not found ({e}); {HINT}") from None
        if info["max_input_channels"] < 1:
            raise SourceError(f"{self._describe()} has no input channels; {HINT}")
        return info

    def _choose(self, sd, info: dict) -> tuple[int, int]:
        """(rate, channels) to open: the ring's rate and mono where the device takes them."""
        index = info["index"]
        channel_options = [1] + ([2] if info["max_input_channels"] >= 2 else [])
        rates = [self.device_rate] if self.device_rate else [self.ring.sample_rate]
        if not self.device_rate:
            rates.append(int(info["default_samplerate"]))
        last_error = None
        for rate in rates:
            for ch in channel_options:
                try:
                    sd.check_input_settings(index, channels=ch, dtype="float32", samplerate=rate)
                    return rate, ch
                except (ValueError, sd.PortAudioError) as e:
                    last_error = e
        raise SourceError(
            f"{self._describe()} ({info['name']}) accepts none of {rates} Hz mono/stereo "
            f"float32: {last_error}; {HINT}"
        )

    def _open_stream(self) -> None:
        sd = import_sounddevice()
        info = self._resolve(sd)
        rate, channels = self._choose(sd, info)
        target = self.ring.sample_rate
        block = max(1, int(round(rate * self.config.block_ms / 1000)))
        if rate != target:
            if self._raw is None or self._raw.sample_rate != rate:
                self._raw = SampleRing(2.0, rate, name="mic-device")
            self._raw_index = self._raw.written
            self._resampler = TimedResampler(self.ring, rate)
            self._clock = CaptureClock(rate)
        else:
            self._raw = None
            self._resampler = None
            self._clock = CaptureClock(target)
        self._channels = channels
        self._sink = self._raw if self._raw is not None else self.ring  # what the callback fills
        self.device_rate_used = rate  # before the first callback can run
        self._lost.clear()
        try:
            stream = sd.InputStream(
                device=info["index"],
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=block,
                callback=self._callback,
                finished_callback=self._lost.set,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise SourceError(
                f"cannot open {self._describe()} ({info['name']}) at {rate} Hz: {e}"
            ) from None
        self._stream = stream
        self._last_block_ns = now_ns()
        self.device_name = info["name"]
        if rate != target:
            log.info("%s opened at %d Hz, resampling to %d Hz", info["name"], rate, target)

    def open(self) -> None:
        """Open and start the device here, so a missing microphone fails in the caller."""
        if self._stream is None:
            self._open_stream()

    # -- the PortAudio callback: copies only ------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time, status) -> None:
        t_cb = now_ns()
        overflow = bool(status.input_overflow)
        self.overflows += overflow
        # how long ago the first sample was captured: at least the block's duration
        block_s = frames / self.device_rate_used
        adc, cur = time.inputBufferAdcTime, time.currentTime
        delay = cur - adc if adc > 0 and 0.0 <= cur - adc < 1.0 else 0.0
        measured = t_cb - int(max(delay, block_s) * 1e9)
        t, lost = self._clock.stamp(measured, frames, overflow)
        if lost:
            self.dropped_samples += int(lost * self.ring.sample_rate / self.device_rate_used)
        x = indata[:, 0] if self._channels == 1 else indata.mean(axis=1)
        self._sink.write(x, t)
        self.blocks += 1
        self._last_block_ns = t_cb

    # -- the source thread: resample, watch, reconnect --------------------------------
    def _drain(self) -> None:
        raw, res = self._raw, self._resampler
        if raw is None or res is None:
            return
        end = raw.written
        if end <= self._raw_index:
            return
        x, first = raw.read(self._raw_index, end)
        if first != self._raw_index:  # fell behind by more than the device ring holds
            lost = first - self._raw_index
            self.dropped_samples += int(lost * self.ring.sample_rate / raw.sample_rate)
            res.reset()
        self._raw_index = first + len(x)
        res.write(x, raw.time_of(first))

    def _stalled(self) -> str:
        if self._lost.is_set():
            return "stream stopped"
        stream = self._stream
        if stream is None:
            return "not open"
        if not stream.active:
            return "stream inactive"
        silent_s = (now_ns() - self._last_block_ns) / 1e9
        if silent_s > self.config.stall_timeout_s:
            return f"no audio for {silent_s:.1f} s"
        return ""

    def _run(self) -> None:
        while not self._stop_event.is_set():
            self._drain()
            problem = self._stalled()
            if problem and not self._reconnect(problem):
                return
            poll_s = min(self.config.block_ms / 1000, 0.02) if self._raw is not None else 0.05
            if self._sleep(poll_s):
                return
        self._drain()

    def _reconnect(self, problem: str) -> bool:
        """Close, then reopen with backoff until it works; False if asked to stop meanwhile."""
        name = self.device_name or self._describe()
        self._close_stream()
        self._set_status(SourceState.RECONNECTING, f"{name} lost ({problem}); retrying")
        delay = self.config.reconnect_initial_s
        attempt = 0
        while not self._sleep(delay):
            attempt += 1
            try:
                if attempt > 1:
                    rescan_devices()  # the device may come back under another index
                self._open_stream()
            except SourceError as e:
                log.info("%s: reopen attempt %d failed: %s", name, attempt, e)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            self.reconnects += 1
            self._set_status(SourceState.RUNNING)
            log.warning("%s reconnected after %d attempt(s)", name, attempt)
            return True
        return False

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as e:  # a vanished device may fail to close; it is gone either way
            log.debug("closing %s: %s", self.device_name, e)

    def close(self) -> None:
        self._close_stream()
