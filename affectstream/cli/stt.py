"""`affectstream eval stt` (word error rate per file) and `affectstream bench stt` (streaming).

Nothing heavy is imported at module import time: faster-whisper loads inside the commands.
"""

from __future__ import annotations

import argparse

from affectstream.cli.args import add_model_arguments, transcriber_config, write_json
from affectstream.cli.defaults import fill_shared_defaults


def _common(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here")


def _decoder(cfg, live: bool):
    from affectstream.realtime.transcriber import load_decoder

    # SourceError with one clear line when the model is missing
    return load_decoder(cfg, live=live)


def _clips(args):
    from affectstream.bench.stt import load_clips
    from affectstream.core.errors import UsageError

    try:
        return load_clips(args.audio, args.transcripts, getattr(args, "pause", 1.0))
    except ValueError as e:  # a malformed transcription line
        raise UsageError(str(e)) from None


# -- eval ------------------------------------------------------------------------------
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", required=True, metavar="DIR", help="folder of audio files")
    p.add_argument(
        "--transcripts",
        metavar="FILE",
        help="'<s> text </s> (fileid)' lines (default: the one in DIR)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="stream each file at real-time pace (default: as fast as possible)",
    )
    _common(p)


def run_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from affectstream.models.stt.wer import WordErrors, word_errors
    from affectstream.realtime.transcribe_file import stream_array

    cfg = transcriber_config(args)
    clips = _clips(args)
    decoder = _decoder(cfg, live=args.realtime)
    table = Table(title=f"streaming WER, {args.audio}")
    for col in ("file", "reference", "hypothesis", "WER"):
        table.add_column(col, justify="right" if col == "WER" else "left")
    total = WordErrors(0, 0, 0, 0)
    rows = []
    for cid, audio, ref in zip(clips.ids, clips.audio, clips.refs, strict=True):
        run = stream_array(audio, decoder, cfg, realtime=args.realtime)
        e = word_errors(ref, run.text)
        total = total + e
        rows.append({"id": cid, "ref": ref, "hyp": run.text, **e.to_dict()})
        table.add_row(cid, ref, run.text, f"{e.wer:.3f}")
    table.add_section()
    table.add_row("total", f"{total.ref_words} words", f"{total.errors} errors", f"{total.wer:.3f}")
    Console().print(table)
    print(f"WER {total.wer:.4f} ({total.errors}/{total.ref_words})")
    write_json(
        args.json,
        {
            "audio": str(args.audio),
            "wer": round(total.wer, 4),
            "total": total.to_dict(),
            "files": rows,
            "realtime": args.realtime,
            "model": decoder.model_path,
        },
    )
    return 0


# -- bench -----------------------------------------------------------------------------
def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audio",
        metavar="DIR",
        help="clips to join (default: the checkout's ../shared/media/speech/librivox, resolved "
        "when the command runs)",
    )
    p.add_argument(
        "--transcripts", metavar="FILE", help="transcription file (default: the one in DIR)"
    )
    p.add_argument(
        "--pause", type=float, default=1.0, metavar="S", help="silence between clips (1.0)"
    )
    p.add_argument("--runs", type=int, default=1, metavar="N", help="repeat the stream N times")
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    _common(p)


def _machine() -> dict:
    import datetime
    import os
    import platform

    import ctranslate2

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "ctranslate2": ctranslate2.__version__,
    }


def run_bench(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from rich.console import Console
    from rich.table import Table

    from affectstream.bench.stt import measure
    from affectstream.core.errors import UsageError
    from affectstream.realtime.transcribe_file import stream_array

    if args.runs < 1 or args.pause < 0:
        raise UsageError("--runs must be >= 1 and --pause >= 0")
    fill_shared_defaults(args, {"audio": ("--audio DIR", "media/speech/librivox")})
    cfg = transcriber_config(args)
    clips = _clips(args)
    audio, _ = clips.joined()
    machine = _machine()
    decoder = _decoder(cfg, live=not args.fast)
    results = []
    for _ in range(args.runs):
        run = stream_array(audio, decoder, cfg, realtime=not args.fast)
        r = measure(run, clips)
        r["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        results.append(r)

    table = Table(
        title=f"bench stt: {len(clips.ids)} clips of {args.audio} joined with {args.pause:g}s pauses"
    )
    table.add_column("metric")
    for i in range(len(results)):
        table.add_column(f"run {i + 1}", justify="right")

    def row(name, fn):
        table.add_row(name, *[fn(r) for r in results])

    row("audio (s)", lambda r: f"{r['audio_s']:.1f}")
    row("pace", lambda r: "real time" if r["realtime"] else "fast")
    row("WER", lambda r: f"{r['wer']:.3f}")
    row("real-time factor", lambda r: f"{r['rtf']:.2f}")
    row("commit latency median (ms)", lambda r: str(r["commit_latency_ms"]["median"]))
    row("commit latency p95 (ms)", lambda r: str(r["commit_latency_ms"]["p95"]))
    row(
        "first partial median / max (ms)",
        lambda r: f"{r['first_partial_ms']['median']} / {r['first_partial_ms']['max']}",
    )
    row("loops in output", lambda r: str(r["loops_in_output"]))
    row("hypotheses cut by guards", lambda r: str(sum(r["hypotheses_cut"].values())))
    row("skips (s skipped)", lambda r: f"{r['skips']} ({r['skipped_s']:.1f})")
    row("max behind (s)", lambda r: str(r["max_behind_s"]))
    row("load avg 1m after", lambda r: str(r["load_avg_1m_after"]))
    Console().print(table)
    for r in results:
        print(f"text: {r['text']}")
    write_json(
        args.json,
        {
            "command": "affectstream bench stt",
            "audio": str(args.audio),
            "pause_s": args.pause,
            "machine": machine,
            "model": decoder.model_path,
            "config": dataclasses.asdict(cfg),
            "runs": results,
        },
    )
    return 0
