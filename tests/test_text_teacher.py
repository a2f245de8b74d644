"""Distilling a teacher into the text model (`train text --teacher`): a teacher file is read
and checked, each MELD-train target becomes `(1 - w) * label + w * teacher`, a teacher that
lacks an utterance stops the run with a message naming it (the mpnet probe's `teacher` step,
tests/test_text_mpnet_probe.py, writes such files)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli.main import main
from affectstream.core.labels import LABELS
from affectstream.models.text import data

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MELD_TRAIN = SHARED / "meld_text" / "train_sent_emo.csv"
MELD_DEV = SHARED / "meld_text" / "dev_sent_emo.csv"


def _head_of_meld(path: Path, rows: int, out: Path) -> Path:
    """The first `rows` rows of a real MELD CSV, as a small training file."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        lines = list(csv.reader(f))[: rows + 1]
    with out.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(lines)
    return out


def _teacher_file(examples: list[data.TextExample], probs: np.ndarray, out: Path) -> Path:
    np.savez(
        out,
        groups=np.array([e.group for e in examples]),
        texts=np.array([e.text for e in examples]),
        probs=probs.astype(np.float32),
    )
    return out


def test_targets_are_the_label_mixed_with_the_teacher(tmp_path):
    meld = data.read_meld(MELD_DEV, 0)[:50]
    probs = np.random.default_rng(0).dirichlet(np.ones(len(LABELS)), len(meld))
    teacher = data.read_teacher(_teacher_file(meld, probs, tmp_path / "t.npz"))
    mixed = data.with_teacher(meld, teacher, 0.3)
    for e, m, p in zip(meld, mixed, probs, strict=True):
        assert (m.text, m.group, m.label) == (e.text, e.group, e.label)
        np.testing.assert_allclose(m.target, 0.7 * np.asarray(e.target) + 0.3 * p, atol=1e-6)
    assert data.with_teacher(meld, teacher, 0.0)[0].target == meld[0].target


def test_a_teacher_must_read_every_utterance(tmp_path):
    meld = data.read_meld(MELD_DEV, 0)[:20]
    probs = np.full((19, len(LABELS)), 1 / len(LABELS))
    teacher = data.read_teacher(_teacher_file(meld[:19], probs, tmp_path / "t.npz"))
    with pytest.raises(data.DataError, match="teacher has no reading"):
        data.with_teacher(meld, teacher, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        data.with_teacher(meld[:19], teacher, 1.5)


@pytest.mark.parametrize(
    "arrays, problem",
    [
        ({"texts": np.array(["a"]), "probs": np.ones((1, 7)) / 7}, "missing groups"),
        (
            {"groups": np.array(["1"]), "texts": np.array(["a"]), "probs": np.ones((1, 5)) / 5},
            "probs must be",
        ),
        (
            {"groups": np.array(["1"]), "texts": np.array(["a"]), "probs": np.ones((1, 7))},
            "distribution",
        ),
    ],
)
def test_a_malformed_teacher_file_is_named(tmp_path, arrays, problem):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=problem):
        data.read_teacher(path)
    with pytest.raises(data.DataError, match="not found"):
        data.read_teacher(tmp_path / "absent.npz")


def _train_args(meld: Path, teacher: Path, out: Path) -> list[str]:
    from affectstream.models.text.net import default_weights_path

    return [
        "train",
        "text",
        "--init",
        str(default_weights_path()),
        "--goemotions",
        "",
        "--meld-train",
        str(meld),
        "--meld-dev",
        str(MELD_DEV),
        "--teacher",
        str(teacher),
        "--teacher-weight",
        "0.5",
        "--epochs",
        "1",
        "--warmup",
        "0",
        "--limit",
        "24",
        "--batch-size",
        "8",
        "--holdout-fraction",
        "0",
        "--select-on",
        "last",
        "--out",
        str(out),
    ]


def test_train_cli_distils_and_names_a_missing_utterance(tmp_path, capsys):
    meld_csv = _head_of_meld(MELD_TRAIN, 40, tmp_path / "meld40.csv")
    meld = data.read_meld(meld_csv, 0)
    probs = np.random.default_rng(1).dirichlet(np.ones(len(LABELS)), len(meld))
    teacher = _teacher_file(meld, probs, tmp_path / "teacher.npz")
    out = tmp_path / "distilled.safetensors"
    assert main(_train_args(meld_csv, teacher, out)) == 0
    from affectstream.models.text.net import load_net

    _, info = load_net(out)
    assert info["options"]["teacher"] == str(teacher)
    assert info["options"]["teacher_weight"] == 0.5

    short = _teacher_file(meld[1:], probs[1:], tmp_path / "short.npz")
    assert main(_train_args(meld_csv, short, tmp_path / "x.safetensors")) == 2
    assert "teacher has no reading" in capsys.readouterr().err
