"""Text-emotion model: label maps, MELD/GoEmotions parsing, tokenizer layout, shipped weights
on real MELD dev utterances, and the `eval text` / `bench text` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli.main import main
from affectstream.core.labels import LABELS
from affectstream.models.text.data import (
    GOEMOTIONS_EKMAN_TO_COMMON,
    MELD_TO_COMMON,
    DataError,
    normalise_text,
    read_goemotions,
    read_meld,
    split_by_group,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MELD_DEV = DATA / "meld_text" / "dev_sent_emo.csv"
GOEMOTIONS = DATA / "goemotions" / "ekman"
needs_meld = pytest.mark.skipif(not MELD_DEV.is_file(), reason=f"{MELD_DEV} not present")
needs_goemotions = pytest.mark.skipif(not GOEMOTIONS.is_dir(), reason=f"{GOEMOTIONS} missing")
HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"


@pytest.fixture(scope="module")
def encoder():
    """The shipped weights' predictor on the PyTorch reference, as `eval text` runs it."""
    from affectstream.export.predictors import open_eval_predictor

    return open_eval_predictor("text", "torch", threads=1)


def test_label_maps_cover_the_common_labels():
    assert MELD_TO_COMMON["joy"] == "happy"
    assert GOEMOTIONS_EKMAN_TO_COMMON["joy"] == "happy"
    for mapping in (MELD_TO_COMMON, GOEMOTIONS_EKMAN_TO_COMMON):
        assert sorted(mapping.values()) == sorted(LABELS)
    assert MELD_TO_COMMON["surprise"] == "surprised"
    assert GOEMOTIONS_EKMAN_TO_COMMON["disgust"] == "disgusted"


def test_normalise_text_folds_quotes_and_repairs_mojibake():
    assert normalise_text("it\u2019s \u201cfine\u201d\u2026") == 'it\'s "fine"...'
    assert normalise_text("it\u00e2\u20ac\u2122s") == "it's"  # UTF-8 read as cp1252
    assert normalise_text("Caf\u00c3\u00a9  cr\u00c3\u00a8me ") == "Caf\u00e9 cr\u00e8me"
    assert normalise_text("na\u00efve r\u00e9sum\u00e9") == "na\u00efve r\u00e9sum\u00e9"


def test_read_meld_maps_labels_normalises_and_builds_context(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(
        HEADER + "1,You\u2019re a genius!,Ross,joy,positive,7,0\n"
        '2,"Oh, \u201creally\u201d?",Rachel,surprise,positive,7,1\n'
        "3,I hate this.,Ross,anger,negative,7,2\n"
        "4,New scene.,Joey,neutral,neutral,8,0\n",
        encoding="utf-8",
    )
    ex = read_meld(p, context_turns=2)
    assert [e.text for e in ex] == [
        "You're a genius!",
        'Oh, "really"?',
        "I hate this.",
        "New scene.",
    ]
    assert [LABELS[e.label] for e in ex] == ["happy", "surprised", "angry", "neutral"]
    assert [e.context for e in ex] == [
        "",
        "You're a genius!",
        'You\'re a genius! Oh, "really"?',
        "",  # a new dialogue starts without context
    ]
    assert read_meld(p, context_turns=0)[2].context == ""


def test_read_meld_accepts_cp1252_files(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes((HEADER + "1,Don\u2019t go,Ross,sadness,negative,0,0\n").encode("cp1252"))
    (e,) = read_meld(p)
    assert (e.text, LABELS[e.label]) == ("Don't go", "sad")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("Sr No.,Utterance,Speaker\n1,hi,Ross\n", "missing column(s) Emotion"),
        ("Text,Emotion\nhi,joy\n", "missing column(s) Utterance"),
        ("Utterance,Emotion\nhi,joy\nho,happyish\n", "line 3: unknown Emotion 'happyish'"),
        ("Utterance,Emotion\n", "no rows"),
    ],
)
def test_read_meld_rejects_malformed_files(tmp_path, body, needle):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=None) as err:
        read_meld(p)
    assert needle in str(err.value)


def test_read_goemotions_soft_targets(tmp_path):
    (tmp_path / "labels.txt").write_text("anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise\n")
    (tmp_path / "train.tsv").write_text(
        "text\tlabel\tid\nso glad\t3\ta\nugh what\t0,6\tb\nI\u2019m scared\t2\tc\n"
    )
    ex = read_goemotions(tmp_path, "train")
    assert [e.text for e in ex] == ["so glad", "ugh what", "I'm scared"]
    assert ex[0].target[LABELS.index("happy")] == 1.0
    soft = np.asarray(ex[1].target)
    assert soft[LABELS.index("angry")] == soft[LABELS.index("surprised")] == 0.5
    assert soft.sum() == pytest.approx(1.0)
    assert LABELS[ex[2].label] == "fearful"


@needs_goemotions
def test_read_goemotions_real_ekman_split_agrees_with_raw_ids():
    names = (GOEMOTIONS / "labels.txt").read_text().split()
    raw = [line.split("\t") for line in (GOEMOTIONS / "valid.tsv").read_text().splitlines()[1:]]
    ex = read_goemotions(GOEMOTIONS, "valid")
    assert len(ex) == len(raw)
    for e, (_, ids, *_rest) in zip(ex[:500], raw[:500], strict=True):
        want = {LABELS.index(GOEMOTIONS_EKMAN_TO_COMMON[names[int(i)]]) for i in ids.split(",")}
        assert {i for i, v in enumerate(e.target) if v > 0} == want


