"""End-to-end: the `affectstream run` command on real media, through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from affectstream.core.labels import LABELS, MODALITIES
from tests.conftest import MEDIA, affectstream


def read_estimates(path):
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_estimate(d):
    assert d["emotion"] in LABELS and set(d["probs"]) == set(LABELS)
    assert abs(sum(d["probs"].values()) - 1) < 1e-3
    assert -1 <= d["valence"] <= 1 and -1 <= d["arousal"] <= 1 and 0 <= d["confidence"] <= 1
    assert set(d["relevance"]) == set(MODALITIES) == set(d["present"]) == set(d["age_ms"])
    present = [m for m in MODALITIES if d["present"][m]]
    if present:
        assert abs(sum(d["relevance"].values()) - 1) < 1e-3
    for m in MODALITIES:
        assert (d["age_ms"][m] is not None) == d["present"][m]
        if not d["present"][m] and m != "voice":  # the fusion holds a voice for a moment
            assert d["relevance"][m] == 0
    assert set(d["modalities"]) == set(present)  # each present modality's own view
    for view in d["modalities"].values():
        # the top class (two classes may tie once the probabilities are rounded for JSON)
        assert view["probs"][view["emotion"]] == max(view["probs"].values())
        assert abs(sum(view["probs"].values()) - 1) < 1e-3
    assert "total" in d["stages_ms"] and isinstance(d["dropped"], dict)


@pytest.mark.slow
def test_run_video_fast_writes_one_estimate_per_tick(tmp_path, megamind):
    out, summary = tmp_path / "est.jsonl", tmp_path / "summary.json"
    r = affectstream("run", "--video", megamind, "--fast", "--out", out, "--summary-json", summary)
    assert r.returncode == 0, r.stderr
    ests = read_estimates(out)
    duration = 270 / 23.976
    skipped = ests[-1]["dropped"]["ticks_skipped"]  # ticks a slow tick covered (counted)
    info = f"{len(ests)} estimates, {skipped} skipped, last t {ests[-1]['t']}"
    # one estimate per 100 ms tick for the video's length, less the ticks a slow one covered
    assert duration * 10 - 2 <= len(ests) + skipped, info
    assert len(ests) <= duration * 10 + 2, info
    assert ests[-1]["t"] >= duration - 0.1, info  # how many are skipped is the machine's
    for d in ests:
        check_estimate(d)
    ts = [d["t"] for d in ests]
    assert ts == sorted(ts)
    face = [d["present"]["face"] for d in ests]
    assert np.mean(face) > 0.8  # the face is found in most ticks
    assert not any(d["present"]["voice"] or d["present"]["text"] for d in ests)
    s = json.loads(summary.read_text())
    assert s["estimates"] == len(ests)
    assert s["age_ms"]["face"]["p99"] is not None
    assert s["face_found_frames"]["with_face"] > 0.8 * s["face_found_frames"]["frames"]
    assert "age p99" in r.stderr and "face" in r.stderr  # the summary table


def write_speech_with_pause(path, pause_s=2.0):
    files = sorted((MEDIA / "speech" / "librivox").glob("*.wav"))[:2]
    a, sr = sf.read(files[0], dtype="float32")
    b, _ = sf.read(files[1], dtype="float32")
    sf.write(path, np.concatenate([a, np.zeros(int(pause_s * sr), np.float32), b]), sr)
    return len(a) / sr, pause_s


@pytest.mark.slow
def test_run_audio_voice_presence_follows_speech(tmp_path):
    wav = tmp_path / "speech.wav"
    first_len, pause = write_speech_with_pause(wav)
    out = tmp_path / "est.jsonl"
    r = affectstream("run", "--audio", wav, "--no-video", "--fast", "--no-transcribe", "--out", out)
    assert r.returncode == 0, r.stderr
    ests = read_estimates(out)
    for d in ests:
        check_estimate(d)

    def voice_at(t0, t1):
        return [d["present"]["voice"] for d in ests if t0 <= d["t"] <= t1]

    assert np.mean(voice_at(0.5, first_len - 0.8)) > 0.6  # speaking
    assert not any(voice_at(first_len + 0.6, first_len + pause - 0.1))  # the pause
    assert np.mean(voice_at(first_len + pause + 0.6, first_len + pause + 2.0)) > 0.6
    assert not any(d["present"]["face"] for d in ests)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--video", "no/such.avi"], "file not found: no/such.avi"),
        (["run", "--camera", "57"], "camera 57 cannot be opened"),
        (["run"], "no input"),
    ],
)
def test_run_errors_are_one_line(args, message):
    r = affectstream(*args, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_corrupt_config_is_one_line(tmp_path, megamind):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("scheduler:\n  rate_hz: [oops\n")
    r = affectstream("run", "--video", megamind, "--config", cfg, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not valid YAML" in lines[0] and "bad.yaml" in lines[0]


def test_bad_config_key_is_named(tmp_path, megamind):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("face:\n  detect_evry: 2\n")
    r = affectstream("run", "--video", megamind, "--config", cfg, timeout=60)
    assert r.returncode == 2 and "face.detect_evry" in r.stderr


@pytest.mark.slow
def test_export_then_run_on_onnxruntime(tmp_path, megamind, exported_dir):
    """`affectstream export --out DIR` (the session's `exported_dir`), then
    `run --backend onnxruntime --onnx-dir DIR`."""
    onnx_dir = exported_dir
    assert (onnx_dir / "face.onnx").is_file() and (onnx_dir / "voice.onnx").is_file()
    out = tmp_path / "est.jsonl"
    r = affectstream(
        "-v",
        "run",
        "--media",
        megamind,
        "--fast",
        "--no-transcribe",
        "--out",
        out,
        "--backend",
        "onnxruntime",
        "--onnx-dir",
        onnx_dir,
    )
    assert r.returncode == 0, r.stderr
    assert "face encoder runs on onnxruntime" in r.stderr
    assert "voice encoder runs on onnxruntime" in r.stderr
    ests = read_estimates(out)
    for d in ests:
        check_estimate(d)
    assert np.mean([d["present"]["face"] for d in ests]) > 0.8
    assert any(d["present"]["voice"] for d in ests)


def test_run_video_at_real_pace_cut_short_by_duration(tmp_path, megamind):
    """`run --video FILE` paces the file in real time; --duration cuts it short."""
    out = tmp_path / "est.jsonl"
    r = affectstream("run", "--video", megamind, "--out", out, "--duration", "1.5")
    assert r.returncode == 0, r.stderr
    ests = read_estimates(out)
    for d in ests:
        check_estimate(d)
    # cut at the first estimate past 1.5 s, and paced: no tick before its slot on the clock
    # (how many ticks came is this machine's figure, not the test's)
    assert ests[-1]["t"] >= 1.5 and all(d["t"] < 1.5 for d in ests[:-1])
    assert all(d["tick"] + d["dropped"]["ticks_skipped"] <= d["t"] * 10 + 1e-6 for d in ests)
    assert any(d["present"]["face"] for d in ests)
