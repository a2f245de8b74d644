"""Voice-emotion model: RAVDESS parsing and splits, front end, shipped weights, CLI commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli.main import main
from affectstream.core.labels import LABELS
from affectstream.models.voice.data import (
    DataError,
    kept_segment,
    load_audio,
    parse_name,
    scan,
    speech_span,
    split_by_actor,
    window_starts,
)

RAVDESS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ravdess_speech"
needs_data = pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"{RAVDESS} not present")


def test_parse_name_maps_calm_to_neutral():
    calm = parse_name("Actor_03/03-01-02-02-01-02-03.flac")
    assert (calm.emotion_code, calm.label, calm.actor) == ("02", "neutral", 3)
    assert (calm.intensity, calm.statement, calm.repetition) == (2, 1, 2)
    assert parse_name("03-01-01-01-01-01-12.flac").label == "neutral"
    codes = {
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fearful",
        "07": "disgusted",
        "08": "surprised",
    }
    for code, label in codes.items():
        clip = parse_name(f"03-01-{code}-01-01-01-07.flac")
        assert clip.label == label and LABELS[clip.label_index] == label


@pytest.mark.parametrize(
    "name", ["03-01-09-01-01-01-01.flac", "readme.flac", "03-01-01-01-01-01.flac"]
)
def test_parse_name_rejects_other_names(name):
    with pytest.raises(DataError):
        parse_name(name)


@needs_data
def test_split_by_actor_has_no_speaker_overlap():
    clips = scan(RAVDESS)
    assert len(clips) == 1200
    train, test = split_by_actor(clips, (17, 18, 19, 20))
    assert {c.actor for c in test} == {17, 18, 19, 20}
    assert not {c.actor for c in train} & {c.actor for c in test}
    assert len(train) + len(test) == len(clips)
    # 60 clips per actor: 12 neutral (4 neutral + 8 calm), 8 of each other emotion
    per_label = np.bincount([c.label_index for c in test], minlength=len(LABELS))
    assert per_label.tolist() == [48] + [32] * 6


@needs_data
def test_speech_span_trims_silence_of_a_real_clip():
    x = load_audio(RAVDESS / "Actor_01" / "03-01-05-02-01-01-01.flac")
    s, e = speech_span(x)
    assert 0 < s < e < len(x)
    inside = np.sqrt(np.mean(x[s:e] ** 2))
    outside = np.sqrt(np.mean(np.concatenate([x[:s], x[e:]]) ** 2))
    assert inside > 10 * outside
    ks, ke = kept_segment(x, 32000)
    assert ks <= s and ke >= e and ke - ks >= 32000


def test_window_starts_cover_the_end():
    assert window_starts(100, 198, 50) == [0]
    assert window_starts(198, 198, 50) == [0]
    assert window_starts(300, 198, 50) == [0, 50, 100, 102]
    assert window_starts(298, 198, 50) == [0, 50, 100]


def test_logmel_matches_numpy_stft_and_crops_are_slices():
    import torch

    from affectstream.models.voice.features import LogMel, MelOptions, mel_filterbank

    opt = MelOptions()
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    with torch.inference_mode():
        full = LogMel(opt)(torch.from_numpy(x)[None])[0].numpy()
        crop = LogMel(opt)(torch.from_numpy(x[160 * 7 : 160 * 7 + opt.samples(40)])[None])[
            0
        ].numpy()
    assert full.shape == (opt.n_mels, opt.frames(16000))
    np.testing.assert_allclose(crop, full[:, 7:47], atol=1e-4)
    n = np.arange(opt.n_fft)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / opt.n_fft)
    frames = np.stack(
        [x[i * opt.hop : i * opt.hop + opt.n_fft] * win for i in range(full.shape[1])]
    )
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    ref = np.log(np.maximum(power @ mel_filterbank(opt).T, opt.floor)).T
    np.testing.assert_allclose(full, ref, atol=2e-3)


def _copy_clips(tmp: Path, names: list[str]) -> Path:
    root = tmp / "ravdess"
    for name in names:
        actor = parse_name(name).actor
        dst = root / f"Actor_{actor:02d}"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(RAVDESS / f"Actor_{actor:02d}" / name, dst / name)
    return root


@needs_data
def test_shipped_encoder_predicts_windows():
    from affectstream.export.predictors import open_eval_predictor

    enc = open_eval_predictor("voice", "torch")
    x = load_audio(RAVDESS / "Actor_18" / "03-01-05-02-01-01-18.flac")
    win = x[8000 : 8000 + enc.window_samples]
    probs, emb = enc.predict(win)
    assert probs.shape == (1, len(LABELS)) and emb.shape == (1, 128)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    batch, _ = enc.predict(np.stack([win, win[::-1].copy()]))
    np.testing.assert_allclose(batch[0], probs[0], atol=1e-5)
    short, _ = enc.predict(win[:1000])  # shorter than the CNN needs: padded, still valid
    assert short.shape == (1, len(LABELS))
    with pytest.raises(ValueError):
        enc.predict(np.full(enc.window_samples, np.nan, dtype=np.float32))


@needs_data
def test_shipped_weights_beat_chance_on_held_out_actors():
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.evaluate import evaluate_clips

    enc = open_eval_predictor("voice", "torch")
    held_out = set(enc.meta["test_actors"])
    assert held_out and not held_out & set(enc.meta["train_actors"])
    # strong-intensity clips of statement 1, repetition 1, of every held-out actor: 7-8 per actor
    clips = [
        c
        for c in scan(RAVDESS)
        if c.actor in held_out
        and c.statement == 1
        and c.repetition == 1
        and (c.intensity == 2 or c.emotion_code == "01")
    ]
    res = evaluate_clips(enc, clips)
    # chance is 1/7; always answering the most frequent class gives 2/8 here
    assert res["clips"]["n"] == len(clips) >= 28
    assert res["clips"]["accuracy"] > 0.45


@needs_data
def test_eval_cli_on_a_folder_of_real_files(tmp_path, capsys):
    names = [
        "03-01-01-01-01-01-19.flac",
        "03-01-03-02-01-01-19.flac",
        "03-01-05-02-01-01-20.flac",
        "03-01-04-02-02-01-20.flac",
    ]
    root = _copy_clips(tmp_path, names)
    out = tmp_path / "res.json"
    assert main(["eval", "voice", "--ravdess", str(root), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["clips"]["n"] == 4 and res["actors"] == [19, 20]
    assert sorted(p["file"] for p in res["predictions"]) == sorted(names)
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "recall" in printed


def test_eval_cli_rejects_a_folder_without_audio(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert main(["eval", "voice", "--ravdess", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no RAVDESS" in err and len(err.strip().splitlines()) == 1


@needs_data
def test_eval_cli_names_a_corrupt_file(tmp_path, capsys):
    root = _copy_clips(tmp_path, ["03-01-01-01-01-01-19.flac"])
    bad = root / "Actor_19" / "03-01-05-01-01-01-19.flac"
    bad.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    assert main(["eval", "voice", "--ravdess", str(root)]) == 2
    err = capsys.readouterr().err
    assert bad.name in err and "cannot decode" in err and len(err.strip().splitlines()) == 1


def _tiny_cache(tmp_path):
    """Log-mels of 3 actors x 7 clips (one per label), built by the training code itself."""
    from affectstream.models.voice.train import build_cache

    names = [
        f"03-01-{e:02d}-0{1 + (e > 1)}-01-01-{a:02d}.flac" for a in (1, 2, 19) for e in range(2, 9)
    ]
    root = _copy_clips(tmp_path, names)
    return root, build_cache(scan(root))


@needs_data
def test_crops_and_augmentations_on_real_log_mels(tmp_path):
    import torch

    from affectstream.models.voice.train import MelBank, Recipe, spec_augment, warp_mel

    _, cache = _tiny_cache(tmp_path)
    assert cache["lengths"].min() >= 198 and len(cache["labels"]) == 21
    bank = MelBank(cache)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(21)
    x = bank.crops(idx, 0.0, gen)
    assert x.shape == (21, 64, bank.win)
    # without stretch, a crop starts at a random fractional frame: elementwise it lies between
    # two consecutive slices of its own clip's frames
    for i in range(21):
        o, n = int(cache["offsets"][i]), int(cache["lengths"][i])
        clip = torch.from_numpy(cache["mels"][:, o : o + n].astype(np.float32))
        ok = False
        for s in range(n - bank.win + 1):
            a, b = (
                clip[:, s : s + bank.win],
                clip[:, min(s + 1, n - bank.win) : min(s + 1, n - bank.win) + bank.win],
            )
            if bool(
                ((x[i] >= torch.minimum(a, b) - 1e-4) & (x[i] <= torch.maximum(a, b) + 1e-4)).all()
            ):
                ok = True
                break
        assert ok, f"crop {i} does not come from its clip"
    other = torch.from_numpy(cache["mels"][:, : bank.win].astype(np.float32))
    assert not torch.allclose(x[5], other, atol=1e-2)
    assert torch.equal(warp_mel(x, 0.0, gen), x)
    masked = spec_augment(x, Recipe(time_masks=1, time_mask_max=20, freq_masks=0), gen)
    changed = (masked != x).any(dim=1).sum(dim=1)  # masked frames per example
    assert changed.max() <= 20 and changed.sum() > 0


@needs_data
def test_train_cli_writes_loadable_weights_and_report(tmp_path):
    root, _ = _tiny_cache(tmp_path)
    out, rep = tmp_path / "v.pt", tmp_path / "train.json"
    args = ["train", "voice", "--data", str(root), "--test-actors", "19", "--epochs", "1"]
    assert main([*args, "--out", str(out), "--json", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["train_actors"] == [1, 2] and report["test_actors"] == [19]
    assert report["test"]["clips"]["n"] == 7
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.train import keep_members

    enc = open_eval_predictor("voice", "torch", weights=out)
    assert enc.meta["train_actors"] == [1, 2]
    probs, emb = enc.predict(np.zeros(enc.window_samples, dtype=np.float32))
    assert probs.shape == (1, 7) and emb.shape == (1, 128)
    with pytest.raises(ValueError):
        keep_members(out, tmp_path / "v2.pt", 2)


def test_train_cli_rejects_overlapping_actor_sets(capsys):
    args = ["train", "voice", "--val-actors", "17,3", "--test-actors", "17,18"]
    assert main(args) == 2
    assert "overlap" in capsys.readouterr().err


def test_bench_rows_and_onnx_parity(tmp_path):
    from affectstream.bench.voice import bench_encoder

    rows = bench_encoder(threads=1, iters=5)
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    assert rows[1]["max_abs_diff"] < 1e-4
    assert all(r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] for r in rows)


def test_ensemble_weights_load_by_name_and_agree_in_shape():
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.encoder import VoiceEncoder

    one, three = VoiceEncoder.load(), VoiceEncoder.load("voice.ensemble3.pt")
    assert (len(one.model.members), len(three.model.members)) == (1, 3)
    assert three.emb_dim == 3 * one.emb_dim and three.window_samples == one.window_samples
    p_one = open_eval_predictor("voice", "torch")
    p_three = open_eval_predictor("voice", "torch", weights="voice.ensemble3.pt")
    assert p_three.window_samples == p_one.window_samples == one.window_samples
    x = np.random.default_rng(0).standard_normal((2, one.window_samples)).astype(np.float32) * 0.1
    p1, _ = p_one.predict(x)
    p3, e3 = p_three.predict(x)
    assert p3.shape == p1.shape and e3.shape == (2, three.emb_dim)
    with pytest.raises(FileNotFoundError):
        VoiceEncoder.load("no-such-voice-weights.pt")
    with pytest.raises(FileNotFoundError):
        open_eval_predictor("voice", "torch", weights="no-such-voice-weights.pt")


def test_one_minimum_length_for_predictor_encoder_and_registry():
    from affectstream.export import registry
    from affectstream.models.voice.encoder import VoiceEncoder
    from affectstream.models.voice.features import MelOptions
    from affectstream.models.voice.predictor import MIN_SAMPLES, to_input

    assert MIN_SAMPLES == MelOptions().samples(16) == 2800
    assert VoiceEncoder.load().min_samples == MIN_SAMPLES
    assert registry.get("voice").samples.min == MIN_SAMPLES
    x = to_input(np.ones(1000, np.float32))
    assert x.shape == (1, MIN_SAMPLES) and x[0, : MIN_SAMPLES - 1000].sum() == 0


@needs_data
def test_load_audio_resamples_other_rates(tmp_path):
    import soundfile as sf

    x = load_audio(RAVDESS / "Actor_01" / "03-01-01-01-01-01-01.flac")
    x48 = np.interp(np.arange(len(x) * 3) / 3, np.arange(len(x)), x).astype(np.float32)
    sf.write(tmp_path / "03-01-01-01-01-01-01.wav", np.stack([x48, x48], axis=1), 48000)
    y = load_audio(tmp_path / "03-01-01-01-01-01-01.wav")
    assert abs(len(y) - len(x)) <= 2
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.99