@needs_meld
def test_split_by_group_keeps_dialogues_whole():
    ex = read_meld(MELD_DEV)
    keep, held = split_by_group(ex, 0.2, seed=3)
    assert len(keep) + len(held) == len(ex)
    assert not {e.group for e in keep} & {e.group for e in held}
    assert split_by_group(ex, 0.2, seed=3)[1] == held


def test_tokenizer_layout_keeps_newest_context():
    from affectstream.models.text.encoder import Tokenizer

    tok = Tokenizer(max_tokens=8, context_tokens=4)
    ids, mask, types = tok(
        ["hello there", "one two three four five six seven eight nine"],
        ["", "alpha beta gamma delta"],
    )
    assert ids.shape == mask.shape == types.shape
    first = ids[0][mask[0] == 1]
    assert first[0] == tok.cls_id and first[-1] == tok.sep_id and len(first) == 4
    assert types[0].sum() == 0  # no context, no second segment
    second = ids[1][mask[1] == 1]
    assert len(second) == 8 + 4  # utterance cut to 8, context to its newest 3 + [SEP]
    ctx_tokens = tok._tok.decode(second[types[1][mask[1] == 1] == 1][:-1].tolist())
    assert ctx_tokens == "beta gamma delta"


def test_encoder_outputs_and_empty_text(encoder):
    texts = ["I can't believe you did that to me!", "Okay.", "This is the best day of my life!"]
    probs, emb = encoder.predict(texts)
    assert probs.shape == (3, len(LABELS)) and emb.shape == (3, encoder.embedding_dim)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert LABELS[int(probs[2].argmax())] == "happy"
    for i, t in enumerate(texts):  # padding in a batch must not change a row
        p1, e1 = encoder.predict([t])
        np.testing.assert_allclose(p1[0], probs[i], atol=1e-4)
        np.testing.assert_allclose(e1[0], emb[i], atol=1e-4)
    with pytest.raises(ValueError, match="empty"):
        encoder.predict(["fine", "  "])
    p0, e0 = encoder.predict([])
    assert p0.shape == (0, len(LABELS)) and e0.shape == (0, encoder.embedding_dim)


@needs_meld
def test_shipped_weights_beat_majority_on_meld_dev_slice(encoder):
    from affectstream.models.metrics import classification_report
    from affectstream.models.text.data import labels
    from affectstream.models.text.evaluate import context_turns_of, predict_examples

    ex = read_meld(MELD_DEV, context_turns_of(encoder))[:300]
    y = labels(ex)
    pred = predict_examples(encoder, ex).argmax(1)
    model = classification_report(y, pred, LABELS)
    majority = classification_report(y, np.full_like(y, np.bincount(y).argmax()), LABELS)
    assert model.weighted_f1 > majority.weighted_f1 + 0.15
    assert model.accuracy > majority.accuracy
    assert sum(r > 0.3 for r in model.recall) >= 3  # not a neutral-only classifier


def _write_dev_slice(path: Path, n: int) -> None:
    with MELD_DEV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[: n + 1]
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


@needs_meld
def test_eval_cli_on_small_csv(tmp_path, capsys):
    src, out = tmp_path / "small.csv", tmp_path / "m.json"
    _write_dev_slice(src, 40)
    assert main(["eval", "text", "--meld", str(src), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 40 and res["labels"] == list(LABELS)
    cm = np.asarray(res["confusion"])
    assert cm.sum() == 40
    assert res["accuracy"] == pytest.approx(np.trace(cm) / 40)
    assert set(res["per_class"]) == set(LABELS)
    assert "weighted-F1" in capsys.readouterr().out


def test_eval_cli_malformed_csv_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Utterance,Feeling\nhello,joy\n")
    assert main(["eval", "text", "--meld", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) Emotion" in err and len(err.strip().splitlines()) == 1
    bad.write_text("Utterance,Emotion\nhello,elated\n")
    assert main(["eval", "text", "--meld", str(bad)]) == 2
    assert "unknown Emotion 'elated'" in capsys.readouterr().err


def test_bench_cli_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "text", "--repeats", "3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {r["threads"] for r in res["results"]} == {1}
    assert all(r["median_ms"] > 0 and r["tokens"] > 2 for r in res["results"])
    assert "median ms" in capsys.readouterr().out


@needs_meld
@needs_goemotions
def test_train_cli_smoke_frozen_head(tmp_path):
    """A tiny frozen-base run end to end: weights load back and predict."""
    from affectstream.export.predictors import open_eval_predictor

    out, summary = tmp_path / "t.safetensors", tmp_path / "t.json"
    rc = main(
        [
            "train",
            "text",
            "--finetune-layers",
            "0",
            "--no-context",
            "--epochs",
            "2",
            "--limit",
            "48",
            "--out",
            str(out),
            "--json",
            str(summary),
        ]
    )
    assert rc == 0
    res = json.loads(summary.read_text())
    assert len(res["history"]) == 2 and res["meld_dev"]["n"] == 48
    enc = open_eval_predictor("text", "torch", weights=out)
    assert enc.info["options"]["limit"] == 48
    probs, _ = enc.predict(["hi there"])
    assert probs.shape == (1, len(LABELS))
