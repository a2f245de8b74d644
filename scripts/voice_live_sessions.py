"""The live voice stage on one speaker at a time: do the session and utterance heads help there?

`eval voice` reads each clip whole, one session per speaker; the fusion's evaluation streams
mix four actors and a synthetic voice in one session. Neither is what one person in front of
a microphone gives the live stage. This script gives it that: for each actor, the actor's
clips in a seeded random order with a pause between them, one audio stream, read tick by tick
(10 Hz) by the real `VoiceStage` (Silero VAD, the shipped predictor, its session head and
eGeMAPS head), a fresh stage per actor. Each voiced tick is scored against the label of the
clip it falls in (ticks in a pause, or whose newest audio belongs to the pause, are not).

    python3 scripts/voice_live_sessions.py --data ../shared/data/ravdess_speech \
        --actors 17,18,19,20 --json OUT

Configurations: the network alone, + the session head (`voice.session_norm`), + the utterance
heads: eGeMAPS (`voice.egemaps`, needs the opensmile extra), Whisper statistics
(`voice.whisper`), both. After each tick the utterance workers are waited for, as if the
extractors kept up with real time (they do on this CPU: 20-65 ms a read, once a second).
Held-out RAVDESS actors (21-24) are refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SR = 16000
TICK = SR // 10
EG, WH = "eGeMAPSv02", "whisper-tiny.en"
CONFIGS = {  # name: (session_norm, utterance heads)
    "network": (False, ()),
    "session": (True, ()),
    "egemaps": (False, (EG,)),
    "session+egemaps": (True, (EG,)),
    "whisper": (False, (WH,)),
    "session+whisper": (True, (WH,)),
    "both": (False, (EG, WH)),
    "session+both": (True, (EG, WH)),
}


def actor_stream(clips, seed: int, gap_s: float) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """One actor's clips, shuffled, each followed by `gap_s` of silence: (audio, [(start, end,
    label)]) in samples."""
    from affectstream.models.voice.data import load_audio

    rng = np.random.default_rng(seed)
    parts, spans, pos = [], [], 0
    gap = np.zeros(int(gap_s * SR), np.float32)
    for j in rng.permutation(len(clips)):
        x = load_audio(clips[j].path, SR)
        parts += [x, gap]
        spans.append((pos, pos + len(x), clips[j].label_index))
        pos += len(x) + len(gap)
    return np.concatenate(parts), spans


def label_at(spans, sample: int) -> int:
    """The label of the clip that sample `sample` falls in; -1 in a pause."""
    for s, e, y in spans:
        if s <= sample < e:
            return y
    return -1


def run_stage(audio: np.ndarray, spans, predictor, session_norm: bool, heads: tuple) -> dict:
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.models.stt.vad import VoiceActivity
    from affectstream.realtime.stages.base import ABSENT
    from affectstream.realtime.stages.voice import VoiceStage

    ring = SampleRing(30.0, SR)
    stage = VoiceStage(ring, VoiceActivity(), predictor, window_s=2.0,
                       session_norm=session_norm, utterance=heads)  # fmt: skip
    right = scored = voiced = 0
    for i in range(0, len(audio) - TICK + 1, TICK):
        ring.write(audio[i : i + TICK], i)
        r = stage.run(i)
        for reader in stage._readers or ():
            reader.wait()
        if r is None or r is ABSENT:
            continue
        voiced += 1
        y = label_at(spans, i + TICK - 1)  # the newest sample the window holds
        if y >= 0:
            scored += 1
            right += int(np.argmax(r.probs) == y)
    return {"accuracy": right / max(scored, 1), "scored_ticks": scored, "voiced_ticks": voiced}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the RAVDESS speech folder")
    p.add_argument("--actors", default="17,18,19,20")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--gap-s", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)

    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.data import parse_actors, scan
    from affectstream.models.voice.egemaps import available

    actors = parse_actors(args.actors)
    if any(a > 20 for a in actors):
        raise SystemExit("RAVDESS actors 21-24 are held out; refusing")
    configs = args.configs.split(",")
    if any(EG in CONFIGS[c][1] for c in configs) and not available():
        print("no opensmile: the eGeMAPS configurations are skipped", file=sys.stderr)
        configs = [c for c in configs if EG not in CONFIGS[c][1]]
    predictor = open_eval_predictor("voice", "onnxruntime", threads=1)
    clips = scan(args.data)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "actors": list(actors),
                    "gap_s": args.gap_s, "seed": args.seed, "per_actor": {}}  # fmt: skip
    for a in actors:
        mine = [c for c in clips if c.actor == a]
        audio, spans = actor_stream(mine, args.seed + a, args.gap_s)
        row = {}
        for name in configs:
            t = time.perf_counter()
            row[name] = run_stage(audio, spans, predictor, *CONFIGS[name])
            row[name]["seconds"] = round(time.perf_counter() - t, 1)
            print(f"actor {a} {name}: {row[name]}", file=sys.stderr, flush=True)
        report["per_actor"][str(a)] = row
    report["mean"] = {
        c: float(np.mean([r[c]["accuracy"] for r in report["per_actor"].values()])) for c in configs
    }
    print("| configuration | " + " | ".join(f"actor {a}" for a in actors) + " | mean |")
    print("|---|" + "---|" * (len(actors) + 1))
    for c in configs:
        per = [report["per_actor"][str(a)][c]["accuracy"] for a in actors]
        print(f"| {c} | " + " | ".join(f"{v:.3f}" for v in per) + f" | {report['mean'][c]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
