"""The streaming speech-to-text benchmark: clips joined with pauses, streamed, measured.

Measures what the issue asks, on the stream clock:
- WER of the final words against the joined references (and per clip);
- real-time factor (decoding time / audio time) and how far the transcriber fell behind;
- commit latency: end of each word in the audio (its aligned end time) -> its final segment;
- first-partial latency: speech onset of each clip (first Silero-voiced frame) -> first text;
- loops: back-to-back repetitions in the output that the reference does not have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.stats import percentiles
from affectstream.models.stt.guards import count_loops
from affectstream.models.stt.local_agreement import join_words
from affectstream.models.stt.wer import WordErrors, read_transcripts, word_errors
from affectstream.realtime.sources.array_replay import join_with_pauses, load_audio
from affectstream.realtime.transcribe_file import StreamRun

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".raw", ".mp3", ".ogg", ".m4a")


@dataclass
class Clips:
    """Reference clips: ids, audio, transcripts, and where each starts in the joined stream."""

    ids: list[str]
    audio: list[np.ndarray]
    refs: list[str]
    pause_s: float = 1.0

    def joined(self) -> tuple[np.ndarray, list[int]]:
        return join_with_pauses(self.audio, self.pause_s)


def find_transcripts(audio_dir: Path) -> Path:
    """The one `*transcription` file in `audio_dir` (the CMU test layout)."""
    found = sorted(p for p in audio_dir.iterdir() if p.name.endswith("transcription"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"give --transcripts: expected one *transcription file in {audio_dir}, found {len(found)}"
        )
    return found[0]


def load_clips(
    audio_dir: str | Path, transcripts: str | Path | None, pause_s: float = 1.0
) -> Clips:
    """Audio files under `audio_dir` (recursively) that have a transcript, in path order."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder not found: {audio_dir}")
    tpath = Path(transcripts) if transcripts else find_transcripts(audio_dir)
    if not tpath.is_file():
        raise FileNotFoundError(f"transcripts file not found: {tpath}")
    refs = read_transcripts(tpath)
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    files = [p for p in files if p.stem in refs]
    if not files:
        raise FileNotFoundError(f"no audio in {audio_dir} matches an id in {tpath}")
    return Clips(
        [p.stem for p in files],
        [load_audio(p) for p in files],
        [refs[p.stem] for p in files],
        pause_s,
    )


def speech_onsets(clips: list[np.ndarray], threshold: float = 0.5) -> list[int]:
    """Sample offset of the first voiced Silero frame of each clip (0 if none is voiced)."""
    from affectstream.models.stt.vad import FRAME, silero_probs

    out = []
    for x in clips:
        hits = np.flatnonzero(silero_probs(x) >= threshold)
        out.append(int(hits[0]) * FRAME if len(hits) else 0)
    return out


def _pct(values: list[float], qs: tuple[float, ...]) -> dict[str, float | None]:
    """core.stats.percentiles to 0.1 ms, the median under its old key `median`."""
    p = percentiles(values, qs, digits=1, with_max=True)
    return {"median": p.pop("p50"), **p}


def measure(run: StreamRun, clips: Clips) -> dict:
    """All metrics of one streamed run of `clips` (joined with their pause)."""
    _, starts = clips.joined()
    bounds = starts[1:] + [10**12]
    onsets = speech_onsets(clips.audio)

    def clip_of(t_ns: int) -> int:
        idx = (t_ns - run.t0_ns) * MODEL_SAMPLE_RATE / 1e9
        return int(np.searchsorted(bounds, idx, side="right"))

    per_clip_words: list[list[str]] = [[] for _ in clips.ids]
    latencies_ms: list[float] = []
    for seg in run.finals:
        for w in seg.words:
            per_clip_words[min(clip_of(w.end_ns), len(clips.ids) - 1)].append(w.text)
            latencies_ms.append((seg.emitted_ns - w.end_ns) / 1e6)

    first_ms: list[float | None] = [None] * len(clips.ids)
    for seg in run.segments:  # in emission order
        if not seg.text:
            continue
        i = min(clip_of(seg.t_end_ns), len(clips.ids) - 1)
        if first_ms[i] is None:
            onset_ns = run.t0_ns + int((starts[i] + onsets[i]) * 1e9 / MODEL_SAMPLE_RATE)
            first_ms[i] = (seg.emitted_ns - onset_ns) / 1e6

    total = WordErrors(0, 0, 0, 0)
    per_clip = []
    for cid, ref, words in zip(clips.ids, clips.refs, per_clip_words, strict=True):
        e = word_errors(ref, join_words(words))
        total = total + e
        per_clip.append({"id": cid, "ref": ref, "hyp": join_words(words), **e.to_dict()})
    stream_errors = word_errors(" ".join(clips.refs), run.text)
    hyp_words = run.text.split()
    loops = max(0, count_loops(hyp_words) - count_loops(" ".join(clips.refs).split()))
    firsts = [x for x in first_ms if x is not None]
    stats = run.stats
    return {
        "audio_s": round(run.audio_s, 2),
        "realtime": run.realtime,
        "wer": round(stream_errors.wer, 4),
        "errors": stream_errors.to_dict(),
        "wer_per_clip_total": round(total.wer, 4),
        "rtf": round(run.rtf, 3),
        "commit_latency_ms": {**_pct(latencies_ms, (50, 90, 95)), "words": len(latencies_ms)},
        "first_partial_ms": {
            **_pct(firsts, (50,)),
            "per_clip": [None if x is None else round(x, 1) for x in first_ms],
        },
        "loops_in_output": loops,
        "hypotheses_cut": stats.get("guards", {}),
        "skips": stats.get("skips", 0),
        "skipped_s": stats.get("skipped_s", 0.0),
        "max_behind_s": stats.get("max_behind_s"),
        "final_lag_s": stats.get("final_lag_s"),
        "decodes": stats.get("decodes"),
        "replay_late_ms_max": stats.get("replay_late_ms_max"),
        "text": run.text,
        "clips": per_clip,
    }
