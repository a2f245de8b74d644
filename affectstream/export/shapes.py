"""Shape logic shared by the GPU paths, with no GPU in it: profiles, buckets, padding.

TensorRT optimisation profiles and CUDA-graph shape buckets are plain functions of a model's
`Signature`, so they are tested on any machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from affectstream.export.base import DimRange, Signature


def profile_shapes(
    signature: Signature, overrides: Mapping[str, DimRange] | None = None
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input, from the ranges of its dynamic axes."""
    dims = dict(signature.dims)
    dims.update(overrides or {})
    out = {}
    for spec in signature.inputs:
        shapes = []
        for which in ("min", "opt", "max"):
            shape = []
            for s in spec.shape:
                if isinstance(s, int):
                    shape.append(s)
                elif s in dims:
                    shape.append(getattr(dims[s], which))
                else:
                    raise ValueError(f"input {spec.name}: axis {s!r} has no range for a profile")
            shapes.append(tuple(shape))
        out[spec.name] = (shapes[0], shapes[1], shapes[2])
    return out


def bucket(n: int, rng: DimRange) -> int:
    """Smallest power of two >= n inside the range (the range's max if none is)."""
    if not rng.min <= n <= rng.max:
        raise ValueError(f"size {n} outside {rng.min}..{rng.max}")
    b = 1
    while b < n:
        b *= 2
    return min(max(b, rng.min), rng.max)


def bucket_sizes(
    sizes: Mapping[str, int], signature: Signature, paddable: Iterable[str]
) -> dict[str, int]:
    """Each paddable axis rounded up to its bucket; other axes keep their exact size."""
    pad = set(paddable)
    return {
        k: bucket(v, signature.dims[k]) if k in pad and k in signature.dims else v
        for k, v in sizes.items()
    }


def pad_feed(
    feed: Mapping[str, np.ndarray], signature: Signature, target: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Zero-pad every input up to the `target` size of each dynamic axis.

    Zero rows are valid inputs for every model here (a black face, silence, an all-zero
    mask); their outputs are cut off again by `unpad`.
    """
    out = {}
    for spec in signature.inputs:
        a = feed[spec.name]
        want = tuple(s if isinstance(s, int) else target[s] for s in spec.shape)
        if a.shape == want:
            out[spec.name] = a
            continue
        padded = np.zeros(want, dtype=a.dtype)
        padded[tuple(slice(0, n) for n in a.shape)] = a
        out[spec.name] = padded
    return out


def unpad(
    outputs: Iterable[np.ndarray], signature: Signature, sizes: Mapping[str, int]
) -> list[np.ndarray]:
    """Cut padded outputs back to the real sizes of their dynamic axes."""
    res = []
    for spec, a in zip(signature.outputs, outputs, strict=True):
        idx = tuple(
            slice(0, sizes[s]) if isinstance(s, str) and s in sizes else slice(None)
            for s in spec.shape
        )
        res.append(a[idx])
    return res
