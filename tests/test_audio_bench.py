"""`affectstream bench audio` (bench_audio): runs on real media, prints a table, writes JSON."""

from __future__ import annotations

import argparse
import json

import pytest
from audio_fixtures import MEDIA, cards

from affectstream.cli import bench_audio
from affectstream.core.errors import UsageError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench_audio.add_bench_arguments(p)
    return p.parse_args(list(argv))


def test_bench_audio_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = parse("--audio", str(cards()[4]), "--repeat", "1", "--out", str(out))
    assert bench_audio.run_bench(args) == 0
    result = json.loads(out.read_text())
    rows = result["results"]
    assert result["speech_s"] == pytest.approx(3.5025, abs=1e-3)
    assert rows["vad: one 100 ms tick"]["calls"] == 35  # 3.5 s in 100 ms ticks
    assert rows["push int16 16 kHz: one 20 ms block"]["calls"] == 175
    assert {"resample 48000 -> 16000 Hz: one 20 ms block", "decode Megamind.avi"} <= set(rows)
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "audio path" in capsys.readouterr().out


def test_bench_audio_refuses_a_file_it_cannot_decode(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(UsageError, match="cannot decode audio"):
        bench_audio.run_bench(parse("--audio", str(bad), "--media", str(MEDIA / "Megamind.avi")))
