"""The text model's leave-one-corpus-out rows: `eval text --goemotions` scores a GoEmotions
split (its single-label comments) and `train text --meld-train none` trains on GoEmotions
alone, refusing what cannot run with the reason."""

from __future__ import annotations

from pathlib import Path

from affectstream.cli.main import main
from affectstream.models.text import data

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MELD_DEV = SHARED / "meld_text" / "dev_sent_emo.csv"


def _small_goemotions(folder: Path, rows: int) -> Path:
    """The real labels file and the first `rows` comments of each real GoEmotions split."""
    src = SHARED / "goemotions" / "ekman"
    folder.mkdir()
    (folder / "labels.txt").write_text((src / "labels.txt").read_text())
    for split in ("train", "test"):
        lines = (src / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[: rows + 1]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_eval_on_goemotions_scores_single_label_comments(tmp_path, capsys):
    """The other corpus of a leave-one-corpus-out table: a comment with several labels has no
    single right answer, so it is counted as skipped, not scored."""
    import json

    go = _small_goemotions(tmp_path / "go", 60)
    expected = [e for e in data.read_goemotions(go, "test") if max(e.target) == 1.0]
    assert 0 < len(expected) < 60
    out = tmp_path / "go.json"
    assert main(["eval", "text", "--goemotions", str(go), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == len(expected)
    assert report["skipped_empty"] == 60 - len(expected)
    assert report["split"] == "test"
    assert "single-label" in capsys.readouterr().out
    assert main(["eval", "text", "--goemotions", str(go), "--split", "nosuch"]) == 2
    assert "GoEmotions split not found" in capsys.readouterr().err


def test_train_on_goemotions_alone(tmp_path, capsys):
    """`--meld-train none`: the GoEmotions-only row of the leave-one-corpus-out table; MELD dev
    is still scored. Without GoEmotions there is nothing to train on, and no MELD-train
    holdout exists to select on: both are refused with the reason."""
    go = _small_goemotions(tmp_path / "go", 40)
    out = tmp_path / "go-only.safetensors"
    common = ["train", "text", "--meld-train", "none", "--meld-dev", str(MELD_DEV)]
    common += ["--epochs", "1", "--limit", "24", "--batch-size", "8", "--out", str(out)]
    assert main([*common, "--goemotions", str(go), "--select-on", "last"]) == 0
    assert out.is_file()
    assert "MELD dev" in capsys.readouterr().out
    assert main([*common, "--goemotions", ""]) == 2
    assert "nothing else to train on" in capsys.readouterr().err
    assert main([*common, "--goemotions", str(go), "--select-on", "holdout"]) == 2
    assert "that set is empty" in capsys.readouterr().err
