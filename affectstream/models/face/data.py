"""FER2013 in the project's npz format: loading, validation, and mapping onto the common labels.

A FER2013 file holds `images` (N, 48, 48) uint8, `labels` (N,) int in FER's own order and
`classes` (the FER class names, in that order); `names` is optional. Labels are mapped by
class *name* onto `affectstream.core.labels.LABELS`, so a file with another class order still maps
correctly. A file may also be the same npz compressed with lzma (`X.npz.xz`): that is how the
training set travels to a GPU machine, losslessly.
"""

from __future__ import annotations

import io
import logging
import lzma
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectstream.core.labels import LABELS

log = logging.getLogger(__name__)

# FER2013 class names -> common label names.
FER_TO_COMMON_NAME: dict[str, str] = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGE_SIZE = 48


class FerFormatError(ValueError):
    """A file that is not a usable FER2013-format npz; the message names the file and the problem."""


@dataclass(frozen=True)
class FerData:
    """Images (N, 48, 48) uint8 (or (N, S, S) for full photos, `load_fer(size=None)`), labels
    (N,) int64 in the common order (`LABELS`), and the file's `names` when it has them."""

    images: np.ndarray
    labels: np.ndarray
    path: str
    names: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> FerData:
        """The faces at `idx` (indices or a boolean mask), names kept."""
        names = None if self.names is None else self.names[idx]
        return FerData(self.images[idx], self.labels[idx], self.path, names)

    def head(self, n: int) -> FerData:
        return self.take(np.arange(min(n, len(self))))

    def subset(self, n: int, seed: int = 0) -> FerData:
        """A seeded random `n` of the faces (the files are sorted by class: `head` is not)."""
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))

    def subjects(self) -> np.ndarray:
        """Each face's subject: its name up to the first dot (JAFFE's `KA.AN1.39.tiff` -> `KA`).

        Raises FerFormatError when the file has no names (FER2013 has no subject ids)."""
        if self.names is None:
            raise FerFormatError(f"{self.path}: no `names`, so no subjects")
        return np.asarray([str(n).split(".")[0] for n in self.names])

    def concat(self, other: FerData) -> FerData:
        """These faces followed by `other`'s (same image size); names only when both have them."""
        names = None
        if self.names is not None and other.names is not None:
            names = np.concatenate([self.names.astype(str), other.names.astype(str)])
        return FerData(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.labels, other.labels]),
            f"{self.path}+{other.path}",
            names,
        )


def fer_to_common(classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """Index map `m` such that `common_label = m[fer_label]`, built from the class names."""
    out = []
    for name in classes:
        key = str(name).strip().lower()
        if key not in FER_TO_COMMON_NAME:
            raise FerFormatError(f"unknown FER class name {name!r}")
        out.append(LABELS.index(FER_TO_COMMON_NAME[key]))
    return np.asarray(out, dtype=np.int64)


def _open_npz(path: Path):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FerFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise FerFormatError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix == ".xz":
        try:
            raw = lzma.decompress(raw)
        except lzma.LZMAError:
            raise FerFormatError(f"{path}: not a valid .xz file") from None
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        raise FerFormatError(f"{path}: not a readable npz file") from None


def load_fer(path: str | Path, size: int | None = IMAGE_SIZE) -> FerData:
    """Load and validate one FER2013-format npz (or .npz.xz); labels mapped to the common order.

    `size`: the image side the file must have (48: crops for the CNN); None accepts any square
    size, e.g. JAFFE's full 256x256 photos, which the face tracker crops first
    (`detect.tracker_crops`)."""
    path = Path(path)
    try:
        with _open_npz(path) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise FerFormatError(f"{path}: missing key {missing[0]!r} (has {sorted(z.files)})")
            images = z["images"]
            labels = z["labels"]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else list(FER_CLASSES)
            names = z["names"].astype(str) if "names" in z.files else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, FerFormatError):
            raise
        raise FerFormatError(f"{path}: corrupt npz member ({type(e).__name__})") from None
    want = (size, size) if size else (images.shape[1:] if images.ndim == 3 else None)
    if (
        images.ndim != 3
        or images.shape[1:] != want
        or images.shape[1] != images.shape[2]
        or images.dtype != np.uint8
    ):
        side = f"{size}, {size}" if size else "S, S"
        raise FerFormatError(
            f"{path}: images must be (N, {side}) uint8, got {images.shape} {images.dtype}"
        )
    if (
        labels.ndim != 1
        or len(labels) != len(images)
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise FerFormatError(f"{path}: labels must be (N,) integers matching the images")
    if len(labels) == 0:
        raise FerFormatError(f"{path}: holds no images")
    if names is not None and len(names) != len(labels):
        names = None  # not one name per image: ignore them rather than mislabel subjects
    mapping = fer_to_common(classes)
    if labels.min() < 0 or labels.max() >= len(mapping):
        raise FerFormatError(f"{path}: label out of range 0..{len(mapping) - 1}")
    log.debug("loaded %d faces from %s", len(labels), path)
    return FerData(np.ascontiguousarray(images), mapping[labels.astype(np.int64)], str(path), names)


def find_split(data_dir: str | Path, split: str) -> Path:
    """`DIR/<split>.npz`, or its lzma-packed form `DIR/<split>.npz.xz`."""
    d = Path(data_dir)
    for name in (f"{split}.npz", f"{split}.npz.xz"):
        if (d / name).is_file():
            return d / name
    raise FerFormatError(f"{d}: neither {split}.npz nor {split}.npz.xz found")


def pack_fer(src: str | Path, dst: str | Path) -> Path:
    """Write `src` (FER npz) as lzma-compressed npz with images, labels and classes only."""
    src, dst = Path(src), Path(dst)
    with _open_npz(src) as z:
        buf = io.BytesIO()
        np.savez(buf, images=z["images"], labels=z["labels"], classes=z["classes"])
    dst.write_bytes(lzma.compress(buf.getvalue(), preset=9))
    return dst
