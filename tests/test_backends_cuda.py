"""CUDA paths against the CPU PyTorch reference: FP32, FP16, CUDA graphs, concurrent streams.

Opt-in by marker (`gpu`), skipped without a CUDA device. Every comparison uses one module:
the reference runs a copy on the CPU in float32. Tolerances: FP32 on the GPU may use TF32
convolutions (cuDNN's default), so it gets `CUDA_FP32_ATOL`; FP16 gets the entry's
`fp16_atol`.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from affectstream.export import registry
from affectstream.export.torch_backend import TorchBackend

pytestmark = pytest.mark.gpu

CUDA_FP32_ATOL = 5e-3
MODELS = ("face", "voice", "text")
SIZES = {
    "face": [{"batch": 1}, {"batch": 3}, {"batch": 17}],
    "voice": [
        {"batch": 1, "samples": 32000},
        {"batch": 5, "samples": 16000},
        {"batch": 2, "samples": 2800},
    ],
    "text": [{"batch": 1, "tokens": 7}, {"batch": 6, "tokens": 23}, {"batch": 9, "tokens": 64}],
}


@pytest.fixture(scope="module")
def built():
    import torch

    torch.manual_seed(0)
    return {m: registry.get(m).build() for m in MODELS}


def _reference(b: registry.Built):
    return TorchBackend("ref", b.signature, lambda: copy.deepcopy(b.module), threads=4).load()


def _cuda(model: str, b: registry.Built, fp16: bool, graphs: bool):
    entry = registry.get(model)
    module = entry.to_fp16(b.module) if fp16 else copy.deepcopy(b.module)
    return TorchBackend(
        model,
        b.signature,
        lambda: module,
        device="cuda",
        fp16=fp16,
        cuda_graphs=graphs,
        paddable=entry.paddable,
    ).load()


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("fp16", "graphs"), [(False, False), (True, False), (True, True)])
def test_cuda_matches_cpu_reference(built, model, fp16, graphs):
    b = built[model]
    entry = registry.get(model)
    ref, gpu = _reference(b), _cuda(model, b, fp16, graphs)
    atol = entry.fp16_atol if fp16 else CUDA_FP32_ATOL
    for i, sizes in enumerate(SIZES[model]):
        feed = entry.example(sizes, np.random.default_rng(i), b.signature)
        want, got = ref.infer(feed), gpu.infer(feed)
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == np.float32
            assert np.isfinite(got[k]).all()
        assert _max_diff(want, got) <= atol, (model, sizes, _max_diff(want, got))
    if graphs:
        assert gpu._runner.n_graphs >= 2  # one per shape bucket


def test_graph_buckets_pad_and_cut_back(built):
    """Batches 3 and 4 share the batch-4 graph; padded rows never leak into the outputs."""
    b = built["face"]
    eager, graphed = _cuda("face", b, True, False), _cuda("face", b, True, True)
    x = np.random.default_rng(0).random((4, 1, 48, 48), dtype=np.float32)
    full = graphed.infer({"x": x})
    part = graphed.infer({"x": x[:3]})
    assert graphed._runner.n_graphs == 1
    assert part["logits"].shape == (3, 7)
    assert _max_diff({k: v[:3] for k, v in full.items()}, part) <= 1e-3
    assert _max_diff(eager.infer({"x": x[:3]}), part) <= 1e-2


def test_text_tokens_padded_to_bucket_change_nothing(built):
    b = built["text"]
    eager, graphed = _cuda("text", b, True, False), _cuda("text", b, True, True)
    feed = registry.get("text").example(
        {"batch": 5, "tokens": 19}, np.random.default_rng(4), b.signature
    )
    feed["attention_mask"][-1] = 0  # a padding row
    feed["input_ids"][-1] = 0
    feed["token_type_ids"][-1] = 0
    got = graphed.infer(feed)  # runs at tokens=32 inside
    assert np.isfinite(got["embedding"]).all()
    assert _max_diff(eager.infer(feed), got) <= 2e-2


def test_concurrent_streams_give_the_sequential_results(built):
    import torch

    from affectstream.export.cuda import CudaRunner, run_concurrently

    runners, feeds = [], []
    for i, m in enumerate(MODELS):
        entry, b = registry.get(m), built[m]
        runners.append(
            CudaRunner(
                entry.to_fp16(b.module),
                b.signature,
                "cuda",
                fp16=True,
                graphs=True,
                paddable=entry.paddable,
            )
        )
        feeds.append(entry.example({"batch": 8}, np.random.default_rng(i), b.signature))
    sequential = [r.run_numpy(f) for r, f in zip(runners, feeds, strict=True)]
    jobs = []
    for r, f in zip(runners, feeds, strict=True):
        sizes = r.signature.check(f)
        jobs.append((r, {k: torch.from_numpy(v).cuda() for k, v in f.items()}, sizes))
    together = run_concurrently(jobs)
    for seq, tog in zip(sequential, together, strict=True):
        for a, t in zip(seq, tog, strict=True):
            np.testing.assert_allclose(t.cpu().numpy(), a, atol=1e-3)


def test_auto_on_cuda_says_what_it_picked(tmp_path, monkeypatch):
    from affectstream.export.select import open_backend

    monkeypatch.setenv("AFFECTSTREAM_CACHE", str(tmp_path))
    b = open_backend("face", "auto", device="cuda")
    assert b.auto["picked"] == b.name and b.name in b.auto["median_ms_batch1"]
    b.close()
