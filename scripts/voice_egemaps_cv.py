"""Speaker-normalised utterance features beside the voice CNN: the experiments behind the
voice card's eGeMAPS and Whisper-encoder heads (`models/voice/utterance.py`).

Two stages, each cached under --work (never in the repository):

  extract   for every clip of the training corpora (RAVDESS actors 1-20, nEMO, EMOVO, URDU):
            the 88 eGeMAPSv02 functionals of its speech (silence trimmed as in training, once
            per clip, as the live path runs it once per voiced span), and the CNN's window
            probabilities and embeddings (sliding 2 s windows, 0.5 s hop, as `eval voice`) for
            encoder A (the first network of voice.ensemble3.pt: RAVDESS 1-16 only) and
            encoder B (voice.pt: RAVDESS 1-16 and the three other corpora).
  cv        speaker-grouped cross-validation: RAVDESS five actor folds (4 actors each) and
            leave one corpus out; the eGeMAPS head alone, the CNN, and their late fusion
            (weights chosen by cross-validation). JSON report.

    nice -n 10 python3 scripts/voice_egemaps_cv.py extract --data ../shared/data/ravdess_speech \
        ../shared/data/speech_extra/nemo ../shared/data/speech_extra/emovo \
        ../shared/data/speech_extra/urdu --work /work/runs/egemaps
    nice -n 10 python3 scripts/voice_egemaps_cv.py cv --work /work/runs/egemaps --json OUT

`extract --feature-set whisper-tiny.en` caches the 768 Whisper-encoder statistics instead
(`fit --features whisper-tiny.en` then writes `<encoder>.whisper.npz`); `--feature-set
ComParE_2016` the 6,373 ComParE functionals, for the comparison in the voice card (`cv
--configs speaker_r3,speaker_r3_l2_0.01,speaker_r3_l2_0.03`). The "eGeMAPS" names of the cache
and report keys stand for whichever feature set the cache holds.

Held-out data (EmoDB, RAVDESS actors 21-24) is never read: the RAVDESS folder holds 1-20 only,
and `extract` refuses any RAVDESS actor above 20.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT_ACTORS = {21, 22, 23, 24}


def _encoders(work: Path) -> dict[str, Path]:
    from affectstream.export.predictors import weights_dir
    from affectstream.models.voice import train as T

    wd = weights_dir()
    a = work / "voiceA.pt"
    if not a.is_file():
        T.keep_members(wd / "voice.ensemble3.pt", a, 1, note="encoder A of the eGeMAPS CV")
    return {"A": a, "B": wd / "voice.pt"}


def extract(args: argparse.Namespace) -> int:
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.data import load_audio, scan
    from affectstream.models.voice.egemaps import EgemapsExtractor
    from affectstream.models.voice.evaluate import clip_windows
    from affectstream.models.voice.features import MelOptions

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    encs = {k: open_eval_predictor("voice", "onnxruntime", weights=p, threads=1)
            for k, p in _encoders(work).items() if k in args.encoders.split(",")}
    from affectstream.models.voice.utterance import FEATURE_SETS, extractor, utterance_span

    if args.feature_set in FEATURE_SETS:  # eGeMAPSv02 or whisper-tiny.en
        ex = extractor(args.feature_set)
    else:  # another openSMILE set: an experiment
        ex = EgemapsExtractor(feature_set=args.feature_set)
    for folder in args.data:
        clips = scan(folder)
        name = clips[0].corpus
        clips = clips[:: args.every]  # every clip, or every n-th (in file order)
        out = work / f"{name}.npz"
        if out.is_file():
            print(f"{out} exists", file=sys.stderr)
            continue
        bad = [c for c in clips if c.corpus == "ravdess" and c.actor in HELD_OUT_ACTORS]
        if bad:
            raise SystemExit(f"{folder}: holds held-out RAVDESS actors; refusing")
        rows: dict[str, list] = {k: [] for k in ("feat", "sec", "label", "actor", "file", "nwin")}
        wins: dict[str, list] = {f"{k}_{w}": [] for k in encs for w in ("p", "e")}
        t_feat = 0.0
        t0 = time.perf_counter()
        for i, c in enumerate(clips):
            x = load_audio(c.path)
            s, e = utterance_span(x)
            t1 = time.perf_counter()
            rows["feat"].append(ex(x[s:e]))
            t_feat += time.perf_counter() - t1
            rows["sec"].append((e - s) / 16000)
            rows["label"].append(c.label_index)
            rows["actor"].append(c.actor)
            rows["file"].append(c.path.name)
            n = None
            for k, enc in encs.items():
                w, n = clip_windows(x, enc.mel or MelOptions(), enc.window_s, 0.5)
                p, emb = enc.predict(w)
                wins[f"{k}_p"].append(p.astype(np.float32))
                wins[f"{k}_e"].append(emb.astype(np.float32))
            rows["nwin"].append(n)
            if (i + 1) % 200 == 0:
                print(f"{name}: {i + 1}/{len(clips)} ({time.perf_counter() - t0:.0f} s, "
                      f"features {1000 * t_feat / (i + 1):.1f} ms/clip)", file=sys.stderr)
        np.savez(
            out,
            corpus=np.array(name),
            feat=np.stack(rows["feat"]).astype(np.float32),
            sec=np.array(rows["sec"]),
            label=np.array(rows["label"]),
            actor=np.array(rows["actor"]),
            files=np.array(rows["file"]),
            nwin=np.array(rows["nwin"]),
            egemaps_ms_per_clip=np.array(1000 * t_feat / len(clips)),
            feature_set=np.array(args.feature_set),
            every=np.array(args.every),
            **{k: np.concatenate(v) for k, v in wins.items()},
        )
        print(f"wrote {out} ({len(clips)} clips, {time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- cv

RAVDESS_FOLDS = [(1, 6, 11, 16), (2, 7, 12, 17), (3, 8, 13, 18), (4, 9, 14, 19), (5, 10, 15, 20)]
CORPORA = ("ravdess", "nemo", "emovo", "urdu")
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # eGeMAPS share in the late fusion


class Data:
    """All clips of the cached corpora, one row per clip; windows kept per encoder."""

    def __init__(self, work: Path) -> None:
        parts = [np.load(work / f"{c}.npz") for c in CORPORA if (work / f"{c}.npz").is_file()]
        self.corpus = np.concatenate([np.full(len(z["label"]), str(z["corpus"])) for z in parts])
        self.feat = np.concatenate([z["feat"] for z in parts]).astype(np.float64)
        self.sec = np.concatenate([z["sec"] for z in parts])
        self.label = np.concatenate([z["label"] for z in parts])
        self.actor = np.concatenate([z["actor"] for z in parts])
        self.nwin = np.concatenate([z["nwin"] for z in parts])
        self.ms_per_clip = {str(z["corpus"]): float(z["egemaps_ms_per_clip"]) for z in parts}
        sets = {str(z["feature_set"]) if "feature_set" in z.files else "eGeMAPSv02" for z in parts}
        if len(sets) != 1:
            raise SystemExit(f"{work}: corpora cached with different feature sets {sets}")
        self.feature_set = sets.pop()
        # window rows: each clip has nwin sliding windows then its centre window
        self.win = {}
        for k in ("A", "B"):  # a corpus cached without encoder k: NaN (never read)
            def get(z, what, dim, k=k):
                key = f"{k}_{what}"
                if key in z.files:
                    return z[key]
                return np.full((int(z["nwin"].sum() + len(z["nwin"])), dim), np.nan, np.float32)

            self.win[k] = {
                "p": np.concatenate([get(z, "p", 7) for z in parts]),
                "e": np.concatenate([get(z, "e", 128) for z in parts]).astype(np.float64),
            }
        rows = self.nwin + 1
        self.first_row = np.concatenate([[0], np.cumsum(rows)[:-1]])
        # which clips each encoder was run on (a corpus may be cached without one)
        self.has = {k: ~np.isnan(w["p"][self.first_row, 0]) for k, w in self.win.items()}
        self.owner = np.repeat(np.arange(len(rows)), rows)
        self.is_centre = np.zeros(len(self.owner), dtype=bool)
        self.is_centre[self.first_row + self.nwin] = True
        self.n = len(self.label)

    def clip_mean(self, wp: np.ndarray) -> np.ndarray:
        """Per-clip mean over the sliding windows (not the centre) of window rows `wp`."""
        m = ~self.is_centre
        s = np.zeros((self.n, wp.shape[1]))
        np.add.at(s, self.owner[m], wp[m])
        return s / self.nwin[:, None]


def _balance(d: Data, idx: np.ndarray, ravdess_x: float = 1.0) -> np.ndarray:
    """Square-root balance of corpora and speakers; RAVDESS's share times `ravdess_x`."""
    from affectstream.models.voice.train import balance_weights

    w = balance_weights(d.corpus[idx], d.actor[idx], 0.5)
    w = np.where(d.corpus[idx] == "ravdess", w * ravdess_x, w)
    return w / w.sum()


