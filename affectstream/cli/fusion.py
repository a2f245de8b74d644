"""`affectstream scenario make`, `train fusion`, `eval stream`, `bench fusion`.

Argument parsing, defaults (the corpora in `../shared/data`) and printing; the work is in
`models/fusion/` (streams, bank, training) and `bench/stream_eval.py` (scoring a replay).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from affectstream.cli.args import add_backend_arguments, add_fusion_argument, write_json
from affectstream.cli.defaults import fill_shared_defaults
from affectstream.cli.voice import actors_arg

log = logging.getLogger(__name__)

TRAIN_HELP = "train the fusion model on simulated token streams of the training corpora"
EVAL_HELP = "replay a labelled stream through the real pipeline and score every tick"
EVAL_ACTORS, TRAIN_ACTORS = "17,18,19,20", ",".join(str(a) for a in range(1, 17))


def _usage(msg: str):
    from affectstream.core.errors import UsageError

    return UsageError(msg)


def _corpora(split: str) -> dict[str, tuple[str, str]]:
    """The default corpora of a split ("train" or "eval"; disjoint people, images, sentences):
    dest -> (flag, path under the checkout's ../shared), for `fill_shared_defaults`."""
    held = split == "eval"
    return {
        "faces": ("--faces NPZ", f"data/fer2013/{'PublicTest' if held else 'Training'}.npz"),
        "ravdess": ("--ravdess DIR", "data/ravdess_speech"),
        "text": ("--text CSV", f"data/meld_text/{'dev' if held else 'train'}_sent_emo.csv"),
    }


def _add_corpora(p: argparse.ArgumentParser, split: str) -> None:
    held = split == "eval"
    default = {k: f"the checkout's ../shared/{rel}" for k, (_, rel) in _corpora(split).items()}
    p.add_argument(
        "--faces",
        metavar="NPZ",
        help=f"faces in FER2013's npz format (default: FER2013 {default['faces']})",
    )
    p.add_argument(
        "--ravdess",
        metavar="DIR",
        help=f"RAVDESS-layout speech folder (default: {default['ravdess']})",
    )
    p.add_argument(
        "--actors",
        default=EVAL_ACTORS if held else TRAIN_ACTORS,
        help="RAVDESS actors to draw voices from (default: %(default)s, "
        + (
            "the voice model's unseen test actors)"
            if held
            else "the voice model's training actors)"
        ),
    )
    p.add_argument(
        "--text",
        metavar="CSV",
        help=f"sentences in MELD's CSV format (default: {default['text']})",
    )


def _pools(args, speaker):
    from affectstream.models.face.data import FerFormatError
    from affectstream.models.fusion import scenario as sc
    from affectstream.models.text.data import DataError as TextDataError
    from affectstream.models.voice.data import DataError

    try:
        return sc.load_pools(args.faces, args.ravdess, args.text, actors_arg(args.actors), speaker)
    except (sc.ScenarioError, FerFormatError, DataError, TextDataError) as e:
        raise _usage(str(e)) from None


# -- scenario make ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    mp = sub.add_parser("make", help="compose a labelled stream (video + audio + labels.json)")
    _add_corpora(mp, "eval")
    mp.add_argument("--out", required=True, metavar="DIR", help="folder to write the stream to")
    mp.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    mp.add_argument("--minutes", type=float, default=10.0, help="length of the stream (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from affectstream.models.fusion import scenario as sc

    if args.minutes <= 0:
        raise _usage(f"--minutes must be positive, got {args.minutes}")
    fill_shared_defaults(args, _corpora("eval"))
    try:
        speaker = sc.Speaker(seed=args.seed)
    except sc.ScenarioError as e:
        raise _usage(str(e)) from None
    pools = _pools(args, speaker)
    segments = sc.plan_stream(pools, args.minutes, seed=args.seed)
    info = {
        "faces": args.faces,
        "ravdess": args.ravdess,
        "actors": args.actors,
        "text": args.text,
        "seed": args.seed,
        "minutes": args.minutes,
    }
    try:
        out = sc.write_stream(segments, pools, speaker, args.out, info)
    except sc.ScenarioError as e:
        from affectstream.core.errors import OutputError

        raise OutputError(str(e)) from None
    stats = sc.mix_stats(segments)
    print(
        f"wrote {out}: {stats['segments']} segments, {stats['seconds']:.0f} s; conflicting "
        f"content in {stats['conflicting']:.0%}, an absent modality in {stats['absent']:.0%}"
    )
    print(f"replay it: affectstream run --video {out / 'video.avi'} --audio {out / 'audio.wav'}")
    return 0


# -- train fusion -----------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    # defaults are TrainOptions' (not imported here: it imports torch, and building the
    # parser must stay quick for every command)
    _add_corpora(p, "train")
    p.add_argument(
        "--out", metavar="FILE", help="weights file (default: the shipped fusion.pt, replaced)"
    )
    p.add_argument("--streams", type=int, help="simulated training streams (default 120)")
    p.add_argument("--minutes", type=float, help="minutes per simulated stream (default 3)")
    p.add_argument("--epochs", type=int, help="(default 1)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="(default %(default)s; an ensemble's members take this seed and the next ones)",
    )
    p.add_argument(
        "--members",
        type=int,
        help="networks trained apart and averaged (default 3; 1: a single network)",
    )
    p.add_argument(
        "--degraded",
        type=float,
        default=0.3,
        metavar="SHARE",
        help="share of simulated streams in a noisy room, and (drawn apart) before a poor "
        "webcam, so the model learns to trust a spoiled modality less; the bank then also "
        "encodes every item through such media, about twice the time (default %(default)s; "
        "0: clean media only)",
    )
    p.add_argument(
        "--faces-per-class", type=int, default=600, help="faces encoded per class (%(default)s)"
    )
    p.add_argument(
        "--sentences-per-class", type=int, default=150, help="sentences per class (%(default)s)"
    )
    p.add_argument(
        "--bank",
        metavar="FILE",
        help="cache of the encoders' outputs (default: in the user cache, keyed by the "
        "encoders' weights and the data; delete it after changing an encoder's code)",
    )
    p.add_argument(
        "--live-seeds",
        default="201,202,203",
        help="seeds of labelled streams of the training corpora, made here (in the user cache) "
        "and replayed through the real pipeline: their live tokens join the simulated ones "
        "(default %(default)s; 'none' for simulation only)",
    )
    p.add_argument(
        "--live-minutes", type=float, default=10.0, help="length of each (default %(default)s)"
    )
    p.add_argument(
        "--replay",
        action="append",
        default=[],
        metavar="DIR|FILE",
        help="also replay this labelled stream of training data (scenario make), or read "
        "such a replay kept by --save-replays (repeatable)",
    )
    p.add_argument(
        "--save-replays",
        metavar="DIR",
        help="keep each live replay made here as DIR/<stream folder's name>.replay.pkl, so a "
        "later run reads it with --replay FILE (and --live-seeds none) instead of replaying",
    )
    p.add_argument(
        "--calibrate-on",
        nargs="+",
        metavar="DIR|FILE",
        help="labelled streams (scenario make) replayed through the real pipeline after "
        "training, or replays kept by `eval stream --save-replays` fused again, to refit the "
        "temperature on live outputs, all of their ticks pooled (never the evaluation "
        "streams; default: the development stream of --calibrate-seed)",
    )
    p.add_argument(
        "--calibrate-seed",
        default="101",
        help="without --calibrate-on, make (once, in the user cache) the 10-minute development "
        "stream of this seed from the evaluation corpora (what `scenario make --seed N "
        "--minutes 10` draws) and calibrate on it (default %(default)s; 'none': keep the "
        "temperature fitted in training)",
    )
    p.add_argument("--json", metavar="OUT", help="write the training record as JSON")
    add_backend_arguments(p)


def replay_stream(stream_dir: str, config):
    """`bench.stream_eval.replay_stream`, with a stream folder that cannot be used as a usage
    error naming it."""
    from affectstream.bench import stream_eval
    from affectstream.models.fusion.scenario import ScenarioError

    try:
        return stream_eval.replay_stream(stream_dir, config)
    except ScenarioError as e:
        raise _usage(str(e)) from None


def _is_kept(path) -> bool:
    """Whether `path` names a replay kept by `--save-replays` rather than a stream folder."""
    from affectstream.bench.stream_eval import REPLAY_SUFFIX

    return str(path).endswith(REPLAY_SUFFIX)


def _read_kept(path):
    """`stream_eval.load_replay`, a file that is no kept replay a usage error naming it."""
    from affectstream.bench.stream_eval import load_replay
    from affectstream.models.fusion.scenario import ScenarioError

    try:
        return load_replay(path)
    except ScenarioError as e:
        raise _usage(str(e)) from None


def _kept_path(folder: str | None, streams: list[str], k: int) -> Path | None:
    """Where `--save-replays` keeps stream `k`'s replay (`_named_path`)."""
    from affectstream.bench.stream_eval import REPLAY_SUFFIX

    return _named_path(folder, streams, k, REPLAY_SUFFIX)


def calibrate(weights: Path, streams: list[str], config) -> dict:
    """Refit the temperature of `weights` on live outputs, the ticks of every stream pooled: a
    labelled stream folder is replayed through the pipeline, a saved replay (`.replay.pkl`)
    fused again from its recorded inputs. The temperature fitted on simulated validation
    streams misses how the live encoders err."""
    import numpy as np
    import torch

    from affectstream.bench.stream_eval import refuse
    from affectstream.core.labels import LABELS
    from affectstream.export.predictors import open_predictor
    from affectstream.models.fusion.predictor import load_weights
    from affectstream.models.fusion.scenario import segment_at
    from affectstream.models.fusion.train import fit_temperature

    config.fusion.method, config.fusion.weights = "learned", str(weights)
    kept = [_read_kept(s) if _is_kept(s) else None for s in streams]  # all read first
    predictor = open_predictor("fusion", config) if any(r is not None for r in kept) else None
    logp, y = [], []
    for stream, saved in zip(streams, kept, strict=True):
        replay = replay_stream(stream, config) if saved is None else refuse(saved, predictor)
        estimates, segments = replay.estimates, replay.labels["segments"]
        seg = segment_at(replay.labels, [e.t for e in estimates])
        live = np.array([any(e.present.values()) for e in estimates])
        y.append(np.array([LABELS.index(segments[i]["target"]) for i in seg])[live])
        logp.append(np.log(np.stack([e.probs for e in estimates])[live] + 1e-9))
    scale = fit_temperature(np.concatenate(logp), np.concatenate(y))
    d = load_weights(weights)
    old = float(d["state"]["temperature"])
    d["state"]["temperature"] = torch.tensor(old * scale)
    ticks = int(sum(len(v) for v in y))
    d["info"]["calibration"] = {"streams": [str(s) for s in streams], "ticks": ticks, "before": old}
    d["info"]["temperature"] = old * scale
    torch.save(d, weights)
    return d["info"]


def _stream_in_cache(folder: Path, what: str, seed: int, pools_of, speaker, minutes, info) -> Path:
    """A labelled stream in the user cache: `folder` if it holds one, else drawn there once from
    the pools `pools_of()` returns (as `scenario make` draws)."""
    from affectstream.models.fusion import scenario as sc

    if (folder / "labels.json").is_file():
        print(f"{what} (seed {seed}): {folder} (cached)", flush=True)
        return folder
    print(f"making the {what} (seed {seed}) in {folder} ...", flush=True)
    pools = pools_of()
    segments = sc.plan_stream(pools, minutes, seed=seed)
    sc.write_stream(segments, pools, speaker, folder, info)
    return folder


def _live_streams(args, speaker) -> list[Path]:
    """The `--live-seeds` streams of the training corpora (all of them, as `scenario make`
    draws), written once into the user cache."""
    import functools
    import hashlib

    from affectstream.export.select import cache_root

    if args.live_seeds.strip().lower() in ("", "none"):
        return []
    try:
        seeds = [int(v) for v in args.live_seeds.split(",") if v.strip()]
    except ValueError:
        raise _usage(
            f"--live-seeds must be comma-separated integers, got {args.live_seeds!r}"
        ) from None
    if args.live_minutes <= 0:
        raise _usage(f"--live-minutes must be positive, got {args.live_minutes}")
    key = hashlib.sha256(
        repr((args.faces, args.ravdess, args.actors, args.text, args.live_minutes)).encode()
    ).hexdigest()[:12]
    pools_of = functools.cache(lambda: _pools(args, speaker))  # drawn from once for all seeds
    return [
        _stream_in_cache(
            cache_root() / "fusion" / f"live-{key}-{seed}",
            "labelled training stream",
            seed,
            pools_of,
            speaker,
            args.live_minutes,
            {"seed": seed, "train": True},
        )
        for seed in seeds
    ]


def _calibrate_seed(args) -> int | None:
    """`--calibrate-seed` as a number, or None for 'none'; a usage error otherwise."""
    if str(args.calibrate_seed).strip().lower() in ("", "none"):
        return None
    try:
        return int(args.calibrate_seed)
    except ValueError:
        given = args.calibrate_seed
        raise _usage(f"--calibrate-seed must be an integer or 'none', got {given!r}") from None


def _dev_corpora(args) -> argparse.Namespace | None:
    """The corpora the development stream of `--calibrate-seed` is drawn from: the evaluation
    ones, as `scenario make` draws by default, with `--ravdess`; None when there is no such
    stream to make. Checked before training, so a missing corpus stops the command at once."""
    from affectstream.core.errors import UsageError

    if args.calibrate_on or _calibrate_seed(args) is None:
        return None
    held = argparse.Namespace(faces=None, ravdess=args.ravdess, actors=EVAL_ACTORS, text=None)
    try:
        fill_shared_defaults(held, _corpora("eval"))
    except UsageError:
        raise _usage(
            "give --calibrate-on DIR (or --calibrate-seed none): the evaluation corpora the "
            "development stream is drawn from are not in the checkout's ../shared"
        ) from None
    return held


def _dev_stream(args, speaker, held: argparse.Namespace | None) -> list[str] | None:
    """The development streams that calibrate the temperature: `--calibrate-on`, or the one of
    `--calibrate-seed`, drawn from the evaluation corpora `held` (`_dev_corpora`) as `scenario
    make` draws by default (the evaluation streams use other seeds), written once into the
    user cache."""
    if args.calibrate_on:
        return list(args.calibrate_on)
    seed = _calibrate_seed(args)
    if seed is None:
        return None
    import hashlib

    from affectstream.export.select import cache_root
    from affectstream.models.fusion import scenario as sc

    key = hashlib.sha256(repr(sorted(vars(held).items())).encode()).hexdigest()[:12]
    dev_speaker = sc.Speaker(seed=seed)
    folder = _stream_in_cache(
        cache_root() / "fusion" / f"dev-{key}-{seed}",
        "development stream",
        seed,
        lambda: _pools(held, dev_speaker),
        dev_speaker,
        10.0,
        {**vars(held), "seed": seed, "minutes": 10.0},
    )
    return [str(folder)]


def _bank_path(args, predictors) -> Path:
    import hashlib

    from affectstream.export.predictors import shipped
    from affectstream.export.registry import file_sha256
    from affectstream.export.select import cache_root

    h = hashlib.sha256()
    for m in ("face", "voice", "text"):
        h.update(repr(predictors[m].describe()).encode())
    for name in ("face.int8.onnx", "voice.pt", "text.safetensors"):  # the encoders' weights
        w = shipped(name)
        h.update((file_sha256(w) if w else name).encode())
    for v in (args.faces, args.ravdess, args.actors, args.text, args.seed):
        h.update(str(v).encode())
    h.update(f"{args.faces_per_class}/{args.sentences_per_class}".encode())
    if args.degraded > 0:  # a bank with the harder media's items too
        h.update(b"degraded-v1")
    return cache_root() / "fusion" / f"bank-{h.hexdigest()[:16]}.pkl"


def run_train(args: argparse.Namespace) -> int:
    import pickle
    from dataclasses import replace

    from affectstream.cli.args import config_from_args
    from affectstream.export.predictors import open_predictor
    from affectstream.models.fusion import bank as bk
    from affectstream.models.fusion import scenario as sc
    from affectstream.models.fusion.predictor import default_weights_path, save_weights
    from affectstream.models.fusion.train import TrainOptions, train

    args.config = None
    config = config_from_args(args)
    fill_shared_defaults(args, _corpora("train"))
    held = _dev_corpora(args)  # a bad value or missing corpus stops it before the training
    if not 0 <= args.degraded <= 1:
        raise _usage(f"--degraded is a share between 0 and 1, got {args.degraded}")
    if args.members is not None and args.members < 1:
        raise _usage(f"--members must be 1 or more, got {args.members}")
    t0 = time.perf_counter()
    predictors = {m: open_predictor(m, config) for m in ("face", "voice", "text")}
    speaker = sc.Speaker(seed=args.seed)
    path = Path(args.bank) if args.bank else _bank_path(args, predictors)
    if path.is_file():
        print(f"encoder outputs: {path} (cached)")
        with open(path, "rb") as f:
            bank, pools = pickle.load(f)
    else:
        pools = _pools(args, speaker)
        print("encoding the training corpora with the runtime encoders ...", flush=True)
        bank, pools = bk.build(
            pools,
            speaker,
            predictors,
            faces_per_class=args.faces_per_class,
            sentences_per_class=args.sentences_per_class,
            seed=args.seed,
            progress=lambda what, c: log.info("encoded %s of class %d", what, c),
            degraded=args.degraded > 0,
        )
        pools.speech_s = None  # not picklable; set again below
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump((bank, pools), f)
        print(f"encoder outputs cached in {path} ({time.perf_counter() - t0:.0f} s)")
    pools.speech_s = speaker.seconds
    given = {k: getattr(args, k) for k in ("streams", "minutes", "epochs") if getattr(args, k)}
    opts = TrainOptions(seed=args.seed, degraded=args.degraded, **given)
    if args.members is not None:
        opts.spec = replace(opts.spec, members=args.members)

    def progress(rec: dict) -> None:
        member = f"member {rec['member']}/{opts.spec.members}  " if "member" in rec else ""
        print(
            f"{member}epoch {rec['epoch']:2d}  loss {rec['loss']:.3f}  "
            f"val acc {rec['accuracy']:.3f}  relevance agreeing {rec['relevance_agreeing']:.2f} "
            f"conflicting {rec['relevance_conflicting']:.2f}",
            flush=True,
        )

    replays = []
    folders = _live_streams(args, speaker) + list(args.replay)
    for k, folder in enumerate(folders):
        from affectstream.bench.stream_eval import save_replay
        from affectstream.models.fusion.simulate import from_replay

        if _is_kept(folder):
            print(f"reading the kept replay {folder} ...", flush=True)
            replay = _read_kept(folder)
        else:
            print(f"replaying {folder} through the pipeline ...", flush=True)
            config.fusion.method = "learned"
            replay = replay_stream(folder, config)
            if args.save_replays:
                save_replay(_kept_path(args.save_replays, [str(folder)], 0), replay)
        times = [e.t for e in replay.estimates]
        replays.append(from_replay(replay.record, times, replay.labels, bank, opts.history, str(k)))
    net, record = train(pools, bank, opts, progress=progress, replays=replays)
    record["replays"] = [str(f) for f in folders]
    record["command"] = "affectstream train fusion " + " ".join(
        sys.argv[sys.argv.index("fusion") + 1 :] if "fusion" in sys.argv else []
    )
    record["data"] = {
        "faces": args.faces,
        "ravdess": args.ravdess,
        "actors": args.actors,
        "text": args.text,
    }
    record["seconds"] = round(time.perf_counter() - t0, 1)
    out = save_weights(net, opts.history, record, args.out or default_weights_path())
    print(f"temperature {record['temperature']:.3f}; wrote {out} ({record['seconds']:.0f} s)")
    dev = _dev_stream(args, speaker, held)
    if dev is not None:
        record = calibrate(out, dev, config)
        print(f"temperature refitted on {', '.join(dev)}: {record['temperature']:.3f}")
    write_json(args.json, record)
    return 0


# -- eval stream ------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--scenario",
        nargs="+",
        metavar="DIR",
        help="a stream from `affectstream scenario make`; several: each is scored, then the mean "
        "over them (the JSON's figures are the means, `streams` holds each stream's)",
    )
    what.add_argument(
        "--replayed",
        nargs="+",
        metavar="FILE",
        help="instead of replaying: replays kept by --save-replays (pickles: only your own), "
        "fused again from their recorded inputs by the fusion model of --fusion-weights (or "
        "the config's), so models are compared on the very same live ticks in seconds",
    )
    p.add_argument(
        "--save-replays",
        metavar="DIR",
        help="also keep each replay (labels, estimates, the fusion's recorded inputs) as "
        "DIR/<stream folder's name>.replay.pkl, for --replayed",
    )
    p.add_argument(
        "--fusion-weights",
        metavar="FILE",
        help="fusion model weights (default: the config's fusion.weights, else the shipped file)",
    )
    p.add_argument("--json", metavar="OUT", help="write the scores as JSON")
    p.add_argument(
        "--ticks",
        metavar="DIR",
        help="also write every tick's arrays (fused output, relevance, readings, target) to "
        "DIR/<stream folder's name>.npz, to fit or judge calibration offline",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (default: the shipped preset)")
    add_fusion_argument(p)
    add_backend_arguments(p)


def run_eval(args: argparse.Namespace) -> int:
    from affectstream.bench.stream_eval import evaluate_stream
    from affectstream.cli.args import config_from_args
    from affectstream.core.errors import OutputError
    from affectstream.models.fusion.scenario import ScenarioError, read_labels

    config = config_from_args(args)
    if args.fusion_weights:
        config.fusion.weights = args.fusion_weights
    if args.replayed:
        return _eval_replayed(args, config)
    results = []
    try:
        for folder in args.scenario:  # every stream checked before the first replay
            read_labels(folder)
        if args.save_replays and config.fusion.method != "learned":
            raise ScenarioError(
                "--save-replays keeps the learned fusion's inputs: not with --fusion confidence"
            )
        for k, folder in enumerate(args.scenario):
            ticks = _ticks_path(args.ticks, args.scenario, k)
            save = _kept_path(args.save_replays, args.scenario, k)
            results.append(evaluate_stream(folder, config, ticks=ticks, save=save))
            print_eval(results[-1], folder if len(args.scenario) > 1 else "")
    except ScenarioError as e:
        raise _usage(str(e)) from None
    except OSError as e:  # --ticks or --save-replays could not be written (a full disk)
        raise OutputError(f"cannot write {e.filename or 'the output'}: {e.strerror or e}") from None
    return _report(args, results)


def _eval_replayed(args: argparse.Namespace, config) -> int:
    """`eval stream --replayed`: saved replays fused again by the configured fusion model."""
    from affectstream.bench.stream_eval import evaluate_replay, refuse
    from affectstream.export.predictors import open_predictor

    if config.fusion.method != "learned":
        raise _usage(
            "--replayed fuses the recorded inputs with a fusion model: not with --fusion confidence"
        )
    replays = [_read_kept(f) for f in args.replayed]  # every file read before scoring
    predictor = open_predictor("fusion", config)
    results = []
    for k, (path, r) in enumerate(zip(args.replayed, replays, strict=True)):
        ticks = _ticks_path(args.ticks, args.replayed, k)
        results.append(evaluate_replay(refuse(r, predictor), path, "learned", ticks))
        print_eval(results[-1], path if len(args.replayed) > 1 else "")
    return _report(args, results)


def _report(args: argparse.Namespace, results: list[dict]) -> int:
    from affectstream.bench.stream_eval import mean_over_streams

    result = results[0] if len(results) == 1 else mean_over_streams(results)
    if len(results) > 1:
        print_eval(result, f"mean over {len(results)} streams")
    write_json(args.json, result)
    return 0


def _ticks_path(folder: str | None, streams: list[str], k: int) -> Path | None:
    """Where `--ticks` writes stream `k`'s arrays (`_named_path`)."""
    return _named_path(folder, streams, k, ".npz")


def _named_path(folder: str | None, streams: list[str], k: int, suffix: str) -> Path | None:
    """`folder/<name of stream k><suffix>`: the stream folder's name (a saved replay's, less
    `.replay.pkl`), numbered when two streams share a name; None without `folder`."""
    if not folder:
        return None
    from affectstream.bench.stream_eval import REPLAY_SUFFIX

    names = [Path(s).resolve().name.removesuffix(REPLAY_SUFFIX) for s in streams]
    name = names[k] if names.count(names[k]) == 1 else f"{names[k]}-{k + 1}"
    return Path(folder) / f"{name}{suffix}"


def print_eval(r: dict, what: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    where = f"{what}: " if what else ""
    t = Table(
        title=f"eval stream: {where}{r['ticks']} ticks, {r['segments']} segments "
        f"({r['fusion']} fusion)"
    )
    for col in ("predictor", "accuracy", "macro-F1"):
        t.add_column(col, justify="right" if col != "predictor" else "left")
    for k in ("fused", "face", "voice", "text", "average", "confidence_weighted"):
        t.add_row(k, f"{r[k]['accuracy']:.3f}", f"{r[k]['macro_f1']:.3f}")
    for k, v in r["ablation"].items():
        t.add_row(f"fused, {k.replace('_', ' ')}", f"{v['accuracy']:.3f}", "")
    console = Console()
    console.print(t)
    rel = r["relevance"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(
        f"ECE {r['fused']['ece']:.3f}   relevance: agreeing {fmt(rel['agreeing'])}, "
        f"conflicting {fmt(rel['conflicting'])}, absent {fmt(rel['absent'])}   "
        f"lag median {r['lag_s']['median']} s, p90 {r['lag_s']['p90']} s   "
        f"fusion p50 {r['fusion_ms']['p50']} ms, p99 {r['fusion_ms']['p99']} ms"
    )


# -- bench fusion -----------------------------------------------------------------------------
def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=2000, help="calls per backend (%(default)s)")
    p.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="comma-separated backends to time (default %(default)s)",
    )
    p.add_argument("--json", metavar="OUT", help="write the table as JSON")


def run_bench(args: argparse.Namespace) -> int:
    from affectstream.bench.fusion import bench_fusion, print_bench

    if args.calls < 1:
        raise _usage(f"--calls must be at least 1, got {args.calls}")
    result = bench_fusion([b for b in args.backends.split(",") if b], calls=args.calls)
    print_bench(result)
    write_json(args.json, result)
    return 0
