"""Voice training across corpora: clips.csv folders, merged caches, balanced draws, room and
codec augmentation, and a leave-one-corpus-out run of `affectstream train voice`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli.main import main
from affectstream.core.labels import LABELS
from affectstream.models.voice.data import DataError, scan

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
EXTRA = SHARED / "speech_extra"
RAVDESS = SHARED / "ravdess_speech"
needs_data = pytest.mark.skipif(
    not (EXTRA / "urdu").is_dir() or not RAVDESS.is_dir(), reason="shared speech corpora absent"
)


def _subset(tmp: Path, corpus: str, per_label: int) -> Path:
    """A copy of `per_label` clips of each label of a speech_extra corpus, with its clips.csv."""
    src = EXTRA / corpus
    with open(src / "clips.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    keep, seen = [], {}
    for r in rows:
        if seen.get(r["label"], 0) < per_label:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            keep.append(r)
    dst = tmp / corpus
    dst.mkdir(parents=True)
    for r in keep:
        shutil.copy(src / r["file"], dst / r["file"])
    with open(dst / "clips.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return dst


@needs_data
def test_scan_reads_clips_csv_with_speakers_unique_across_corpora():
    urdu, emovo = scan(EXTRA / "urdu"), scan(EXTRA / "emovo")
    assert len(urdu) == 400 and len(emovo) == 588
    assert {c.corpus for c in urdu} == {"urdu"} and {c.label for c in urdu} == {
        "angry",
        "happy",
        "neutral",
        "sad",
    }
    speakers = {c.actor for c in urdu} | {c.actor for c in emovo}
    assert len({c.actor for c in emovo}) == 6
    assert min(speakers) >= 1000  # never one of RAVDESS's actors 1-24
    assert not {c.actor for c in urdu} & {c.actor for c in emovo}


def test_scan_names_a_bad_clips_csv(tmp_path):
    (tmp_path / "clips.csv").write_text("file,speaker,label\nx.flac,s1,joyful\n")
    with pytest.raises(DataError, match="unknown label 'joyful'"):
        scan(tmp_path)
    (tmp_path / "clips.csv").write_text("file,label\nx.flac,happy\n")
    with pytest.raises(DataError, match="missing column"):
        scan(tmp_path)
    (tmp_path / "clips.csv").write_text("file,speaker,label\nx.flac,s1,happy\n")
    with pytest.raises(DataError, match="x.flac is not in"):
        scan(tmp_path)


def test_balance_weights_limit_the_largest_corpus_and_speaker():
    from affectstream.models.voice.train import balance_weights

    corpus = np.array(["big"] * 400 + ["small"] * 100)
    actors = np.array([1] * 300 + [2] * 100 + [3] * 100)
    w = balance_weights(corpus, actors, power=0.5)
    np.testing.assert_allclose(w.sum(), 1.0)
    big, small = w[:400].sum(), w[400:].sum()
    np.testing.assert_allclose(big / small, 2.0)  # sqrt(400 / 100)
    np.testing.assert_allclose(w[:300].sum() / w[300:400].sum(), np.sqrt(3.0))
    # power 1 gives back every clip equally
    np.testing.assert_allclose(balance_weights(corpus, actors, 1.0), np.full(500, 1 / 500))


@needs_data
def test_merged_cache_keeps_each_clip_and_room_codec_augmentations(tmp_path):
    import torch

    from affectstream.models.voice.features import mel_centres_hz
    from affectstream.models.voice.train import (
        MelBank,
        add_reverb,
        band_limit,
        build_cache,
        merge_caches,
    )

    a = build_cache(scan(_subset(tmp_path, "urdu", 1)))
    b = build_cache(scan(_subset(tmp_path, "emovo", 1)))
    m = merge_caches([a, b])
    assert len(m["labels"]) == 4 + 7 and list(m["corpus"][:4]) == ["urdu"] * 4
    for k, cache in ((0, a), (4, b)):  # each clip's frames are where its offset says
        o, n = int(m["offsets"][k]), int(m["lengths"][k])
        np.testing.assert_array_equal(
            m["mels"][:, o : o + n], cache["mels"][:, : cache["lengths"][0]]
        )
    bank = MelBank(m)
    gen = torch.Generator().manual_seed(0)
    x = bank.crops(torch.arange(11), 0.0, gen)
    wet = add_reverb(x, bank.mel, 1.0, gen)
    assert wet.shape == x.shape and torch.isfinite(wet).all()
    assert (wet >= x - 1e-4).all()  # a tail only adds energy
    # the tail raises the quiet frames after loud ones: the frame-to-frame dip gets shallower
    assert (wet.diff(dim=2).clamp(max=0).mean() > x.diff(dim=2).clamp(max=0).mean()).item()
    assert torch.equal(add_reverb(x, bank.mel, 0.0, gen), x)
    cut = band_limit(x, bank.mel, 1.0, gen)
    high = torch.as_tensor(mel_centres_hz(bank.mel) > 7000.0)
    low = torch.as_tensor(mel_centres_hz(bank.mel) < 3400.0)
    floor = x.amin(dim=(1, 2), keepdim=True).expand_as(x)
    assert torch.equal(cut[:, high], floor[:, high]) and torch.equal(cut[:, low], x[:, low])


@needs_data
def test_train_cli_leaves_a_corpus_out_and_scores_it(tmp_path):
    urdu = _subset(tmp_path, "urdu", 3)
    ravdess = tmp_path / "ravdess" / "Actor_01"
    ravdess.mkdir(parents=True)
    for e in range(1, 9):
        name = f"03-01-{e:02d}-01-01-01-01.flac"
        shutil.copy(RAVDESS / "Actor_01" / name, ravdess / name)
    out, rep = tmp_path / "v.pt", tmp_path / "r.json"
    shipped = Path(__file__).resolve().parents[1] / "affectstream/models/weights/voice.pt"
    args = ["train", "voice", "--data", str(ravdess.parent), str(urdu), "--recipes", "transfer"]
    args += ["--init", str(shipped), "--balance", "0.5", "--steps", "2", "--test-actors", "19"]
    assert main([*args, "--hold-out-corpus", "urdu", "--out", str(out), "--json", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["train_corpora"] == {"ravdess": 8}  # no urdu clip was trained on
    held = report["held_out_corpus"]
    assert held["classes"] == ["neutral", "happy", "sad", "angry"]
    assert held["clips"]["n"] == 12 and held["clips_own_classes"]["n"] == 12
    # argmax over the corpus's own 4 classes can only be right more often than over all 7
    assert held["clips_own_classes"]["accuracy"] >= held["clips"]["accuracy"]
    assert main([*args, "--hold-out-corpus", "emovo"]) == 2


@needs_data
def test_eval_cli_scores_a_clips_csv_corpus(tmp_path, capsys):
    root = _subset(tmp_path, "urdu", 2)
    out = tmp_path / "e.json"
    assert main(["eval", "voice", "--data", str(root), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["clips"]["n"] == 8 and res["classes"] == [LABELS[i] for i in range(4)]
    assert {r["corpus"] for r in res["predictions"]} == {"urdu"}
    assert "argmax over its 4 classes" in capsys.readouterr().out
