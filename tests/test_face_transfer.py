"""Faces beyond FER2013: JAFFE loading by subject, the live tracker's crops of full photos,
the transfer augmentation, and fine-tuning (a few steps of a small network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA, REPO

from affectstream.cli.main import main
from affectstream.core.labels import LABELS
from affectstream.models.face.data import FerData, FerFormatError, load_fer
from affectstream.models.face.detect import tracker_crops
from affectstream.models.face.finetune import (
    FinetuneOptions,
    finetune,
    live_views,
    split_subjects,
    transfer_augmentation,
)
from affectstream.models.face.net import FaceNet, FaceNetSpec
from affectstream.models.face.train import TrainOptions, augment

JAFFE = DATA / "jaffe"
SUBJECTS = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _jaffe(name: str, size: int | None = 48) -> FerData:
    p = JAFFE / name
    if not p.exists():
        pytest.skip(f"corpus missing: {p}")
    return load_fer(p, size=size)


@pytest.fixture(scope="module")
def crops() -> FerData:
    return _jaffe("crops48.npz")


@pytest.fixture(scope="module")
def photos() -> FerData:
    return _jaffe("originals.npz", size=None)


def test_jaffe_loads_with_subjects(crops, photos):
    assert crops.images.shape == (203, 48, 48)
    assert photos.images.shape == (213, 256, 256)
    assert sorted(set(crops.subjects())) == SUBJECTS == sorted(set(photos.subjects()))
    # labels in the common order, all seven classes about 30 times
    assert np.bincount(photos.labels, minlength=len(LABELS)).min() >= 29


def test_full_photos_need_size_none(tmp_path, photos):
    with pytest.raises(FerFormatError, match=r"\(N, 48, 48\)"):
        load_fer(JAFFE / "originals.npz")
    p = tmp_path / "rect.npz"
    np.savez(p, images=np.zeros((2, 48, 60), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(FerFormatError, match="S, S"):
        load_fer(p, size=None)  # square photos only


def test_no_names_no_subjects(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=np.zeros((2, 48, 48), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(FerFormatError, match="no `names`"):
        load_fer(p).subjects()


def test_split_by_subject_is_disjoint(photos):
    rest, held = split_subjects(photos, {"KA", "YM"})
    assert set(held.subjects()) == {"KA", "YM"}
    assert not {"KA", "YM"} & set(rest.subjects())
    assert len(rest) + len(held) == len(photos)
    with pytest.raises(ValueError, match="no subject"):
        split_subjects(photos, {"ZZ"})


def test_tracker_finds_every_jaffe_face(photos):
    """The live tracker (a full detection on the first frame) on JAFFE's 256x256 photos."""
    some = photos.take(np.arange(0, len(photos), 10))
    images, found = tracker_crops(some.images)
    assert found.all()
    assert images.shape == (len(some), 48, 48) and images.dtype == np.uint8
    # a face crop, not the photo shrunk: the 48 px crop is not the whole 256 px photo resized
    import cv2

    whole = cv2.resize(some.images[0], (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(images[0].astype(int) - whole).mean() > 10


def test_tracker_finds_no_face_in_a_blank_photo():
    images, found = tracker_crops(np.full((2, 256, 256), 128, np.uint8))
    assert images.shape == (0, 48, 48) and not found.any()


def test_live_views_adds_tracker_crops_with_names(crops, photos):
    few = photos.take(np.arange(5))
    both = live_views(crops.head(3), few)
    assert len(both) == 8 and both.images.shape[1:] == (48, 48)
    assert list(both.names[3:]) == list(few.names)
    with pytest.raises(ValueError):
        live_views(None, None)


def test_transfer_augmentation_keeps_shape_and_range():
    gen = torch.Generator()
    gen.manual_seed(0)
    x = torch.rand(32, 1, 48, 48)
    y = augment(x, transfer_augmentation(), gen)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(y, x)
    # the original recipe (transfer options off) is unchanged by their presence
    gen.manual_seed(0)
    a = augment(x, TrainOptions(), gen)
    gen.manual_seed(0)
    b = augment(x, TrainOptions(shear=0, light_p=0, blur_p=0, erase_solid=0), gen)
    torch.testing.assert_close(a, b)


def test_blur_only_smooths():
    gen = torch.Generator()
    gen.manual_seed(1)
    x = (torch.rand(8, 1, 48, 48) > 0.5).float()
    opts = TrainOptions(
        rotate_deg=0, scale_range=(1, 1), shift_frac=0, jitter=0, erase_p=0, blur_p=1.0
    )
    y = augment(x, opts, gen)
    # a Gaussian kernel sums to one and is positive: the mean is kept, the contrast drops
    torch.testing.assert_close(y.mean(), x.mean(), atol=0.02, rtol=0)
    assert float(y.std()) < 0.8 * float(x.std())


def test_finetune_runs_and_keeps_the_contract(crops):
    torch.manual_seed(0)
    spec = FaceNetSpec(widths=(8, 8, 16, 16), embed_dim=256)
    model = FaceNet(spec).eval()
    bn_mean = model.features[1].running_mean.clone()
    base = FerData(
        np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8),
        np.arange(64) % 7,
        "random",
    )
    logs = []
    opts = FinetuneOptions(steps=4, base_per_batch=6, extra_per_batch=2, warmup_steps=1)
    tuned, info = finetune(model, base, crops, opts, on_log=logs.append, log_every=2)
    assert [r["step"] for r in logs] == [2, 4]
    assert not tuned.training
    # BatchNorm statistics frozen; weights moved; the input model untouched
    torch.testing.assert_close(tuned.features[1].running_mean, bn_mean)
    assert not torch.equal(tuned.features[0].weight, model.features[0].weight)
    logits, emb = tuned(torch.rand(2, 1, 48, 48))
    assert logits.shape == (2, 7) and emb.shape == (2, 256)
    assert info["n_extra"] == len(crops) and info["finetune_options"]["steps"] == 4
    with pytest.raises(ValueError):
        finetune(model, base, crops.take(np.zeros(len(crops), bool)), opts)


def test_finetune_resumes_to_the_same_weights(crops, tmp_path):
    """A run stopped after a log point and started again ends where an unstopped one does;
    a state file of another run is refused, and the file is gone when the run ends."""
    spec = FaceNetSpec(widths=(8, 8, 16, 16), embed_dim=256)
    torch.manual_seed(0)
    model = FaceNet(spec).eval()
    base = FerData(
        np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8),
        np.arange(64) % 7,
        "random",
    )
    opts = FinetuneOptions(steps=4, base_per_batch=6, extra_per_batch=2, warmup_steps=1)
    whole, _ = finetune(model, base, crops, opts, log_every=2)

    class Stop(Exception):
        pass

    def stop_at_2(row):
        if row["step"] == 2:
            raise Stop

    state = tmp_path / "ft.resume.pt"
    with pytest.raises(Stop):
        finetune(model, base, crops, opts, on_log=stop_at_2, log_every=2, resume=state)
    assert state.exists()
    other = FinetuneOptions(steps=4, base_per_batch=6, extra_per_batch=2, lr=0.01)
    with pytest.raises(ValueError, match="another fine-tuning run"):
        finetune(model, base, crops, other, log_every=2, resume=state)
    logs = []
    resumed, info = finetune(
        model, base, crops, opts, on_log=logs.append, log_every=2, resume=state
    )
    assert [r["step"] for r in logs] == [4]  # only the steps after the stop ran
    assert [r["step"] for r in info["finetune_history"]] == [2, 4]
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)
    assert not state.exists()


