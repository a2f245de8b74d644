"""One predictor per model: `run` (the runtime stage), `eval` and `bench` call the same class.

The softmax helper, the predictors over different backends, and a proof that
`eval face --backend onnxruntime` runs the very predictor class (and code) of the stage that
`AffectStream` builds, with equal outputs on the same crops.
"""

from __future__ import annotations

import argparse
import importlib
import json

import numpy as np
import pytest
from conftest import DATA

from affectstream.core.config import load_config
from affectstream.core.numeric import softmax
from affectstream.export.predictors import open_predictor, resolve_weights
from affectstream.models.face.predictor import FacePredictor
from affectstream.models.text.predictor import TextPredictor
from affectstream.models.voice.predictor import VoicePredictor

PUBLIC = DATA / "fer2013" / "PublicTest.npz"
CLASSES = {"face": FacePredictor, "voice": VoicePredictor, "text": TextPredictor}


def test_softmax_rows_sum_to_one_and_log_probs_come_back():
    z = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]], np.float32)
    p = softmax(z)
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-6)
    probs = np.array([[0.7, 0.2, 0.1]], np.float32)
    np.testing.assert_allclose(softmax(np.log(probs)), probs, atol=1e-6)  # voice ensemble


def test_predictors_check_their_inputs():
    class Echo:  # any object with infer(dict) -> dict will do
        name = "echo"

        def infer(self, feed):
            x = next(iter(feed.values()))
            n = x.shape[0]
            return {"logits": np.zeros((n, 7), np.float32), "embedding": np.ones((n, 4))}

    face = FacePredictor(Echo())
    probs, emb = face.predict(np.zeros((2, 48, 48), np.uint8))
    np.testing.assert_allclose(probs, 1 / 7, atol=1e-6)
    assert emb.dtype == np.float32 and face.backend_name == "echo"
    with pytest.raises(ValueError, match="uint8"):
        face.predict(np.zeros((1, 48, 48), np.float32))
    voice = VoicePredictor(Echo())
    assert voice.predict(np.zeros(10, np.float32))[0].shape == (1, 7)
    with pytest.raises(ValueError, match="NaN"):
        voice.predict(np.full(4000, np.nan, np.float32))


def test_bare_names_are_shipped_weights():
    assert resolve_weights(None) is None
    assert resolve_weights("voice.ensemble3.pt").endswith("models/weights/voice.ensemble3.pt")
    assert resolve_weights("elsewhere/voice.pt") == "elsewhere/voice.pt"


def _eval_args(name: str, argv: list[str]) -> argparse.Namespace:
    """`affectstream eval <name> ARGV` parsed by that command's own argument definitions."""
    parser = argparse.ArgumentParser()
    importlib.import_module(f"affectstream.cli.{name}").add_eval_arguments(parser)
    return parser.parse_args(argv)


def _eval(name: str, argv: list[str]) -> bool:
    """Run `affectstream eval <name> ARGV` (the command's own run_eval); True on exit 0."""
    return importlib.import_module(f"affectstream.cli.{name}").run_eval(_eval_args(name, argv)) == 0


@pytest.mark.parametrize("name", ["face", "voice", "text"])
def test_runtime_and_eval_open_the_same_predictor_class(name):
    cfg = load_config()
    cfg.backend.name = "onnxruntime"
    cfg.face.int8_on_cpu = False  # the float model, as `eval --backend onnxruntime` runs it
    runtime = open_predictor(name, cfg)
    flag = {"face": "--fer2013", "voice": "--ravdess", "text": "--meld"}[name]
    args = _eval_args(name, [flag, "x", "--backend", "onnxruntime"])
    from affectstream.cli.args import eval_predictor

    evaluated = eval_predictor(args, name, args.weights)
    assert type(runtime) is type(evaluated) is CLASSES[name]
    assert runtime.backend_name == evaluated.backend_name == "onnxruntime"
    if name == "face":
        x = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
        a, b = runtime.predict(x), evaluated.predict(x)
    elif name == "voice":
        x = (0.1 * np.random.default_rng(0).standard_normal((2, 8000))).astype(np.float32)
        a, b = runtime.predict(x), evaluated.predict(x)
    else:
        a = runtime.predict(["what a day"], ["it rained"])
        b = evaluated.predict(["what a day"], ["it rained"])
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_eval_face_onnxruntime_runs_the_stage_predictor(tmp_path, monkeypatch):
    """The face stage `AffectStream` builds holds a FacePredictor; `eval face --backend
    onnxruntime` scores through that class, and the stage's predictor reproduces its accuracy."""
    if not PUBLIC.exists():
        pytest.skip(f"corpus missing: {PUBLIC}")
    from affectstream.models.face.evaluate import evaluate_fer
    from affectstream.realtime.stream import AffectStream, Inputs

    d = np.load(PUBLIC)
    small = tmp_path / "fer.npz"
    n = 64
    np.savez(
        small,
        images=d["images"][:n],
        labels=d["labels"][:n],
        names=d["names"][:n],
        classes=d["classes"],
    )
    cfg = load_config()
    cfg.backend.name = "onnxruntime"
    cfg.face.int8_on_cpu = False
    cfg.voice.enabled = False
    stream = AffectStream(cfg, Inputs(push_video=True, no_audio=True, transcribe=False))
    assert stream.wait_models(60)  # a live stream opens its models in the background
    (stage,) = [s for s in stream.stages if s.name == "face"]
    assert isinstance(stage.predictor, FacePredictor)
    assert stage.predictor.backend_name == "onnxruntime"

    used = []
    original = FacePredictor.predict

    def spy(self, crops, tta=None):
        used.append(self)
        return original(self, crops, tta)

    monkeypatch.setattr(FacePredictor, "predict", spy)
    out = tmp_path / "m.json"
    assert _eval("face", ["--fer2013", str(small), "--backend", "onnxruntime", "--json", str(out)])
    assert used and all(type(p) is type(stage.predictor) for p in used)
    assert {p.backend_name for p in used} == {"onnxruntime"}
    evaluated = used[0]
    crops = d["images"][:n]
    for u, v in zip(stage.predictor.predict(crops), evaluated.predict(crops), strict=True):
        np.testing.assert_array_equal(u, v)
    from affectstream.models.face.data import load_fer

    report = evaluate_fer(stage.predictor, load_fer(small))
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(report.accuracy, abs=1e-12)
