"""The text stage: the text predictor on the newest committed words, only when they change.

Words are absent when nothing was said within the context window; the capture time of a
text result is the end of its newest word, so `age_ms.text` includes the commit latency.

The model reads the newest whole sentences that hold at least `min_words` words, not only the
newest sentence: the live transcript often ends in the first word or two of the next
utterance ("Wow", "No, but"), which alone say little. Six words is the median length of a
MELD utterance, what the model was trained on; on the development stream this lifted the
words' accuracy in speech segments from 0.246 (newest sentence only) to 0.302 (text card).
"""

from __future__ import annotations

import re

from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage

SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
MIN_WORDS = 6


def split_newest_words(text: str, min_words: int = MIN_WORDS) -> tuple[str, str]:
    """(the newest whole sentences holding at least `min_words` words, the words before
    them): the utterance the text model reads, and its preceding context."""
    sentences = [x for x in SENTENCE_END.split(text.strip()) if x]
    taken: list[str] = []
    while sentences and sum(len(x.split()) for x in taken) < max(1, min_words):
        taken.insert(0, sentences.pop())
    return " ".join(taken), " ".join(sentences)


class TextStage(Stage):
    name = "text"

    def __init__(
        self, transcriber, predictor, context_s: float = 8.0, min_words: int = MIN_WORDS
    ) -> None:
        self.transcriber = transcriber
        self.predictor = predictor
        self.context_ns = int(context_s * 1e9)
        self.min_words = min_words
        self._last_text = ""
        self.runs = 0

    def warmup(self) -> None:
        self.predictor.predict(["hello there"], [""])

    def run(self, now_ns: int) -> ModalityResult | object | None:
        last = self.transcriber.last_word_ns
        if last is None or now_ns - last > self.context_ns:
            self._last_text = ""
            return ABSENT
        text = self.transcriber.recent_text(now_ns, self.context_ns / 1e9)
        if not text.strip():
            return ABSENT
        if text == self._last_text:
            return None  # same words: keep the result, its age grows
        self._last_text = text
        self.runs += 1
        utterance, context = split_newest_words(text, self.min_words)
        probs, emb = self.predictor.predict([utterance], [context])
        return ModalityResult(
            probs=probs[0],
            t_ns=last,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info={"text": text},
        )
