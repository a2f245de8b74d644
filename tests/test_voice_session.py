"""Per-session normalisation of the voice embedding (models/voice/session.py) and its use live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectstream.models.voice.session import (
    SessionHead,
    SpeakerNorm,
    fit_head,
    shrunk_stats,
    simulated_sessions,
)

RAVDESS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ravdess_speech"
needs_data = pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"{RAVDESS} not present")


def _head(dim: int = 4, k: float = 10.0, seed: int = 0) -> SessionHead:
    rng = np.random.default_rng(seed)
    return SessionHead(
        weight=rng.standard_normal((7, dim)).astype(np.float32),
        bias=np.zeros(7, np.float32),
        prior_mean=rng.standard_normal(dim),
        prior_var=rng.uniform(0.5, 2.0, dim),
        strength_s=k,
    )


@pytest.fixture(scope="module")
def actor_embeddings():
    """Embeddings of the shipped encoder for 2 s windows of one real speaker (RAVDESS actor 1)
    and of the same audio through a fixed channel (a first-order high-pass, as a cheap
    microphone would colour it)."""
    if not RAVDESS.is_dir():
        pytest.skip(f"{RAVDESS} not present")
    from scipy.signal import lfilter

    from affectstream.export.predictors import open_eval_predictor
    from affectstream.models.voice.data import kept_segment, load_audio

    pred = open_eval_predictor("voice", "torch")
    files = sorted((RAVDESS / "Actor_01").glob("*.flac"))[::6][:10]
    wins = []
    for f in files:
        x = load_audio(f)
        s, e = kept_segment(x, pred.window_samples)
        wins.append(x[s : s + pred.window_samples])
    clean = np.stack(wins)
    coloured = lfilter([1.0, -0.9], [1.0], clean, axis=1).astype(np.float32)
    return pred.predict(clean)[1], pred.predict(coloured)[1]


def test_a_new_session_reads_the_training_statistics_and_shrinks_toward_them():
    head = _head(k=10.0)
    norm = head.new_session()
    mean, var = norm.stats()
    np.testing.assert_allclose(mean, head.prior_mean)
    np.testing.assert_allclose(var, head.prior_var)
    # 10 s of a constant embedding (= the prior's strength): the mean is halfway there
    e = head.prior_mean + 4.0
    norm.update(np.tile(e, (20, 1)), 0.5)
    assert norm.seconds == pytest.approx(10.0)
    np.testing.assert_allclose(norm.stats()[0], head.prior_mean + 2.0)
    # the variance is that of the even mixture of the prior and the session (which has none
    # of its own): half the prior's, plus the spread between the two means
    np.testing.assert_allclose(norm.stats()[1], head.prior_var / 2 + 4.0)
    # far longer sessions read their own mean
    norm.update(e, 1e6)
    np.testing.assert_allclose(norm.stats()[0], e, rtol=1e-4)
    norm.reset()
    np.testing.assert_allclose(norm.stats()[0], head.prior_mean)
    assert norm.seconds == 0.0


def test_shrunk_stats_broadcasts_over_sessions():
    prior_m, prior_v = np.zeros(3), np.ones(3)
    w = np.array([[0.0], [2.0]])
    s1 = np.array([[0.0] * 3, [2.0] * 3])
    s2 = np.array([[0.0] * 3, [2.0] * 3])
    mean, var = shrunk_stats(w, s1, s2, prior_m, prior_v, 2.0)
    np.testing.assert_allclose(mean, [[0] * 3, [0.5] * 3])
    np.testing.assert_allclose(var, [[1] * 3, [0.75] * 3])


@needs_data
def test_normalising_a_speakers_windows_removes_a_constant_offset(actor_embeddings):
    emb, _ = actor_embeddings
    head = _head(dim=emb.shape[1], k=5.0)
    head = SessionHead(head.weight, head.bias, emb.mean(0), emb.var(0) + 1e-3, strength_s=5.0)
    offset = np.random.default_rng(1).uniform(-0.5, 0.5, emb.shape[1])
    a, b = head.new_session(), head.new_session()
    a.update(emb, 2.0)
    b.update(emb + offset, 2.0)
    # 20 s of the speaker against a 5 s prior: the session means differ by 4/5 of the offset
    np.testing.assert_allclose(b.stats()[0] - a.stats()[0], offset * 20.0 / 25.0, atol=1e-6)
    moved_raw = np.linalg.norm(offset / np.sqrt(head.prior_var))
    moved = np.linalg.norm(b.apply(emb + offset) - a.apply(emb), axis=1)
    assert moved.max() < 0.3 * moved_raw


@needs_data
def test_a_channel_moves_the_raw_embedding_more_than_the_normalised_one(actor_embeddings):
    clean, coloured = actor_embeddings
    prior = SpeakerNorm(clean.mean(0), clean.var(0) + 1e-3, 1.0)  # a prior that knows the speaker
    before = np.linalg.norm(prior.apply(coloured) - prior.apply(clean), axis=1).mean()
    a, b = (
        SpeakerNorm(prior.prior_mean, prior.prior_var, 1.0),
        SpeakerNorm(prior.prior_mean, prior.prior_var, 1.0),
    )
    a.update(clean, 2.0)
    b.update(coloured, 2.0)
    after = np.linalg.norm(b.apply(coloured) - a.apply(clean), axis=1).mean()
    assert before > 0.5  # the channel does move the embedding
    assert after < 0.7 * before


def test_sessions_do_not_share_state():
    head = _head()
    one, two = head.new_session(), head.new_session()
    one.update(np.full(4, 9.0), 30.0)
    assert two.seconds == 0.0
    np.testing.assert_allclose(two.stats()[0], head.prior_mean)
    e = np.ones(4)
    assert not np.allclose(head.step(one, e, 0.1), head.step(two, e, 0.1))


def test_update_checks_its_inputs():
    with pytest.raises(ValueError, match="strength"):
        SpeakerNorm(np.zeros(2), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="vectors"):
        SpeakerNorm(np.zeros(2), np.ones(3), 1.0)
    norm = SpeakerNorm(np.zeros(2), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="negative"):
        norm.update(np.zeros(2), -1.0)
    with pytest.raises(ValueError):
        norm.update(np.zeros(3), 1.0)


def test_simulated_sessions_match_the_live_normaliser():
    """One speaker, one clip, one session: training sees what `SpeakerNorm` gives live."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 3))
    sec = np.array([2.0, 0.5, 0.5, 0.5, 0.5])
    pm, pv = np.zeros(3), np.ones(3)
    z = simulated_sessions(
        emb, sec, np.zeros(5), np.zeros(5), pm, pv, 4.0, rng, max_session_s=1e9, min_session_s=1e9
    )
    live = SpeakerNorm(pm, pv, 4.0)
    for i in range(5):
        live.update(emb[i], sec[i])
        np.testing.assert_allclose(z[i], live.apply(emb[i]), rtol=1e-5, atol=1e-6)


