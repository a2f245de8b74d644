"""The backend contract: signature checks, lifecycle, PyTorch and ONNX Runtime backends, auto.

The ONNX Runtime tests use a face model exported once per session (a few seconds, in its
own process, into a temporary cache).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from affectstream.export import registry
from affectstream.export.base import (
    BackendError,
    BackendUnavailable,
    DimRange,
    InputError,
    Signature,
    TensorSpec,
)
from affectstream.export.onnxrt import CPU, CUDA, TRT, OnnxRuntimeBackend, providers_for
from affectstream.export.torch_backend import TorchBackend

SIG = Signature(
    inputs=(
        TensorSpec("ids", ("batch", "tokens"), "int64"),
        TensorSpec("mask", ("batch", "tokens"), "int64"),
        TensorSpec("image", ("batch", 1, 4)),
    ),
    outputs=(TensorSpec("out", ("batch", 2)),),
    dims={"batch": DimRange(1, 2, 8), "tokens": DimRange(1, 4, 16)},
)


def _feed(b=2, n=5):
    return {
        "ids": np.zeros((b, n), np.int64),
        "mask": np.ones((b, n), np.int64),
        "image": np.zeros((b, 1, 4), np.float32),
    }


# -- signature checks ------------------------------------------------------------------------
def test_check_returns_dynamic_sizes():
    assert SIG.check(_feed(3, 7)) == {"batch": 3, "tokens": 7}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.pop("mask"), "missing \\['mask'\\]"),
        (lambda f: f.update(extra=np.zeros(1)), "unexpected \\['extra'\\]"),
        (
            lambda f: f.update(ids=f["ids"].astype(np.int32)),
            "input ids: dtype int32, expected int64",
        ),
        (lambda f: f.update(image=np.zeros((2, 4), np.float32)), "input image: .*expected rank 3"),
        (lambda f: f.update(image=np.zeros((2, 2, 4), np.float32)), "expected \\(batch, 1, 4\\)"),
        (lambda f: f.update(mask=np.ones((2, 6), np.int64)), "tokens\\) is 6 but another input"),
        (lambda f: f.update(image=np.zeros((3, 1, 4), np.float32)), "batch\\) is 3 but another"),
        (lambda f: f.update(ids=[[1, 2]]), "expected a numpy array, got list"),
    ],
)
def test_check_rejects_bad_feeds(mutate, message):
    feed = _feed()
    mutate(feed)
    with pytest.raises(InputError, match=message):
        SIG.check(feed)


def test_check_rejects_sizes_outside_the_exported_range():
    with pytest.raises(InputError, match="batch=9 outside the exported range 1..8"):
        SIG.check(_feed(9, 5))
    with pytest.raises(InputError, match="tokens=17 outside"):
        SIG.check(_feed(2, 17))


def test_signature_round_trips_through_dict():
    assert Signature.from_dict(SIG.to_dict()) == SIG


# -- torch backend -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_built():
    import torch

    torch.set_num_threads(1)
    return registry.get("face").build()


def _torch_backend(built, **kw):
    return TorchBackend("face", built.signature, lambda: built.module, threads=1, **kw)


def test_lifecycle_is_idempotent_and_infer_loads(face_built):
    b = _torch_backend(face_built)
    assert not b.loaded
    out = b.infer({"x": np.zeros((2, 1, 48, 48), np.float32)})  # loads on first use
    assert b.loaded and set(out) == {"logits", "embedding"}
    assert b.load() is b
    b.close()
    b.close()
    assert not b.loaded and b.module is None
    with b:
        assert b.loaded
    assert not b.loaded


def test_torch_backend_outputs_match_the_module(face_built):
    import torch

    x = np.random.default_rng(0).random((3, 1, 48, 48), dtype=np.float32)
    with _torch_backend(face_built) as b:
        out = b.infer({"x": x})
    with torch.inference_mode():
        logits, emb = face_built.module(torch.from_numpy(x))
    np.testing.assert_array_equal(out["logits"], logits.numpy())
    assert out["embedding"].shape == (3, face_built.module.spec.embed_dim)
    assert out["logits"].dtype == np.float32


def test_torch_backend_validates_before_running(face_built):
    with _torch_backend(face_built) as b, pytest.raises(InputError, match="dtype float64"):
        b.infer({"x": np.zeros((1, 1, 48, 48))})


def test_torch_fp16_and_graphs_need_cuda(face_built):
    with pytest.raises(BackendError, match="need --device cuda"):
        _torch_backend(face_built, fp16=True).load()


def test_torch_on_cuda_without_gpu_is_unavailable(face_built, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        _torch_backend(face_built, device="cuda").load()


# -- ONNX Runtime ------------------------------------------------------------------------------
def test_providers_for_each_device():
    avail = [TRT, CUDA, CPU]
    assert providers_for("cpu", avail) == [CPU]
    assert providers_for("cuda", avail) == [CUDA, CPU]
    assert providers_for("tensorrt", avail) == [TRT, CUDA, CPU]
    assert providers_for("cuda", [CPU]) == [CPU]
    with pytest.raises(BackendError, match="unknown device"):
        providers_for("tpu", avail)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("AFFECTSTREAM_CACHE")
    os.environ["AFFECTSTREAM_CACHE"] = str(root)
    yield root
    if old is None:
        del os.environ["AFFECTSTREAM_CACHE"]
    else:
        os.environ["AFFECTSTREAM_CACHE"] = old


@pytest.fixture(scope="module")
def face_onnx(cache):
    from affectstream.export.select import exported_model

    return exported_model("face")


def test_exported_model_is_cached(face_onnx, monkeypatch):
    from affectstream.export import onnx_export, select

    path, record = face_onnx
    assert path.is_file() and record["sha256"] == registry.file_sha256(path)

    def no_export(*a, **k):
        raise AssertionError("exported again despite the cache")

    monkeypatch.setattr(onnx_export, "export_all", no_export)
    again, _ = select.exported_model("face")
    assert again == path


def test_onnxruntime_matches_torch_on_cpu(face_onnx, face_built):
    path, record = face_onnx
    x = np.random.default_rng(3).random((5, 1, 48, 48), dtype=np.float32)
    with OnnxRuntimeBackend("face", path, Signature.from_dict(record["signature"])) as ort_b:
        assert ort_b.providers == [CPU]
        got = ort_b.infer({"x": x})
    with _torch_backend(face_built) as ref_b:
        ref = ref_b.infer({"x": x})
    for k in ref:
        assert np.abs(ref[k] - got[k]).max() <= registry.get("face").atol


def test_onnxruntime_reads_signature_from_the_file(face_onnx):
    path, record = face_onnx
    with OnnxRuntimeBackend("face", path) as b:
        assert b.signature.input_names == ["x"]
        assert b.signature.inputs[0].shape == ("batch", 1, 48, 48)
        assert b.signature.output_names == ["logits", "embedding"]


def test_onnxruntime_refuses_a_signature_that_does_not_fit(face_onnx):
    path, _ = face_onnx
    wrong = Signature(
        (TensorSpec("image", ("batch", 1, 48, 48)),), (TensorSpec("logits", ("batch", 7)),)
    )
    with pytest.raises(BackendError, match="differ from the manifest"):
        OnnxRuntimeBackend("face", path, wrong).load()


def test_gpu_provider_reported_but_not_running_is_caught(face_onnx, monkeypatch, caplog):
    """The GPU package lists CUDA even where it cannot run; the session is what counts."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    path, _ = face_onnx
    with pytest.raises(BackendUnavailable, match="runs on \\['CPUExecutionProvider'\\]"):
        OnnxRuntimeBackend("face", path, device="cuda").load()
    with caplog.at_level(logging.WARNING):
        b = OnnxRuntimeBackend("face", path, device="cuda", allow_fallback=True).load()
    assert b.providers == [CPU] and "using CPU" in caplog.text
    b.close()


