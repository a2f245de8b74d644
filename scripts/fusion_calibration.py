"""Fit and judge the fusion's calibration offline, on the per-tick arrays that
`affectstream eval stream --ticks DIR` writes (issue 22; fusion card, "Calibration").

    python3 scripts/fusion_calibration.py --pool DIR/a.npz DIR/b.npz ... \\
        --test DIR/seed1.npz ... [--write affectstream/models/weights/fusion.calibration.json]

For each method: accuracy, mean confidence and ECE (15 bins, every scored tick, as `eval
stream` counts it) per stream. A pool stream is judged by a fit on the *other* pool streams
(leave one stream out); a test stream by the fit on the whole pool. Methods:

- `shipped`: the replay's own output (the temperature in the weights file); the other
  methods read the mixture from the recorded inputs run again (`tick_table`), which gives the
  live output to 1e-5 in all but a few ticks per stream (20 of 5,532 on one), so their fused
  classes are the mixture's, and their accuracy the same to the fourth decimal;
- `T pooled`: one temperature fitted on the pool;
- `per tick`: `models/fusion/calibration.py`, log T = w . features, fitted on the pool;
- `per tick, no top`: the same without the mixture's own top probability.

`--write` saves the per-tick calibration fitted on the whole pool, as the live path loads it.
Neither fits nor methods change any tick's fused class (checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from affectstream.bench.stream_eval import expected_calibration_error, load_ticks
    from affectstream.models.fusion import calibration as cal

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", nargs="+", required=True, help="development streams' tick files")
    p.add_argument("--test", nargs="*", default=[], help="streams never fitted on")
    p.add_argument("--write", metavar="JSON", help="write the per-tick calibration here")
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument(
        "--fusion-weights",
        default="affectstream/models/weights/fusion.pt",
        help="the fusion weights the ticks were replayed with (default %(default)s)",
    )
    a = p.parse_args(argv)

    def read(path: str) -> dict:
        t, info = load_ticks(path)
        t["name"] = Path(path).stem
        t["feats"] = cal.features(t["relevance"], t["reading"], t["mix"])
        t["fit"] = t["keep"] & t["seen"].any(1)  # rows where the model fused something
        return t

    pool = [read(f) for f in a.pool]
    test = [read(f) for f in a.test]
    no_top = [k for k, n in enumerate(cal.FEATURES) if n != "top"]

    def stack(streams, key):
        return np.concatenate([s[key][s["fit"]] for s in streams])

    def fits(streams) -> dict:
        mix, y, f = stack(streams, "mix"), stack(streams, "y"), stack(streams, "feats")
        return {
            "T pooled": ("T", cal.fit_temperature(mix, y)),
            "per tick": ("w", cal.fit(f, mix, y, l2=a.l2)),
            "per tick, no top": ("w-", cal.fit(f[:, no_top], mix, y, l2=a.l2)),
        }

    def probs(s, kind, value):
        if kind == "T":
            out = cal.calibrated(s["mix"], value)
        elif kind == "w":
            out = cal.calibrated(s["mix"], cal.temperature(value, s["feats"]))
        else:
            out = cal.calibrated(s["mix"], cal.temperature(value, s["feats"][:, no_top]))
        out[~s["seen"].any(1)] = s["probs"][~s["seen"].any(1)]  # nothing fused: as live
        return out

    def judge(s, pr, live: bool = False) -> tuple[float, float, float]:
        k = s["keep"]
        pred = pr.argmax(1)
        seen = s["seen"].any(1)
        if not live and not np.array_equal(pred[seen], s["mix"].argmax(1)[seen]):
            changed = int((pred[seen] != s["mix"].argmax(1)[seen]).sum())
            raise AssertionError(f"{s['name']}: calibration changed {changed} fused classes")
        correct = (pred == s["y"])[k]
        conf = pr.max(1)[k]
        return float(correct.mean()), float(conf.mean()), expected_calibration_error(conf, correct)

    methods = ["shipped", "T pooled", "per tick", "per tick, no top"]
    rows = []
    for j, s in enumerate(pool):
        fitted = fits(pool[:j] + pool[j + 1 :])
        rows.append(("pool (left out)", s, fitted))
    whole = fits(pool)
    rows += [("test", s, whole) for s in test]
    print(
        f"whole pool: T {whole['T pooled'][1]:.3f}; per tick w = "
        + ", ".join(
            f"{n} {v:+.3f}" for n, v in zip(cal.FEATURES, whole["per tick"][1], strict=True)
        )
    )
    head = f"{'stream':<16}{'role':<17}{'acc':>6}" + "".join(f"{m:>22}" for m in methods)
    print(head + "\n" + " " * 39 + "".join(f"{'conf / ECE':>22}" for _ in methods))
    ece: dict[str, dict[str, list[float]]] = {"pool (left out)": {}, "test": {}}
    for role, s, fitted in rows:
        line = f"{s['name']:<16}{role:<17}"
        acc, conf, e = judge(s, s["probs"], live=True)
        line += f"{acc:6.3f}{conf:>14.3f} {e:6.3f}"
        ece[role].setdefault("shipped", []).append(e)
        for m in methods[1:]:
            kind, value = fitted[m]
            _, conf, e = judge(s, probs(s, kind, value))
            line += f"{conf:>15.3f} {e:6.3f}"
            ece[role].setdefault(m, []).append(e)
        print(line)
    for role, by in ece.items():
        if by:
            print(f"mean ECE, {role}: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in by.items()))
    if a.write:
        info = {
            "pool": [s["name"] for s in pool],
            "ticks": int(sum(s["fit"].sum() for s in pool)),
            "l2": a.l2,
            "command": "python3 scripts/fusion_calibration.py " + " ".join(sys.argv[1:]),
        }
        out = cal.save(a.write, whole["per tick"][1], a.fusion_weights, info)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
