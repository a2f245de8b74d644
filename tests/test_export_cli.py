"""The `export` and `bench models` commands: arguments, errors (exit 2), tables and JSON."""

from __future__ import annotations

import json

import pytest

from affectstream.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--opset", "17"], "--opset must be 18..20"),
        (["--models", "face,smell"], "unknown model 'smell'"),
        (["--weights", "face"], "--weights takes MODEL=FILE"),
        (["--weights", "face=/nonexistent/face.pt"], "file not found"),
    ],
)
def test_export_usage_errors(tmp_path, capsys, argv, message):
    assert main(["export", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line
    assert not (tmp_path / "manifest.json").exists()


def test_bench_models_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "models",
        "--models",
        "face",
        "--backends",
        "torch",
        "--batch",
        "1,2",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--streams",
        "1,2",
        "--ticks",
        "3",
        "--tick-backend",
        "torch",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "face" in table and "batched ticks" in table
    result = json.loads(out.read_text())
    rows = result["models"]
    assert [(r["model"], r["backend"], r["batch"]) for r in rows] == [
        ("face", "torch", 1),
        ("face", "torch", 2),
    ]
    for r in rows:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p99_ms"]
        assert r["items_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
    streams = result["streams"]
    assert [r["streams"] for r in streams["rows"]] == [1, 2]
    assert streams["models"] == ["face"]
    best = max([r["streams"] for r in streams["rows"] if r["meets_budget"]], default=0)
    assert streams["max_streams_within_budget"] == best
    assert result["machine"]["cpu_count"] >= 1 and result["options"]["device"] == "cpu"
    assert result["options"]["tick_backend"] == "torch"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "tflite"], "unknown backend 'tflite'"),
        (["--models", "smell"], "unknown model 'smell'"),
        (["--torch-modes", "int8"], "unknown torch mode 'int8'"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bench_models_usage_errors(capsys, argv, message):
    assert main(["bench", "models", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_models_cuda_without_gpu(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "models", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_importing_the_export_package_loads_no_runtime():
    """Backends are imported when chosen: importing the package pulls in no runtime."""
    import subprocess
    import sys

    mods = [
        "affectstream.export." + m
        for m in (
            "base",
            "torch_backend",
            "registry",
            "shapes",
            "onnx_export",
            "onnxrt",
            "tensorrt",
            "select",
            "cuda",
        )
    ] + ["affectstream.bench.models", "affectstream.cli.models", "affectstream.cli.export"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
