"""Models open in the background: a live stream ticks at once and each modality joins when its
model is ready (status `loading` until then); stepped runs wait for all of them first.

Real media and real models throughout; one model is made slow by wrapping the real predictor
factory so that it waits for the test's word before returning the real predictor."""

from __future__ import annotations

import json
import threading

import pytest

from affectstream.cli.main import main
from affectstream.core.config import load_config
from affectstream.core.errors import WeightsError
from affectstream.export import predictors as predictor_factory
from affectstream.realtime.sources.base import SourceError
from affectstream.realtime.stream import AffectStream, Inputs


@pytest.fixture
def held_voice(monkeypatch):
    """The real `open_predictor`, except that the voice model is handed over only once the
    test sets the returned event; `opened` records the order models were asked for."""
    real = predictor_factory.open_predictor
    release = threading.Event()
    opened: list[str] = []

    def open_predictor(name, config):
        opened.append(name)
        p = real(name, config)
        if name == "voice":
            assert release.wait(60), "the test never released the voice model"
        return p

    monkeypatch.setattr(predictor_factory, "open_predictor", open_predictor)
    release.opened = opened
    return release


def test_modalities_join_as_their_models_load(megamind, held_voice):
    stream = AffectStream(load_config(), Inputs(media=megamind, realtime=True))
    seen_loading = seen_voice = None
    first = None
    for est in stream.estimates():
        first = first or est
        st = est.status
        if st["voice"] == "loading" and est.present["face"]:
            # an estimate with the face while the voice model (and, after it, the text and
            # whisper models) is still opening
            assert not est.present["voice"] and not est.present["text"]
            assert st["text"] == "loading"
            assert est.modalities.keys() == {"face"}
            seen_loading = est
            held_voice.set()
        if seen_loading is not None and st["voice"] != "loading":
            # a working modality from then on (on a loaded machine a first call may also miss
            # its tick: "timeout", which is a working state too)
            assert st["voice"].split(":")[0] in ("ok", "absent", "stale", "timeout"), st
        if est.present["voice"]:
            seen_voice = est
        if (seen_voice is not None and st["text"] != "loading") or est.t > 9.0:
            stream.stop()
    assert first.tick == 0
    assert seen_loading is not None, "no estimate with the face while voice was loading"
    assert seen_voice is not None and seen_voice.tick > seen_loading.tick
    assert st["text"] in ("ok", "absent", "stale"), st  # text and whisper opened after voice
    stage_models = [n for n in held_voice.opened if n in ("face", "voice", "text")]
    assert stage_models == ["face", "voice", "text"]  # cheapest first
    assert stream.wait_models(0) and stream.predictors.keys() >= {"face", "voice", "text", "stt"}


def test_a_model_that_cannot_be_opened_is_an_error_status(megamind, tmp_path):
    bad = tmp_path / "voice.pt"
    bad.write_bytes(b"not a checkpoint" * 64)
    cfg = load_config()
    cfg.voice.weights = str(bad)
    stream = AffectStream(cfg, Inputs(media=megamind, realtime=True, transcribe=False))
    assert stream.wait_models(60)
    faces = 0
    for est in stream.estimates():
        if est.tick >= 5:
            assert est.status["voice"].startswith("error: voice model failed to load: ")
            assert str(bad) in est.status["voice"] and not est.present["voice"]
            faces += est.present["face"]
        if est.tick >= 15:
            stream.stop()
    assert faces > 0  # the stream goes on with the face


def test_named_files_that_are_missing_fail_before_any_thread(tmp_path):
    cfg = load_config()
    cfg.face.weights = str(tmp_path / "face.pt")
    with pytest.raises(WeightsError, match=r"face\.weights: file not found: .*face\.pt"):
        AffectStream(cfg, Inputs(push_video=True))
    cfg = load_config()
    cfg.transcriber.model = str(tmp_path / "whisper")
    with pytest.raises(SourceError, match="speech model folder not found"):
        AffectStream(cfg, Inputs(push_audio=True))


def test_shared_predictors_are_used_at_once():
    cfg = load_config()
    shared = {m: predictor_factory.open_predictor(m, cfg) for m in ("face", "fusion")}
    face = shared["face"]
    stream = AffectStream(cfg, Inputs(push_video=True), predictors=shared)
    try:
        (stage,) = stream.stages
        assert stage.predictor is face and stage.model_problem() == ""
        assert stream.wait_models(0)  # nothing left to load
    finally:
        stream.close()


def test_run_fast_waits_for_every_model(megamind, held_voice, capsys):
    """A stepped replay (`run --fast`) opens all models before its first tick: no estimate
    says `loading`, however slowly a model opens."""
    threading.Timer(1.0, held_voice.set).start()
    args = ["run", "--media", str(megamind), "--fast", "--no-transcribe", "--duration", "2"]
    assert main([*args, "--quiet"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # every 0.1 s of the 2 s is a tick or a counted skip (how many are skipped: the machine's)
    assert len(lines) + lines[-1]["dropped"]["ticks_skipped"] >= 2 * 10 - 1
    assert all("loading" not in e["status"].values() for e in lines)
    assert lines[0]["status"]["voice"] != "loading" and any(e["present"]["voice"] for e in lines)
