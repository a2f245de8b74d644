"""`affectstream bench fusion`: the fusion step's cost per tick, per backend.

Each call is what one tick does: build the inputs from a full token history (every slot of
every modality filled, the most expensive case) and run the model once.
"""

from __future__ import annotations

import time

import numpy as np

from affectstream.core.labels import MODALITIES
from affectstream.core.machine import cpu_model
from affectstream.core.stats import latency_ms
from affectstream.models.fusion.tokens import TokenHistory


def full_history(predictor, rng: np.random.Generator) -> TokenHistory:
    """A history with every slot filled: tokens 0.1 s apart, ending now."""
    h = TokenHistory(predictor.history)
    k = max(predictor.history.max_tokens.values())
    for i in range(k):
        t_ns = int(i * 1e8)
        tokens = {}
        for m in MODALITIES:
            probs = rng.dirichlet(np.ones(7)).astype(np.float32)
            emb = rng.standard_normal(predictor.embed_dims[m]).astype(np.float32)
            tokens[m] = (t_ns, predictor.token(m, emb, probs))
        h.update(tokens, t_ns)
    return h


def bench_fusion(backends: list[str], calls: int = 2000, warmup: int = 50) -> dict:
    from affectstream.export.predictors import open_eval_predictor

    rng = np.random.default_rng(0)
    rows = []
    for name in backends:
        p = open_eval_predictor("fusion", name)
        h = full_history(p, rng)
        now = int(max(p.history.max_tokens.values()) * 1e8)
        samples = []
        for i in range(warmup + calls):
            s = time.perf_counter_ns()
            p.predict(p.inputs(h, now))
            if i >= warmup:
                samples.append((time.perf_counter_ns() - s) / 1e6)
        rows.append({"backend": p.backend_name, **latency_ms(samples, 4)})
    return {"machine": cpu_model(), "what": "fusion step per tick (inputs + model)", "rows": rows}


def print_bench(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"bench fusion: {result['what']} on {result['machine']} (ms)")
    for col in ("backend", "calls", "median", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "backend" else "right")
    for r in result["rows"]:
        t.add_row(
            r["backend"],
            str(r["calls"]),
            f"{r['median_ms']:.3f}",
            f"{r['p95_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['max_ms']:.3f}",
        )
    Console().print(t)
