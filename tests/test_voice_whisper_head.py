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
    eval_voice_setup,
    needs_ravdess,
    ravdess_clips,
    require_module,
    utterance_features,
)


@pytest.fixture(scope="module")
def stats():
    return WhisperStats()


@pytest.fixture(scope="module")
def real_features(stats):
    """Whisper statistics of 16 real RAVDESS clips (actors 1 and 2, each emotion once)."""
    return utterance_features(stats, ravdess_clips())


@needs_ravdess
def test_the_statistics_of_real_speech_are_768_finite_repeatable_and_differ(stats):
    from affectstream.models.voice.data import load_audio

    neutral, angry = (load_audio(f) for f in (ravdess_clips()[0], ravdess_clips()[4]))
    s, e = utterance_span(angry)
    a, b = stats(angry[s:e]), stats(angry[s:e])
    assert a.shape == (N_FEATURES,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # per encoder block: 384 means, then 384 standard deviations over time
    assert (a.reshape(4, 2, 384)[:, 1] > 0).all()
    s, e = utterance_span(neutral)
    other = stats(neutral[s:e])
    # the same sentence by the same actor, calm and angry: the statistics move
    assert np.linalg.norm(a - other) > 0.1 * np.linalg.norm(a)


@needs_ravdess
def test_the_numpy_encoder_is_ctranslate2_s_encoder(stats, tmp_path):
    """CTranslate2 gives only the last output; the blocks come from this numpy copy of the
    same encoder, which must agree with CTranslate2 (float32) on that output."""
    import ctranslate2

    from affectstream.models.stt.whisper_model import resolve_model_path
    from affectstream.models.voice.data import load_audio
    from affectstream.models.voice.whisper_stats import read_ct2_encoder

    mel = stats.log_mel(load_audio(ravdess_clips()[4]))
    model = ctranslate2.models.Whisper(resolve_model_path(""), device="cpu", compute_type="float32")
    want = np.asarray(model.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True))[0]
    states = stats.states(mel)
    assert len(states) == 5 and all(s.shape == want.shape for s in states)
    np.testing.assert_allclose(states[-1], want, atol=1e-3 * np.abs(want).max())
    final = WhisperStats(pool="final")
    np.testing.assert_allclose(
        final.encode_pooled(mel), np.concatenate([want.mean(0), want.std(0)]), atol=1e-3
    )
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x06\x00\x00\x00" + b"\x05\x00" + b"Spec\x00")
    with pytest.raises(ValueError, match="not a CTranslate2 Whisper model"):
        read_ct2_encoder(bad)


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


def test_one_head_mixes_by_its_fuse_weight_and_two_by_their_joint_weights():
    from affectstream.models.voice.utterance import fuse_all

    def head(features, fuse, joint):
        n = 88 if features == EGEMAPS else N_FEATURES
        return UtteranceHead(np.zeros(n), np.ones(n), np.zeros((7, n), np.float32),
                             np.zeros(7, np.float32), 30.0, fuse, features=features,
                             joint_weight=joint)  # fmt: skip

    cnn, p1, p2 = (np.eye(7, dtype=np.float32)[[k]] for k in (0, 1, 2))
    eg, wh = head(EGEMAPS, 0.4, 0.3), head(WHISPER, 0.5, 0.2)
    np.testing.assert_allclose(fuse_all(cnn, [(eg, p1), (wh, None)]), 0.6 * cnn + 0.4 * p1)
    np.testing.assert_allclose(fuse_all(cnn, [(eg, None), (wh, p2)]), 0.5 * cnn + 0.5 * p2)
    np.testing.assert_allclose(
        fuse_all(cnn, [(eg, p1), (wh, p2)]), 0.5 * cnn + 0.3 * p1 + 0.2 * p2, rtol=1e-6
    )
    np.testing.assert_array_equal(fuse_all(cnn, [(eg, None)]), cnn)  # nothing read yet
    with pytest.raises(ValueError, match="no joint weight"):
        fuse_all(cnn, [(eg, p1), (head(WHISPER, 0.5, None), p2)])