def _speakers(d: Data, idx: np.ndarray, one_session: tuple[str, ...]) -> np.ndarray:
    spk = d.actor[idx].astype(np.int64).copy()
    for i, name in enumerate(one_session):
        spk[d.corpus[idx] == name] = -1 - i
    return spk


def egemaps_probs(d: Data, train: np.ndarray, test: np.ndarray, cfg: dict) -> np.ndarray:
    """eGeMAPS head fitted on clips `train`, read on clips `test` live: one session per test
    speaker, its clips in a seeded random order, each clip added before it is read."""
    from affectstream.models.voice.utterance import fit_utterance_head

    head = fit_utterance_head(
        d.feat[train], d.label[train], _speakers(d, train, cfg["one_session"]), d.sec[train],
        _balance(d, train, cfg.get("ravdess_x", 1.0)), strength_s=cfg["k"], l2=cfg["l2"],
        mode=cfg["mode"],
    )
    out = np.zeros((len(test), 7))
    rng = np.random.default_rng(0)
    for a in np.unique(d.actor[test]):
        mine = np.flatnonzero(d.actor[test] == a)
        norm = head.new_session() if cfg["test_session"] else None
        for j in mine[rng.permutation(len(mine))]:
            i = test[j]
            out[j] = head.step(norm, d.feat[i], float(d.sec[i]))[0]
    return out


