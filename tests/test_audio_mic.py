"""Microphone errors that need no sound card: a device that is not there is a clear error."""

from __future__ import annotations

import pytest

from affectstream.core.ringbuffer import SampleRing
from affectstream.realtime.sources.base import SourceError, SourceState
from affectstream.realtime.sources.microphone import MicrophoneSource, input_devices


@pytest.mark.parametrize("device", ["no-such-microphone", 10_000])
def test_a_microphone_that_is_not_there_names_the_devices_command(device):
    src = MicrophoneSource(SampleRing(1, 16000), device=device)
    with pytest.raises(SourceError, match=r"not found.*see `affectstream devices`"):
        src.start()
    assert src.status.state is SourceState.CREATED and not src.running
    assert src.stop()  # stopping a source that never started is fine


def test_no_default_microphone_is_a_clear_error():
    if input_devices():
        pytest.skip("this machine has an audio input device")
    with pytest.raises(SourceError, match="no audio input device"):
        MicrophoneSource(SampleRing(1, 16000)).open()


class FakePortAudio:
    """Stands in for sounddevice where a device refuses 16 kHz (hardware that runs at 48k)."""

    PortAudioError = RuntimeError

    def __init__(self, rates: set[int], channels: int = 2):
        self.rates = rates
        self.info = {"index": 3, "name": "hw48", "max_input_channels": channels}
        self.info["default_samplerate"] = 48000.0

    def check_input_settings(self, device, channels, dtype, samplerate):
        if samplerate not in self.rates:
            raise self.PortAudioError(f"Invalid sample rate {samplerate}")


def test_a_device_that_refuses_16k_is_opened_at_its_own_rate():
    fake = FakePortAudio(rates={44100, 48000})
    src = MicrophoneSource(SampleRing(1, 16000))
    assert src._choose(fake, fake.info) == (48000, 1)  # then resampled to 16 kHz
    fake16 = FakePortAudio(rates={16000, 48000})
    assert src._choose(fake16, fake16.info) == (16000, 1)  # no resampling when it can


def test_a_device_that_accepts_no_rate_is_a_clear_error():
    fake = FakePortAudio(rates=set())
    with pytest.raises(SourceError, match=r"hw48.*accepts none of \[16000, 48000\] Hz"):
        MicrophoneSource(SampleRing(1, 16000))._choose(fake, fake.info)
