"""Commit the words that two consecutive hypotheses agree on (LocalAgreement-2).

As in whisper_streaming's `HypothesisBuffer`: a word is final once the decoder, given more
audio, says it again. Here each hypothesis already continues after the committed words (they
are forced as the decoder prefix), so agreement is simply the longest common prefix of the
previous and the new continuation; no time-overlap bookkeeping is needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, TypeVar

_PUNCT = re.compile(r"[^\w']+")
_GLUE = ("-", "'", ",", ".", "?", "!", ":", ";")


class _HasText(Protocol):
    text: str


W = TypeVar("W", bound=_HasText)


def norm_word(word: str) -> str:
    """Case- and punctuation-insensitive form used to compare words ("Man." == "man")."""
    return _PUNCT.sub("", word.lower()).strip("'")


def join_words(words: Sequence[str]) -> str:
    """Words back into text: no space before a piece that continues a word ("-disposed", ",")."""
    out = ""
    for w in words:
        if out and not w.startswith(_GLUE):
            out += " "
        out += w
    return out


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two word lists, compared by `norm_word`."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if norm_word(x) != norm_word(y):
            break
        n += 1
    return n


class LocalAgreement:
    """Holds the previous continuation; `insert` returns (newly committed, still tentative)."""

    def __init__(self) -> None:
        self.previous: list = []

    def insert(self, words: Sequence[W]) -> tuple[list[W], list[W]]:
        """Compare `words` with the previous continuation; commit their common prefix.

        The committed words are taken from the newer hypothesis (its times saw more audio).
        The tentative rest becomes the previous continuation for the next call.
        """
        words = list(words)
        n = common_prefix([w.text for w in self.previous], [w.text for w in words])
        committed, tail = words[:n], words[n:]
        self.previous = tail
        return committed, tail

    def flush(self) -> list:
        """End of utterance: return the tentative words (to be committed) and forget them."""
        tail, self.previous = self.previous, []
        return tail

    def reset(self) -> None:
        self.previous = []