@needs_ravdess
def test_eval_voice_reads_both_heads_or_the_whisper_head_without_opensmile(
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
    mine = {"meta": meta, "joint_weight": 0.3}
    UtteranceHead(**{**head.__dict__, **mine}).save(companion_path(enc, WHISPER))
    assert main(args) == 0  # the only head beside these weights: read by default
    res = json.loads(out.read_text())
    assert res["utterance_features"] == [WHISPER] and res["utterance_weights"] == {WHISPER: 0.5}
    assert res["clips"]["n"] == res["cnn_path"]["clips"]["n"] == 4
    assert "weights whisper-tiny.en 0.50" in capsys.readouterr().out
    assert main([*args, "--utterance", "none"]) == 0
    assert json.loads(out.read_text())["clips"] == res["cnn_path"]["clips"]
    assert main([*args, "--utterance", "egemaps"]) == 2  # no eGeMAPS head here
    assert "no eGeMAPSv02 head" in capsys.readouterr().err

    # the shipped eGeMAPS head beside it too: with opensmile both heads read, by their joint
    # weights; without it the Whisper head alone, and a warning says why
    shutil.copy(Path(default_weights_path()).with_name("voice.egemaps.npz"),
                companion_path(enc, EGEMAPS))  # fmt: skip
    eg = UtteranceHead.load(companion_path(enc, EGEMAPS))
    UtteranceHead(**{**eg.__dict__, "meta": meta}).save(companion_path(enc, EGEMAPS))
    if egemaps.available():
        assert main(args) == 0
        both = json.loads(out.read_text())
        assert both["utterance_features"] == [EGEMAPS, WHISPER]
        assert both["utterance_weights"] == {EGEMAPS: eg.joint_weight, WHISPER: 0.3}
        assert both["cnn_path"] == res["cnn_path"]
    monkeypatch.setattr(egemaps, "available", lambda: False)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "eGeMAPS head, but it is not used" in err and "the whisper-tiny.en head" in err
    again = json.loads(out.read_text())
    assert again["utterance_features"] == [WHISPER] and again["clips"] == res["clips"]
    assert again["utterance_not_used"] == "opensmile not installed"
    assert main([*args, "--utterance", "both"]) == 2  # eGeMAPS required, cannot read here


@needs_ravdess
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
    run(*fit, "--features", WHISPER, "--joint-weight", "0.3")
    head = load_companion(enc, WHISPER)
    assert head is not None and head.fuse_weight == 0.5 and head.features == WHISPER
    assert head.joint_weight == 0.3
    assert head.meta["train_ravdess_actors"] == [1, 2]  # 17-20 are kept out

    # `mix`: the CNN path with an eGeMAPS head and this one, on the same clips
    require_module("opensmile", "pip install 'affectstream[egemaps]'")
    work_eg = tmp_path / "work-egemaps"
    run("extract", "--data", str(root), "--work", str(work_eg), "--encoders", "B")
    mixed = tmp_path / "mix.json"
    run("mix", "--work", str(work_eg), "--work2", str(work), "--json", str(mixed),
        "--configs", "speaker,speaker_r3_l2_0.03")  # fmt: skip
    r = json.loads(mixed.read_text())
    assert r["features"] == [EGEMAPS, WHISPER] and list(r["folds"]) == ["ravdess 17-20"]
    fold = r["folds"]["ravdess 17-20"]
    assert sum(fold["chosen"]) <= 0.8 + 1e-9 and 0 <= fold["acc"] <= 1
    assert fold["acc"] == max(r["mean"].values())  # one fold: the best of its own grid


def test_the_shipped_whisper_head_reads_the_shipped_encoder():
    """voice.whisper.npz was chosen beside voice.pt (its fusion weight and the CNN path it
    mixes with): if voice.pt changes, refit it with the command in models/cards/voice.md, or
    it is not used."""
    from affectstream.models.voice.encoder import default_weights_path

    enc = default_weights_path()
    head = load_companion(enc, WHISPER)
    assert head is not None, "voice.pt changed since voice.whisper.npz was fitted: refit it"
    assert head.weight.shape == (7, N_FEATURES) and head.fuse_weight == pytest.approx(0.5)
    assert head.meta["config"] == "speaker_r3_l2_0.03"
    eg = load_companion(enc, EGEMAPS)  # read together: CNN path 0.2, eGeMAPS 0.3, Whisper 0.5
    assert head.joint_weight == pytest.approx(0.5) and eg.joint_weight == pytest.approx(0.3)
    assert not set(head.meta["train_ravdess_actors"]) & {17, 18, 19, 20}


@needs_ravdess
def test_the_live_stage_mixes_each_utterance_s_whisper_reading_as_eval_voice_does():
    from affectstream.core.config import Config
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.stt.vad import VoiceActivity
    from affectstream.models.voice.data import load_audio
    from affectstream.models.voice.utterance import fuse_all
    from affectstream.realtime.stages.base import ABSENT
    from affectstream.realtime.stages.voice import VoiceStage
    from affectstream.realtime.stream import voice_utterance_heads

    config = Config()
    assert voice_utterance_heads(config.voice) == ()  # off by default
    config.voice.whisper = True
    assert voice_utterance_heads(config.voice) == (WHISPER,)
    predictor = open_eval_predictor("voice", "onnxruntime", threads=1)
    sr, tick = 16000, 1600
    quiet = np.zeros(sr, np.float32)
    audio = np.concatenate([quiet, load_audio(ravdess_clips(actors=(17,))[4]), quiet])
    ring, plain_ring = SampleRing(30.0, sr), SampleRing(30.0, sr)
    stage = VoiceStage(ring, VoiceActivity(), predictor, utterance=(WHISPER,))
    plain = VoiceStage(plain_ring, VoiceActivity(), predictor)
    mixed = 0
    for i in range(0, len(audio) - tick + 1, tick):
        ring.write(audio[i : i + tick], i)
        plain_ring.write(audio[i : i + tick], i)
        r, cnn = stage.run(i), plain.run(i)
        (reader,) = stage._readers
        if r is not None and r is not ABSENT:
            want = fuse_all(cnn.probs[None], [(reader.head, reader.reading)])[0]
            np.testing.assert_allclose(r.probs, want, rtol=1e-5, atol=1e-6)
            assert r.info["whisper_s"] == reader.reading_s
            mixed += reader.reading is not None
        reader.wait()
    assert mixed >= 5  # read from the utterance's first second on
    assert reader.norm.seconds > 1.0  # the utterance joined the session when it ended


def test_bench_voice_times_the_utterance_heads_features(tmp_path):
    """`affectstream bench voice --utterance`: one row per extractor that runs here and span
    length, printed and in the JSON."""
    from tests.conftest import affectstream

    out = tmp_path / "bench.json"
    r = affectstream("bench", "voice", "--utterance", "--iters", "2", "--no-onnx", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "utterance heads' features" in r.stdout
    rows = json.loads(out.read_text())["utterance_heads"]
    whisper = [row for row in rows if row["features"] == WHISPER]
    assert [row["seconds"] for row in whisper] == [1.0, 2.0, 4.0]
    assert all(row["median_ms"] > 0 and row["cpu_median_ms"] > 0 for row in rows)
