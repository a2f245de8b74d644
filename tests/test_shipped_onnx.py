"""The ONNX files that ship in the package (`models/weights/onnx/`) are the shipped weights,
exported: a live stream runs them instead of exporting on its first launch, so a weights file
retrained without re-exporting, or a network whose code changed, must fail here.

Re-export after retraining any of them:
    affectstream export --out affectstream/models/weights/onnx --models voice,fusion,text \
        --half-weights text
"""

from __future__ import annotations

import pytest

from affectstream.export import registry
from affectstream.export.onnx_export import find_exported, read_manifest, verify_against_torch
from affectstream.export.select import ready_backend, shipped_onnx_dir

REEXPORT = (
    "affectstream export --out affectstream/models/weights/onnx --models voice,fusion,text "
    "--half-weights text"
)
SHIPPED = ("voice", "fusion", "text")


def test_the_package_ships_the_onnx_files_of_voice_fusion_and_text():
    manifest = read_manifest(shipped_onnx_dir())
    assert set(manifest["models"]) == set(SHIPPED)


@pytest.mark.parametrize("model", SHIPPED)
def test_each_shipped_file_was_exported_from_the_shipped_weights(model):
    path, record = find_exported(shipped_onnx_dir(), model)  # checks the file's own hash
    entry = registry.get(model)
    assert record["weights"]["path"] == entry.weights_file  # a name, not a checkout's path
    assert record["weights"]["sha256"] == registry.file_sha256(entry.default_weights()), (
        f"{entry.weights_file} changed since {path.name} was exported: {REEXPORT}"
    )


@pytest.mark.parametrize("model", SHIPPED)
def test_each_shipped_file_computes_what_the_torch_module_computes(model):
    """Fresh inputs of other sizes than the export's trace, ONNX Runtime against PyTorch."""
    entry = registry.get(model)
    path, record = find_exported(shipped_onnx_dir(), model)
    # text stores its weights in FP16 (half of 92 MB) and computes in float32
    atol = entry.fp16_atol if record.get("half_weights") else entry.atol
    check = verify_against_torch(path, entry.build(), entry, atol)  # raises past atol
    assert max(check["max_abs_diff"].values()) <= atol


def test_a_live_stream_opens_the_shipped_file_and_exports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(tmp_path))
    b = ready_backend("voice", "auto", threads=1)
    assert b.name == "onnxruntime" and b.auto["why"] == "an exported ONNX file is ready"
    b.close()
    assert not any(tmp_path.rglob("*"))


def test_other_weights_are_not_run_on_the_shipped_file(tmp_path, monkeypatch):
    """A weights file of the user's has no export ready: PyTorch runs it, nothing is exported."""
    import shutil

    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "my-voice.pt"
    shutil.copy(registry.get("voice").default_weights(), mine)
    with mine.open("ab") as f:
        f.write(b"\0")  # same network, another file: another hash
    b = ready_backend("voice", "auto", weights=mine, threads=1)
    assert b.name == "torch"
    b.close()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_naming_the_package_s_own_folder_warns_of_no_stale_code(tmp_path, caplog):
    """`--onnx-dir affectstream/models/weights/onnx` (bench models) opens the shipped files,
    whose parity with the current code the tests above check, so a refactor of the hashed
    sources is no reason to warn; a copy elsewhere, whose code hash differs, is warned of."""
    import json
    import logging
    import shutil

    from affectstream.export.select import exported_model

    with caplog.at_level(logging.WARNING, logger="affectstream.export.select"):
        path, _ = exported_model("voice", onnx_dir=shipped_onnx_dir(), export=False)
    assert path.parent == shipped_onnx_dir() and "code changed" not in caplog.text

    manifest = read_manifest(shipped_onnx_dir())
    manifest["models"] = {"voice": {**manifest["models"]["voice"], "source_sha256": "0" * 64}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(shipped_onnx_dir() / "voice.onnx", tmp_path / "voice.onnx")
    with caplog.at_level(logging.WARNING, logger="affectstream.export.select"):
        exported_model("voice", onnx_dir=tmp_path, export=False)
    assert "the model's code changed since it was exported" in caplog.text
