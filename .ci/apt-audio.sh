#!/usr/bin/env bash
# Debian packages the audio part needs (merged into .ci/run by the lead):
#   libportaudio2      PortAudio, which sounddevice loads (microphone capture, `affectstream devices`)
#   pulseaudio         the daemon tests/test_pulseaudio_mic.py starts as a virtual microphone
#   libasound2-plugins the ALSA `pulse` device, through which PortAudio reaches PulseAudio
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libportaudio2 pulseaudio libasound2-plugins >/dev/null
