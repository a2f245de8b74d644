"""`affectstream train|eval|bench face` end to end on small real inputs written to tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA

from affectstream.cli.main import main

PUBLIC = DATA / "fer2013" / "PublicTest.npz"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fer_slice(tmp_path_factory):
    """200 mixed PublicTest faces in the corpus's own format (FER label order, names)."""
    if not PUBLIC.exists():
        pytest.skip(f"corpus missing: {PUBLIC}")
    z = np.load(PUBLIC)
    idx = np.sort(np.random.default_rng(3).permutation(len(z["labels"]))[:200])
    d = tmp_path_factory.mktemp("fer")
    for split in ("PublicTest", "Training"):
        np.savez(
            d / f"{split}.npz",
            images=z["images"][idx],
            labels=z["labels"][idx],
            names=z["names"][idx],
            classes=z["classes"],
        )
    return d


def test_eval_prints_and_writes_metrics(fer_slice, tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["eval", "face", "--fer2013", str(fer_slice / "PublicTest.npz"), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in (
        "accuracy=",
        "macro-F1=",
        "per class",
        "recall",
        "confusion matrix",
        "disgusted",
    ):
        assert needle in text
    m = json.loads(out.read_text())
    assert m["n"] == 200
    assert np.array(m["confusion"]).sum() == 200
    cm = np.array(m["confusion"])
    assert m["accuracy"] == pytest.approx(np.trace(cm) / 200)
    assert m["accuracy"] > 0.5  # the shipped model, far above chance
    assert set(m["per_class"]) == {
        "neutral",
        "happy",
        "sad",
        "angry",
        "fearful",
        "disgusted",
        "surprised",
    }


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04broken"])
def test_eval_corrupt_npz_is_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    assert main(["eval", "face", "--fer2013", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("affectstream: error:") and "\n" not in err and "bad.npz" in err


def test_eval_missing_npz_and_weights_are_one_line_errors(fer_slice, tmp_path, capsys):
    assert main(["eval", "face", "--fer2013", str(tmp_path / "absent.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    args = ["eval", "face", "--fer2013", str(fer_slice / "PublicTest.npz")]
    assert main([*args, "--weights", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_then_eval_round_trip(fer_slice, tmp_path, capsys):
    """A 1-epoch CPU training writes a loadable checkpoint with its metadata."""
    out = tmp_path / "face.pt"
    rc = main([
        "train", "face", "--data", str(fer_slice), "--epochs", "1", "--batch-size", "32",
        "--device", "cpu", "--widths", "8,16,16,32", "--out", str(out),
        "--history-json", str(tmp_path / "h.json"),
    ])  # fmt: skip
    assert rc == 0 and out.exists()
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["spec"]["widths"] == [8, 16, 16, 32]
    assert ckpt["command"].startswith("affectstream train face") and "--epochs 1" in ckpt["command"]
    assert len(ckpt["training"]["history"]) == 1
    capsys.readouterr()
    js = tmp_path / "e.json"
    args = ["eval", "face", "--fer2013", str(fer_slice / "PublicTest.npz"), "--weights", str(out)]
    assert main([*args, "--json", str(js)]) == 0
    assert json.loads(js.read_text())["accuracy"] == pytest.approx(
        ckpt["metrics"]["PublicTest"]["accuracy"]
    )


def test_train_missing_data_dir_is_usage_error(tmp_path, capsys):
    assert main(["train", "face", "--data", str(tmp_path), "--device", "cpu"]) == 2
    assert "Training.npz" in capsys.readouterr().err


def test_bench_writes_table_and_json(megamind, tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["bench", "face", "--iters", "5", "--frames", "12", "--passes", "1"]
    assert main([*args, "--video", str(megamind), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fer-like" in text and "onnxruntime" in text
    r = json.loads(out.read_text())
    assert r["frame"]["frames"] == 12
    assert r["frame"]["ours"]["face_found_frac"] >= 0.5
    assert r["model_per_face_batch1"]["onnxruntime"]["max_abs_diff_logits"] < 1e-3
    assert r["frame"]["median_ratio_ours_to_baseline"] > 0
    # the runtime's own path: the int8 model in ONNX Runtime, with 1, 2 and 4 faces in view
    assert r["runtime_model"]["backend"] == "onnxruntime"
    assert r["runtime_model"]["file"].endswith("face.int8.onnx")
    assert set(r["faces_in_view"]) == {"1", "2", "4"}
    faces = [r["faces_in_view"][n]["mean_faces"] for n in ("1", "2", "4")]
    assert faces == sorted(faces) and faces[2] > faces[0]


def test_bench_missing_video_is_usage_error(tmp_path, capsys):
    assert main(["bench", "face", "--video", str(tmp_path / "none.avi")]) == 2
    assert "video not found" in capsys.readouterr().err


def test_eval_onnx_int8(fer_slice, tmp_path, capsys):
    from affectstream.models.face.quantize import default_int8_path

    out = tmp_path / "q.json"
    args = ["eval", "face", "--fer2013", str(fer_slice / "PublicTest.npz")]
    assert main([*args, "--onnx", str(default_int8_path()), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] > 0.5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert main([*args, "--onnx", str(bad)]) == 2
    assert "unusable" in capsys.readouterr().err


def test_train_face_int8_writes_a_runnable_int8_model(fer_slice, tmp_path, capsys):
    from affectstream.export.onnxrt import OnnxRuntimeBackend
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.face.data import load_fer
    from affectstream.models.face.evaluate import predict_probs

    out = tmp_path / "sub" / "face.int8.onnx"  # a folder that does not exist yet
    args = ["train", "face-int8", "--data", str(fer_slice), "--calib", "20", "--out", str(out)]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    predictor = open_eval_predictor("face", onnx_file=out)
    assert isinstance(predictor.backend, OnnxRuntimeBackend)
    faces = load_fer(fer_slice / "PublicTest.npz").images[:16]
    probs = predict_probs(predictor, faces)
    assert probs.shape == (16, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # quantised, not the float graph


def test_train_face_int8_missing_data_is_usage_error(tmp_path, capsys):
    assert main(["train", "face-int8", "--data", str(tmp_path / "none")]) == 2
    assert "Training.npz" in capsys.readouterr().err


def test_eval_baseline_pairs_two_models_on_the_same_faces(fer_slice, tmp_path, capsys):
    """`eval face --onnx INT8 --baseline shipped`: the int8 file against the float32 one, on
    the same faces; each side's accuracy is what scoring it alone gives."""
    from affectstream.models.face.quantize import default_int8_path

    faces = ["eval", "face", "--fer2013", str(fer_slice / "PublicTest.npz")]
    alone = tmp_path / "float.json"
    assert main([*faces, "--json", str(alone)]) == 0
    out = tmp_path / "pair.json"
    int8 = ["--onnx", str(default_int8_path())]
    assert main([*faces, *int8, "--baseline", "shipped", "--json", str(out)]) == 0
    assert "faces fixed" in capsys.readouterr().out
    m = json.loads(out.read_text())
    cmp = m["baseline"]
    assert cmp["a"] == pytest.approx(json.loads(alone.read_text())["accuracy"])
    assert cmp["b"] == pytest.approx(m["accuracy"])
    assert cmp["diff"] == pytest.approx((cmp["fixed"] - cmp["broken"]) / 200)
    assert cmp["diff_lo"] <= cmp["diff"] <= cmp["diff_hi"]


def test_paired_accuracy_bootstrap_counts_what_changed():
    from affectstream.models.metrics import paired_accuracy_bootstrap

    y = np.arange(100) % 7
    worse = y.copy()
    worse[:10] = (worse[:10] + 1) % 7  # 10 faces broken, none fixed
    cmp = paired_accuracy_bootstrap(y, y, worse, n=500)
    assert (cmp["a"], cmp["b"], cmp["fixed"], cmp["broken"]) == (1.0, 0.9, 0, 10)
    assert cmp["diff"] == pytest.approx(-0.1)
    assert -0.2 < cmp["diff_lo"] <= -0.1 <= cmp["diff_hi"] < 0
    assert cmp["p_not_better"] == 1.0
    same = paired_accuracy_bootstrap(y, worse, worse, n=100)
    assert same["diff"] == same["diff_lo"] == same["diff_hi"] == same["diff_sd"] == 0.0
    with pytest.raises(ValueError, match="as many predictions"):
        paired_accuracy_bootstrap(y, y[:5], y)
