import re

import pytest

from affectstream.core.config import Config, ConfigError, load_config


def test_default_preset_matches_dataclass_defaults():
    assert load_config() == Config()


def test_partial_config_overrides_and_coerces(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scheduler:\n  rate_hz: 5\nface:\n  detect_every: 2\n")
    c = load_config(p)
    assert c.scheduler.rate_hz == 5.0 and isinstance(c.scheduler.rate_hz, float)
    assert c.face.detect_every == 2
    assert c.video == Config().video


@pytest.mark.parametrize(
    "text, message",
    [
        ("scheduler:\n  rate_hx: 5\n", "unknown key scheduler.rate_hx"),
        ("scheduler:\n  rate_hz: fast\n", "scheduler.rate_hz must be a number, got str 'fast'"),
        ("scheduler:\n  rate_hz: -5\n", "scheduler.rate_hz must be > 0 and <= 1000, got -5"),
        ("scheduler:\n  rate_hz: .nan\n", "scheduler.rate_hz must be a finite number, got nan"),
        ("scheduler:\n  deadline_ms: {face: -1}\n", "scheduler.deadline_ms.face must be > 0"),
        ("scheduler:\n  deadline_ms: {fcae: 5}\n", "unknown key scheduler.deadline_ms.fcae"),
        ("face:\n  detect_every: 2.5\n", "face.detect_every must be an integer, got float 2.5"),
        ("face:\n  enabled: 1\n", "face.enabled must be true or false, got int 1"),
        ("audio:\n  sample_rate: 8000\n", "audio.sample_rate must be 16000, got 8000"),
        ("transcriber:\n  compute_type: int4\n", "transcriber.compute_type must be one of"),
        ("batch:\n  enabled: yes please\n", "batch.enabled must be true, false or auto"),
        ("serving:\n  remote: [stt, smell]\n", "serving.remote[1] must be one of face"),
        ("nonsense: 1\n", "unknown key nonsense"),
        ("scheduler: [1, 2]\n", "scheduler must be a mapping, got list"),
        ("scheduler:\n  rate_hz: [\n", "not valid YAML at line"),
        ("backend:\n  name: cuda\n", "backend.name must be one of auto, torch, onnxruntime"),
        ("backend:\n  device: gpu\n", "backend.device must be one of cpu, cuda, got str 'gpu'"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_default_preset_lists_every_key():
    """The shipped preset documents every setting: its keys equal the dataclass fields."""
    import dataclasses

    import yaml

    from affectstream.core.config import default_config_path

    shipped = yaml.safe_load(default_config_path().read_text())
    assert shipped == dataclasses.asdict(Config())


def test_backend_names_are_one_set_for_config_flags_and_selection():
    """The config's Literal, the --backend choices and `open_backend` accept the same names."""
    from affectstream.cli.main import build_parser
    from affectstream.core.config import BACKEND_NAMES
    from affectstream.export.select import CHOICES

    assert CHOICES == BACKEND_NAMES == ("auto", "torch", "onnxruntime", "tensorrt")
    parser = build_parser()
    for name in BACKEND_NAMES:
        assert parser.parse_args(["run", "--backend", name]).backend == name
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--backend", "cuda"])
