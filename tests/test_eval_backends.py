"""`eval ... --backend onnxruntime` scores what the PyTorch reference scores, on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectstream.cli.main import main
from tests.conftest import DATA


def _eval(tmp_path, name, argv):
    out = tmp_path / f"{name}.json"
    assert main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_eval_face_on_onnxruntime_matches_torch(tmp_path):
    d = np.load(DATA / "fer2013" / "PublicTest.npz")
    small = tmp_path / "fer.npz"
    np.savez(
        small,
        images=d["images"][:200],
        labels=d["labels"][:200],
        names=d["names"][:200],
        classes=d["classes"],
    )
    args = ["eval", "face", "--fer2013", str(small)]
    ref = _eval(tmp_path, "torch", args)
    ort = _eval(tmp_path, "ort", [*args, "--backend", "onnxruntime"])
    assert ort["accuracy"] == pytest.approx(ref["accuracy"], abs=0.01)
    assert ref["accuracy"] > 0.5


@pytest.mark.slow
def test_eval_voice_on_onnxruntime_matches_torch(tmp_path):
    args = ["eval", "voice", "--ravdess", str(DATA / "ravdess_speech"), "--actors", "20"]
    ref = _eval(tmp_path, "torch", args)
    ort = _eval(tmp_path, "ort", [*args, "--backend", "onnxruntime"])
    assert ort["clips"]["accuracy"] == pytest.approx(ref["clips"]["accuracy"], abs=0.02)
    assert ref["clips"]["accuracy"] > 0.5
