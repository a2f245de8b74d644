"""Streams in one process share the models they are given (server sessions, bench pipeline)."""

from __future__ import annotations

from affectstream import AffectStream, Inputs, load_config


def _estimates(stream, seconds):
    out = []
    for est in stream.estimates():
        out.append(est)
        if est.t >= seconds:
            stream.stop()
    return out


def _face_present(stream, seconds):
    return [est.present["face"] for est in _estimates(stream, seconds)]


def test_two_streams_share_one_set_of_predictors(megamind):
    config = load_config()
    first = AffectStream(config, Inputs(media=megamind, realtime=False, transcribe=False))
    shared = dict(first.predictors)
    assert set(shared) == {"face", "voice", "fusion"}
    second = AffectStream(
        config, Inputs(media=megamind, realtime=False, transcribe=False), predictors=shared
    )
    assert all(second.predictors[m] is shared[m] for m in shared)
    stage = {s.name: s for s in second.stages}
    assert stage["face"].predictor is shared["face"]
    a, b = _face_present(first, 3.0), _face_present(second, 3.0)
    assert sum(a) > len(a) / 2 and sum(b) > len(b) / 2  # both see the face with one model


def test_looped_media_runs_past_the_end_of_the_file(megamind):
    config = load_config()
    stream = AffectStream(
        config, Inputs(media=megamind, realtime=False, transcribe=False, loop=True)
    )
    ests = _estimates(stream, 14.0)  # the file is 11.3 s long
    seen = [e.present["face"] for e in ests]
    # still ticking past the end: every 0.1 s of the 14 s a tick or a counted skip (how many a
    # slow machine skips is its own figure), and on the face again
    assert ests[-1].t >= 14.0 and len(ests) + ests[-1].dropped["ticks_skipped"] >= 140
    assert sum(seen[-20:]) > 10


def test_streams_share_one_whisper_model_and_both_hear_the_words(megamind):
    config = load_config()
    first = AffectStream(config, Inputs(media=megamind, realtime=False))
    shared = dict(first.predictors)
    assert {"face", "voice", "text", "stt"} <= set(shared)
    second = AffectStream(config, Inputs(media=megamind, realtime=False), predictors=shared)
    assert second.transcriber.decoder is first.transcriber.decoder
    said = []
    for stream in (first, second):
        ests = list(stream.estimates())
        said.append(" ".join(e.transcript for e in ests[-5:]))
        assert any(e.present["text"] for e in ests)
    # the same speech through the one model: the same words. Not the same string: a stepped
    # replay's clock advances by the work each tick took, so the decodes fall at other points
    # and punctuation or a word at a cut may differ.
    words = [set(s.lower().replace(".", " ").replace(",", " ").split()) for s in said]
    assert words[0] and words[1], said
    assert len(words[0] & words[1]) >= 0.8 * min(len(words[0]), len(words[1])), said