def cnn_probs(d: Data, enc: str, train: np.ndarray, test: np.ndarray, session: bool) -> np.ndarray:
    """The CNN path's clip probabilities on `test`: the network's own head (session False), or
    the shipped reading (the mean of the network and the session head, a session head fitted
    on the windows of clips `train` exactly as `train voice --session-head` does)."""
    w = d.win[enc]
    if not session:
        return d.clip_mean(w["p"])[test]
    if enc == "B":  # the shipped session head (fitted on RAVDESS 1-16 and the other corpora)
        from affectstream.export.predictors import weights_dir
        from affectstream.models.voice.session import load_companion

        head = load_companion(weights_dir() / "voice.pt")
    else:  # fitted on the fold's training clips as `train voice --session-head` does
        import torch

        from affectstream.models.voice.train import fit_session_head

        rows = np.flatnonzero(np.isin(d.owner, train) & ~d.is_centre)
        owner = d.owner[rows]
        first = np.r_[True, owner[1:] != owner[:-1]]
        seconds = np.where(first, 2.0, 0.5)

        class Bank:  # what fit_session_head reads of a MelBank
            corpus = d.corpus
            actors = d.actor
            labels = torch.as_tensor(d.label)

        head = fit_session_head(
            w["e"][rows], owner, seconds, Bank, 30.0, corpus_sessions=("urdu",), net_weight=0.5
        )
    out = np.zeros((len(test), 7))
    rng = np.random.default_rng(0)
    for a in np.unique(d.actor[test]):
        mine = np.flatnonzero(d.actor[test] == a)
        norm = head.new_session()
        for j in mine[rng.permutation(len(mine))]:
            i = test[j]
            r = np.arange(d.first_row[i], d.first_row[i] + d.nwin[i])
            sec = [2.0] + [0.5] * (len(r) - 1)
            ps = [head.step(norm, w["e"][r[q]], sec[q], w["p"][r[q]])[0] for q in range(len(r))]
            out[j] = np.mean(ps, axis=0)
    return out


