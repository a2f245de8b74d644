"""Shared test fixtures: paths to the real media and corpora beside the project, and the
command line as a user types it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
DATA = SHARED / "data"
RAVDESS_SPEECH = DATA / "ravdess_speech"
needs_ravdess = pytest.mark.skipif(not RAVDESS_SPEECH.is_dir(), reason="no RAVDESS here")


def ravdess_clips(actors=(1, 2), emotions=range(1, 9)) -> list[Path]:
    """One RAVDESS clip per actor and emotion (statement 1, repetition 1; strong intensity,
    which neutral does not have)."""
    return [
        RAVDESS_SPEECH
        / f"Actor_{a:02d}"
        / f"03-01-{e:02d}-{1 if e == 1 else 2:02d}-01-01-{a:02d}.flac"
        for a in actors
        for e in emotions
    ]


def eval_voice_setup(tmp_path: Path) -> tuple[Path, list[str], Path]:
    """A copy of the shipped voice encoder in `tmp_path` (heads can be put beside it) and the
    `eval voice` command on four clips of RAVDESS actor 19: (encoder, args, report path)."""
    from affectstream.models.voice.encoder import default_weights_path

    enc = tmp_path / "v.pt"
    shutil.copy(default_weights_path(), enc)
    root = tmp_path / "ravdess" / "Actor_19"
    root.mkdir(parents=True)
    for f in ravdess_clips(actors=(19,), emotions=(1, 3, 5, 8)):
        shutil.copy(f, root / f.name)
    out = tmp_path / "eval.json"
    args = ["eval", "voice", "--data", str(root.parent), "--weights", str(enc), "--json", str(out)]
    return enc, args, out


def utterance_features(extract, files) -> tuple:
    """(features, labels, actors, seconds of speech) of each RAVDESS file's utterance span
    read by `extract` (an utterance-head feature extractor); skips without the corpus."""
    import numpy as np

    if not RAVDESS_SPEECH.is_dir():
        pytest.skip(f"{RAVDESS_SPEECH} not present")
    from affectstream.models.voice.data import load_audio, parse_name
    from affectstream.models.voice.utterance import utterance_span

    rows, y, spk, sec = [], [], [], []
    for f in files:
        x = load_audio(f)
        s, e = utterance_span(x)
        rows.append(extract(x[s:e]))
        c = parse_name(f)
        y.append(c.label_index)
        spk.append(c.actor)
        sec.append((e - s) / 16000)
    return np.stack(rows), np.array(y), np.array(spk), np.array(sec)


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


def load_script(name: str) -> ModuleType:
    """A script of `scripts/` (not a package) imported as a module, so its tests call it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tools_required() -> bool:
    """True under CI (`CI` set, as CI services do) or with AFFECTSTREAM_REQUIRE_TOOLS=1, which
    `.ci/run` sets: there a test that lacks a tool or package it needs fails instead of skipping,
    so a machine without espeak-ng cannot turn a red test into a silent skip."""
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    return ci or os.environ.get("AFFECTSTREAM_REQUIRE_TOOLS") == "1"


def unavailable(why: str) -> None:
    """Skip the test for a missing tool, package or service, or fail it where tools are required."""
    if tools_required():
        pytest.fail(f"{why} (required here: CI or AFFECTSTREAM_REQUIRE_TOOLS=1)", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def require_tool(*names: str, install: str = "") -> None:
    """Skip the test (fail it under CI) unless every program in `names` is on the PATH.
    `install` says how to get them, e.g. "apt-get install espeak-ng"."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        unavailable(f"needs {', '.join(missing)}" + (f" ({install})" if install else ""))


def require_module(name: str, install: str = "") -> ModuleType:
    """`pytest.importorskip` that fails under CI: the imported module, or a skip locally."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"needs the Python package {name}" + (f" ({install})" if install else ""))
        raise  # not reached: unavailable() raised


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
