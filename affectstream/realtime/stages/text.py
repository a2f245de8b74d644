"""The text stage: the text predictor on the newest committed words, only when they change.

Words are absent when nothing was said within the context window; the capture time of a
text result is the end of its newest word, so `age_ms.text` includes the commit latency.
"""

from __future__ import annotations

from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage


def split_last_sentence(text: str) -> tuple[str, str]:
    """(newest sentence, the words before it): the text model reads an utterance with its
    preceding context, as it was trained on dialogue turns."""
    body = text.rstrip()
    cut = max(body.rfind(p, 0, len(body) - 1) for p in (".", "?", "!"))
    if cut <= 0:
        return body, ""
    return body[cut + 1 :].strip(), body[: cut + 1].strip()


class TextStage(Stage):
    name = "text"

    def __init__(self, transcriber, predictor, context_s: float = 8.0) -> None:
        self.transcriber = transcriber
        self.predictor = predictor
        self.context_ns = int(context_s * 1e9)
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
        utterance, context = split_last_sentence(text)
        probs, emb = self.predictor.predict([utterance], [context])
        return ModalityResult(
            probs=probs[0],
            t_ns=last,
            embedding=emb[0],
            confidence=float(probs[0].max()),
            info={"text": text},
        )
