"""The bundled sample clip: `affectstream run --sample` works with nothing beside the package,
the face tracker finds the face, whisper hears the words, and the clip is package data."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys

import av
import cv2
import tomllib

from affectstream.cli.args import sample_media
from tests.conftest import REPO, require_tool
from tests.test_run_cli import affectstream, check_estimate, read_estimates

SAMPLE = sample_media()


def test_sample_is_small_and_packaged():
    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 400_000
    cap = cv2.VideoCapture(str(SAMPLE))
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 100
    ok, frame = cap.read()
    assert ok and frame.shape == (360, 480, 3)
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = package_data["package-data"]["affectstream"]
    for name in ("sample.mp4", "README.md"):  # the clip and the licences of its parts
        path = (SAMPLE.parent / name).relative_to(REPO / "affectstream").as_posix()
        assert any(fnmatch.fnmatch(path, p) for p in patterns), (path, patterns)
    licences = (SAMPLE.parent / "README.md").read_text()
    assert "public domain" in licences and "espeak" in licences.lower()


def test_run_sample_fast_sees_the_face_and_hears_the_words(tmp_path):
    out, summary = tmp_path / "est.jsonl", tmp_path / "summary.json"
    r = affectstream("run", "--sample", "--fast", "--out", out, "--summary-json", summary)
    assert r.returncode == 0, r.stderr
    ests = read_estimates(out)
    for d in ests:
        check_estimate(d)
    s = json.loads(summary.read_text())
    # the replay covers the 14 s clip: every 0.1 s a tick or a counted skip (how many a slow
    # machine skips is its own figure, not the test's)
    assert len(ests) + ests[-1]["dropped"]["ticks_skipped"] >= 135
    assert s["present_fraction"]["face"] >= 0.9, s["present_fraction"]
    assert s["present_fraction"]["voice"] >= 0.5, s["present_fraction"]
    heard = " ".join(d["transcript"] for d in ests).lower()
    for word in ("happy", "wonderful", "sad", "lonely", "angry"):
        assert word in heard, heard[-300:]
    # the words' own emotion follows the three sentences, in order
    text_views = [d["modalities"]["text"]["emotion"] for d in ests if "text" in d["modalities"]]
    firsts = [text_views.index(e) for e in ("happy", "sad", "angry")]
    assert firsts == sorted(firsts), text_views


def readme_run_commands() -> list[str]:
    """The lines of the README's Run block, as a user types them."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Run\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


def test_readme_run_commands_as_written(tmp_path):
    """Both Run commands use only the package (`--sample`); `run` runs here as written, in a
    fresh folder (real time, 14 s), `demo` in tests/test_demo_xvfb.py under Xvfb."""
    demo, run = readme_run_commands()
    assert demo == "affectstream demo --sample"
    assert run == "affectstream run --sample --out est.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", *run.split()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    ests = read_estimates(tmp_path / "est.jsonl")
    # the 14 s clip to its end, at real pace: no tick before its slot on the clock (how many
    # ticks came is this machine's figure, not the test's)
    assert ests[-1]["t"] >= 13.5
    assert all(d["tick"] + d["dropped"]["ticks_skipped"] <= d["t"] * 10 + 1e-6 for d in ests)
    assert "estimates" in r.stderr  # the summary table
    assert sum(d["present"]["face"] for d in ests) >= 0.9 * len(ests)


def test_sample_with_another_file_is_one_line(tmp_path):
    r = affectstream("run", "--sample", "--video", SAMPLE, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "affectstream: error: --sample replaces --video: give one of them"


def test_make_sample_speaks_the_sample_s_words():
    """The rebuild script's speech is the committed clip's: same length, same sentences."""
    require_tool("espeak-ng", install="apt-get install espeak-ng")
    from affectstream.media import make_sample

    pcm, rate = make_sample.speech()
    with av.open(str(SAMPLE)) as c:
        seconds = c.streams.audio[0].duration * c.streams.audio[0].time_base
    assert abs(len(pcm) / rate - float(seconds)) < 0.15
    ok, image = cv2.VideoCapture(str(SAMPLE)).read()
    frames = list(make_sample.frames(image, 3))
    assert [f.shape for f in frames] == [(make_sample.HEIGHT, make_sample.WIDTH, 3)] * 3
