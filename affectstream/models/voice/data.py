"""Emotional-speech corpora: labels, speakers, splits, decoding and silence trimming.

Two layouts are read. RAVDESS encodes everything in the file name `MM-VV-EE-II-SS-RR-AA`; the
emotion code is mapped onto the project's 7 common labels (calm counts as neutral). Any other
corpus is a folder with a `clips.csv` (`file`, `speaker`, `label` in the common space, ...), the
format of `speech_extra/` in the shared data. Every clip gets a speaker number that is unique
across corpora (RAVDESS actors keep their own 1-24), so splits are always by speaker and no
speaker is ever in both the training and the test set.
"""

from __future__ import annotations

import csv
import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.labels import LABELS

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")
CLIPS_CSV = "clips.csv"
RAVDESS = "ravdess"

# RAVDESS emotion code -> common label (calm -> neutral).
EMOTION_CODES: dict[str, str] = {
    "01": "neutral",
    "02": "neutral",  # calm
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgusted",
    "08": "surprised",
}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

# Actors held out for the shipped model's test results (2 male: odd, 2 female: even).
DEFAULT_TEST_ACTORS: tuple[int, ...] = (17, 18, 19, 20)
# Actors used for model selection while developing the recipe (never the test actors).
DEFAULT_VAL_ACTORS: tuple[int, ...] = (13, 14, 15, 16)


class DataError(ValueError):
    """A data folder or file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Clip:
    """One recording: its label, its speaker, its corpus, and (RAVDESS) what its name says."""

    path: Path
    label: str  # one of LABELS
    actor: int  # speaker number, unique across corpora (RAVDESS: the actor, 1-24)
    corpus: str = RAVDESS
    emotion_code: str = ""  # RAVDESS code, "01".."08"
    intensity: int = 1  # RAVDESS: 1 normal, 2 strong
    statement: int = 0
    repetition: int = 0

    @property
    def label_index(self) -> int:
        return LABELS.index(self.label)


def parse_name(path: str | Path) -> Clip:
    """Parse `03-01-EE-II-SS-RR-AA.flac`; raises DataError for a name that does not fit."""
    p = Path(path)
    m = _NAME.match(p.stem)
    if m is None:
        raise DataError(f"{p.name}: not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA)")
    _modality, _channel, emo, inten, stmt, rep, actor = m.groups()
    if emo not in EMOTION_CODES:
        raise DataError(f"{p.name}: unknown RAVDESS emotion code {emo}")
    return Clip(
        p,
        EMOTION_CODES[emo],
        int(actor),
        emotion_code=emo,
        intensity=int(inten),
        statement=int(stmt),
        repetition=int(rep),
    )


def speaker_number(corpus: str, speaker: str) -> int:
    """A stable speaker number for a `clips.csv` speaker, never one of RAVDESS's 1-24."""
    return 1000 + zlib.crc32(f"{corpus}/{speaker}".encode()) % 100_000_000


def scan(root: str | Path) -> list[Clip]:
    """All clips of the corpus in `root`: its `clips.csv` if it has one, else RAVDESS names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / CLIPS_CSV).is_file():
        return scan_csv(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips = []
    for p in files:
        try:
            clips.append(parse_name(p))
        except DataError as e:
            log.warning("skipping %s", e)
    if not clips:
        raise DataError(f"{root}: no RAVDESS .flac/.wav files found")
    return clips


def scan_csv(root: Path) -> list[Clip]:
    """The clips listed in `root/clips.csv`; the corpus is named after the folder."""
    corpus = root.name
    table = root / CLIPS_CSV
    clips = []
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"file", "speaker", "label"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, start=2):
            if row["label"] not in LABELS:
                raise DataError(f"{table} line {n}: unknown label {row['label']!r}")
            path = root / row["file"]
            if not path.is_file():
                raise DataError(f"{table} line {n}: {row['file']} is not in {root}")
            actor = speaker_number(corpus, row["speaker"])
            clips.append(Clip(path, row["label"], actor, corpus=corpus))
    if not clips:
        raise DataError(f"{table}: no clips listed")
    return sorted(clips, key=lambda c: str(c.path))


def split_by_actor(clips: Iterable[Clip], held_out: Sequence[int]) -> tuple[list[Clip], list[Clip]]:
    """(clips of other actors, clips of the `held_out` actors)."""
    held = set(held_out)
    rest, out = [], []
    for c in clips:
        (out if c.actor in held else rest).append(c)
    return rest, out


def parse_actors(text: str) -> tuple[int, ...]:
    """'17,18,19,20' -> (17, 18, 19, 20); raises DataError for anything else."""
    try:
        actors = tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise DataError(f"actors must be comma-separated numbers, got {text!r}") from None
    if not actors:
        raise DataError("no actors given")
    return actors


def load_audio(path: str | Path, sample_rate: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """Decode a file to float32 mono at `sample_rate`; raises DataError if it cannot."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataError(f"{path}: cannot decode audio ({e})") from None
    x = x.mean(axis=1)
    if x.size == 0:
        raise DataError(f"{path}: empty audio")
    if sr != sample_rate:
        import soxr

        x = soxr.resample(x, sr, sample_rate).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def speech_span(
    x: np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE, floor_db: float = -35.0
) -> tuple[int, int]:
    """[start, end) samples of the part louder than `floor_db` below the loudest 20 ms.

    RAVDESS clips carry 0.5-1 s of room silence at each end; the encoder should see speech.
    """
    hop = sample_rate // 50
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    frames = x[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() + floor_db)
    if loud.size == 0:
        return 0, len(x)
    return int(loud[0] * hop), int(min(len(x), (loud[-1] + 1) * hop))


def fit_span(start: int, end: int, length: int, total: int) -> tuple[int, int]:
    """Grow [start, end) symmetrically to at least `length` samples, inside [0, total)."""
    if total <= length:
        return 0, total
    if end - start >= length:
        return start, end
    grow = length - (end - start)
    s = max(0, start - grow // 2)
    e = s + length
    if e > total:
        e = total
        s = total - length
    return s, e


def kept_segment(
    x: np.ndarray, min_samples: int, margin_s: float = 0.15, sample_rate: int = MODEL_SAMPLE_RATE
) -> tuple[int, int]:
    """[start, end) of the speech plus `margin_s` each side, grown to >= `min_samples`."""
    s, e = speech_span(x, sample_rate)
    m = int(margin_s * sample_rate)
    s, e = max(0, s - m), min(len(x), e + m)
    return fit_span(s, e, min_samples, len(x))


def window_starts(n_frames: int, win_frames: int, hop_frames: int) -> list[int]:
    """Frame offsets of sliding windows covering `n_frames`, the last one flush with the end."""
    if n_frames <= win_frames:
        return [0]
    starts = list(range(0, n_frames - win_frames + 1, hop_frames))
    if starts[-1] + win_frames < n_frames:
        starts.append(n_frames - win_frames)
    return starts