def test_simulated_sessions_cut_short_sessions_inside_a_speaker():
    rng = np.random.default_rng(0)
    n = 400
    emb = np.tile(np.array([[5.0, -5.0]]), (n, 1))
    sec = np.full(n, 0.5)
    clip = np.arange(n) // 4
    z = simulated_sessions(emb, sec, np.zeros(n), clip, np.zeros(2), np.ones(2), 10.0, rng, 20.0)
    # a session's first window is shrunk hard toward the prior, later ones much less; with
    # sessions of at most 20 s, many windows are early in their session
    early = np.abs(z[:, 0]) > 1.0
    assert 0.1 < early.mean() < 0.9


def test_fit_head_separates_two_classes_and_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-1, 0.3, (50, 2)), rng.normal(1, 0.3, (50, 2))])
    y = np.repeat([0, 3], 50)
    w, b = fit_head(z, y, l2=1e-4)
    head = SessionHead(
        w, b, np.zeros(2), np.ones(2), 7.5, net_weight=0.25, encoder_sha256="ab", meta={"x": 1}
    )
    assert (head.probs(z).argmax(1) == y).mean() == 1.0
    head.save(tmp_path / "h.npz")
    back = SessionHead.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(back.weight, head.weight)
    assert (back.strength_s, back.net_weight, back.encoder_sha256, back.meta) == (
        7.5,
        0.25,
        "ab",
        {"x": 1},
    )
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="session head"):
        SessionHead.load(tmp_path / "bad.npz")


class _Vad:
    gaps = 0

    def update(self, ring) -> None:
        pass

    def is_speech(self, ms: float) -> bool:
        return True

    def speech_prob(self, ms: float) -> float:
        return 1.0


class _Predictor:
    """The network's head always says neutral; the embedding is the window's mean level."""

    def __init__(self, head: SessionHead | None) -> None:
        self.session = head

    def predict(self, x):
        probs = np.zeros((1, 7), np.float32)
        probs[0, 0] = 1.0
        return probs, np.full((1, 4), float(np.mean(x)), np.float32)


def _stage(predictor, **kw):
    from affectstream.core.ringbuffer import SampleRing
    from affectstream.realtime.stages.voice import VoiceStage

    ring = SampleRing(10.0, 16000)
    return ring, VoiceStage(ring, _Vad(), predictor, window_s=2.0, **kw)


def test_the_voice_stage_keeps_one_session_per_stream():
    head = _head(k=2.0)
    pred = _Predictor(head)
    ring_a, a = _stage(pred)
    ring_b, b = _stage(pred)
    for t in range(30):  # 3 s of a loud speaker on stream a, 0.1 s per tick
        ring_a.write(np.full(1600, 0.5, np.float32), t)
        a.run(t)
    ring_b.write(np.full(1600, 0.5, np.float32), 0)
    ra, rb = a.run(99), None
    assert ra is None  # no new audio on a
    rb = b.run(99)
    assert a._norm.seconds == pytest.approx(3.0)
    assert rb.info["session_s"] == pytest.approx(0.1)  # stream b has only its own 0.1 s
    fresh = head.new_session()
    np.testing.assert_allclose(rb.probs, head.step(fresh, np.full(4, 0.5), 0.1)[0], rtol=1e-5)
    np.testing.assert_allclose(rb.embedding, np.full(4, 0.5))  # the encoder's, unchanged
    a.reset_session()
    ring_a.write(np.full(1600, 0.5, np.float32), 40)
    assert a.run(40).info["session_s"] == pytest.approx(0.1)


