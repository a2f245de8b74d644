"""Word error rate with a small, explicit text normaliser, and the CMU transcription format.

Whisper writes "10 of clubs" and "Mr. John"; the references say "ten of clubs" and "mister
john". The normaliser makes both sides comparable (case, punctuation, hyphens, numerals,
a few abbreviations) and nothing more, so a real recognition error still counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "&": "and"}
_LINE = re.compile(r"^\s*(?:<s>)?\s*(?P<text>.*?)\s*(?:</s>)?\s*\((?P<id>[^()\s]+)\)\s*$")


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9 ("21" -> "twenty one")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(n)  # pragma: no cover


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation, numerals spelled out, hyphens split."""
    text = text.lower().replace("-", " ").replace("&", " and ")
    words = []
    for raw in text.split():
        w = re.sub(r"[^\w']", "", raw).strip("'")
        if not w:
            continue
        w = _ABBREVIATIONS.get(w, w)
        if w.isdigit() and len(w) <= 9:
            words.extend(number_words(int(w)).split())
        else:
            words.append(w)
    return words


@dataclass(frozen=True, slots=True)
class WordErrors:
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.ref_words if self.ref_words else float(self.errors > 0)

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_words + other.ref_words,
        )

    def to_dict(self) -> dict:
        return {
            "wer": round(self.wer, 4),
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "ref_words": self.ref_words,
        }


def word_errors(reference: str | list[str], hypothesis: str | list[str]) -> WordErrors:
    """Minimum edit alignment of normalised words (Levenshtein), split by error kind."""
    ref = normalize(reference) if isinstance(reference, str) else list(reference)
    hyp = normalize(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    # cost table with back-pointers: (cost, subs, dels, ins)
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, n = prev[j - 1]
                best = (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, n + 1)
            cur.append(best)
        prev = cur
    _, s, d, n = prev[-1]
    return WordErrors(s, d, n, len(ref))


def read_transcripts(path: str | Path) -> dict[str, str]:
    """Parse `<s> text </s> (fileid)` lines into {fileid: text}; raises ValueError on a bad line."""
    path = Path(path)
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path}:{n}: not '<s> text </s> (fileid)': {line.strip()[:60]}")
        out[m["id"]] = " ".join(m["text"].split())
    return out