def test_eval_tracker_on_held_subjects(tmp_path, capsys):
    """`eval face --tracker --subjects`: the live tracker's crops of one subject's photos."""
    _jaffe("originals.npz", size=None)
    out = tmp_path / "m.json"
    rc = main(
        [
            "eval",
            "face",
            "--fer2013",
            str(JAFFE / "originals.npz"),
            "--tracker",
            "--subjects",
            "KA",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    assert "tracker found a face in" in capsys.readouterr().out
    m = json.loads(out.read_text())
    assert m["tracker"]["photos"] == m["tracker"]["faces_found"] == m["n"] > 15
    assert m["subjects"] == "KA"
    assert m["accuracy"] > 1 / 7  # above chance


def test_finetune_cli_holds_subjects_out(tmp_path):
    """`train face --init --extra --hold-out --teacher`: 3 steps on a slice; held-out subjects
    scored; the teacher recorded."""
    fer = DATA / "fer2013" / "PublicTest.npz"
    if not fer.exists():
        pytest.skip(f"corpus missing: {fer}")
    z = np.load(fer)
    d = tmp_path / "fer"
    d.mkdir()
    for split in ("Training", "PublicTest"):
        np.savez(d / f"{split}.npz", images=z["images"][:80], labels=z["labels"][:80])
    hist = tmp_path / "h.json"
    rc = main(
        [
            "train",
            "face",
            "--data",
            str(d),
            "--init",
            str(REPO / "affectstream" / "models" / "weights" / "face.pt"),
            "--extra",
            str(JAFFE / "crops48.npz"),
            "--extra-photos",
            str(JAFFE / "originals.npz"),
            "--hold-out",
            "KA",
            "--steps",
            "3",
            "--teacher",
            str(REPO / "affectstream" / "models" / "weights" / "face.pt"),
            "--out",
            str(tmp_path / "ft.pt"),
            "--history-json",
            str(hist),
        ]
    )
    assert rc == 0
    m = json.loads(hist.read_text())["metrics"]
    assert set(m) == {"PublicTest", "held_out_crops", "held_out_tracker"}
    assert m["held_out_tracker"]["n"] > 15 and len(m["held_out_crops"]["pred"]) > 15
    ckpt = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert ckpt["training"]["held_out"] == ["KA"]
    assert "--hold-out KA" in ckpt["command"]
    assert "--teacher " in ckpt["command"] and ckpt["training"]["n_teachers"] == 1
    assert not (tmp_path / "ft.pt.resume.pt").exists()  # the run's state, gone once it ended


def test_shipped_weights_name_their_corpora():
    """The shipped face.pt was fine-tuned on JAFFE: its command names it (the card lists its
    non-commercial terms) and it kept the 256-d embedding the fusion model reads."""
    from affectstream.models.face.encoder import load_checkpoint

    ckpt = load_checkpoint()
    assert "jaffe" in ckpt["command"] and "--keep 0.7" in ckpt["command"]
    assert ckpt["training"]["held_out"] == []
    assert ckpt["spec"]["embed_dim"] == 256
    assert ckpt["metrics"]["PublicTest"]["accuracy"] > 0.68


def test_interpolate_mixes_weights():
    from affectstream.models.face.finetune import interpolate

    torch.manual_seed(0)
    spec = FaceNetSpec(widths=(8, 8, 16, 16), embed_dim=256)
    a, b = FaceNet(spec).eval(), FaceNet(spec).eval()
    m = interpolate(a, b, 0.7)
    w = m.features[0].weight
    torch.testing.assert_close(w, 0.7 * a.features[0].weight + 0.3 * b.features[0].weight)
    assert interpolate(a, b, 0.0) is b
    with pytest.raises(ValueError):
        interpolate(a, b, 1.5)


def _small_net(seed: int) -> FaceNet:
    torch.manual_seed(seed)
    return FaceNet(FaceNetSpec(widths=(8, 8, 16, 16), embed_dim=256)).eval()


def test_teacher_reading_is_the_mean_over_teachers_and_mirror():
    from affectstream.models.face.finetune import teacher_probs

    a, b = _small_net(1), _small_net(2)
    x = torch.rand(3, 1, 48, 48)
    got = teacher_probs([a, b], x, 2.0)
    with torch.no_grad():
        want = sum(torch.softmax(m(v)[0] / 2.0, -1) for m in (a, b) for v in (x, x.flip(-1))) / 4
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got.sum(-1), torch.ones(3))


def test_finetune_distils_the_teachers_reading(crops):
    """With all the weight on the teacher, a teacher that reads every face as `angry` pulls
    the student there; its corpus labels alone do not."""
    base = FerData(
        np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8),
        np.arange(64) % 7,
        "random",
    )
    angry = LABELS.index("angry")
    teacher = _small_net(3)
    with torch.no_grad():
        teacher.head.bias.zero_()
        teacher.head.bias[angry] = 20.0
    opts = FinetuneOptions(
        steps=12, base_per_batch=6, extra_per_batch=2, warmup_steps=1, lr=0.05, kd_weight=1.0
    )
    x = torch.rand(32, 1, 48, 48)

    def share_angry(m: FaceNet) -> float:
        with torch.no_grad():
            return float(torch.softmax(m(x)[0], -1)[:, angry].mean())

    start = _small_net(4)
    taught, info = finetune(start, base, crops, opts, teachers=[teacher])
    plain, _ = finetune(start, base, crops, opts)
    assert info["n_teachers"] == 1
    assert share_angry(taught) > 0.5 > share_angry(plain)
