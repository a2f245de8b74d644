"""The JAFFE leave-subject-out script behind the face card (scripts/face_jaffe_cv.py): its
folds hold every subject once, and `score` pools the held-out subjects' crops into the same
figure a plain read of every tracker crop gives (fold models here are the shipped file, so
every keep is that model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
JAFFE = ROOT / ".." / "shared" / "data" / "jaffe"
FER = ROOT / ".." / "shared" / "data" / "fer2013"
SHIPPED = ROOT / "affectstream" / "models" / "weights" / "face.pt"


@pytest.fixture(scope="module")
def cv():
    return load_script("face_jaffe_cv")


def test_folds_cover_every_subject_once(cv):
    from affectstream.models.face.data import load_fer

    subjects = load_fer(JAFFE / "originals.npz", size=None).subjects()
    folds = cv.folds(subjects, 5)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(set(subjects)) and len(flat) == len(set(flat)) == 10
    assert [len(f) for f in folds] == [2] * 5
    with pytest.raises(ValueError, match="cannot make"):
        cv.folds(["KA", "KL"], 5)
    s = cv.spread([0.5, 0.7])
    assert (
        s["mean"] == pytest.approx(0.6)
        and s["min"] == 0.5
        and s["sd"] == pytest.approx(0.1414, abs=1e-3)
    )


def test_score_pools_the_held_out_subjects(cv, tmp_path):
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.face.data import load_fer
    from affectstream.models.face.detect import tracker_crops

    photos = load_fer(JAFFE / "originals.npz", size=None)
    for fold in cv.folds(photos.subjects(), 5):
        cv.fold_path(tmp_path, fold).symlink_to(SHIPPED)
    out = tmp_path / "cv.json"
    assert (
        cv.main(
            [
                "score",
                "--init",
                str(SHIPPED),
                "--work",
                str(tmp_path),
                "--jaffe",
                str(JAFFE),
                "--fer",
                str(FER),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    crops, found = tracker_crops(photos.images)
    probs, _ = open_eval_predictor("face", "torch", weights=SHIPPED).predict(crops)
    direct = float((probs.argmax(1) == photos.labels[found]).mean())
    for k in ("0.0", "0.7", "1.0"):
        assert report["summary"][k]["tracker_pooled"] == pytest.approx(direct, abs=1e-9)
    assert sum(f["0.7"]["n"] for f in report["folds"].values()) == int(found.sum())
    assert 0.6 < report["summary"]["0.7"]["publictest_folds"]["mean"] < 0.75


def test_train_runs_the_shipped_recipe_per_fold(cv, tmp_path, monkeypatch):
    """`train` asks the CLI for one fine-tuning per fold, holding the fold's subjects out, and
    skips a fold whose model exists (the runs resume across sessions)."""
    import subprocess

    from affectstream.cli.main import build_parser

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    cv.fold_path(tmp_path, ("KA", "NA")).write_bytes(b"done")
    args = ["train", "--init", str(SHIPPED), "--work", str(tmp_path), "--jaffe", str(JAFFE)]
    assert cv.main(args) == 0
    assert [c[c.index("--hold-out") + 1] for c in calls] == ["KL,NM", "KM,TM", "KR,UY", "MK,YM"]
    parsed = build_parser().parse_args(calls[0][3:])  # what `python3 -m affectstream` would read
    assert parsed.steps == 1000 and parsed.keep == 0 and parsed.hold_out == "KL,NM"
