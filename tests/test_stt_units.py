"""Speech-to-text building blocks without the whisper model: agreement, guards, WER, VAD gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import MEDIA

from affectstream.models.stt.guards import count_loops, guard_words
from affectstream.models.stt.local_agreement import (
    LocalAgreement,
    common_prefix,
    join_words,
    norm_word,
)
from affectstream.models.stt.wer import normalize, number_words, read_transcripts, word_errors

SPEECH = MEDIA / "speech"


@dataclass(frozen=True)
class W:
    text: str
    start: float = 0.0
    end: float = 0.0


def words(text: str, step: float = 0.3) -> list[W]:
    return [W(t, i * step, i * step + step * 0.9) for i, t in enumerate(text.split())]


# -- local agreement ---------------------------------------------------------------------
def test_norm_word_ignores_case_and_punctuation():
    assert norm_word("Man.") == norm_word("man") == "man"
    assert norm_word("don't") == "don't"
    assert norm_word("Mr.") != norm_word("mister")  # spelling differences are not agreement


def test_common_prefix_stops_at_first_difference():
    assert common_prefix(["He", "was", "not"], ["he", "was.", "an"]) == 2
    assert common_prefix([], ["a"]) == 0
    assert common_prefix(["a", "b"], ["a", "b", "c"]) == 2


def test_agreement_commits_only_what_two_hypotheses_share():
    la = LocalAgreement()
    committed, tail = la.insert(words("he was not"))
    assert committed == [] and [w.text for w in tail] == ["he", "was", "not"]
    committed, tail = la.insert(words("he was not an ill"))
    assert [w.text for w in committed] == ["he", "was", "not"]
    assert [w.text for w in tail] == ["an", "ill"]
    # the next hypothesis continues after the committed words (they are the decoder prefix)
    committed, tail = la.insert(words("an old disposed"))
    assert [w.text for w in committed] == ["an"]
    assert [w.text for w in la.flush()] == ["old", "disposed"]
    assert la.flush() == []


def test_agreement_takes_times_from_the_newer_hypothesis():
    la = LocalAgreement()
    la.insert([W("go", 0.0, 0.5)])
    committed, _ = la.insert([W("Go", 0.1, 0.4), W("forward", 0.4, 0.9)])
    assert committed == [W("Go", 0.1, 0.4)]


def test_join_words_glues_pieces_of_words():
    assert join_words(["ill", "-disposed", "man", "."]) == "ill-disposed man."
    assert join_words(["ten", "of", "clubs"]) == "ten of clubs"
    assert join_words([]) == ""


# -- loop guards -------------------------------------------------------------------------
def test_guard_cuts_a_repeated_phrase():
    kept, reason = guard_words(words("ten of clubs ten of clubs ten of"), audio_s=10.0)
    assert [w.text for w in kept] == ["ten", "of", "clubs"]
    assert reason == "repetition"


def test_guard_keeps_a_word_said_twice_or_three_times():
    for text in ("five five", "no no no"):
        kept, reason = guard_words(words(text), audio_s=10.0)
        assert [w.text for w in kept] == text.split() and reason == ""
    kept, reason = guard_words(words("five five five five five"), audio_s=10.0)
    assert len(kept) == 3 and reason == "repetition"


def test_guard_sees_a_loop_that_starts_in_the_committed_words():
    kept, reason = guard_words(
        words("seven of clubs"), audio_s=10.0, before=["seven", "of", "clubs"]
    )
    assert kept == [] and reason == "repetition"


def test_guard_drops_words_after_the_audio_or_the_voice():
    ws = [W("go", 0.0, 0.4), W("forward", 0.5, 0.9), W("ten", 1.48, 1.5)]
    kept, reason = guard_words(ws, audio_s=1.5)
    assert [w.text for w in kept] == ["go", "forward"] and reason == "past-end"
    kept, reason = guard_words(ws[:2], audio_s=3.0, voice_end_s=0.3)
    assert [w.text for w in kept] == ["go"] and reason == "past-end"


def test_guard_drops_trailing_words_crammed_into_no_audio():
    ws = [W("seven", 0.0, 0.4), W("of", 0.4, 0.6), W("seven", 0.6, 0.6), W("of", 0.6, 0.61)]
    kept, reason = guard_words(ws, audio_s=2.0)
    assert [w.text for w in kept] == ["seven", "of"] and reason == "crammed"


def test_guard_caps_words_per_second():
    ws = words("a b c d e f g h i j k l m n o p", step=0.05)
    kept, reason = guard_words(ws, audio_s=1.0)
    assert len(kept) == 8 and reason == "too-dense"  # 6 words/s * 1 s + 2


def test_count_loops_in_a_transcript():
    assert count_loops(["ten", "of", "clubs", "ten", "of", "clubs"]) == 1
    assert count_loops(["he", "might", "even", "have", "been", "made", "amiable", "himself"]) == 0
    assert count_loops(["x", "x", "x", "x", "and", "y", "y", "y", "y"]) == 2


# -- WER -----------------------------------------------------------------------------------
def test_number_words():
    assert number_words(10) == "ten"
    assert number_words(21) == "twenty one"
    assert number_words(1905) == "one thousand nine hundred five"


def test_normalize_matches_whisper_output_to_references():
    assert normalize("Mr. John Dashwood had 10 cold-hearted friends!") == normalize(
        "mister john dashwood had ten cold hearted friends"
    )
    assert normalize("") == []


def test_word_errors_counts_each_kind():
    e = word_errors("he was not an ill disposed young man", "he was not an old disposed young man")
    assert (e.substitutions, e.deletions, e.insertions, e.ref_words) == (1, 0, 0, 8)
    e = word_errors("a b c", "a c d e")
    assert e.errors == 3 and e.ref_words == 3  # delete b, insert d and e
    assert word_errors("ten of clubs", "10 of clubs").wer == 0.0
    assert (e + e).ref_words == 6


def test_read_transcripts_of_the_cmu_format():
    refs = read_transcripts(SPEECH / "librivox" / "transcription")
    assert len(refs) == 5
    assert (
        refs["sense_and_sensibility_01_austen_64kb-0880"] == "he was not an ill disposed young man"
    )
    cards = read_transcripts(SPEECH / "cards" / "cards.transcription")
    assert cards["001"] == "ten of clubs"


def test_read_transcripts_names_a_bad_line(tmp_path):
    p = tmp_path / "t.transcription"
    p.write_text("<s> fine </s> (a)\nno id here\n")
    with pytest.raises(ValueError, match=r"t.transcription:2"):
        read_transcripts(p)


# -- VAD gate ------------------------------------------------------------------------------
def test_vad_gate_streaming_equals_one_pass_and_finds_speech():
    import soundfile as sf
    from faster_whisper.vad import get_vad_model

    from affectstream.models.stt.vad import FRAME as WINDOW
    from affectstream.models.stt.vad import VadGate, VoiceActivity

    x, _ = sf.read(
        SPEECH / "librivox" / "sense_and_sensibility_01_austen_64kb-0880.wav", dtype="float32"
    )
    x = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(16000, np.float32)])
    n = len(x) // WINDOW * WINDOW
    batch = get_vad_model()(x[:n]).reshape(-1)
    vad, gate = VoiceActivity(), VadGate(0.5)
    pieces, first_onset = [], None
    for i in range(0, n, 700):  # an odd block size: windows straddle the pushes
        vad.feed(x[i : i + 700], t_ns=i * 62_500)
        starts, probs = vad.probs_between(gate.processed, i + 700)
        gate.push(starts, probs)
        pieces.append(probs)
        if first_onset is None and gate.onset >= 0:
            first_onset = gate.onset
    streamed = np.concatenate(pieces)[: len(batch)]
    np.testing.assert_allclose(streamed, batch, atol=1e-5)
    # speech starts after the 0.5 s of leading silence and ends before the trailing second
    assert 0.4 * 16000 <= first_onset <= 1.0 * 16000
    assert gate.onset >= first_onset  # `onset` follows the newest voiced run
    assert gate.silence_samples >= 0.5 * 16000
    assert not gate.voiced
