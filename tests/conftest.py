"""Shared test fixtures: paths to the real media and corpora beside the project, and the
command line as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
DATA = SHARED / "data"


def affectstream(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`affectstream ARGS...` run from the checkout (`python -m`, so it is this tree's code
    whatever an editable install points at), with its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "affectstream", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def megamind() -> Path:
    p = MEDIA / "Megamind.avi"
    if not p.exists():
        pytest.skip(f"test media missing: {p}")
    return p


@pytest.fixture(scope="session")
def exported_dir(tmp_path_factory) -> Path:
    """`affectstream export --out DIR` of every model, run once and shared (about 18 s)."""
    import torch

    from affectstream.cli.main import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "--out", str(out), "--models", "face,voice,text,fusion"]) == 0
    return out
