"""The learned fusion: token history, labelled streams, the model at run time, the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from affectstream.core.labels import LABELS, MODALITIES
from affectstream.models.fusion import scenario as sc
from affectstream.models.fusion.tokens import HistorySpec, TokenHistory
from tests.conftest import DATA, SHARED, affectstream, require_tool


@pytest.fixture
def espeak() -> None:
    """The scenario's synthesised sentences need espeak-ng: a skip here, a failure in CI."""
    require_tool("espeak-ng", install="apt-get install espeak-ng")


# -- token history ---------------------------------------------------------------------------
def test_history_is_bounded_masks_absent_modalities_and_forgets_old_tokens():
    spec = HistorySpec({"face": 3, "voice": 3, "text": 2}, {"face": 1.0, "voice": 1.0, "text": 5.0})
    h = TokenHistory(spec)
    for k in range(10):  # a face token every 0.1 s
        h.update({"face": (int(k * 1e8), k)}, int(k * 1e8))
    items, ages, mask = h.view("face", int(9e8))
    assert items == [7, 8, 9] and mask.tolist() == [1, 1, 1]  # the newest 3, newest last
    assert np.allclose(ages, [0.2, 0.1, 0.0])
    h.update({"voice": (int(1e9), "v")}, int(1e9))  # face not present this tick
    assert h.view("face", int(1e9))[2].sum() == 0  # masked out entirely
    assert h.view("voice", int(1e9))[0] == ["v"] and h.view("voice", int(1e9))[2].tolist() == [
        0,
        0,
        1,
    ]
    h.update({"face": (int(9e8), 9), "voice": (int(1e9), "v")}, int(5e9))  # 4 s later
    items, ages, _ = h.view("face", int(5e9))
    assert items == [9] and ages[-1] == pytest.approx(4.1)  # old ones dropped, newest kept
    h.update({"voice": (int(1e9), "v")}, int(5e9))  # the same capture time: no new token
    assert len(h.view("voice", int(5e9))[0]) == 1


def test_history_holds_a_modality_gone_absent_for_its_hold_then_masks_it():
    spec = HistorySpec(
        {"face": 3, "voice": 3, "text": 2},
        {"face": 1.0, "voice": 1.0, "text": 5.0},
        {"face": 0.0, "voice": 0.5, "text": 0.0},
    )
    h = TokenHistory(spec)
    for k in range(5):  # face and voice a token every 0.1 s, then both go absent
        h.update({"face": (int(k * 1e8), k), "voice": (int(k * 1e8), -k)}, int(k * 1e8))
    h.update({}, int(8e8))  # 0.4 s after the newest voice token: held, ageing
    assert h.visible("voice") and not h.visible("face")
    items, ages, mask = h.view("voice", int(8e8))
    assert items == [-2, -3, -4] and mask.tolist() == [1, 1, 1] and ages[-1] == pytest.approx(0.4)
    assert h.newest("voice") == (int(4e8), -4) and h.newest("face") is None
    h.update({}, int(1e9))  # 0.6 s: past the hold, masked out entirely
    assert not h.visible("voice") and h.view("voice", int(1e9))[2].sum() == 0
    assert HistorySpec.from_json(spec.to_json()) == spec
    old = {"max_tokens": spec.max_tokens, "window_s": spec.window_s}  # a file from before holds
    assert HistorySpec.from_json(old).hold_s == {"face": 0.0, "voice": 0.0, "text": 0.0}


# -- labelled streams ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_pools():
    require_tool("espeak-ng", install="apt-get install espeak-ng")
    return sc.load_pools(
        DATA / "fer2013" / "PublicTest.npz",
        DATA / "ravdess_speech",
        DATA / "meld_text" / "dev_sent_emo.csv",
        (17, 18, 19, 20),
        sc.Speaker(),
    )


