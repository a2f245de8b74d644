"""The one-speaker live measurement behind the voice card (scripts/voice_live_sessions.py):
one real RAVDESS actor read tick by tick through the real voice stage (Silero VAD, the shipped
predictor); ticks land in the clip whose audio is newest, pauses are not scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
RAVDESS = ROOT / ".." / "shared" / "data" / "ravdess_speech"


@pytest.fixture(scope="module")
def live():
    return load_script("voice_live_sessions")


def test_a_stream_of_one_actor_labels_its_clips_and_not_its_pauses(live):
    from affectstream.models.voice.data import scan

    clips = [c for c in scan(RAVDESS) if c.actor == 17][:3]
    audio, spans = live.actor_stream(clips, seed=0, gap_s=0.5)
    assert len(spans) == 3 and sorted(y for *_, y in spans) == sorted(c.label_index for c in clips)
    (s0, e0, y0), (s1, _, _) = spans[0], spans[1]
    assert live.label_at(spans, s0) == y0 and live.label_at(spans, e0 - 1) == y0
    assert live.label_at(spans, e0) == -1 and s1 - e0 == 8000  # the pause
    assert len(audio) == spans[-1][1] + 8000


def test_the_network_reads_one_actor_live_above_chance(live, tmp_path):
    out = tmp_path / "live.json"
    args = ["--data", str(RAVDESS), "--actors", "17", "--configs", "network,session"]
    assert live.main([*args, "--json", str(out)]) == 0
    r = json.loads(out.read_text())["per_actor"]["17"]
    for c in ("network", "session"):
        assert r[c]["scored_ticks"] > 500  # 60 clips, about 20 voiced ticks each
        assert r[c]["accuracy"] > 0.25  # chance is 1/7; the card's figure is about 0.43
    assert r["network"]["scored_ticks"] == r["session"]["scored_ticks"]  # the same ticks
    with pytest.raises(SystemExit, match="held out"):
        live.main(["--data", str(RAVDESS), "--actors", "21"])
