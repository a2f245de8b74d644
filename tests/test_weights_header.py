"""A live stream on the shipped models does not import PyTorch: the networks run on ONNX
Runtime, and the weights files' headers are read without torch (models/weights_header.py),
which saves a first launch seconds of CPU while its stream already runs."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile

import pytest

from affectstream.models.fusion.predictor import default_weights_path as fusion_weights
from affectstream.models.fusion.predictor import load_weights
from affectstream.models.fusion.predictor import read_header as fusion_header
from affectstream.models.voice import encoder
from affectstream.models.weights_header import read_plain
from tests.conftest import REPO

STREAM = """
import sys
from affectstream import AffectStream, Inputs, load_config
s = AffectStream(load_config(), Inputs(media=sys.argv[1], realtime=False))
faces = 0
for e in s.estimates():
    faces += e.present["face"]
    if e.t > 2:
        s.stop()
print(faces, "torch" in sys.modules)
"""


def test_a_stream_on_the_shipped_models_never_imports_torch(megamind):
    r = subprocess.run(
        [sys.executable, "-c", STREAM, str(megamind)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    faces, torch_imported = r.stdout.split()
    assert int(faces) > 0 and torch_imported == "False"


def test_the_headers_read_without_torch_equal_torch_load():
    import torch

    from affectstream.models.voice.net import NetOptions

    path = encoder.default_weights_path()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    window_s, mel, meta = encoder.read_header(path)
    assert window_s == blob["window_s"] and mel == NetOptions.from_dict(blob["net"]).mel
    assert meta == __import__("json").loads(blob.get("meta", "{}"))
    spec, history, info = fusion_header(fusion_weights())
    d = load_weights(fusion_weights())
    assert spec.to_json() == {**spec.to_json(), **d["spec"]} and info == d.get("info", {})
    assert history.to_json() == d["history"]


def test_a_pickle_that_builds_anything_else_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"format": Evil()}))
    with pytest.raises(ValueError, match="not a voice weight file"):
        read_plain(path, "voice weight file")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.pt: not a fusion weights file"):
        read_plain(tmp_path / "junk.pt", "fusion weights file")
