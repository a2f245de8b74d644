"""Voice-emotion model: RAVDESS parsing and splits, front end, shipped weights, CLI commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli import main
from affectstream.labels import LABELS
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
    torch = pytest.importorskip("torch")
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
    from affectstream.models.voice.encoder import VoiceEncoder

    enc = VoiceEncoder.load()
    x = load_audio(RAVDESS / "Actor_18" / "03-01-05-02-01-01-18.flac")
    win = x[8000 : 8000 + enc.window_samples]
    probs, emb = enc.predict(win)
    assert probs.shape == (1, len(LABELS)) and emb.shape == (1, enc.emb_dim)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    batch, _ = enc.predict(np.stack([win, win[::-1].copy()]))
    np.testing.assert_allclose(batch[0], probs[0], atol=1e-5)
    short, _ = enc.predict(win[:1000])  # shorter than the CNN needs: padded, still valid
    assert short.shape == (1, len(LABELS))
    with pytest.raises(ValueError):
        enc.predict(np.full(enc.window_samples, np.nan, dtype=np.float32))


@needs_data
def test_shipped_weights_beat_chance_on_held_out_actors():
    from affectstream.models.voice.encoder import VoiceEncoder
    from affectstream.models.voice.evaluate import evaluate_clips

    enc = VoiceEncoder.load()
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
