"""The fused confidence's calibration: a temperature per tick from what the model knows at run
time (`models/fusion/calibration.py`), fitted offline on replays' tick files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectstream.bench.stream_eval import expected_calibration_error
from affectstream.models.fusion import calibration as cal


def _streams(rng, n: int, text_share: float):
    """Synthetic ticks in which the words are right far less often than their mixture says
    and the face is about as right as it says: one temperature cannot fit both."""
    rel = np.zeros((n, 3))
    words = rng.random(n) < text_share
    rel[words] = [0.2, 0.0, 0.8]
    rel[~words] = [0.8, 0.2, 0.0]
    y = rng.integers(0, 7, n)
    reading = np.full((n, 3, 7), 0.3 / 6)
    right = np.where(words, rng.random(n) < 0.25, rng.random(n) < 0.7)
    shown = np.where(right, y, (y + rng.integers(1, 7, n)) % 7)
    for j in range(3):
        reading[np.arange(n), j, shown] = 0.7
    mix = (rel[..., None] * reading).sum(1)
    return rel, reading, mix, y


def _ece(mix, y, temp) -> float:
    p = cal.calibrated(mix, temp)
    return expected_calibration_error(p.max(1), p.argmax(1) == y)


def test_a_temperature_per_tick_follows_each_modalitys_reliability_where_one_cannot():
    rng = np.random.default_rng(0)
    fit_on = [_streams(rng, 4000, share) for share in (0.2, 0.5)]
    rel, reading, mix, y = (np.concatenate(v) for v in zip(*fit_on, strict=True))
    feats = cal.features(rel, reading, mix)
    w = cal.fit(feats, mix, y)
    t_one = cal.fit_temperature(mix, y)
    # judged on a stream of another mix, where the words count more (accuracy shifts)
    rel2, reading2, mix2, y2 = _streams(rng, 4000, 0.8)
    temp = cal.temperature(w, cal.features(rel2, reading2, mix2))
    per_tick, one = _ece(mix2, y2, temp), _ece(mix2, y2, t_one)
    assert per_tick < 0.05 and per_tick < one / 2
    # the words' ticks are tempered more than the face's; no fused class changes
    words = rel2[:, 2] > 0.5
    assert temp[words].mean() > temp[~words].mean()
    assert np.array_equal(cal.calibrated(mix2, temp).argmax(1), mix2.argmax(1))


def test_one_temperature_is_the_likelihoods_best():
    rng = np.random.default_rng(1)
    rel, reading, mix, y = _streams(rng, 3000, 0.0)  # the face alone
    t = cal.fit_temperature(mix, y)

    def nll(temp):
        p = cal.calibrated(mix, temp)
        return -np.log(p[np.arange(len(y)), y]).mean()

    assert nll(t) <= min(nll(t * 0.9), nll(t * 1.1))


def test_the_predictor_applies_the_calibration_and_keeps_the_fused_class(tmp_path):
    """A per-tick calibration equal to the network's own temperature gives the network's
    output; another one moves the confidence, never the class."""
    import torch

    from affectstream.models.fusion.net import OUTPUTS, FusionNet, FusionSpec, input_names
    from affectstream.models.fusion.predictor import FusionPredictor
    from affectstream.models.fusion.tokens import HistorySpec

    torch.manual_seed(0)
    net = FusionNet(FusionSpec(members=2)).eval()
    t0 = 1.3
    net.temperature.fill_(t0)
    history = HistorySpec.default()

    class Backend:  # the net itself, as a backend's `infer` gives it
        def infer(self, feed):
            with torch.no_grad():
                out = net(*(torch.from_numpy(feed[k]) for k in input_names()))
            return {k: v.numpy() for k, v in zip(OUTPUTS, out, strict=True)}

    backend = Backend()
    rng = np.random.default_rng(0)
    feed = {}
    for m, e in net.spec.embed_dims.items():
        k = history.max_tokens[m]
        feed[f"{m}_x"] = rng.standard_normal((5, k, e + 7)).astype(np.float32)
        feed[f"{m}_age"] = rng.random((5, k)).astype(np.float32)
        feed[f"{m}_mask"] = (rng.random((5, k)) < 0.7).astype(np.float32)
    feed["text_mask"][:2] = 0  # some rows without words
    plain = FusionPredictor(backend, net.spec.embed_dims, history)
    same = FusionPredictor(backend, net.spec.embed_dims, history, np.r_[[np.log(t0)] * 3, 0, 0])
    other = FusionPredictor(backend, net.spec.embed_dims, history, np.r_[0.5, -0.2, 0.1, -1, 1])
    p0, r0, a0 = plain.predict(feed)
    p1, r1, a1 = same.predict(feed)
    p2, _, _ = other.predict(feed)
    assert np.abs(p0 - p1).max() < 1e-4 and np.array_equal(r0, r1) and np.array_equal(a0, a1)
    assert np.array_equal(p2.argmax(1), p0.argmax(1))
    assert np.abs(p2.max(1) - p0.max(1)).max() > 1e-3
    assert np.allclose(p2.sum(1), 1, atol=1e-5)


def test_a_calibration_file_is_read_only_for_the_weights_it_was_fitted_for(tmp_path):
    weights = tmp_path / "fusion.pt"
    weights.write_bytes(b"one model")
    path = cal.save(tmp_path / cal.COMPANION, np.arange(5.0), weights, {"pool": ["a"]})
    assert cal.load_for(path, weights).tolist() == [0, 1, 2, 3, 4]
    weights.write_bytes(b"retrained")  # train fusion wrote new weights: not applied to them
    assert cal.load_for(path, weights) is None
    assert cal.load_for(tmp_path / "none.json", weights) is None
    doc = json.loads(path.read_text())
    doc["features"] = ["top"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="features"):
        cal.load_for(path, weights)


def test_the_shipped_fusion_weights_read_only_a_calibration_shipped_for_them():
    """None ships today (the card says why), so the shipped weights read none; one that ships
    must name these weights and have a weight per feature."""
    from affectstream.export.predictors import shipped
    from affectstream.models.fusion.predictor import read_calibration

    w = read_calibration(shipped("fusion.pt"))
    if shipped(cal.COMPANION) is None:
        assert w is None
    else:
        assert w is not None and w.shape == (len(cal.FEATURES),)
