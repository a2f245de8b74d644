"""Microphone errors that need no sound card: a device that is not there is a clear error."""

from __future__ import annotations

import pytest

from affectstream.realtime.ringbuffer import SampleRing
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