def _acc(y: np.ndarray, p: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


def _uar(y: np.ndarray, p: np.ndarray) -> float:
    pred = p.argmax(axis=1)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def _ms(v) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


CONFIGS = {
    # name: how the eGeMAPS head is trained and read
    "raw": dict(mode="none", test_session=False, k=30.0, l2=1e-3, one_session=()),
    "speaker": dict(mode="speaker", test_session=True, k=30.0, l2=1e-3, one_session=("urdu",)),
    "sessions": dict(mode="sessions", test_session=True, k=30.0, l2=1e-3, one_session=("urdu",)),
    # RAVDESS's share of the training draws (22 %) raised three- and tenfold
    "speaker_r3": dict(
        mode="speaker", test_session=True, k=30.0, l2=1e-3, one_session=("urdu",), ravdess_x=3.0
    ),
    "speaker_r10": dict(
        mode="speaker", test_session=True, k=30.0, l2=1e-3, one_session=("urdu",), ravdess_x=10.0
    ),
}


# the l2 that 6,373 ComParE_2016 features need (extract --feature-set ComParE_2016)
for _l2 in (0.01, 0.03, 0.1, 0.3):
    CONFIGS[f"speaker_r3_l2_{_l2}"] = {**CONFIGS["speaker_r3"], "l2": _l2}


def run_cv(args: argparse.Namespace) -> int:
    from affectstream.models.metrics import accuracy_resampled, paired_bootstrap

    work = Path(args.work)
    d = Data(work)
    all_idx = np.arange(d.n)
    is_r = d.corpus == "ravdess"
    folds = []  # (name, kind, train idx, test idx)
    for f in RAVDESS_FOLDS:
        test = np.flatnonzero(is_r & np.isin(d.actor, f))
        if len(test) == 0:
            continue
        folds.append((f"ravdess {','.join(map(str, f))}", "actors", np.setdiff1d(all_idx, test), test))
    for c in CORPORA:
        test = np.flatnonzero(d.corpus == c)
        if len(test) == 0 or len(test) == d.n:
            continue
        folds.append((f"{c} left out", "loco", np.setdiff1d(all_idx, test), test))
    report: dict = {"date": time.strftime("%Y-%m-%d"), "egemaps_ms_per_clip": d.ms_per_clip,
                    "configs": CONFIGS, "egemaps_alone": {}, "fusion": {}}
    configs = args.configs.split(",") if args.configs else list(CONFIGS)
    eg_cache: dict = {}
    print(f"{d.feature_set} head alone (clip accuracy, live sessions per test speaker)")
    for name in configs:
        cfg = CONFIGS[name]
        accs = {}
        for fname, kind, tr, te in folds:
            p = egemaps_probs(d, tr, te, cfg)
            eg_cache[(name, fname)] = p
            accs[fname] = {"acc": _acc(d.label[te], p), "uar": _uar(d.label[te], p),
                           "kind": kind, "n": int(len(te))}
        report["egemaps_alone"][name] = accs
        ra = [v["acc"] for v in accs.values() if v["kind"] == "actors"]
        lo = {k: round(v["acc"], 3) for k, v in accs.items() if v["kind"] == "loco"}
        print(f"  {name:9s} RAVDESS actor folds {_ms(ra)} {[round(x, 3) for x in ra]}; LOCO {lo}")
    # late fusion: only where the CNN is clean for the test clips
    print(f"late fusion: (1 - w) CNN path + w {d.feature_set}; CNN path = net | shipped "
          "(net+session mix)")
    for name in configs:
        cfg = CONFIGS[name]
        res = {}
        for fname, enc, tr, te in _fusion_rows(d, ("B", "A")):
            tr_cnn = tr[d.has[enc][tr]]
            key = (name, fname)
            eg = eg_cache.get(key)
            if eg is None:
                eg = eg_cache[key] = egemaps_probs(d, tr, te, cfg)
            y = d.label[te]
            row = {}
            for path in ("net", "shipped"):
                ck = ("cnn", enc, fname, path)
                if ck not in eg_cache:
                    eg_cache[ck] = cnn_probs(d, enc, tr_cnn, te, path == "shipped")
                cp = eg_cache[ck]
                row[path] = {str(w): _acc(y, (1 - w) * cp + w * eg) for w in WEIGHTS}
                # log-linear (product of experts): cp^(1-w) * eg^w, the same argmax as its
                # normalised form
                lc, le = np.log(np.maximum(cp, 1e-9)), np.log(np.maximum(eg, 1e-9))
                row[f"{path}_geo"] = {str(w): _acc(y, (1 - w) * lc + w * le) for w in WEIGHTS}
            # the shipped weight against the CNN path alone, paired, whole speakers resampled
            cp = eg_cache[("cnn", enc, fname, "shipped")]
            row["paired_w0.4"] = paired_bootstrap(
                y, cp.argmax(1), (0.6 * cp + 0.4 * eg).argmax(1), accuracy_resampled,
                groups=d.actor[te],
            )
            res[f"{fname} / {enc}"] = row
            print(f"  {name:9s} {fname:15s} {enc}: " + " ".join(
                f"{path} " + "/".join(f"{row[path][str(w)]:.3f}" for w in WEIGHTS)
                for path in ("net", "shipped", "shipped_geo")))
            pb = row["paired_w0.4"]
            print(f"    w 0.4 - shipped path: {100 * pb['diff']:+.1f} points, 95 % "
                  f"[{100 * pb['diff_lo']:+.1f}, {100 * pb['diff_hi']:+.1f}] ({pb['groups']} speakers)")
        report["fusion"][name] = res
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


# ----------------------------------------------------------------------------- mix


def _fusion_rows(
    d: Data, ravdess_encoders: tuple[str, ...] = ("B",)
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(fold, encoder, train clips, test clips) where the CNN is clean for the test clips and
    was run on all of them: RAVDESS 17-20 with each of `ravdess_encoders` (B: voice.pt, A:
    RAVDESS 1-16 only), each other corpus left out with encoder A, which never heard it."""
    is_r = d.corpus == "ravdess"
    rows = [("ravdess 17-20", e, np.flatnonzero(is_r & (d.actor >= 17))) for e in ravdess_encoders]
    rows += [(f"{c} left out", "A", np.flatnonzero(d.corpus == c)) for c in CORPORA[1:]]
    return [
        (f, e, np.setdiff1d(np.arange(d.n), te), te)
        for f, e, te in rows
        if len(te) and d.has[e][te].all()
    ]


def run_mix(args: argparse.Namespace) -> int:
    """The CNN path with two heads at once, `(1 - a - b) CNN + a head1 + b head2`: the grid of
    (a, b), each fold's (a, b) chosen on the other folds (nested), and that choice against
    head 1 alone at `--alone-weight`, paired over whole speakers."""
    from affectstream.models.metrics import accuracy_resampled, paired_bootstrap

    d1, d2 = Data(Path(args.work)), Data(Path(args.work2))
    if d1.n != d2.n or (d1.label != d2.label).any() or (d1.actor != d2.actor).any():
        raise SystemExit("the two caches hold different clips")
    c1, c2 = (CONFIGS[c] for c in args.configs.split(","))
    grid = [(round(0.1 * i, 1), round(0.1 * j, 1)) for i in range(8) for j in range(8) if i + j <= 8]
    acc, data = {}, {}
    for fname, enc, tr, te in _fusion_rows(d1):
        y = d1.label[te]
        cp = cnn_probs(d1, enc, tr[d1.has[enc][tr]], te, True)
        p1, p2 = egemaps_probs(d1, tr, te, c1), egemaps_probs(d2, tr, te, c2)
        data[fname] = (y, d1.actor[te], cp, p1, p2)
        acc[fname] = {ab: _acc(y, (1 - sum(ab)) * cp + ab[0] * p1 + ab[1] * p2) for ab in grid}
    mean = {ab: float(np.mean([acc[f][ab] for f in acc])) for ab in grid}
    top = sorted(grid, key=lambda ab: -mean[ab])[:6]
    print(f"{d1.feature_set} ({args.configs.split(',')[0]}) a, {d2.feature_set} b; mean over "
          f"{len(acc)} folds: " + ", ".join(f"{ab} {mean[ab]:.3f}" for ab in top))
    alone = (args.alone_weight, 0.0)
    report: dict = {"features": [d1.feature_set, d2.feature_set], "configs": args.configs,
                    "mean": {str(ab): mean[ab] for ab in grid}, "folds": {}}
    for fname in acc:
        others = [f for f in acc if f != fname] or [fname]  # one fold: chosen on itself
        ab = max(grid, key=lambda g: np.mean([acc[f][g] for f in others]))
        y, groups, cp, p1, p2 = data[fname]
        mixed = (1 - sum(ab)) * cp + ab[0] * p1 + ab[1] * p2
        one = (1 - alone[0]) * cp + alone[0] * p1
        pb = paired_bootstrap(y, one.argmax(1), mixed.argmax(1), accuracy_resampled, groups=groups)
        report["folds"][fname] = {"chosen": ab, "acc": acc[fname][ab], "head1_alone": acc[fname][alone],
                                  "cnn_path": _acc(y, cp), "paired_vs_head1_alone": pb}
        print(f"  {fname:15s} chosen {ab}: {acc[fname][ab]:.3f} (CNN path {_acc(y, cp):.3f}, "
              f"head 1 alone {acc[fname][alone]:.3f}); {100 * pb['diff']:+.1f} points, 95 % "
              f"[{100 * pb['diff_lo']:+.1f}, {100 * pb['diff_hi']:+.1f}] ({pb['groups']} speakers)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


# ----------------------------------------------------------------------------- fit


def _every(path: Path) -> int:
    """1 when the cache holds every clip of its corpus, n for every n-th."""
    with np.load(path) as z:
        return int(z["every"]) if "every" in z.files else 1


def run_fit(args: argparse.Namespace) -> int:
    """The shipped head: fitted on every cached clip but RAVDESS actors 17-20 (the card's clean
    test actors, as for voice.pt), written beside the encoder it was chosen with."""
    from affectstream.export.predictors import weights_dir
    from affectstream.models.voice.session import file_sha256
    from affectstream.models.voice.utterance import companion_path, fit_utterance_head

    d = Data(Path(args.work))
    if d.feature_set != args.features:
        raise SystemExit(f"{args.work} holds {d.feature_set} features, not {args.features}")
    cfg = CONFIGS[args.config]
    test = np.flatnonzero((d.corpus == "ravdess") & np.isin(d.actor, (17, 18, 19, 20)))
    train = np.setdiff1d(np.arange(d.n), test)
    enc = Path(args.encoder) if args.encoder else weights_dir() / "voice.pt"
    t0 = time.perf_counter()
    head = fit_utterance_head(
        d.feat[train], d.label[train], _speakers(d, train, cfg["one_session"]), d.sec[train],
        _balance(d, train, cfg.get("ravdess_x", 1.0)), strength_s=cfg["k"], l2=cfg["l2"],
        mode=cfg["mode"], fuse_weight=args.fuse_weight, features=args.features,
    )
    head = type(head)(**{**head.__dict__, "joint_weight": args.joint_weight})
    meta = {
        **(head.meta or {}),
        "encoder": enc.name,
        "encoder_sha256": file_sha256(enc),
        "config": args.config,
        "train_clips": {c: int((d.corpus[train] == c).sum()) for c in sorted(set(d.corpus))},
        "train_ravdess_actors": sorted({int(a) for a in d.actor[train][d.corpus[train] == "ravdess"]}),
        "every": {c: _every(Path(args.work) / f"{c}.npz") for c in sorted(set(d.corpus))},
        "command": "python3 scripts/voice_egemaps_cv.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "fit_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out) if args.out else companion_path(enc, args.features)
    type(head)(**{**head.__dict__, "meta": meta}).save(out)
    print(f"wrote {out}: {meta}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--work", required=True)
    e.add_argument("--every", type=int, default=1, help="every n-th clip only (a faster cache)")
    e.add_argument("--encoders", default="A,B", help="which CNNs to run (A, B)")
    e.add_argument(
        "--feature-set",
        default="eGeMAPSv02",
        help="eGeMAPSv02, whisper-tiny.en (the Whisper-encoder head), or another openSMILE set "
        "(ComParE_2016: the comparison)",
    )
    c = sub.add_parser("cv")
    c.add_argument("--work", required=True)
    c.add_argument("--json")
    c.add_argument("--configs", help="comma-separated eGeMAPS head configs (default: all)")
    f = sub.add_parser("fit")
    f.add_argument("--work", required=True)
    f.add_argument("--config", default="sessions", choices=list(CONFIGS))
    f.add_argument("--fuse-weight", type=float, required=True)
    f.add_argument(
        "--features", default="eGeMAPSv02", help="the cache's feature set (whisper-tiny.en)"
    )
    f.add_argument("--joint-weight", type=float, help="its share when both heads read (mix)")
    m = sub.add_parser("mix")
    m.add_argument("--work", required=True, help="the cache of head 1")
    m.add_argument("--work2", required=True, help="the cache of head 2 (the same clips)")
    m.add_argument("--configs", required=True, help="head 1's config,head 2's config")
    m.add_argument("--alone-weight", type=float, default=0.4, help="head 1's weight alone")
    m.add_argument("--json")
    f.add_argument("--encoder", help="the encoder file it goes beside (default: voice.pt)")
    f.add_argument("--out", help="default: <encoder>.egemaps.npz beside the encoder")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # small fits: two threads spin against each other on a busy CPU
    if args.cmd == "extract":
        return extract(args)
    if args.cmd == "fit":
        return run_fit(args)
    if args.cmd == "mix":
        return run_mix(args)
    return run_cv(args)


if __name__ == "__main__":
    sys.exit(main())
