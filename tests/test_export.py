"""`affectstream export` end to end, and parity: ONNX Runtime vs the PyTorch reference.

One export of every model (each in its own process, through the CLI) per test session;
then each available backend is compared with PyTorch on fresh random inputs and on real
ones (FER2013 faces, LibriVox speech, MELD utterances) at several batch and time sizes,
including rows that are entirely padding. Outputs are per row, so every returned row is a
valid position and is compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from affectstream.cli.main import main
from affectstream.export import registry
from affectstream.export.select import open_backend

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA, MEDIA = SHARED / "data", SHARED / "media"
pytestmark = pytest.mark.slow  # exporting MiniLM alone takes about a minute here

MODELS = ["face", "voice", "text", "fusion"]


@pytest.fixture(scope="module")
def onnx_dir(exported_dir):
    """`affectstream export --out DIR` of every model, once per test session (conftest)."""
    return exported_dir


@pytest.fixture(scope="module")
def backends(onnx_dir):
    """{model: {backend name: loaded backend}} for every backend available on this CPU."""
    opened = {
        m: {
            name: open_backend(m, name, onnx_dir=onnx_dir, threads=1)
            for name in ("torch", "onnxruntime")
        }
        for m in MODELS
    }
    yield opened
    for per_model in opened.values():
        for b in per_model.values():
            b.close()


def _assert_parity(model: str, per_backend: dict, feed: dict) -> None:
    atol = registry.get(model).atol
    ref = per_backend["torch"].infer(feed)
    batch = next(iter(feed.values())).shape[0]
    for name, b in per_backend.items():
        if name == "torch":
            continue
        got = b.infer(feed)
        for k, r in ref.items():
            assert got[k].shape == r.shape and r.shape[0] == batch
            assert np.isfinite(got[k]).all(), f"{model}/{name}/{k} has NaN or inf"
            diff = float(np.abs(got[k] - r).max())
            assert diff <= atol, f"{model}/{name}/{k}: max |diff| {diff:.2e} > {atol:.0e}"


# -- the export itself -----------------------------------------------------------------------
def test_manifest_describes_every_file(onnx_dir):
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert manifest["format"] == "affectstream-onnx/1"
    assert manifest["opset"] == 18 and manifest["skipped"] == {}
    assert sorted(manifest["models"]) == sorted(MODELS)
    for name, rec in manifest["models"].items():
        path = onnx_dir / rec["file"]
        assert path.name == f"{name}.onnx"
        assert rec["sha256"] == registry.file_sha256(path)
        assert rec["bytes"] == path.stat().st_size
        assert "sha256" in rec["weights"] or rec["weights"] == {"random_init": 0}
        assert rec["verify"]["max_abs_diff"] and all(
            d <= rec["verify"]["atol"] for d in rec["verify"]["max_abs_diff"].values()
        )
        assert rec["signature"]["dims"]["batch"] == {"min": 1, "opt": 16, "max": 1024}


@pytest.mark.parametrize(
    ("model", "axes"),
    [
        ("face", {"x": ["batch", 1, 48, 48]}),
        ("voice", {"wave": ["batch", "samples"]}),
        ("text", {"input_ids": ["batch", "tokens"], "token_type_ids": ["batch", "tokens"]}),
    ],
)
def test_onnx_files_have_named_dynamic_axes_and_opset(onnx_dir, model, axes):
    m = onnx.load(str(onnx_dir / f"{model}.onnx"))
    assert {op.domain: op.version for op in m.opset_import}[""] == 18
    inputs = {i.name: i for i in m.graph.input}
    for name, want in axes.items():
        dims = [d.dim_param or d.dim_value for d in inputs[name].type.tensor_type.shape.dim]
        assert dims == want
    outs = [o.name for o in m.graph.output]
    assert outs == ["logits", "embedding"]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["affectstream.model"] == model


def test_stale_file_is_refused(onnx_dir, tmp_path):
    import shutil

    from affectstream.export.onnx_export import ExportError, find_exported

    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy, ignore=shutil.ignore_patterns("text.onnx", "voice.onnx"))
    with open(copy / "face.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="hash differs"):
        find_exported(copy, "face")


# -- parity on random inputs -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "sizes"),
    [
        ("face", {"batch": 1}),
        ("face", {"batch": 4}),
        ("face", {"batch": 33}),
        ("voice", {"batch": 1, "samples": 32000}),
        ("voice", {"batch": 4, "samples": 16000}),
        ("voice", {"batch": 2, "samples": 2800}),
        ("voice", {"batch": 3, "samples": 59999}),
        ("text", {"batch": 1, "tokens": 5}),
        ("text", {"batch": 6, "tokens": 23}),
        ("text", {"batch": 16, "tokens": 64}),
    ],
)
def test_parity_random(backends, model, sizes):
    b = backends[model]["torch"]
    feed = registry.get(model).example(
        sizes, np.random.default_rng(sum(sizes.values())), b.signature
    )
    _assert_parity(model, backends[model], feed)


# -- parity on real inputs -------------------------------------------------------------------
def test_parity_real_faces(backends):
    path = DATA / "fer2013" / "PublicTest.npz"
    if not path.exists():
        pytest.skip(f"missing {path}")
    images = np.load(path)["images"][:48]
    x = (images.astype(np.float32) / 255.0)[:, None]
    for n in (1, 7, 48):
        _assert_parity("face", backends["face"], {"x": np.ascontiguousarray(x[:n])})


def _speech() -> np.ndarray:
    import soundfile as sf

    files = sorted((MEDIA / "speech" / "librivox").glob("*.wav"))
    if not files:
        pytest.skip("missing LibriVox test speech")
    audio, sr = sf.read(files[0], dtype="float32")
    assert sr == 16000
    return audio


def test_parity_real_speech(backends):
    audio = _speech()
    for n, length in ((1, 32000), (3, 32000), (2, 8000), (1, len(audio))):
        starts = np.linspace(0, len(audio) - length, n).astype(int)
        wave = np.stack([audio[s : s + length] for s in starts])
        _assert_parity("voice", backends["voice"], {"wave": wave})


def test_parity_real_speech_with_silent_rows(backends):
    """Digital silence is a normal input (a muted mic): finite everywhere, and close.

    Silence is ill-conditioned by design: every log-mel value sits on the power floor, the
    per-window normalisation divides float rounding residue (~1e-7) by sqrt(1e-5), so
    backends that round differently disagree by a few 1e-3 in log-probability (well under
    1% in probability). Speech rows in the same batch keep the strict tolerance.
    """
    audio = _speech()[:32000]
    wave = np.stack([audio, np.zeros_like(audio), audio * 0.01])
    ref = backends["voice"]["torch"].infer({"wave": wave})
    got = backends["voice"]["onnxruntime"].infer({"wave": wave})
    atol = registry.get("voice").atol
    for k in ref:
        assert np.isfinite(got[k]).all()
        diff = np.abs(got[k] - ref[k]).max(axis=1)
        assert diff[0] <= atol and diff[2] <= atol, diff  # speech, and speech at -40 dB
        assert diff[1] <= 1e-2, diff  # silence


def _meld_texts(n: int) -> list[str]:
    from affectstream.models.text.data import read_meld

    path = DATA / "meld_text" / "dev_sent_emo.csv"
    if not path.exists():
        pytest.skip(f"missing {path}")
    return [e.text for e in read_meld(path)][:n]


def test_parity_real_utterances_with_padding_rows(backends):
    from affectstream.models.text.encoder import Tokenizer

    spec = backends["text"]["torch"].module.spec
    tok = Tokenizer(max_tokens=spec.max_tokens, context_tokens=spec.context_tokens)
    texts = _meld_texts(12)
    contexts = [""] + texts[:-1]  # row 0: no context
    ids, mask, types = tok(texts, contexts if spec.use_context else None)
    # The last row becomes padding throughout, as in a batch filled up to a fixed size.
    ids[-1], mask[-1], types[-1] = 0, 0, 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    _assert_parity("text", backends["text"], feed)
    for n in (1, 5):  # smaller batches, padded only to their own longest row
        width = int(mask[:n].sum(1).max())
        _assert_parity("text", backends["text"], {k: v[:n, :width] for k, v in feed.items()})
    ids_c, mask_c, types_c = tok(texts[:4], contexts[:4])  # pairs, as a context model sees
    if ids_c.shape[1] <= backends["text"]["torch"].signature.dims["tokens"].max:
        feed = {"input_ids": ids_c, "attention_mask": mask_c, "token_type_ids": types_c}
        _assert_parity("text", backends["text"], feed)


# -- options: FP16 file, other opsets ----------------------------------------------------------
def test_fp16_export_for_tensorrt11_keeps_fp32_io(tmp_path):
    from affectstream.export.onnx_export import export_in_subprocess
    from affectstream.export.onnxrt import OnnxRuntimeBackend

    rec = export_in_subprocess("face", tmp_path / "face.onnx", fp16=True)
    half = tmp_path / rec["fp16"]["file"]
    assert half.name == "face.fp16.onnx" and rec["fp16"]["sha256"] == registry.file_sha256(half)
    m = onnx.load(str(half))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    x = np.random.default_rng(0).random((3, 1, 48, 48), dtype=np.float32)
    with (
        OnnxRuntimeBackend("face", tmp_path / "face.onnx") as full,
        OnnxRuntimeBackend("face", half) as h,
    ):
        a, b = full.infer({"x": x}), h.infer({"x": x})
    assert np.abs(a["logits"] - b["logits"]).max() <= registry.get("face").fp16_atol


def test_export_opset_20(tmp_path):
    assert main(["export", "--out", str(tmp_path), "--models", "face", "--opset", "20"]) == 0
    m = onnx.load(str(tmp_path / "face.onnx"))
    assert {op.domain: op.version for op in m.opset_import}[""] == 20