def test_onnxruntime_cuda_without_gpu_build(face_onnx):
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        OnnxRuntimeBackend("face", face_onnx[0], device="cuda").load()


def test_missing_onnx_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnnxRuntimeBackend("face", tmp_path / "nope.onnx").load()


# -- selection ---------------------------------------------------------------------------------
def test_open_backend_explicit_names(face_onnx):
    from affectstream.export.select import open_backend

    for name in ("torch", "onnxruntime"):
        b = open_backend("face", name, threads=1)
        assert b.name == name and b.loaded
        assert b.infer({"x": np.zeros((1, 1, 48, 48), np.float32)})["logits"].shape == (1, 7)
        b.close()


def test_open_backend_auto_measures_and_says_which(face_onnx, caplog):
    from affectstream.export.select import open_backend

    with caplog.at_level(logging.INFO, logger="affectstream.export.select"):
        b = open_backend("face", "auto", threads=1)
    assert b.name in ("torch", "onnxruntime")
    assert b.auto["picked"] == b.name
    assert set(b.auto["median_ms_batch1"]) == {"torch", "onnxruntime"}
    assert min(b.auto["median_ms_batch1"], key=b.auto["median_ms_batch1"].get) == b.name
    assert "tensorrt" in b.auto["unavailable"]
    assert f"picked {b.name}" in caplog.text
    b.close()


