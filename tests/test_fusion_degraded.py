"""Harder media for the fusion: the degradations, the bank's spoiled items, the simulated
streams that read them, and scoring saved replays with another fusion model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectstream.core.labels import LABELS
from affectstream.models.fusion import degrade
from affectstream.models.fusion import scenario as sc
from tests.conftest import DATA, MEDIA, affectstream, require_tool


def _speech() -> np.ndarray:
    from affectstream.models.voice.data import load_audio

    path = sorted((MEDIA / "speech" / "librivox").glob("*.wav"))[0]
    return sc._level(load_audio(str(path)))


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean power per frequency bin between lo and hi Hz (16 kHz)."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[(f >= lo) & (f < hi)].mean())


@pytest.mark.parametrize("colour", degrade.COLOURS)
def test_noise_sits_the_asked_decibels_below_the_speech_and_has_its_colour(colour):
    x = _speech()
    rng = np.random.default_rng(0)
    y = degrade.noisy(x, 10.0, rng, colour)
    noise = y - x
    want = sc.SPEECH_RMS * 10 ** (-10 / 20)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(want, rel=0.05)
    assert np.all(np.abs(y) <= 1.0)
    low, high = _band_power(noise, 100, 500), _band_power(noise, 4000, 8000)
    # white is flat; pink falls 3 dB an octave (about 13 dB from 300 Hz to 6 kHz), brown 6
    ratio_db = 10 * np.log10(low / high)
    expected = {"white": 0.0, "pink": 13.0, "brown": 26.0}[colour]
    assert ratio_db == pytest.approx(expected, abs=4.0)
    with pytest.raises(ValueError, match="unknown noise colour 'blue'"):
        degrade.noisy(x, 10.0, rng, "blue")


def test_a_poor_webcam_blurs_dims_and_adds_grain_to_a_real_photo():
    import cv2

    frame = cv2.imread(str(MEDIA / "messi5.jpg"))
    rng = np.random.default_rng(0)
    poor = degrade.poor_frame(frame, blur=3.0, dim=0.5, grain=10.0, rng=rng)
    assert poor.shape == frame.shape and poor.dtype == np.uint8
    assert poor.mean() == pytest.approx(frame.mean() * 0.5, abs=3.0)

    def sharpness(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()

    smooth = degrade.poor_frame(frame, blur=3.0, dim=1.0, grain=0.0, rng=rng)
    assert sharpness(smooth) < 0.1 * sharpness(frame)
    # the grain is fresh each frame, as a sensor's is
    again = degrade.poor_frame(frame, blur=3.0, dim=0.5, grain=10.0, rng=rng)
    assert np.abs(again.astype(int) - poor.astype(int)).mean() > 3


# -- the bank and the simulated streams -----------------------------------------------------
@pytest.fixture(scope="module")
def degraded_bank():
    """A small bank of the training corpora through the real encoders, with spoiled items."""
    from affectstream.core.config import Config
    from affectstream.export.predictors import open_predictor
    from affectstream.models.fusion import bank as bk

    require_tool("espeak-ng", install="apt-get install espeak-ng")
    speaker = sc.Speaker()
    pools = sc.load_pools(
        DATA / "fer2013" / "Training.npz",
        DATA / "ravdess_speech",
        DATA / "meld_text" / "train_sent_emo.csv",
        (1,),
        speaker,
    )
    config = Config()
    predictors = {m: open_predictor(m, config) for m in ("face", "voice", "text")}
    bank, narrowed = bk.build(
        pools, speaker, predictors, faces_per_class=3, sentences_per_class=2, degraded=True
    )
    narrowed.speech_s = speaker.seconds
    return bank, narrowed


def test_the_bank_holds_each_item_through_harder_media_beside_the_clean_one(degraded_bank):
    from affectstream.models.fusion.bank import NOISE_ITEMS

    bank, _ = degraded_bank
    faces = [k for k in bank.rows["face"] if k.startswith("face:")]
    assert faces and all(
        f"poor:{k}" in bank.rows["face"] or f"poor:{k}" in bank.lost for k in faces
    )
    assert sum(f"poor:{k}" in bank.rows["face"] for k in faces) > len(faces) / 2
    voices = [k for k in bank.rows["voice"] if k.startswith(("ravdess:", "speech:"))]
    array = bank.array("voice")
    for k in voices:
        (a0, a1), (b0, b1) = bank.rows["voice"][k], bank.rows["voice"][f"noisy:{k}"]
        assert a1 - a0 == b1 - b0  # the same windows, in a room
        assert not np.allclose(array[a0:a1], array[b0:b1])
    noise = [k for k in bank.rows["voice"] if k.startswith("noise:")]
    assert len(noise) == NOISE_ITEMS and {bank.labels["voice"][k] for k in noise} == {-1}


def test_a_stream_in_a_noisy_room_reads_the_spoiled_items_and_the_noise(degraded_bank):
    from affectstream.models.fusion.simulate import CLEAN, Conditions, simulate
    from affectstream.models.fusion.tokens import HistorySpec

    bank, pools = degraded_bank
    spec = HistorySpec.default()
    segments = sc.plan_stream(pools, 3.0, seed=4)
    readings = {m: bank.array(m)[:, -len(LABELS) :].argmax(1) for m in ("face", "voice")}

    def origin(m: str, row: int) -> str:
        return next(k for k, (a, b) in bank.rows[m].items() if a <= row < b)

    def newest_keys(seqs, m: str) -> set[str]:
        rows = seqs.idx[m][:, -1]
        return {origin(m, int(r)).split(":")[0] for r in np.unique(rows[rows >= 0])}

    swaps = {"face": 0.5, "voice": 0.5}  # a swapped item is a clean one, spoiled where it sits
    clean = simulate(segments, bank, spec, swaps, seed=4, where=CLEAN)
    assert newest_keys(clean, "voice") <= {"ravdess", "speech"}
    assert newest_keys(clean, "face") == {"face"}

    where = Conditions(room=True, webcam=True, readings=readings)
    hard = simulate(segments, bank, spec, swaps, seed=4, where=where)
    assert newest_keys(hard, "voice") <= {"noisy", "noise"} and "noisy" in newest_keys(
        hard, "voice"
    )
    assert newest_keys(hard, "face") == {"poor"}
    # the room's noise let through in silent segments: a voice with no content, never agreeing
    rows = hard.idx["voice"][:, -1]
    alarm = np.array([r >= 0 and origin("voice", int(r)).startswith("noise:") for r in rows])
    assert alarm.any() and not hard.agrees[alarm, 1].any()
    assert (hard.content[alarm & hard.present[:, 1], 1] == -1).all()
    # a spoiled voice agrees only where its own reading is its content
    spoken = (hard.content[:, 1] >= 0) & (rows >= 0) & ~alarm
    right = readings["voice"][rows.clip(0)] == hard.content[:, 1]
    same_target = hard.content[:, 1] == hard.target
    assert not (hard.agrees[:, 1] & spoken & ~right).any()
    assert (hard.agrees[:, 1] == (spoken & right & same_target))[spoken].all()
    assert hard.agrees[:, 1].any()
    # the clean stream's draws are the same segments, ticks and targets
    assert np.array_equal(clean.target, hard.target)


# -- saved replays, fused again -------------------------------------------------------------
def test_a_saved_replay_is_scored_again_by_a_fusion_model_without_replaying(tmp_path):
    require_tool("espeak-ng", install="apt-get install espeak-ng")
    out = tmp_path / "stream"
    r = affectstream("scenario", "make", "--out", out, "--minutes", "0.4", "--seed", "8")
    assert r.returncode == 0, r.stderr
    kept, first = tmp_path / "replays", tmp_path / "first.json"
    r = affectstream("eval", "stream", "--scenario", out, "--save-replays", kept, "--json", first)
    assert r.returncode == 0, r.stderr
    saved = kept / "stream.replay.pkl"
    assert saved.is_file()
    again = tmp_path / "again.json"
    r = affectstream("eval", "stream", "--replayed", saved, "--json", again)
    assert r.returncode == 0, r.stderr
    a, b = json.loads(first.read_text()), json.loads(again.read_text())
    # the same model on the recorded inputs gives the live figures again
    for key in ("ticks", "fused", "face", "voice", "text", "relevance", "lag_s", "ablation"):
        assert a[key] == b[key], key
    # another model: the fusion of one of the shipped file's three members
    import torch

    from affectstream.export.predictors import shipped
    from affectstream.models.fusion.predictor import load_weights

    d = load_weights(shipped("fusion.pt"))
    one = tmp_path / "one.pt"
    first = "members.0."
    state = {k[len(first) :]: v for k, v in d["state"].items() if k.startswith(first)}
    d["state"], d["spec"] = state, {**d["spec"], "members": 1}
    torch.save(d, one)
    other = tmp_path / "other.json"
    r = affectstream(
        "eval", "stream", "--replayed", saved, "--fusion-weights", one, "--json", other
    )
    assert r.returncode == 0, r.stderr
    c = json.loads(other.read_text())
    assert c["ticks"] == a["ticks"] and c["face"] == a["face"]  # the same live ticks
    assert c["relevance"] != a["relevance"]  # fused by another model
    # bad input: a file that is not a saved replay, the rule that records nothing
    bad = tmp_path / "bad.replay.pkl"
    bad.write_bytes(b"not a pickle")
    r = affectstream("eval", "stream", "--replayed", bad)
    assert r.returncode == 2 and "cannot read the saved replay" in r.stderr
    r = affectstream("eval", "stream", "--replayed", saved, "--fusion", "confidence")
    assert r.returncode == 2 and "not with --fusion confidence" in r.stderr
    r = affectstream(
        "eval", "stream", "--scenario", out, "--fusion", "confidence", "--save-replays", kept
    )
    assert r.returncode == 2 and "not with --fusion confidence" in r.stderr


def test_degrade_stream_spoils_a_real_stream_as_its_flags_say(tmp_path):
    """The script that makes the degraded test streams, as a user runs it: other talkers at
    the asked level, a low-resolution JPEG camera, the same frames and labels."""
    import subprocess
    import sys

    import cv2
    import soundfile as sf

    from tests.conftest import REPO

    require_tool("espeak-ng", install="apt-get install espeak-ng")
    src, dst = tmp_path / "stream", tmp_path / "babble"
    r = affectstream("scenario", "make", "--out", src, "--minutes", "0.3", "--seed", "2")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, REPO / "scripts" / "degrade_stream.py", src, dst,
         "--babble-dir", MEDIA / "speech" / "librivox", "--snr-db", "5", "--blur", "0",
         "--dim", "1", "--grain", "0", "--downscale", "4", "--jpeg", "15"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    clean, _ = sf.read(src / "audio.wav", dtype="float32")
    spoiled, _ = sf.read(dst / "audio.wav", dtype="float32")
    assert len(clean) == len(spoiled)
    rms = float(np.sqrt(np.mean((spoiled - clean) ** 2)))
    assert rms == pytest.approx(degrade.noise_rms(5.0), rel=0.05)  # 16-bit rounding aside
    labels = json.loads((dst / "labels.json").read_text())
    assert labels["segments"] == json.loads((src / "labels.json").read_text())["segments"]
    assert labels["degraded"]["talkers"] == 3 and labels["degraded"]["jpeg"] == 15

    def frames(path):
        cap, out = cv2.VideoCapture(str(path)), []
        while True:
            ok, f = cap.read()
            if not ok:
                return out
            out.append(f)

    a, b = frames(src / "video.avi"), frames(dst / "video.avi")
    assert len(a) == len(b) > 0
    k = len(a) // 2

    def sharpness(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()

    assert sharpness(b[k]) < 0.5 * sharpness(a[k])  # a quarter of the resolution
    r = subprocess.run(
        [sys.executable, REPO / "scripts" / "degrade_stream.py", src, tmp_path / "x",
         "--babble-dir", tmp_path],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode != 0 and "no .wav files in" in r.stderr


def test_train_fusion_refuses_a_share_outside_0_to_1():
    r = affectstream("train", "fusion", "--degraded", "1.5")
    assert r.returncode == 2 and "--degraded is a share between 0 and 1, got 1.5" in r.stderr
