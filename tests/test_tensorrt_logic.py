"""TensorRT logic that needs no GPU: profiles, buckets, build plans, cache keys, fallbacks.

TensorRT cannot be installed here; what it would be fed is plain data and is checked
exactly. The fallback tests plant a poisoned `tensorrt` module to prove that nothing touches
TensorRT when there is no CUDA device (touching it there crashes real processes).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from affectstream.export import tensorrt as trt_mod
from affectstream.export.base import BackendUnavailable, DimRange, Signature, TensorSpec
from affectstream.export.shapes import bucket, bucket_sizes, pad_feed, profile_shapes, unpad
from affectstream.export.tensorrt import (
    BuildPlan,
    EngineKey,
    GpuInfo,
    TensorRTBackend,
    build_plan,
    tensorrt_status,
    timing_cache_path,
)

TEXT_SIG = Signature(
    inputs=(
        TensorSpec("input_ids", ("batch", "tokens"), "int64"),
        TensorSpec("attention_mask", ("batch", "tokens"), "int64"),
        TensorSpec("ctx_ids", ("batch", "ctx_tokens"), "int64"),
        TensorSpec("ctx_mask", ("batch", "ctx_tokens"), "int64"),
    ),
    outputs=(TensorSpec("logits", ("batch", 7)), TensorSpec("embedding", ("batch", 256))),
    dims={
        "batch": DimRange(1, 16, 1024),
        "tokens": DimRange(1, 32, 64),
        "ctx_tokens": DimRange(1, 32, 64),
    },
)
FACE_SIG = Signature(
    inputs=(TensorSpec("x", ("batch", 1, 48, 48)),),
    outputs=(TensorSpec("logits", ("batch", 7)), TensorSpec("embedding", ("batch", 256))),
    dims={"batch": DimRange(1, 16, 1024)},
)


# -- profiles and buckets ------------------------------------------------------------------
def test_profile_shapes_face_and_text():
    assert profile_shapes(FACE_SIG) == {"x": ((1, 1, 48, 48), (16, 1, 48, 48), (1024, 1, 48, 48))}
    prof = profile_shapes(TEXT_SIG)
    assert prof["input_ids"] == ((1, 1), (16, 32), (1024, 64))
    assert prof["ctx_mask"] == ((1, 1), (16, 32), (1024, 64))


def test_profile_override_and_missing_range():
    prof = profile_shapes(FACE_SIG, {"batch": DimRange(1, 1, 8)})
    assert prof["x"] == ((1, 1, 48, 48), (1, 1, 48, 48), (8, 1, 48, 48))
    no_range = Signature(
        (TensorSpec("wave", ("batch", "samples")),), (), {"batch": DimRange(1, 1, 2)}
    )
    with pytest.raises(ValueError, match="samples"):
        profile_shapes(no_range)


def test_dim_range_rejects_disorder():
    with pytest.raises(ValueError):
        DimRange(4, 2, 8)
    with pytest.raises(ValueError):
        DimRange(0, 1, 2)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1), (2, 2), (3, 4), (5, 8), (16, 16), (17, 32), (600, 1024), (1024, 1024)],
)
def test_bucket_powers_of_two(n, expected):
    assert bucket(n, DimRange(1, 16, 1024)) == expected


def test_bucket_clips_to_range():
    assert bucket(3, DimRange(2, 4, 6)) == 4
    assert bucket(5, DimRange(2, 4, 6)) == 6  # 8 would exceed the profile's max
    with pytest.raises(ValueError):
        bucket(7, DimRange(2, 4, 6))


def test_bucket_sizes_pads_only_paddable_axes():
    sizes = {"batch": 3, "tokens": 9, "ctx_tokens": 5}
    assert bucket_sizes(sizes, TEXT_SIG, ("batch",)) == {"batch": 4, "tokens": 9, "ctx_tokens": 5}
    assert bucket_sizes(sizes, TEXT_SIG, ("batch", "tokens", "ctx_tokens")) == {
        "batch": 4,
        "tokens": 16,
        "ctx_tokens": 8,
    }


def test_pad_feed_zero_pads_and_unpad_cuts_back():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (3, 9), dtype=np.int64)
    mask = np.ones((3, 9), np.int64)
    feed = {
        "input_ids": ids,
        "attention_mask": mask,
        "ctx_ids": ids[:, :5],
        "ctx_mask": mask[:, :5],
    }
    target = {"batch": 4, "tokens": 16, "ctx_tokens": 8}
    padded = pad_feed(feed, TEXT_SIG, target)
    assert padded["input_ids"].shape == (4, 16) and padded["ctx_mask"].shape == (4, 8)
    np.testing.assert_array_equal(padded["input_ids"][:3, :9], ids)
    assert padded["attention_mask"][3].sum() == 0 and padded["attention_mask"][:, 9:].sum() == 0
    outs = [np.arange(4 * 7).reshape(4, 7), np.zeros((4, 256))]
    cut = unpad(outs, TEXT_SIG, {"batch": 3})
    assert cut[0].shape == (3, 7) and cut[1].shape == (3, 256)
    np.testing.assert_array_equal(cut[0], outs[0][:3])


# -- build plans: TensorRT 10 flag vs TensorRT 11 strong typing -------------------------------
def test_build_plan_trt10_uses_fp16_flag():
    assert build_plan("10.9.0.34", fp16=True) == BuildPlan(False, True, "fp32")
    assert build_plan("10.9.0.34", fp16=True).precision == "fp16"
    assert build_plan("10.3", fp16=True, platform_fast_fp16=False) == BuildPlan(
        False, False, "fp32"
    )
    assert build_plan("10.3", fp16=False).precision == "fp32"


def test_build_plan_trt11_takes_precision_from_onnx_types():
    plan = build_plan("11.0.1", fp16=True)
    assert plan == BuildPlan(strongly_typed=True, fp16_flag=False, onnx_precision="fp16")
    assert plan.precision == "fp16"
    assert build_plan("11.4.1", fp16=False) == BuildPlan(True, False, "fp32")


def test_build_plan_refuses_old_tensorrt():
    with pytest.raises(BackendUnavailable, match="too old"):
        build_plan("8.6.1", fp16=True)


# -- cache keys ------------------------------------------------------------------------------
def _key(**over) -> EngineKey:
    args = dict(
        model="face",
        onnx_sha256="a" * 64,
        gpu=GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)),
        trt_version="10.9.0",
        precision="fp16",
        profile=profile_shapes(FACE_SIG),
    )
    args.update(over)
    return EngineKey.make(**args)


def test_engine_key_is_stable_and_names_the_file():
    a, b = _key(), _key()
    assert a.digest() == b.digest()
    name = a.filename()
    assert name.startswith("face-fp16-") and name.endswith(".engine")
    assert len(name) == len("face-fp16-") + 20 + len(".engine")


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"gpu": GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0))},
        {"gpu": GpuInfo("NVIDIA H100 80GB HBM3", (9, 1))},
        {"trt_version": "10.9.1"},
        {"precision": "fp32"},
        {"profile": profile_shapes(FACE_SIG, {"batch": DimRange(1, 1, 64)})},
    ],
)
def test_engine_key_changes_with_each_dependency(change):
    assert _key(**change).digest() != _key().digest()


def test_timing_cache_is_per_gpu_and_version(tmp_path):
    h100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
    p = timing_cache_path(tmp_path, h100, "10.9.0")
    assert p.parent == tmp_path
    assert p.name == "timing-nvidia-h100-80gb-hbm3-sm90-trt10.9.0.cache"
    assert timing_cache_path(tmp_path, h100, "11.0.0") != p


# -- fallbacks without a GPU -----------------------------------------------------------------
class _Poison(types.ModuleType):
    """A stand-in `tensorrt` that fails the test if anything reads from it."""

    touched = False

    def __getattr__(self, name):
        type(self).touched = True
        raise AssertionError(f"tensorrt.{name} touched without a GPU")


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _Poison.touched = False
    monkeypatch.setitem(sys.modules, "tensorrt", _Poison("tensorrt"))
    yield
    assert not _Poison.touched


def test_status_without_cuda_never_looks_at_tensorrt(no_cuda):
    ok, why = tensorrt_status()
    assert not ok and "no CUDA device" in why


def test_backend_load_without_cuda_raises_unavailable(no_cuda, tmp_path):
    b = TensorRTBackend("face", tmp_path / "face.onnx", FACE_SIG, "0" * 64)
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        b.load()
    assert not b.loaded and b.engine is None


def test_open_backend_tensorrt_without_cuda(no_cuda):
    from affectstream.export.select import availability, open_backend

    assert availability("cpu")["tensorrt"] == "TensorRT needs --device cuda"
    assert availability("cuda")["tensorrt"] == "no CUDA device here"
    with pytest.raises(BackendUnavailable, match="tensorrt cannot run here"):
        open_backend("face", "tensorrt", device="cuda")
    with pytest.raises(BackendUnavailable, match="no backend can run face"):
        open_backend("face", "auto", device="cuda")


def test_status_with_cuda_but_no_package_gives_install_hint(monkeypatch):
    import importlib.util

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        trt_mod.importlib.util, "find_spec", lambda n, *a: None if n == "tensorrt" else real(n, *a)
    )
    ok, why = tensorrt_status()
    assert not ok
    assert "pip install" in why and "pypi.nvidia.com" in why


def test_status_here_does_not_import_tensorrt():
    """On this machine (no GPU): the check says no, and tensorrt stays unimported."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    had = "tensorrt" in sys.modules
    assert tensorrt_status()[0] is False
    assert ("tensorrt" in sys.modules) == had
