"""Text model with dialogue context: `train text --init FILE --context` adds the context segment
to a model trained without it, `--context-dropout` keeps lone utterances in training, and
`eval text --context-turns 0` measures the same weights on utterances with nothing before them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from affectstream.cli.main import main
from affectstream.core.labels import LABELS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MELD_DEV = DATA / "meld_text" / "dev_sent_emo.csv"
needs_meld = pytest.mark.skipif(not MELD_DEV.is_file(), reason=f"{MELD_DEV} not present")


@pytest.fixture(scope="module")
def context_weights(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny continuation of the shipped (no-context) weights that reads context."""
    if not MELD_DEV.is_file():
        pytest.skip(f"{MELD_DEV} not present")
    from affectstream.models.text.net import default_weights_path

    folder = tmp_path_factory.mktemp("ctx")
    out, summary = folder / "ctx.safetensors", folder / "ctx.json"
    rc = main(
        [
            "train",
            "text",
            "--init",
            str(default_weights_path()),
            "--context",
            "--context-tokens",
            "24",
            "--context-dropout",
            "0.5",
            "--goemotions",
            "",
            "--epochs",
            "1",
            "--warmup",
            "0",
            "--limit",
            "32",
            "--out",
            str(out),
            "--json",
            str(summary),
        ]
    )
    assert rc == 0
    return out, json.loads(summary.read_text())


def test_init_without_context_gains_the_context_segment(context_weights):
    from affectstream.export.predictors import open_eval_predictor

    out, summary = context_weights
    (epoch,) = summary["history"]
    assert 0.0 <= epoch["holdout_weighted_f1_no_context"] <= 1.0
    enc = open_eval_predictor("text", "torch", weights=out)
    assert enc.use_context and enc.spec.context_tokens == 24
    assert enc.spec.finetuned_layers == 4 and enc.embedding_dim == 256
    assert enc.info["options"]["context_dropout"] == 0.5
    text = "You did what?"
    alone, emb = enc.predict([text])
    with_ctx, _ = enc.predict([text], ["I sold your car and bought a boat with the money."])
    assert alone.shape == (1, len(LABELS)) and emb.shape == (1, 256)
    assert not np.allclose(alone, with_ctx, atol=1e-4)  # the context is read
    np.testing.assert_allclose(enc.predict([text], [""])[0], alone, atol=1e-6)


@needs_meld
def test_eval_cli_context_turns_override(context_weights, tmp_path):
    out, _ = context_weights
    src = tmp_path / "small.csv"
    with MELD_DEV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[:41]
    with src.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    results = {}
    for turns in (None, 0):
        js = tmp_path / f"m{turns}.json"
        extra = [] if turns is None else ["--context-turns", str(turns)]
        argv = ["eval", "text", "--meld", str(src), "--weights", str(out), "--json", str(js)]
        assert main(argv + extra) == 0
        results[turns] = json.loads(js.read_text())
    assert results[None]["context_turns"] == 2  # as trained
    assert results[0]["context_turns"] == 0
    assert results[None]["n"] == results[0]["n"] == 40
    assert main(["eval", "text", "--meld", str(src), "--context-turns", "-1"]) == 2
