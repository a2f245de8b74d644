import numpy as np
import pytest

from affectstream.core.stats import latency_ms, percentiles


def test_percentiles_match_numpy_and_skip_missing_values():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 10.0, size=1000)
    p = percentiles([*x, None, float("nan")], with_max=True)
    assert p["p50"] == round(float(np.percentile(x, 50)), 2)
    assert p["p99"] == round(float(np.percentile(x, 99)), 2)
    assert p["max"] == round(float(x.max()), 2)
    assert percentiles([], with_max=True) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_latency_record_and_empty_input():
    r = latency_ms([1.0, 2.0, 3.0, 4.0])
    assert r["calls"] == 4 and r["median_ms"] == 2.5 and r["max_ms"] == 4.0
    with pytest.raises(ValueError, match="no latency samples"):
        latency_ms([])