def test_default_mix_has_conflicts_absences_and_always_an_agreeing_modality(eval_pools):
    segments = sc.plan_stream(eval_pools, minutes=10, seed=3)
    stats = sc.mix_stats(segments)
    assert stats["conflicting"] >= 0.25 and stats["absent"] >= 0.15
    assert stats["seconds"] >= 600
    for s in segments:
        rel = {m: getattr(s, m)["relation"] for m in MODALITIES}
        assert "agrees" in rel.values(), s  # the target is shown by some present modality
        assert 3.0 <= s.end_s - s.start_s <= 8.0 or s.utterances  # longer only to fit speech
        for u in s.utterances:
            assert s.start_s <= u.start_s and u.start_s + u.dur_s <= s.end_s
        if s.face["relation"] == "conflicts":
            assert s.face["label"] != s.target
        if s.face["image"] is not None:  # the face shown is of the class the label says
            label = s.face["label"]
            assert s.face["image"] in eval_pools.faces[label]
    # the same seed draws the same stream; another seed another one
    again = sc.plan_stream(eval_pools, minutes=10, seed=3)
    assert [s.to_json() for s in again] == [s.to_json() for s in segments]
    assert [s.target for s in sc.plan_stream(eval_pools, 10, seed=4)] != [
        s.target for s in segments
    ]


