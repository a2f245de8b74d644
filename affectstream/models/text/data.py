"""Loaders for the text corpora (MELD CSV, GoEmotions-Ekman TSV), mapped to the common labels.

Both corpora end up as `TextExample`s whose `target` is a distribution over `LABELS`: MELD rows
are one-hot; GoEmotions rows that carry several Ekman labels get equal mass on each (soft
targets), so no comment is dropped and none is forced into one class. MELD rows also carry the
previous utterances of their dialogue as `context`, because at run time the encoder sees a few
seconds of transcript, not one isolated sentence.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS

log = logging.getLogger(__name__)

MELD_TO_COMMON: dict[str, str] = {
    "neutral": "neutral",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "fear": "fearful",
    "disgust": "disgusted",
    "surprise": "surprised",
}
GOEMOTIONS_EKMAN_TO_COMMON: dict[str, str] = {
    "anger": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "joy": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprised",
}
MELD_REQUIRED = ("Utterance", "Emotion")

# Typographic characters folded to ASCII so that MELD (curly quotes) and Reddit text (straight
# quotes) tokenize alike.
_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2013": "-",
        "\u2014": " - ",
        "\u2015": " - ",
        "\u2026": "...",
        "\u00a0": " ",
        "\u200b": "",
        "\ufeff": "",
        "\u0092": "'",
        "\u0091": "'",
        "\u0093": '"',
        "\u0094": '"',
        "\u0085": "...",
        "\u0096": "-",
        "\u0097": " - ",
    }
)
# UTF-8 read as cp1252 (the MELD release has such rows: "itâ€™s"): each character back to its
# byte, then runs of a lead byte and its continuation bytes decoded as UTF-8 again.
_CP1252_BYTE = {bytes([b]).decode("cp1252", errors="ignore") or chr(b): b for b in range(128, 256)}
_CONT = "".join(re.escape(c) for c, b in _CP1252_BYTE.items() if 0x80 <= b <= 0xBF)
_LEAD = "".join(re.escape(c) for c, b in _CP1252_BYTE.items() if 0xC2 <= b <= 0xF4)
_MOJIBAKE = re.compile(f"[{_LEAD}][{_CONT}]{{1,3}}")
_SPACES = re.compile(r"\s+")


class DataError(ValueError):
    """A corpus file that cannot be used; the message names the file, row and problem."""


@dataclass(frozen=True, slots=True)
class TextExample:
    """One utterance, its preceding context (may be empty) and a target over `LABELS`."""

    text: str
    target: tuple[float, ...]
    context: str = ""
    source: str = ""
    group: str = ""  # dialogue id (MELD) for group-aware splits

    @property
    def label(self) -> int:
        """Index of the largest target mass (ties: the first)."""
        return int(np.argmax(self.target))


def _unmojibake(m: re.Match) -> str:
    try:
        return bytes(_CP1252_BYTE[c] for c in m.group()).decode("utf-8")
    except UnicodeDecodeError:
        return m.group()


def _fix_mojibake(s: str) -> str:
    return _MOJIBAKE.sub(_unmojibake, s)


def normalise_text(s: str) -> str:
    """Repair mojibake, fold curly quotes, dashes and ellipses to ASCII, collapse spaces."""
    s = _fix_mojibake(s)
    s = unicodedata.normalize("NFC", s).translate(_FOLD)
    return _SPACES.sub(" ", s).strip()


def _decode(raw: bytes, path: Path) -> str:
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    log.warning("%s is neither UTF-8 nor cp1252; decoding as latin-1", path)
    return raw.decode("latin-1")


def one_hot(name: str) -> tuple[float, ...]:
    """Target with all mass on the common label `name`."""
    t = [0.0] * len(LABELS)
    t[LABELS.index(name)] = 1.0
    return tuple(t)


def read_meld(path: str | Path, context_turns: int = 1) -> list[TextExample]:
    """Read a CSV in MELD's format (`Utterance`, `Emotion`; `Dialogue_ID`, `Utterance_ID`
    optional, used for context). Raises DataError naming a missing column or unknown label.

    `context` is the previous `context_turns` utterances of the same dialogue, joined by spaces
    (only when the dialogue columns are present).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"MELD CSV not found: {path}") from None
    text = _decode(raw, path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in MELD_REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (MELD format needs "
            f"{', '.join(MELD_REQUIRED)}; found {', '.join(header) or 'no header'})"
        )
    has_dialogue = "Dialogue_ID" in header
    rows: list[tuple[str, str, str, int]] = []
    for lineno, row in enumerate(reader, start=2):
        if row.get("Utterance") is None or row.get("Emotion") is None:
            raise DataError(f"{path}, line {lineno}: row has fewer fields than the header")
        emotion = row["Emotion"].strip().lower()
        if emotion not in MELD_TO_COMMON:
            raise DataError(
                f"{path}, line {lineno}: unknown Emotion {row['Emotion']!r} "
                f"(expected one of {', '.join(MELD_TO_COMMON)})"
            )
        dialogue = row.get("Dialogue_ID", "").strip() if has_dialogue else ""
        try:
            turn = int(row.get("Utterance_ID") or lineno)
        except ValueError:
            raise DataError(
                f"{path}, line {lineno}: Utterance_ID {row['Utterance_ID']!r} is not an integer"
            ) from None
        rows.append((normalise_text(row["Utterance"]), MELD_TO_COMMON[emotion], dialogue, turn))
    if not rows:
        raise DataError(f"{path}: no rows")
    by_dialogue: dict[str, dict[int, str]] = {}
    if has_dialogue:
        for utt, _, dialogue, turn in rows:
            by_dialogue.setdefault(dialogue, {})[turn] = utt
    out = []
    for utt, name, dialogue, turn in rows:
        context = ""
        if has_dialogue and context_turns > 0:
            turns = by_dialogue[dialogue]
            prev = [turns[t] for t in range(turn - context_turns, turn) if t in turns]
            context = " ".join(prev)
        out.append(TextExample(utt, one_hot(name), context, "meld", dialogue))
    return out


def read_goemotions(folder: str | Path, split: str = "train") -> list[TextExample]:
    """Read GoEmotions-Ekman `<split>.tsv` (text, comma-separated label ids, id) with the label
    names from `labels.txt`. Multi-label rows become soft targets (equal mass per label).
    """
    folder = Path(folder)
    try:
        names = [n.strip() for n in (folder / "labels.txt").read_text().split() if n.strip()]
    except FileNotFoundError:
        raise DataError(f"GoEmotions labels.txt not found in {folder}") from None
    unknown = [n for n in names if n not in GOEMOTIONS_EKMAN_TO_COMMON]
    if unknown:
        raise DataError(f"{folder}/labels.txt: not an Ekman label file (unknown {unknown[0]!r})")
    path = folder / f"{split}.tsv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"GoEmotions split not found: {path}") from None
    out = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{path}, line {lineno}: expected text<TAB>labels")
        try:
            ids = [int(x) for x in parts[1].split(",")]
            common = [GOEMOTIONS_EKMAN_TO_COMMON[names[i]] for i in ids]
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {lineno}: bad label ids {parts[1]!r}") from None
        target = np.zeros(len(LABELS))
        for name in common:
            target[LABELS.index(name)] += 1.0 / len(common)
        out.append(TextExample(normalise_text(parts[0]), tuple(target.tolist()), "", "goemotions"))
    return out


def targets(examples: Sequence[TextExample]) -> np.ndarray:
    """(N, 7) float32 target matrix."""
    return np.asarray([e.target for e in examples], dtype=np.float32).reshape(-1, len(LABELS))


def labels(examples: Sequence[TextExample]) -> np.ndarray:
    """(N,) int64 hard labels (argmax of the targets)."""
    return targets(examples).argmax(axis=1).astype(np.int64)


def read_teacher(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """A teacher's probabilities for MELD utterances: an `.npz` with `groups` (dialogue ids),
    `texts` (the normalised utterances, as `read_meld` gives them) and `probs` (N, 7) in the
    order of `LABELS`. Keyed by (dialogue, text): a dialogue that repeats a sentence gets one
    reading for it, as a model reading text alone would give."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"teacher file not found: {path}") from None
    missing = [k for k in ("groups", "texts", "probs") if k not in z.files]
    if missing:
        raise DataError(f"{path}: not a teacher file (missing {', '.join(missing)})")
    probs = np.asarray(z["probs"], np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(LABELS) or len(probs) != len(z["texts"]):
        raise DataError(
            f"{path}: probs must be (N, {len(LABELS)}) beside N texts, got {probs.shape} "
            f"for {len(z['texts'])} texts"
        )
    if not np.allclose(probs.sum(1), 1.0, atol=1e-3) or (probs < 0).any():
        raise DataError(f"{path}: each row of probs must be a distribution")
    return {(str(g), str(t)): p for g, t, p in zip(z["groups"], z["texts"], probs, strict=True)}


def with_teacher(
    examples: Sequence[TextExample], teacher: dict[tuple[str, str], np.ndarray], weight: float
) -> list[TextExample]:
    """Targets mixed with a teacher's reading: `(1 - weight) * label + weight * teacher`.
    This is how a larger model's knowledge (which classes an utterance resembles, not only its
    label) is distilled into this one, at no cost when it runs. Every example must have a
    teacher reading: a silently unmixed row would make the mix depend on text matching."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"teacher weight must be in [0, 1], got {weight}")
    out = []
    for e in examples:
        p = teacher.get((e.group, e.text))
        if p is None:
            raise DataError(f"teacher has no reading for dialogue {e.group!r}: {e.text[:60]!r}")
        mixed = (1.0 - weight) * np.asarray(e.target) + weight * p
        out.append(replace(e, target=tuple(mixed.tolist())))
    return out


def split_by_group(
    examples: Sequence[TextExample], fraction: float, seed: int = 0
) -> tuple[list[TextExample], list[TextExample]]:
    """Hold out about `fraction` of the groups (MELD dialogues), so no dialogue is in both;
    `fraction <= 0` holds out nothing."""
    if fraction <= 0:
        return list(examples), []
    groups = sorted({e.group for e in examples})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(groups)[: max(1, round(fraction * len(groups)))].tolist())
    keep = [e for e in examples if e.group not in held]
    out = [e for e in examples if e.group in held]
    return keep, out
