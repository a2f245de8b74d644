"""The eGeMAPS utterance head (models/voice/egemaps.py, utterance.py): real openSMILE on real
speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectstream.models.voice.egemaps import N_FEATURES
from affectstream.models.voice.utterance import (
    UtteranceHead,
    companion_path,
    fit_utterance_head,
    load_companion,
    utterance_span,
)
from tests.conftest import (
    eval_voice_setup,
    needs_ravdess,
    ravdess_clips,
    require_module,
    utterance_features,
)


@pytest.fixture(scope="module")
def extractor():
    require_module("opensmile", "pip install 'affectstream[egemaps]'")
    from affectstream.models.voice.egemaps import EgemapsExtractor

    return EgemapsExtractor()


@pytest.fixture(scope="module")
def real_features(extractor):
    """eGeMAPS of 16 real RAVDESS clips (actors 1 and 2, each emotion once), with labels,
    speakers and seconds of speech."""
    return utterance_features(extractor, ravdess_clips())


@needs_ravdess
def test_the_functionals_of_real_speech_are_88_finite_and_repeatable(extractor):
    from affectstream.models.voice.data import load_audio

    x = load_audio(ravdess_clips()[4])  # actor 1, angry
    s, e = utterance_span(x)
    assert 0 <= s < e <= len(x) and e - s >= 8000
    a, b = extractor(x[s:e]), extractor(x[s:e])
    assert a.shape == (N_FEATURES,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert len(extractor.names) == N_FEATURES
    assert extractor.names[0].startswith("F0semitone")
    # pitch of a voiced utterance: a mean F0 between 27.5 Hz * 2^(20/12) and * 2^(50/12)
    assert 20 < a[0] < 50
    # louder speech has a larger mean loudness (eGeMAPS's loudness_sma3_amean)
    i = extractor.names.index("loudness_sma3_amean")
    assert extractor(2 * x[s:e])[i] > a[i]


def test_silence_and_a_too_short_span_still_give_88_finite_numbers(extractor):
    for x in (np.zeros(16000, np.float32), np.zeros(100, np.float32)):
        f = extractor(x)
        assert f.shape == (N_FEATURES,) and np.isfinite(f).all()


@needs_ravdess
@pytest.mark.parametrize("mode", ["sessions", "speaker", "none"])
def test_a_head_fitted_on_real_features_reads_its_trainingravdess_clips(real_features, mode):
    feats, y, spk, sec = real_features
    head = fit_utterance_head(feats, y, spk, sec, strength_s=5.0, mode=mode, l2=1e-4)
    assert head.weight.shape == (7, N_FEATURES) and head.meta["mode"] == mode
    norm = head.new_session() if mode != "none" else None
    p = np.concatenate([head.step(norm, f, s) for f, s in zip(feats, sec, strict=True)])
    assert p.shape == (16, 7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    # 16 clips, 88 features, weak regularisation: the head fits most of its own clips
    assert (p.argmax(axis=1) == y).mean() >= 0.75
    if norm is not None:
        assert norm.seconds == pytest.approx(sec.sum())


def test_the_session_moves_the_reading_and_a_new_session_starts_from_training():
    rng = np.random.default_rng(0)
    head = UtteranceHead(
        feat_mean=rng.standard_normal(N_FEATURES),
        feat_std=rng.uniform(0.5, 2, N_FEATURES),
        weight=rng.standard_normal((7, N_FEATURES)).astype(np.float32),
        bias=np.zeros(7, np.float32),
        strength_s=10.0,
        fuse_weight=0.25,
    )
    f = head.feat_mean + 3 * head.feat_std  # a speaker far from the training mean
    norm = head.new_session()
    first = head.step(norm, f, 1.0)
    for _ in range(50):
        later = head.step(norm, f, 2.0)
    assert not np.allclose(first, later)  # the speaker's own statistics took over
    np.testing.assert_allclose(head.step(head.new_session(), f, 1.0), first, rtol=1e-6)
    cnn = np.eye(7, dtype=np.float32)[[3]]
    fused = head.fuse(cnn, later)
    np.testing.assert_allclose(fused, 0.75 * cnn + 0.25 * later, rtol=1e-6)
    np.testing.assert_array_equal(head.fuse(cnn, None), cnn)  # no utterance read yet


def test_the_head_file_round_trips_and_is_tied_to_its_encoder(tmp_path):
    from affectstream.models.voice.session import file_sha256

    rng = np.random.default_rng(1)
    enc = tmp_path / "v.pt"
    enc.write_bytes(b"weights")
    head = UtteranceHead(
        rng.standard_normal(N_FEATURES),
        np.ones(N_FEATURES),
        rng.standard_normal((7, N_FEATURES)).astype(np.float32),
        np.zeros(7, np.float32),
        30.0,
        0.4,
        meta={"encoder_sha256": file_sha256(enc)},
    )
    assert companion_path(enc).name == "v.egemaps.npz"
    assert load_companion(enc) is None
    head.save(companion_path(enc))
    back = load_companion(enc)
    assert back is not None and back.fuse_weight == 0.4 and back.strength_s == 30.0
    np.testing.assert_array_equal(back.weight, head.weight)
    enc.write_bytes(b"other weights")
    assert load_companion(enc) is None  # fitted beside another encoder: not used
    with pytest.raises(ValueError, match="not an utterance head"):
        UtteranceHead.load(enc)
    # a head of another feature set (the ComParE comparison) cannot read eGeMAPS features
    other = UtteranceHead(np.zeros(10), np.ones(10), np.zeros((7, 10), np.float32),
                        np.zeros(7, np.float32), 30.0)
    assert other.n_features == 10 and other.probs(np.zeros(10)).shape == (1, 7)
    other.save(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not a head of the 88 eGeMAPSv02 features"):
        UtteranceHead.load(tmp_path / "other.npz")


@needs_ravdess
def test_eval_voice_fuses_each_clip_s_egemaps_per_speaker_session(
    tmp_path, real_features, capsys, monkeypatch
):
    import json

    from affectstream.cli.main import main
    from affectstream.models.voice.session import file_sha256

    feats, y, spk, sec = real_features  # actors 1 and 2
    enc, args, out = eval_voice_setup(tmp_path)
    head = fit_utterance_head(feats, y, spk, sec, strength_s=5.0, fuse_weight=0.3)
    UtteranceHead(**{**head.__dict__, "meta": {"encoder_sha256": file_sha256(enc)}}).save(
        companion_path(enc)
    )
    assert main([*args, "--utterance", "egemaps"]) == 0
    res = json.loads(out.read_text())
    assert res["utterance_features"] == ["eGeMAPSv02"]
    assert res["utterance_weights"] == {"eGeMAPSv02": pytest.approx(0.3)}
    assert res["clips"]["n"] == res["cnn_path"]["clips"]["n"] == 4
    assert "weights eGeMAPSv02 0.30" in capsys.readouterr().out
    assert main(args) == 0  # by default the head beside the weights is used
    assert json.loads(out.read_text())["clips"] == res["clips"]
    assert main([*args, "--utterance", "none"]) == 0  # the CNN path alone, the same figures
    plain = json.loads(out.read_text())
    assert plain["utterance_features"] == [] and plain["clips"] == res["cnn_path"]["clips"]
    assert plain["utterance_not_used"] == "--utterance none" and "utterance_not_used" not in res

    # without opensmile (and no Whisper head beside these weights): a warning names the
    # missing package, the CNN path is scored
    from affectstream.models.voice import egemaps

    capsys.readouterr()
    monkeypatch.setattr(egemaps, "available", lambda: False)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "eGeMAPS head, but it is not used" in err and "affectstream[egemaps]" in err
    skipped = json.loads(out.read_text())
    assert skipped["clips"] == res["cnn_path"]["clips"]
    assert skipped["utterance_not_used"] == "opensmile not installed"
    assert main([*args, "--utterance", "egemaps"]) == 2  # required, not installed: usage error
    assert "opensmile" in capsys.readouterr().err


@needs_ravdess
def test_the_cv_script_caches_features_and_scores_grouped_folds(tmp_path):
    """scripts/voice_egemaps_cv.py end to end on 24 real clips of four actors: extract, cv,
    fit; the fitted head is found beside its encoder."""
    import json
    import shutil
    import subprocess
    import sys

    require_module("opensmile", "pip install 'affectstream[egemaps]'")
    root = tmp_path / "ravdess"
    for f in ravdess_clips(actors=(1, 2, 17, 18), emotions=(1, 3, 4, 5, 7, 8)):
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
    script = Path(__file__).resolve().parents[1] / "scripts" / "voice_egemaps_cv.py"
    work = tmp_path / "work"

    def run(*args):
        subprocess.run([sys.executable, str(script), *args], check=True, timeout=900)

    run("extract", "--data", str(root), "--work", str(work), "--encoders", "B")
    with np.load(work / "ravdess.npz") as z:
        assert z["feat"].shape == (24, N_FEATURES) and len(z["label"]) == 24
        assert "B_p" in z.files and "A_p" not in z.files
        assert len(z["B_p"]) == int(z["nwin"].sum()) + 24  # sliding windows + a centre each
    report = tmp_path / "cv.json"
    run("cv", "--work", str(work), "--configs", "speaker", "--json", str(report))
    r = json.loads(report.read_text())
    folds = r["egemaps_alone"]["speaker"]
    assert set(folds) == {"ravdess 1,6,11,16", "ravdess 2,7,12,17", "ravdess 3,8,13,18"}
    assert sum(v["n"] for v in folds.values()) == 24
    assert set(r["fusion"]["speaker"]) == {"ravdess 17-20 / B"}  # A was not run
    fused = r["fusion"]["speaker"]["ravdess 17-20 / B"]["shipped"]
    assert set(fused) == {str(round(0.1 * i, 1)) for i in range(11)}
    assert all(0.0 <= v <= 1.0 for v in fused.values())
    enc = tmp_path / "enc" / "v.pt"
    enc.parent.mkdir()
    from affectstream.models.voice.encoder import default_weights_path

    shutil.copy(default_weights_path(), enc)
    run("fit", "--work", str(work), "--config", "speaker", "--fuse-weight", "0.4",
        "--encoder", str(enc))  # fmt: skip
    head = load_companion(enc)
    assert head is not None and head.fuse_weight == 0.4
    assert head.meta["train_ravdess_actors"] == [1, 2]  # 17-20 are kept out


def test_the_shipped_egemaps_head_reads_the_shipped_encoder():
    """voice.egemaps.npz was chosen beside voice.pt (its fusion weight and the CNN path it
    mixes with): if voice.pt changes, refit it with the command in models/cards/voice.md, or
    it is not used."""
    from affectstream.models.voice.encoder import default_weights_path

    enc = default_weights_path()
    assert companion_path(enc).is_file()
    head = load_companion(enc)
    assert head is not None, "voice.pt changed since voice.egemaps.npz was fitted: refit it"
    assert head.weight.shape == (7, N_FEATURES) and head.fuse_weight == pytest.approx(0.4)
    assert head.meta["config"] == "speaker_r3" and 17 not in head.meta["train_ravdess_actors"]
