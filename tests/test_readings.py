"""What a user sees adds up: each modality's `reading` in the estimate is what the fusion
mixed, so the fused distribution is the relevance-weighted sum of the readings (calibrated by
the learned model's temperature), through the CLI on the bundled clip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectstream.core.labels import LABELS
from tests.conftest import affectstream


def estimates(tmp_path, *flags) -> list[dict]:
    out = tmp_path / "est.jsonl"
    r = affectstream("run", "--sample", "--fast", "--duration", "6", "--out", out, *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def mixed(est: dict) -> np.ndarray | None:
    """sum of relevance x reading, when every modality the fusion read is in the estimate."""
    read = {m: v["reading"] for m, v in est["modalities"].items() if "reading" in v}
    weights = {m: w for m, w in est["relevance"].items() if w > 0}
    if not weights or set(weights) - set(read):
        return None
    return sum(weights[m] * np.array([read[m][k] for k in LABELS]) for m in weights)


@pytest.mark.slow
def test_the_fused_distribution_is_the_relevance_weighted_sum_of_the_readings(tmp_path):
    checked = 0
    for est in estimates(tmp_path):
        mix = mixed(est)
        if mix is None:
            continue
        fused = np.array([est["probs"][k] for k in LABELS])
        # the temperature (about 1) calibrates the mixture: same ranking, close values
        assert np.argmax(mix) == np.argmax(fused), est
        assert np.abs(mix / mix.sum() - fused).max() < 0.1, (mix, fused)
        checked += 1
    assert checked > 10


@pytest.mark.slow
def test_the_confidence_rule_sums_the_readings_exactly(tmp_path):
    checked = 0
    for est in estimates(tmp_path, "--fusion", "confidence"):
        mix = mixed(est)
        if mix is not None:
            fused = np.array([est["probs"][k] for k in LABELS])
            np.testing.assert_allclose(mix, fused, atol=3e-3)  # JSON rounds to 1e-4
            checked += 1
    assert checked > 10
