"""Every command from an installed package, where no `../shared` sits beside the code: the ones
that need media use the bundled sample, the ones that need corpora say in one line which flags
to give (exit 2, no traceback). `shared_dir` is pointed at a folder that does not exist, as it
is for a `pip install .` in site-packages; the sample defaults are in test_bench_pipeline and
test_soak."""

from __future__ import annotations

import argparse

import pytest

from affectstream.cli import defaults
from affectstream.cli.args import looped_media, sample_media
from affectstream.cli.main import main


@pytest.fixture
def no_shared(tmp_path, monkeypatch):
    """No ../shared beside the package, and a working folder without one either."""
    monkeypatch.setattr(defaults, "shared_dir", lambda: tmp_path / "no-shared")
    monkeypatch.chdir(tmp_path)
    return tmp_path


CORPUS_COMMANDS = [
    (["scenario", "make", "--out", "s"], ["--faces NPZ", "--ravdess DIR", "--text CSV"]),
    (["train", "fusion"], ["--faces NPZ", "--ravdess DIR", "--text CSV"]),
    (["train", "voice"], ["--data DIR"]),
    (["train", "text"], ["--goemotions DIR", "--meld-train CSV", "--meld-dev CSV"]),
    (["bench", "stt"], ["--audio DIR"]),
    (["bench", "audio"], ["--audio FILE"]),
    (["bench", "face"], ["--video FILE"]),
    (["bench", "detect"], ["--fer NPZ", "--jaffe NPZ", "--background IMG"]),
]


@pytest.mark.parametrize(
    "argv, flags", CORPUS_COMMANDS, ids=[" ".join(argv[:2]) for argv, _ in CORPUS_COMMANDS]
)
def test_a_corpus_default_that_is_not_there_names_the_flags_in_one_line(
    no_shared, capsys, argv, flags
):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("affectstream: error: give ") and "../shared" in err, err
    for flag in flags:
        assert flag in err, err


def test_a_flag_given_is_used_and_only_the_missing_ones_are_named(no_shared, capsys):
    """--faces given: scenario make names the two it still lacks."""
    faces = no_shared / "faces.npz"
    faces.write_bytes(b"")
    assert main(["scenario", "make", "--out", "s", "--faces", str(faces)]) == 2
    err = capsys.readouterr().err
    assert "--ravdess DIR" in err and "--text CSV" in err and "--faces" not in err, err


def test_train_fusion_with_its_corpora_still_names_the_development_stream(no_shared, capsys):
    """The temperature is refitted on a stream drawn from the evaluation corpora: without them
    the command says how to calibrate otherwise, before any training."""
    given = []
    for flag, name in (("--faces", "f.npz"), ("--ravdess", "ravdess"), ("--text", "t.csv")):
        (no_shared / name).touch()
        given += [flag, str(no_shared / name)]
    assert main(["train", "fusion", *given]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--calibrate-on DIR" in err and "--calibrate-seed none" in err, err


def test_looped_commands_default_to_the_bundled_sample(no_shared):
    """bench pipeline, bench startup and soak: no --media, the sample every install has."""
    assert sample_media().is_file()
    assert looped_media(argparse.Namespace(media=None)) == sample_media()
