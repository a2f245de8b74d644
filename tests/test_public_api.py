"""The public API: `from affectstream import ...` gives the documented names, cheaply."""

from __future__ import annotations

import subprocess
import sys

import pytest

import affectstream


def test_public_names_resolve_to_their_modules():
    from affectstream import LABELS, AffectStream, Estimate, Inputs, load_config
    from affectstream.core.messages import Estimate as CoreEstimate
    from affectstream.realtime.stream import AffectStream as StreamClass

    assert AffectStream is StreamClass and Estimate is CoreEstimate
    assert Inputs.__name__ == "Inputs"
    assert load_config().scheduler.rate_hz > 0
    assert len(LABELS) == 7
    assert {"AffectStream", "Estimate", "load_config", "LABELS"} <= set(dir(affectstream))


def test_recognizer_is_public_and_lazy():
    from affectstream import Recognizer
    from affectstream.realtime.recognizer import Recognizer as RecognizerClass

    assert Recognizer is RecognizerClass
    assert "Recognizer" in affectstream.__all__ and "Recognizer" in dir(affectstream)
    assert callable(Recognizer.on_estimate) and callable(Recognizer.push_transcript)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Recogniser'"):
        affectstream.Recogniser  # noqa: B018


def test_importing_the_package_loads_no_heavy_dependency():
    code = (
        "import sys, affectstream\n"
        "heavy = ('torch', 'onnxruntime', 'cv2', 'faster_whisper', 'sounddevice')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_building_the_command_line_imports_no_torch():
    """Every command builds the whole parser first; a torch import there (0.8 s) once delayed
    the first estimate of `run` from 0.4 s to 1.3 s."""
    code = (
        "import sys; from affectstream.cli.main import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'cv2', 'faster_whisper') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
