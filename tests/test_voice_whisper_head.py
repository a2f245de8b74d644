"""The Whisper-encoder utterance head (models/voice/whisper_stats.py, utterance.py): the
transcriber's real whisper tiny.en on real speech, and `eval voice` choosing its head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectstream.models.voice.utterance import (
    EGEMAPS,
    WHISPER,
    UtteranceHead,
    companion_path,
    fit_utterance_head,
    load_companion,
    load_companions,
    utterance_span,
)
from affectstream.models.voice.whisper_stats import N_FEATURES, WhisperStats
from tests.conftest import (
    RAVDESS_SPEECH,
    eval_voice_setup,
    ravdess_clips,
    utterance_features,
)

needs_data = pytest.mark.skipif(not RAVDESS_SPEECH.is_dir(), reason="no RAVDESS here")


@pytest.fixture(scope="module")
def stats():
    return WhisperStats()


@pytest.fixture(scope="module")
def real_features(stats):
    """Whisper statistics of 16 real RAVDESS clips (actors 1 and 2, each emotion once)."""
    return utterance_features(stats, ravdess_clips())


@needs_data
def test_the_statistics_of_real_speech_are_768_finite_repeatable_and_differ(stats):
    from affectstream.models.voice.data import load_audio

    neutral, angry = (load_audio(f) for f in (ravdess_clips()[0], ravdess_clips()[4]))
    s, e = utterance_span(angry)
    a, b = stats(angry[s:e]), stats(angry[s:e])
    assert a.shape == (N_FEATURES,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert (a[384:] > 0).all()  # the second half is a standard deviation over time
    s, e = utterance_span(neutral)
    other = stats(neutral[s:e])
    # the same sentence by the same actor, calm and angry: the statistics move
    assert np.linalg.norm(a - other) > 0.1 * np.linalg.norm(a)


def test_silence_a_short_span_and_bad_samples(stats):
    for x in (np.zeros(16000, np.float32), np.zeros(100, np.float32)):
        f = stats(x)
        assert f.shape == (N_FEATURES,) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        stats(np.full(8000, np.nan, np.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        WhisperStats(sample_rate=8000)


def test_a_whisper_head_file_says_its_features_and_is_found_beside_its_encoder(tmp_path):
    from affectstream.models.voice.session import file_sha256

    rng = np.random.default_rng(0)
    enc = tmp_path / "v.pt"
    enc.write_bytes(b"weights")
    head = UtteranceHead(
        rng.standard_normal(N_FEATURES), np.ones(N_FEATURES),
        rng.standard_normal((7, N_FEATURES)).astype(np.float32), np.zeros(7, np.float32),
        30.0, 0.5, meta={"encoder_sha256": file_sha256(enc)}, features=WHISPER,
    )  # fmt: skip
    assert companion_path(enc, WHISPER).name == "v.whisper.npz"
    assert load_companions(enc) == {}
    head.save(companion_path(enc, WHISPER))
    back = load_companions(enc)
    assert set(back) == {WHISPER} and back[WHISPER].features == WHISPER
    np.testing.assert_array_equal(back[WHISPER].weight, head.weight)
    # a whisper head saved where an eGeMAPS head belongs is refused, naming both
    shutil.copy(companion_path(enc, WHISPER), companion_path(enc, EGEMAPS))
    with pytest.raises(ValueError, match="a head of whisper-tiny.en, not of eGeMAPSv02"):
        load_companion(enc, EGEMAPS)


@needs_data
def test_eval_voice_falls_back_to_the_whisper_head_without_opensmile(
    tmp_path, real_features, capsys, monkeypatch
):
    from affectstream.cli.main import main
    from affectstream.models.voice import egemaps
    from affectstream.models.voice.encoder import default_weights_path
    from affectstream.models.voice.session import file_sha256

    feats, y, spk, sec = real_features  # actors 1 and 2
    enc, args, out = eval_voice_setup(tmp_path)
    head = fit_utterance_head(feats, y, spk, sec, strength_s=5.0, fuse_weight=0.5,
                              features=WHISPER)  # fmt: skip
    meta = {"encoder_sha256": file_sha256(enc)}
    UtteranceHead(**{**head.__dict__, "meta": meta}).save(companion_path(enc, WHISPER))
    assert main(args) == 0  # the only head beside these weights: read by default
    res = json.loads(out.read_text())
    assert res["utterance_features"] == WHISPER and res["utterance_fuse_weight"] == 0.5
    assert res["clips"]["n"] == res["cnn_path"]["clips"]["n"] == 4
    assert "whisper-tiny.en of each clip fused in" in capsys.readouterr().out
    assert main([*args, "--utterance", "none"]) == 0
    assert json.loads(out.read_text())["clips"] == res["cnn_path"]["clips"]
    assert main([*args, "--utterance", "egemaps"]) == 2  # no eGeMAPS head here
    assert "no eGeMAPSv02 head" in capsys.readouterr().err

    # with an eGeMAPS head beside it too and no opensmile: the Whisper head reads, and a
    # warning says why the eGeMAPS head did not
    shutil.copy(Path(default_weights_path()).with_name("voice.egemaps.npz"),
                companion_path(enc, EGEMAPS))  # fmt: skip
    eg = UtteranceHead.load(companion_path(enc, EGEMAPS))
    UtteranceHead(**{**eg.__dict__, "meta": meta}).save(companion_path(enc, EGEMAPS))
    monkeypatch.setattr(egemaps, "available", lambda: False)
    capsys.readouterr()
    assert main(args) == 0
    assert "the Whisper-encoder head reads instead" in capsys.readouterr().err
    again = json.loads(out.read_text())
    assert again["utterance_features"] == WHISPER and again["clips"] == res["clips"]
    assert again["utterance_not_used"] == "opensmile not installed"


@needs_data
def test_the_cv_script_caches_whisper_statistics_and_fits_a_whisper_head(tmp_path):
    """scripts/voice_egemaps_cv.py with `--feature-set whisper-tiny.en`: extract, cv, fit on
    24 real clips of four actors; the head lands in <encoder>.whisper.npz."""
    import subprocess
    import sys

    from affectstream.models.voice.encoder import default_weights_path

    root = tmp_path / "ravdess"
    for f in ravdess_clips(actors=(1, 2, 17, 18), emotions=(1, 3, 4, 5, 7, 8)):
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
    script = Path(__file__).resolve().parents[1] / "scripts" / "voice_egemaps_cv.py"
    work = tmp_path / "work"

    def run(*args):
        subprocess.run([sys.executable, str(script), *args], check=True, timeout=900)

    run("extract", "--data", str(root), "--work", str(work), "--encoders", "B",
        "--feature-set", WHISPER)  # fmt: skip
    with np.load(work / "ravdess.npz") as z:
        assert z["feat"].shape == (24, N_FEATURES) and str(z["feature_set"]) == WHISPER
    report = tmp_path / "cv.json"
    run("cv", "--work", str(work), "--configs", "speaker_r3_l2_0.03", "--json", str(report))
    folds = json.loads(report.read_text())["egemaps_alone"]["speaker_r3_l2_0.03"]
    assert sum(v["n"] for v in folds.values()) == 24
    enc = tmp_path / "enc" / "v.pt"
    enc.parent.mkdir()
    shutil.copy(default_weights_path(), enc)
    fit = ["fit", "--work", str(work), "--config", "speaker_r3_l2_0.03", "--fuse-weight", "0.5",
           "--encoder", str(enc)]  # fmt: skip
    with pytest.raises(subprocess.CalledProcessError):
        run(*fit)  # the cache holds Whisper statistics, not the default eGeMAPS
    run(*fit, "--features", WHISPER)
    head = load_companion(enc, WHISPER)
    assert head is not None and head.fuse_weight == 0.5 and head.features == WHISPER
    assert head.meta["train_ravdess_actors"] == [1, 2]  # 17-20 are kept out
