"""FER2013 loading: the label mapping onto the common labels, and one-line errors for bad files."""

from __future__ import annotations

import lzma

import numpy as np
import pytest
from conftest import DATA

from affectstream.core.labels import LABELS
from affectstream.models.face.data import (
    FER_CLASSES,
    FerFormatError,
    fer_to_common,
    find_split,
    load_fer,
    pack_fer,
)

PUBLIC = DATA / "fer2013" / "PublicTest.npz"


def test_fer_order_maps_to_common_labels_by_name():
    m = fer_to_common(FER_CLASSES)
    # angry, disgust, fear, happy, sad, surprise, neutral
    expected = ["angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
    assert [LABELS[i] for i in m] == expected
    assert sorted(m.tolist()) == list(range(7))


def test_other_class_order_is_mapped_by_name(tmp_path):
    imgs = np.zeros((2, 48, 48), np.uint8)
    p = tmp_path / "x.npz"
    np.savez(p, images=imgs, labels=np.array([0, 1]), classes=np.array(["neutral", "fear"]))
    assert load_fer(p).labels.tolist() == [LABELS.index("neutral"), LABELS.index("fearful")]


def test_unknown_class_name_is_an_error():
    with pytest.raises(FerFormatError, match="contempt"):
        fer_to_common(["angry", "contempt"])


@pytest.fixture(scope="module")
def public():
    if not PUBLIC.exists():
        pytest.skip(f"corpus missing: {PUBLIC}")
    return load_fer(PUBLIC)


def test_public_test_loads_with_official_counts(public):
    assert public.images.shape == (3589, 48, 48) and public.images.dtype == np.uint8
    counts = np.bincount(public.labels, minlength=7)
    # FER2013 PublicTest: angry 467, disgust 56, fear 496, happy 895, sad 653, surprise 415,
    # neutral 607 (in the common order below)
    assert dict(zip(LABELS, counts.tolist(), strict=True)) == {
        "neutral": 607,
        "happy": 895,
        "sad": 653,
        "angry": 467,
        "fearful": 496,
        "disgusted": 56,
        "surprised": 415,
    }


def test_subset_is_seeded_and_mixed(public):
    a, b = public.subset(300, seed=1), public.subset(300, seed=1)
    assert np.array_equal(a.labels, b.labels)
    assert len(np.unique(a.labels)) >= 6  # the file is sorted by class; a subset is not


def test_packed_xz_round_trip(tmp_path, public):
    src = tmp_path / "PublicTest.npz"
    small = public.head(50)
    np.savez(src, images=small.images, labels=np.zeros(50, np.int64), classes=np.array(FER_CLASSES))
    packed = pack_fer(src, tmp_path / "Training.npz.xz")
    assert find_split(tmp_path, "Training") == packed
    back = load_fer(packed)
    assert np.array_equal(back.images, small.images)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip at all", "not a readable npz"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a readable npz"),
    ],
)
def test_corrupt_files_give_one_line_errors(tmp_path, content, message):
    p = tmp_path / "bad.npz"
    p.write_bytes(content)
    with pytest.raises(FerFormatError, match=message) as e:
        load_fer(p)
    assert "\n" not in str(e.value)


def test_wrong_shape_missing_key_and_missing_file(tmp_path):
    p = tmp_path / "shape.npz"
    np.savez(p, images=np.zeros((2, 32, 32), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(FerFormatError, match=r"\(N, 48, 48\) uint8"):
        load_fer(p)
    p = tmp_path / "nolabels.npz"
    np.savez(p, images=np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(FerFormatError, match="missing key 'labels'"):
        load_fer(p)
    with pytest.raises(FerFormatError, match="no such file"):
        load_fer(tmp_path / "absent.npz")
    bad_xz = tmp_path / "x.npz.xz"
    bad_xz.write_bytes(lzma.compress(b"junk")[:-3])
    with pytest.raises(FerFormatError, match="xz"):
        load_fer(bad_xz)