@pytest.mark.usefixtures("espeak")
def test_scenario_make_writes_media_that_run_replays(tmp_path):
    out = tmp_path / "stream"
    r = affectstream("scenario", "make", "--out", out, "--minutes", "0.4", "--seed", "2")
    assert r.returncode == 0, r.stderr
    labels = sc.read_labels(out)
    assert labels["segments"] and labels["labels"] == list(LABELS)
    import cv2
    import soundfile as sf

    cap = cv2.VideoCapture(str(out / "video.avi"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    assert frames == pytest.approx(labels["segments"][-1]["end_s"] * sc.FPS, abs=2)
    info = sf.info(str(out / "audio.wav"))
    assert info.samplerate == 16000 and info.duration >= labels["segments"][-1]["end_s"]
    est = tmp_path / "est.jsonl"
    r = affectstream(
        "run", "--video", out / "video.avi", "--audio", out / "audio.wav", "--fast", "--out", est
    )
    assert r.returncode == 0, r.stderr
    ticks = [json.loads(line) for line in est.read_text().splitlines()]
    # the replay covers the stream: every 0.1 s of it is a tick or a counted skip (how many
    # ticks a slow machine skips is its own figure, not the test's)
    covered = len(ticks) + ticks[-1]["dropped"]["ticks_skipped"]
    assert covered >= labels["segments"][-1]["end_s"] * 10 * 0.9
    faces = [s for s in labels["segments"] if s["face"]["image"] is not None]
    seen = [
        t["present"]["face"]
        for t in ticks
        for s in faces
        if s["start_s"] + 0.5 <= t["t"] < s["end_s"]
    ]
    assert np.mean(seen) > 0.8  # faces drawn are ones the live tracker finds


def test_scenario_make_names_bad_input(tmp_path):
    r = affectstream("scenario", "make", "--out", tmp_path, "--faces", tmp_path / "none.npz")
    assert r.returncode == 2 and "none.npz" in r.stderr
    r = affectstream("scenario", "make", "--out", tmp_path, "--actors", "99")
    assert r.returncode == 2 and "99" in r.stderr
    r = affectstream("eval", "stream", "--scenario", tmp_path)
    assert r.returncode == 2 and "labels.json" in r.stderr
    r = affectstream("train", "fusion", "--calibrate-seed", "dev", "--out", tmp_path / "f.pt")
    assert r.returncode == 2 and "--calibrate-seed" in r.stderr and not (tmp_path / "f.pt").exists()
    r = affectstream("train", "fusion", "--members", "0", "--out", tmp_path / "f.pt")
    assert r.returncode == 2 and "--members must be 1 or more" in r.stderr


def test_a_replay_agrees_only_with_content_captured_in_its_segment():
    from affectstream.models.fusion.bank import Bank
    from affectstream.models.fusion.simulate import from_replay

    labels = {
        "segments": [
            {"start_s": 0.0, "end_s": 1.0, "target": "happy",
             "face": {"relation": "agrees", "label": "happy"},
             "voice": {"relation": "absent", "label": None},
             "text": {"relation": "absent", "label": None}},
            {"start_s": 1.0, "end_s": 2.0, "target": "sad",
             "face": {"relation": "agrees", "label": "sad"},
             "voice": {"relation": "absent", "label": None},
             "text": {"relation": "absent", "label": None}},
        ]
    }  # fmt: skip
    bank = Bank()
    vec = np.zeros(256 + 7, np.float32)
    record, times = [], []
    for k in range(20):  # 10 Hz; for 0.2 s after the change the face held is from before it
        t = k / 10
        cap = 0.9 if 1.0 <= t < 1.2 else t
        record.append((int(t * 1e9), {"face": (int(cap * 1e9), vec)}))
        times.append(t)
    seqs = from_replay(record, times, labels, bank, HistorySpec.default(), "x")
    assert seqs.target.tolist() == [1] * 10 + [2] * 10
    assert seqs.agrees[:10, 0].all() and seqs.content[5, 0] == 1
    assert not seqs.agrees[10:12, 0].any()  # still the previous segment's face
    assert seqs.agrees[12:, 0].all() and seqs.content[15, 0] == 2
    assert not seqs.present[:, 1:].any() and (seqs.content[:, 1:] == -1).all()
    assert (
        bank.array("face").shape[0]
        == len({c for _, c in [(0, r[1]["face"][0]) for r in record]}) + 1
    )


def test_a_held_voice_counts_as_present_and_agrees_only_within_its_segment():
    from affectstream.models.fusion.bank import Bank
    from affectstream.models.fusion.simulate import from_replay

    absent = {"relation": "absent", "label": None}
    labels = {
        "segments": [
            {"start_s": 0.0, "end_s": 2.0, "target": "angry", "face": absent,
             "voice": {"relation": "agrees", "label": "angry"}, "text": absent},
            {"start_s": 2.0, "end_s": 4.0, "target": "sad", "face": absent,
             "voice": {"relation": "agrees", "label": "sad"}, "text": absent},
        ]
    }  # fmt: skip
    vec = np.zeros(256 + 7, np.float32)
    record, times = [], []
    for k in range(40):  # the voice speaks 0-1.5 s and 2.6-3 s, silence between
        t = k / 10
        speaks = t < 1.5 or 2.6 <= t < 3.0
        record.append((int(t * 1e9), {"voice": (int(t * 1e9), vec)} if speaks else {}))
        times.append(t)
    h = HistorySpec.default()
    held = HistorySpec(h.max_tokens, h.window_s, {**h.hold_s, "voice": 1.0})
    plain = HistorySpec(h.max_tokens, h.window_s, {**h.hold_s, "voice": 0.0})
    plain = from_replay(record, times, labels, Bank(), plain, "plain")
    seqs = from_replay(record, times, labels, Bank(), held, "held")
    assert not plain.present[15:25, 1].any()  # no hold: gone in silence
    assert seqs.present[15:25, 1].all() and not seqs.present[25, 1]  # held 1 s, no more
    assert seqs.agrees[15:20, 1].all()  # held within its segment: still the angry voice
    assert not seqs.agrees[20:25, 1].any() and (seqs.content[20:25, 1] == -1).all()  # not sad
    assert (seqs.idx["voice"][15:25] >= 0).any(1).all()  # the model sees the held tokens


# -- the model at run time -------------------------------------------------------------------
def test_learned_fusion_weights_present_modalities_only_and_backends_agree():
    from affectstream.export.predictors import open_eval_predictor
    from affectstream.realtime.fusion import LearnedFusion
    from affectstream.realtime.stages.base import ModalityResult

    rng = np.random.default_rng(0)
    outs = {}
    for backend in ("torch", "onnxruntime"):
        fusion = LearnedFusion(open_eval_predictor("fusion", backend))
        assert fusion.predictor.describe()["model"] == "fusion"
        dims = fusion.predictor.embed_dims
        seq = []
        for k in range(30):
            t = int(k * 1e8)
            present = {
                "face": ModalityResult(
                    rng.dirichlet(np.ones(7)).astype(np.float32),
                    t,
                    rng.standard_normal(dims["face"]).astype(np.float32),
                )
            }
            if k >= 10:  # the voice joins after a second
                present["voice"] = ModalityResult(
                    np.eye(7, dtype=np.float32)[3],
                    t,
                    rng.standard_normal(dims["voice"]).astype(np.float32),
                )
            probs, rel, _ = fusion(present, t + int(5e6))
            assert abs(float(probs.sum()) - 1) < 1e-4 and set(rel) == set(present)
            assert abs(sum(rel.values()) - 1) < 1e-4 and all(0 <= v <= 1 for v in rel.values())
            seq.append((probs, rel))
        outs[backend] = seq
        rng = np.random.default_rng(0)
    for (pa, ra), (pb, rb) in zip(outs["torch"], outs["onnxruntime"], strict=True):
        assert np.abs(pa - pb).max() < 1e-4
        assert all(abs(ra[m] - rb[m]) < 1e-4 for m in ra)


def test_learned_fusion_reports_relevance_for_a_voice_it_holds():
    from dataclasses import replace

    from affectstream.export.predictors import open_eval_predictor
    from affectstream.realtime.fusion import LearnedFusion
    from affectstream.realtime.stages.base import ModalityResult

    p = open_eval_predictor("fusion", "torch")
    p.history = replace(p.history, hold_s={"face": 0.0, "voice": 1.0, "text": 0.0})
    fusion = LearnedFusion(p)
    rng = np.random.default_rng(1)
    dims = p.embed_dims

    def result(m: str, t: int) -> ModalityResult:
        e = rng.standard_normal(dims[m]).astype(np.float32)
        return ModalityResult(np.eye(7, dtype=np.float32)[1], t, e)

    for k in range(10):  # face and voice for a second, then the speaker stops
        fusion({"face": result("face", k * 10**8), "voice": result("voice", k * 10**8)}, k * 10**8)
    _, rel, _ = fusion({"face": result("face", 15 * 10**8)}, 15 * 10**8)  # 0.6 s after the voice
    assert set(rel) == {"face", "voice"} and rel["voice"] > 0
    assert abs(sum(rel.values()) - 1) < 1e-4
    _, rel, _ = fusion({"face": result("face", 25 * 10**8)}, 25 * 10**8)  # 1.6 s: let go
    assert set(rel) == {"face"} and rel["face"] == pytest.approx(1.0, abs=1e-4)
    probs, rel, _ = fusion({}, 40 * 10**8)  # nothing held either
    assert rel == {} and np.allclose(probs, 1 / 7)
    for k in range(41, 45):  # the voice again, then switched off (`forget`): gone at once
        fusion({"face": result("face", k * 10**8), "voice": result("voice", k * 10**8)}, k * 10**8)
    fusion.forget("voice")
    _, rel, _ = fusion({"face": result("face", 45 * 10**8)}, 45 * 10**8)
    assert set(rel) == {"face"}


def random_fusion_inputs(embed_dims: dict, batch: int, rows_without_voice: int) -> list:
    """Random model inputs in `input_names()` order, every slot filled, except that the first
    `rows_without_voice` rows have no voice."""
    import torch

    from affectstream.models.fusion.net import input_names

    inputs = []
    for name in input_names():
        m, kind = name.split("_")
        k = HistorySpec.default().max_tokens[m]
        if kind == "x":
            inputs.append(torch.randn(batch, k, embed_dims[m] + 7))
        elif kind == "age":
            inputs.append(torch.rand(batch, k) * 3)
        else:
            mask = torch.ones(batch, k)
            if m == "voice":
                mask[:rows_without_voice] = 0
            inputs.append(mask)
    return inputs


def test_mixture_head_fuses_each_modalitys_own_view_by_its_relevance():
    """The fused distribution is the relevance-weighted mixture of the modalities' own
    (auxiliary) distributions, so the relevance shown is how much each one counts."""
    import torch

    from affectstream.models.fusion.net import FusionNet, FusionSpec

    torch.manual_seed(0)
    net = FusionNet(FusionSpec()).eval()
    assert net.spec.head == "mixture"
    inputs = random_fusion_inputs(net.spec.embed_dims, batch=5, rows_without_voice=2)
    with torch.no_grad():
        logits, rel, aux = net(*inputs)
    mix = (rel.unsqueeze(-1) * torch.softmax(aux, -1)).sum(1)
    assert torch.allclose(torch.softmax(logits, -1), mix / mix.sum(-1, keepdim=True), atol=1e-4)
    assert torch.all(rel[:2, 1] == 0) and torch.allclose(rel.sum(1), torch.ones(5))


def test_an_ensemble_is_the_mean_of_its_members_and_still_a_mixture_by_relevance():
    import torch

    from affectstream.models.fusion.net import FusionNet, FusionSpec

    torch.manual_seed(0)
    net = FusionNet(FusionSpec(members=3)).eval()
    inputs = random_fusion_inputs(net.spec.embed_dims, batch=4, rows_without_voice=4)
    with torch.no_grad():
        logits, rel, aux = net(*inputs)
        members = [member(*inputs) for member in net.members]
    mean_mix = torch.stack([torch.exp(lg) for lg, _, _ in members]).mean(0)
    probs = torch.softmax(logits, -1)
    assert torch.allclose(probs, mean_mix / mean_mix.sum(-1, keepdim=True), atol=1e-5)
    assert torch.allclose(rel, torch.stack([r for _, r, _ in members]).mean(0))
    mix = (rel.unsqueeze(-1) * torch.softmax(aux, -1)).sum(1)
    assert torch.allclose(probs, mix / mix.sum(-1, keepdim=True), atol=1e-4)
    assert torch.all(rel[:, 1] == 0) and torch.allclose(rel.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="ensemble needs the mixture head"):
        FusionNet(FusionSpec(members=2, head="summary"))


def test_fusion_spec_of_an_older_file_reads_as_the_summary_head():
    from affectstream.models.fusion.net import FusionNet, FusionSpec

    old = FusionSpec().to_json()
    del old["head"]
    assert FusionSpec.from_json(old).head == "summary"
    assert hasattr(FusionNet(FusionSpec.from_json(old)), "head")
    with pytest.raises(ValueError, match="unknown fusion head 'max'"):
        FusionNet(FusionSpec(head="max"))


def test_the_newest_token_steers_what_the_history_attention_weighs():
    """With the newest-token query, the same two kinds of token are weighed by how much they
    resemble the newest one; with the fixed query (older files) their weights do not depend on
    which is newest."""
    import torch

    from affectstream.models.fusion.net import ModalityEncoder

    torch.manual_seed(0)
    a, b = torch.randn(8 + 7), torch.randn(8 + 7)
    age, mask = torch.full((2, 4), 0.5), torch.ones(2, 4)
    x = torch.stack([torch.stack([a, b, a, b]), torch.stack([b, a, b, a])])  # newest: b, a

    def b_over_a(query: str) -> torch.Tensor:
        enc = ModalityEncoder(8, 16, dropout=0.0, query=query).eval()
        with torch.no_grad():
            enc.key.weight.copy_(torch.eye(16))
            enc.key.bias.zero_()
            if enc.newest_query is not None:
                enc.newest_query.weight.copy_(4 * torch.eye(16))
            _, w = enc.attend(x, age, mask)
        return w[:, [1, 3]].sum(1) / w[:, [0, 2]].sum(1)  # weight on b tokens / on a tokens

    fixed, newest = b_over_a("learned"), b_over_a("newest")
    assert torch.allclose(fixed[0], fixed[1])
    assert newest[0] > newest[1] * 1.01  # b counts for more while b is the newest


def test_an_older_fusion_file_reads_with_the_fixed_query():
    from affectstream.models.fusion.net import FusionNet, FusionSpec

    old = FusionSpec().to_json()
    del old["query"]
    net = FusionNet(FusionSpec.from_json(old))
    assert FusionSpec.from_json(old).query == "learned"
    assert not any("newest_query" in k for k in net.state_dict())
    assert any("newest_query" in k for k in FusionNet(FusionSpec()).state_dict())
    with pytest.raises(ValueError, match="unknown fusion query 'oldest'"):
        FusionNet(FusionSpec(query="oldest"))


def test_wrong_embedding_size_is_a_clear_error():
    from affectstream.export.predictors import open_eval_predictor

    p = open_eval_predictor("fusion", "torch")
    with pytest.raises(ValueError, match="face embedding has 5 values"):
        p.token("face", np.zeros(5, np.float32), np.full(7, 1 / 7, np.float32))


def test_shipped_weights_record_their_training():
    from affectstream.models.fusion.predictor import default_weights_path, read_header

    spec, history, info = read_header(default_weights_path())
    assert info["command"].startswith("affectstream train fusion")
    assert 0.3 < info["temperature"] < 5
    assert set(info["substitute"]) == set(MODALITIES)
    assert history.max_tokens.keys() == set(MODALITIES)


def test_mean_over_streams_keeps_the_keys_and_averages_the_figures():
    from affectstream.bench.stream_eval import mean_over_streams

    a = {
        "ticks": 10,
        "segments": 2,
        "fusion": "learned",
        "fused": {"accuracy": 0.5, "ece": 0.1, "confusion": [[1, 0], [0, 1]]},
        "relevance": {"agreeing": 0.6, "conflicting": None},
        "stream": {"folder": "a"},
    }
    b = {
        "ticks": 30,
        "segments": 4,
        "fusion": "learned",
        "fused": {"accuracy": 0.3, "ece": 0.3, "confusion": [[0, 2], [1, 0]]},
        "relevance": {"agreeing": 0.4, "conflicting": 0.2},
        "stream": {"folder": "b"},
    }
    m = mean_over_streams([a, b])
    assert m["fused"]["accuracy"] == pytest.approx(0.4) and m["fused"]["ece"] == pytest.approx(0.2)
    assert m["fused"]["confusion"] == [[1, 2], [1, 1]]
    assert m["ticks"] == 40 and m["segments"] == 6 and m["fusion"] == "learned"
    assert m["relevance"] == {"agreeing": pytest.approx(0.5), "conflicting": pytest.approx(0.2)}
    assert "stream" not in m and m["streams"] == [a, b]


# -- the commands ----------------------------------------------------------------------------
@pytest.mark.usefixtures("espeak")
@pytest.mark.slow
def test_eval_stream_scores_a_replay_with_the_keys_other_tools_read(tmp_path):
    out = tmp_path / "stream"
    assert (
        affectstream("scenario", "make", "--out", out, "--minutes", "0.5", "--seed", "5").returncode
        == 0
    )
    scores = tmp_path / "scores.json"
    r = affectstream("eval", "stream", "--scenario", out, "--json", scores)
    assert r.returncode == 0, r.stderr
    assert "eval stream" in r.stdout and "fused" in r.stdout
    d = json.loads(scores.read_text())
    for k in ("fused", "face", "voice", "text", "average", "confidence_weighted"):
        assert 0 <= d[k]["accuracy"] <= 1 and 0 <= d[k]["macro_f1"] <= 1
    assert 0 <= d["fused"]["ece"] <= 1
    assert set(d["relevance"]) == {"agreeing", "conflicting", "absent"}
    assert d["relevance"]["agreeing"] is not None
    assert d["lag_s"]["median"] is not None and d["lag_s"]["p90"] >= d["lag_s"]["median"]
    assert 0 < d["fusion_ms"]["p50"] <= d["fusion_ms"]["p99"]
    assert set(d["ablation"]) == {"no_face", "no_voice", "no_text"}
    assert d["ticks"] > 0 and d["segments"] > 0 and d["fusion"] == "learned"
    # several streams: all are checked before the first replay
    r = affectstream("eval", "stream", "--scenario", out, tmp_path / "missing")
    assert r.returncode != 0 and "missing: no labels.json" in r.stderr
    assert "eval stream" not in r.stdout
    # several streams: each scored, the JSON's figures the mean over them; --ticks writes
    # each one's ticks, from which the shipped calibration gives the live output again
    ticks = tmp_path / "ticks"
    r = affectstream("eval", "stream", "--scenario", out, out, "--json", scores, "--ticks", ticks)
    assert r.returncode == 0, r.stderr
    assert "mean over 2 streams" in r.stdout
    both = json.loads(scores.read_text())
    assert len(both["streams"]) == 2 and both["ticks"] == sum(x["ticks"] for x in both["streams"])
    assert sorted(p.name for p in ticks.iterdir()) == ["stream-1.npz", "stream-2.npz"]
    _check_ticks(ticks / "stream-1.npz", both["streams"][0])
    mean = np.mean([x["fused"]["accuracy"] for x in both["streams"]])
    assert both["fused"]["accuracy"] == pytest.approx(mean, abs=1e-4)
    # the earlier rule, for comparison: the same stream, the same keys
    r = affectstream(
        "eval", "stream", "--scenario", out, "--fusion", "confidence", "--json", scores
    )
    assert r.returncode == 0, r.stderr
    c = json.loads(scores.read_text())
    assert c["fusion"] == "confidence"
    # with the confidence rule, the fused result is the confidence-weighted baseline itself
    assert c["fused"]["accuracy"] == pytest.approx(c["confidence_weighted"]["accuracy"], abs=0.02)


def _check_ticks(path: Path, scores: dict) -> None:
    """A tick file holds the replay's scored ticks, and its mixture run through the calibration
    the live predictor applies gives the live output (a replay's recorded inputs run again
    differ from the live ticks in a few at most)."""
    from affectstream.bench.stream_eval import load_ticks
    from affectstream.export.predictors import shipped
    from affectstream.models.fusion import calibration as cal
    from affectstream.models.fusion.predictor import read_calibration, read_header

    t, info = load_ticks(path)
    assert info["fusion"] == "learned" and int(t["keep"].sum()) == scores["ticks"]
    acc = float((t["probs"].argmax(1) == t["y"])[t["keep"]].mean())
    assert acc == pytest.approx(scores["fused"]["accuracy"], abs=1e-3)
    seen = t["seen"].any(1)
    assert seen.any() and np.allclose(t["relevance"][seen].sum(1), 1, atol=1e-4)
    w = read_calibration(shipped("fusion.pt"))
    if w is None:
        temp = read_header(shipped("fusion.pt"))[2]["temperature"]
    else:
        temp = cal.temperature(w, cal.features(t["relevance"], t["reading"], t["mix"]))
    again = cal.calibrated(t["mix"], temp)
    close = np.abs(again - t["probs"]).max(1)[seen] < 1e-3
    assert close.mean() > 0.95


@pytest.mark.usefixtures("espeak")
@pytest.mark.slow
def test_train_fusion_runs_end_to_end_on_a_small_draw(tmp_path):
    weights = tmp_path / "fusion.pt"
    stream = tmp_path / "stream"
    assert affectstream("scenario", "make", "--out", stream, "--minutes", "0.3").returncode == 0
    kept = tmp_path / "kept"  # a replay kept by eval stream calibrates as a stream does
    r = affectstream("eval", "stream", "--scenario", stream, "--save-replays", kept)
    assert r.returncode == 0, r.stderr
    r = affectstream(
        "train", "fusion", "--out", weights, "--bank", tmp_path / "bank.pkl",
        "--actors", "1", "--faces-per-class", "4", "--sentences-per-class", "3",
        "--streams", "3", "--minutes", "1", "--epochs", "1", "--json", tmp_path / "t.json",
        "--replay", stream, "--replay", kept / "stream.replay.pkl",
        "--calibrate-on", stream, kept / "stream.replay.pkl", "--save-replays", kept,
        "--live-seeds", "3", "--live-minutes", "0.2", "--members", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "member 2/2  epoch  1" in r.stdout
    assert "replaying" in r.stdout and "temperature refitted" in r.stdout
    assert f"reading the kept replay {kept / 'stream.replay.pkl'}" in r.stdout
    names = sorted(f.name for f in kept.glob("*.replay.pkl"))  # each stream replayed, kept
    assert len(names) == 2 and names[0].startswith("live-") and names[1] == "stream.replay.pkl"
    assert "labelled training stream (seed 3)" in r.stdout  # made here, or cached before
    assert (tmp_path / "bank.pkl").is_file() and "temperature" in r.stdout
    from affectstream.models.fusion.predictor import read_header

    spec, _, info = read_header(weights)
    assert spec.members == 2 and [m["seed"] for m in info["members"]] == [0, 1]
    assert info["options"]["streams"] == 3 and len(info["history"]) == 2  # an epoch each
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["train_ticks"] >= 2 * (3 * 60 * 10 * 0.9 + 4 * rec["replay_ticks"] * 0.99)
    assert rec["replay_ticks"] > 0 and rec["calibration"]["ticks"] > 0  # how many: machine's
    assert len(rec["calibration"]["streams"]) == 2
    assert len(rec["replays"]) == 3
    # the run uses the weights it is given
    r = affectstream(
        "run", "--video", SHARED / "media" / "Megamind.avi", "--fast", "--no-transcribe",
        "--duration", "2", "--config", _config_with(tmp_path, weights), "--out", tmp_path / "e.jsonl",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def _config_with(tmp_path: Path, weights: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"fusion:\n  weights: {weights}\n")
    return cfg


def test_bench_fusion_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "b.json"
    r = affectstream("bench", "fusion", "--calls", "50", "--backends", "torch", "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["rows"][0]["calls"] == 50 and d["rows"][0]["median_ms"] > 0
    assert "bench fusion" in r.stdout
