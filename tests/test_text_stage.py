"""The text stage reads the newest whole sentences holding at least `text.min_words` words:
a live transcript often ends in the first word or two of the next utterance, which alone say
little to the model."""

from __future__ import annotations

import numpy as np
import pytest

from affectstream.core.config import ConfigError, load_config
from affectstream.export.predictors import open_predictor
from affectstream.realtime.sources.push_transcript import PushTranscript
from affectstream.realtime.stages.base import ABSENT, ModalityResult
from affectstream.realtime.stages.text import TextStage, split_newest_words


def test_split_takes_whole_sentences_back_to_the_word_count():
    text = "We lost the house. I can't believe it, after all these years. Wow"
    assert split_newest_words(text, 6) == (
        "I can't believe it, after all these years. Wow",
        "We lost the house.",
    )
    assert split_newest_words(text, 1) == (
        "Wow",
        "We lost the house. I can't believe it, after all these years.",
    )
    assert split_newest_words(text, 100) == (text, "")
    # a decimal point or an abbreviation without a following space does not end a sentence
    assert split_newest_words("It costs 3.50 now!", 1) == ("It costs 3.50 now!", "")
    assert split_newest_words("  ", 6) == ("", "")


@pytest.fixture(scope="module")
def text_predictor():
    return open_predictor("text", load_config(None))


def _stage_on(words: list[tuple[str, float, float]], predictor, min_words: int):
    src = PushTranscript().start()
    for text, a, b in words:
        assert src.push(text, int(a * 1e9), int(b * 1e9))
    stage = TextStage(src, predictor, context_s=8.0, min_words=min_words)
    return stage.run(int(words[-1][2] * 1e9) + 100_000_000)


@pytest.mark.parametrize("min_words", [1, 6])
def test_stage_feeds_the_model_the_newest_sentences(text_predictor, min_words):
    spoken = [("This is the best day of my whole life!", 0.0, 2.5), ("Oh", 2.8, 3.0)]
    result = _stage_on(spoken, text_predictor, min_words)
    assert isinstance(result, ModalityResult)
    heard = result.info["text"]
    expected_input = split_newest_words(heard, min_words)[0]
    assert expected_input == ("Oh" if min_words == 1 else heard)
    probs, emb = text_predictor.predict([expected_input], [""])
    np.testing.assert_allclose(result.probs, probs[0], atol=1e-5)
    np.testing.assert_allclose(result.embedding, emb[0], atol=1e-5)


def test_stage_without_words_is_absent(text_predictor):
    stage = TextStage(PushTranscript().start(), text_predictor)
    assert stage.run(10**9) is ABSENT


def test_config_min_words_must_be_an_integer(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("text:\n  min_words: six\n")
    with pytest.raises(ConfigError, match="text.min_words"):
        load_config(bad)
    assert load_config(None).text.min_words == 6