def test_open_backend_rejects_unknowns():
    from affectstream.export.select import open_backend

    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        open_backend("face", "tflite")
    with pytest.raises(registry.RegistryError, match="unknown model 'smell'"):
        open_backend("smell")
    with pytest.raises(BackendUnavailable, match="TensorRT needs --device cuda"):
        open_backend("face", "tensorrt")


def test_open_backend_with_missing_weights_file(tmp_path):
    from affectstream.export.select import open_backend

    with pytest.raises(FileNotFoundError, match="face weights not found"):
        open_backend("face", "torch", weights=tmp_path / "none.pt")


def test_onnx_dir_from_other_weights_is_refused(face_onnx, tmp_path):
    """An export made before the shipped weights changed must not be used silently."""
    import json
    import shutil

    from affectstream.export.onnx_export import ExportError
    from affectstream.export.select import exported_model

    path, _ = face_onnx
    shutil.copytree(path.parent, tmp_path / "onnx")
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    manifest["models"]["face"]["weights"] = {"sha256": "0" * 64}
    (tmp_path / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="exported from other weights"):
        exported_model("face", tmp_path / "onnx")
    assert exported_model("face", path.parent)[0] == path


def test_auto_pick_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch, face_onnx):
    """The second `auto` open on the same machine and options opens only the winner; other
    options (threads) measure again."""
    from affectstream.export import select
    from affectstream.export.select import open_backend

    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(tmp_path))
    first = open_backend("voice", "auto", threads=1)
    assert "cached" not in first.auto and set(first.auto["median_ms_batch1"]) >= {"torch"}
    assert len(list((tmp_path / "auto").glob("*.json"))) == 1

    def no_timing(*a, **k):
        raise AssertionError("auto measured again although the pick was cached")

    monkeypatch.setattr(select, "time_backend", no_timing)
    second = open_backend("voice", "auto", threads=1)
    assert second.auto["cached"] is True and second.name == first.name
    assert second.auto["median_ms_batch1"] == first.auto["median_ms_batch1"]
    monkeypatch.undo()  # real timing again
    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(tmp_path))
    third = open_backend("voice", "auto", threads=2)
    assert "cached" not in third.auto
    assert len(list((tmp_path / "auto").glob("*.json"))) == 2
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(blocker))  # a cache that cannot be written
    assert open_backend("voice", "auto", threads=1).name in ("torch", "onnxruntime")
