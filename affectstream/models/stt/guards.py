"""Loop guards: cut the repetition loops and overlong hypotheses whisper produces on short audio.

Whisper sometimes repeats a phrase until its token budget runs out ("ten of clubs ten of clubs
ten of ..."), most often at the abrupt end of a streaming buffer. A hypothesis is cut where a
phrase repeats back-to-back more often than speech plausibly does, where words are aligned
past the end of the audio or of the voice, where its last words are crammed into no audio at
all (the alignment of a hallucination), or where it holds more words than the audio could.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from affectstream.models.stt.local_agreement import norm_word

W = TypeVar("W")

MAX_WORD_REPEATS = 3  # "no no no" is speech; a fourth copy is a loop
MAX_PHRASE_REPEATS = 1  # a phrase of 2+ words said again at once is far likelier a loop
MAX_PHRASE_WORDS = 8
MAX_WORDS_PER_S = 6.0  # fast read speech is ~3-4 words/s
CRAMMED_S = 0.03  # trailing words aligned to (almost) no audio were not heard


def _first_loop(texts: Sequence[str]) -> int | None:
    """Index where the first over-long back-to-back repetition starts its extra copy."""
    n = len(texts)
    for i in range(n):
        for size in range(1, MAX_PHRASE_WORDS + 1):
            allowed = MAX_WORD_REPEATS if size == 1 else MAX_PHRASE_REPEATS
            if i + size * (allowed + 1) > n:
                break
            unit = texts[i : i + size]
            copies = 1
            j = i + size
            while j + size <= n and texts[j : j + size] == unit:
                copies += 1
                j += size
                if copies > allowed:
                    return i + size * allowed
    return None


def guard_words(
    words: Sequence[W],
    audio_s: float,
    new_from_s: float = 0.0,
    before: Sequence[str] = (),
    voice_end_s: float | None = None,
) -> tuple[list[W], str]:
    """Return the words that survive the guards and the reason something was cut ('' if not).

    `words` have `.text`, `.start` (s); `audio_s` is the real audio in the span,
    `new_from_s` where the not-yet-committed audio begins, `before` the committed words
    just before (a loop may start there) and `voice_end_s` where the VAD last heard voice.
    """
    kept = list(words)
    reason = ""
    end = audio_s - 0.02 if voice_end_s is None else min(audio_s - 0.02, voice_end_s + 0.1)
    inside = [w for w in kept if w.start < end]  # type: ignore[attr-defined]
    if len(inside) < len(kept):
        kept, reason = inside, "past-end"
    n = len(kept)
    while n > 0 and kept[n - 1].end - kept[n - 1].start < CRAMMED_S:  # type: ignore[attr-defined]
        n -= 1
    if n < len(kept):
        kept, reason = kept[:n], "crammed"
    head = [norm_word(t) for t in before][-2 * MAX_PHRASE_WORDS :]
    cut = _first_loop(head + [norm_word(w.text) for w in kept])  # type: ignore[attr-defined]
    if cut is not None:
        kept, reason = kept[: max(cut - len(head), 0)], "repetition"
    limit = int(MAX_WORDS_PER_S * max(audio_s - new_from_s, 0.0)) + 2
    if len(kept) > limit:
        kept, reason = kept[:limit], "too-dense"
    return kept, reason


def count_loops(texts: Sequence[str]) -> int:
    """How many over-long back-to-back repetitions a word sequence holds (0 for speech)."""
    norm = [norm_word(t) for t in texts]
    count, i = 0, 0
    while True:
        cut = _first_loop(norm[i:])
        if cut is None:
            return count
        count += 1
        i += cut + 1