def test_the_voice_stage_reads_the_network_head_without_a_session_head_or_when_off():
    for pred, kw in ((_Predictor(None), {}), (_Predictor(_head()), {"session_norm": False})):
        ring, stage = _stage(pred, **kw)
        ring.write(np.full(1600, 0.5, np.float32), 0)
        r = stage.run(0)
        assert r.probs[0] == 1.0 and "session_s" not in r.info


def _copy_clips(tmp_path, names):
    import shutil

    root = tmp_path / "ravdess"
    for n in names:
        actor = f"Actor_{n[-7:-5]}"
        (root / actor).mkdir(parents=True, exist_ok=True)
        shutil.copy(RAVDESS / actor / n, root / actor / n)
    return root


@needs_data
def test_train_session_head_then_eval_reads_each_speaker_as_one_session(tmp_path, capsys):
    import json
    import shutil

    from affectstream.cli.main import main
    from affectstream.models.voice.encoder import default_weights_path
    from affectstream.models.voice.session import companion_path, file_sha256, load_companion

    names = [f"03-01-{e:02d}-02-01-01-{a:02d}.flac" for a in (1, 2, 19) for e in range(3, 9)]
    root = _copy_clips(tmp_path, names)
    enc = tmp_path / "v.pt"
    shutil.copy(default_weights_path(), enc)
    out, rep = companion_path(enc), tmp_path / "head.json"
    args = ["train", "voice", "--session-head", "--data", str(root), "--init", str(enc)]
    args += ["--test-actors", "19", "--session-strength", "4", "--balance", "0.5"]
    assert main([*args, "--out", str(out), "--json", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["train_actors"] == [1, 2] and report["encoder_sha256"] == file_sha256(enc)
    assert report["test"]["session"]["clips"]["n"] == 6
    head = load_companion(enc)
    assert head is not None and head.strength_s == 4.0 and head.weight.shape == (7, 128)

    res_json = tmp_path / "eval.json"
    assert main(["eval", "voice", "--data", str(root), "--weights", str(enc), "--actors", "19",
                 "--json", str(res_json)]) == 0  # fmt: skip
    res = json.loads(res_json.read_text())
    assert res["session_norm"] and res["session_strength_s"] == 4.0
    assert res["clips"]["n"] == res["stateless"]["clips"]["n"] == 6
    assert "one session" in capsys.readouterr().out
    assert main(["eval", "voice", "--data", str(root), "--weights", str(enc), "--actors", "19",
                 "--no-session", "--json", str(res_json)]) == 0  # fmt: skip
    plain = json.loads(res_json.read_text())
    assert not plain["session_norm"] and "stateless" not in plain
    assert plain["clips"] == res["stateless"]["clips"]


def test_a_session_head_fitted_on_another_encoder_is_not_used(tmp_path):
    from affectstream.models.voice.session import companion_path, load_companion

    enc = tmp_path / "v.pt"
    enc.write_bytes(b"weights")
    assert companion_path(enc).name == "v.session.npz"
    assert load_companion(enc) is None  # none there
    _head(dim=4).save(companion_path(enc))  # encoder_sha256 "" matches nothing
    assert load_companion(enc) is None


def test_the_step_mixes_the_network_probabilities_by_net_weight():
    from dataclasses import replace

    head = replace(_head(), net_weight=0.5)
    net = np.eye(7, dtype=np.float32)[3]
    alone = head.step(head.new_session(), np.ones(4), 1.0)
    mixed = head.step(head.new_session(), np.ones(4), 1.0, net)
    np.testing.assert_allclose(mixed, 0.5 * alone + 0.5 * net[None], rtol=1e-6)
    assert mixed.sum() == pytest.approx(1.0)
    ring, stage = _stage(_Predictor(head))
    ring.write(np.full(1600, 0.5, np.float32), 0)
    assert stage.run(0).probs[0] >= 0.5  # the network's half says neutral


def test_the_shipped_session_head_reads_the_shipped_encoder():
    """voice.session.npz is fitted on voice.pt's embedding: if voice.pt changes, refit it with
    the command in models/cards/voice.md (train voice --session-head), or it is not used."""
    from affectstream.models.voice.encoder import default_weights_path
    from affectstream.models.voice.session import companion_path, load_companion

    enc = default_weights_path()
    assert companion_path(enc).is_file()
    head = load_companion(enc)
    assert head is not None, "voice.pt changed since voice.session.npz was fitted: refit it"
    assert head.weight.shape == (7, 128) and head.net_weight == 0.5
    assert "--session-head" in head.meta["command"]
