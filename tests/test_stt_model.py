"""The whisper decoder and the streaming state machine on real speech, with the default model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MEDIA

from affectstream.cli.main import main
from affectstream.models.stt.wer import read_transcripts, word_errors
from affectstream.realtime.sources.array_replay import join_with_pauses, load_audio

SPEECH = MEDIA / "speech"
LIBRIVOX = SPEECH / "librivox"
CARDS = SPEECH / "cards"


@pytest.fixture(scope="module")
def decoder():
    from affectstream.models.stt.whisper_model import WhisperDecoder

    return WhisperDecoder(cpu_threads=1)


def clip(name: str) -> np.ndarray:
    return load_audio(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav")


def test_load_audio_reads_wav_raw_and_video_tracks():
    raw = load_audio(SPEECH / "goforward.raw")
    assert raw.dtype == np.float32 and abs(len(raw) / 16000 - 2.786) < 0.01
    assert 0.05 < np.abs(raw).max() <= 1.0
    wav = load_audio(CARDS / "001.wav")
    assert abs(len(wav) / 16000 - 1.095) < 0.01
    video = load_audio(MEDIA / "Megamind.avi")  # ac3 at 48 kHz with a damaged packet
    assert 10.0 < len(video) / 16000 < 12.0


def test_decoder_transcribes_a_sentence_with_word_times(decoder):
    audio = clip("0930")
    hyp = decoder.decode(audio)
    text = " ".join(w.text for w in hyp.words)
    assert word_errors("he might even have been made amiable himself", text).wer <= 0.125
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= hyp.duration for w in hyp.words)
    assert hyp.words[-1].end > 0.6 * hyp.duration  # the alignment spans the sentence
    assert set(hyp.timings_ms) == {"encode", "generate", "align"}


def test_decoder_continues_after_a_forced_prefix(decoder):
    audio = clip("0930")
    full = decoder.decode(audio)
    k = 4
    prefix = [w.text for w in full.words[:k]]
    rest = decoder.decode(audio, prefix=prefix, prefix_end=full.words[k - 1].end)
    assert [w.text.lower() for w in rest.words] == [w.text.lower() for w in full.words[k:]]
    assert rest.words[0].start >= full.words[k - 1].start


def test_decoder_hears_nothing_in_silence(decoder):
    rng = np.random.default_rng(0)
    hyp = decoder.decode((rng.standard_normal(16000 * 2) * 1e-4).astype(np.float32))
    assert hyp.words == []


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from affectstream.models.stt.whisper_model import SttModelError, resolve_model_path

    with pytest.raises(SttModelError, match="not found: /no/such/model"):
        resolve_model_path("/no/such/model")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(SttModelError, match="has no tokenizer.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(SttModelError, match="not-a-size"):
        resolve_model_path("not-a-size")


def stream(decoder, audio, **options):
    from affectstream.models.stt.online import OnlineTranscriber, StreamOptions

    online = OnlineTranscriber(decoder, StreamOptions(**options))
    segments = []
    for i in range(0, len(audio), 320):
        online.feed(audio[i : i + 320])
        segments += online.step()
    segments += online.finish()
    return online, segments


def final_words(segments):
    return [w for s in segments if s.final for w in s.words]


def test_stream_of_two_sentences(decoder):
    refs = read_transcripts(LIBRIVOX / "transcription")
    ids = ["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930"]
    audio, starts = join_with_pauses([load_audio(LIBRIVOX / f"{i}.wav") for i in ids], 1.0)
    online, segments = stream(decoder, audio)
    words = final_words(segments)
    ref = " ".join(refs[i] for i in ids)
    assert word_errors(ref, " ".join(w.text for w in words)).wer <= 0.2
    assert online.stats.utterances == 2 and online.stats.skips == 0
    # word times: monotonic on the stream clock, inside the audio, each word final once
    for a, b in zip(words, words[1:], strict=False):
        assert a.start_ns <= a.end_ns <= b.start_ns
    assert words[-1].end_ns <= len(audio) * 1e9 / 16000
    second = [w for w in words if w.end_ns > starts[1] * 1e9 / 16000]
    assert [w.text.lower().strip(".?") for w in second][:3] == ["he", "might", "even"]
    # partials come before the finals of the same words, and are cleared at utterance ends
    assert any(not s.final and s.text for s in segments)
    assert segments[-1].final or segments[-1].text == ""
    emitted = [s.emitted_ns for s in segments]
    assert emitted == sorted(emitted)


def test_silence_and_noise_produce_no_words(decoder):
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(16000 * 3) * 3e-3).astype(np.float32)
    online, segments = stream(decoder, audio)
    assert final_words(segments) == []
    assert not online.speech_active


def test_long_speech_is_cut_into_spans(decoder):
    """Speech longer than max_span_s: the span is trimmed after committed words, text intact."""
    audio = clip("0870")  # 7.1 s, one sentence
    online, segments = stream(decoder, audio, max_span_s=3.0)
    assert online.stats.trims >= 1
    text = " ".join(w.text for w in final_words(segments))
    ref = read_transcripts(LIBRIVOX / "transcription")["sense_and_sensibility_01_austen_64kb-0870"]
    assert word_errors(ref, text).wer <= 0.2
    assert online._buf_start >= 0 and online.end - online._buf_start <= len(online._buf)


def test_skip_to_abandons_the_utterance_and_counts(decoder):
    from affectstream.models.stt.online import OnlineTranscriber

    audio = clip("0870")
    online = OnlineTranscriber(decoder)
    online.feed(audio[:32000])
    online.step()
    assert online.speech_active
    online.skip_to(online.end + 48000)
    assert online.stats.skips == 1 and online.stats.skipped_s == pytest.approx(3.0)
    assert not online.speech_active and online.end == 32000 + 48000
    online.feed(audio[80000:])  # the stream goes on from the new index
    online.finish()


def test_eval_stt_prints_wer_on_cards(capsys, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "stt", "--audio", str(CARDS), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "WER" in printed and "four queen of clubs" in printed
    data = json.loads(out.read_text())
    assert len(data["files"]) == 5 and data["total"]["ref_words"] == 21
    assert data["wer"] <= 0.25
    wer_line = [line for line in printed.splitlines() if line.startswith("WER ")][0]
    assert float(wer_line.split()[1]) == pytest.approx(data["wer"], abs=1e-4)


def test_eval_stt_bad_inputs_exit_2(capsys, tmp_path):
    assert main(["eval", "stt", "--audio", str(tmp_path / "nowhere")]) == 2
    assert "audio folder not found" in capsys.readouterr().err
    assert main(["eval", "stt", "--audio", str(CARDS), "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert "speech model folder not found: /no/such/model" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_bench_stt_fast_on_cards_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "stt", "--audio", str(CARDS), "--fast", "--json", str(out)]) == 0
    assert "real-time factor" in capsys.readouterr().out
    data = json.loads(out.read_text())
    run = data["runs"][0]
    assert run["wer"] <= 0.25 and run["loops_in_output"] == 0
    assert run["commit_latency_ms"]["words"] >= 15
    assert all(x is not None for x in run["first_partial_ms"]["per_clip"])
    assert data["machine"]["cpu_count"] >= 1 and data["config"]["window_s"] == 10.0


def test_feeding_more_than_the_buffer_holds_keeps_the_newest_audio(decoder):
    """A caller far behind may feed a long block at once: bounded, newest audio kept."""
    from affectstream.models.stt.online import OnlineTranscriber, StreamOptions

    refs = read_transcripts(LIBRIVOX / "transcription")
    audio, _ = join_with_pauses([load_audio(LIBRIVOX / f"{i}.wav") for i in sorted(refs)], 0.0)
    online = OnlineTranscriber(decoder, StreamOptions(max_span_s=4.0))
    online.feed(audio)  # ~24 s of speech in one call, more than the buffer's ~10 s
    assert online.end == len(audio) and online.end - online._buf_start <= len(online._buf)
    segments = online.step() + online.finish()
    words = final_words(segments)
    assert words and words[-1].text.lower().strip(".") == "himself"
