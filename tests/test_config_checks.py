"""Every config key refuses a value of the wrong type or out of its declared range, at load,
with one line naming the key; values inside the ranges load. Property-based (hypothesis) over
every key `core.config.settings()` enumerates, so a key added later is covered as it is
declared; then `affectstream run` on refused files (exit 2, one line, no stream), the same
message from `Config(...)` in Python and from a flag, and a server's `session.update`."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectstream.core import config as C
from affectstream.core.config import Config, ConfigError, load_config

SETTINGS = C.settings()
IDS = [s.key for s in SETTINGS]
SECTIONS = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}
# A few examples per key and test (72 keys today), each a small file written and loaded.
# No time limits: the CPU differs between machines and is shared.
EXAMPLES = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,  # CI runs the same examples every time; a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- strategies from the declarations --------------------------------------------------------
def _choices(tp) -> tuple | None:
    """The values a Literal (or a bool | Literal union) allows, else None."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, type(int | str)):
        out = []
        for a in typing.get_args(tp):
            if a is bool:
                out += [True, False]
            elif typing.get_origin(a) is typing.Literal:
                out += typing.get_args(a)
            else:
                return None
        return tuple(out)
    return None


def _scalar_wrong_type(tp):
    """Values whose type the hint `tp` does not take (an int is a float's, not the reverse)."""
    text = st.text(alphabet="abcxyz ", min_size=1, max_size=5)
    lists = st.lists(st.integers(0, 9), max_size=2)
    if tp is float:
        return st.one_of(text, st.booleans(), st.none(), lists)
    if tp is int:
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), text, st.booleans())
    if tp is bool:
        return st.one_of(st.integers(), text, st.none(), st.floats(allow_nan=False))
    if tp is str:
        return st.one_of(st.integers(), st.booleans(), st.none(), lists)
    choices = _choices(tp)
    assert choices is not None, f"no wrong-type strategy for {tp}"
    return st.one_of(text.filter(lambda v: v not in choices), st.integers(), st.none())


def _scalar_out_of_range(tp, a: C.Allowed | None):
    """Values of the right type outside `a` (None when everything of the type is allowed)."""
    if a is None:
        return None
    if a.choices:
        if tp is int:
            return st.integers(-(10**6), 10**6).filter(lambda v: v not in a.choices)
        return st.text(alphabet="abcint8_", min_size=1, max_size=8).filter(
            lambda v: v not in a.choices
        )
    if tp not in (int, float):
        return None
    low = a.gt if a.gt is not None else a.ge
    high = a.lt if a.lt is not None else a.le
    parts = []
    if tp is float:
        parts.append(st.sampled_from([math.nan, math.inf, -math.inf]))
        if low is not None:
            parts.append(st.floats(max_value=low, exclude_max=a.ge is not None, min_value=-1e9))
        if high is not None:
            parts.append(st.floats(min_value=high, exclude_min=a.le is not None, max_value=1e12))
    else:
        if low is not None:
            parts.append(st.integers(-(10**9), int(low) - (1 if a.ge is not None else 0)))
        if high is not None:
            parts.append(st.integers(int(high) + (1 if a.le is not None else 0), 10**12))
    return st.one_of(parts) if parts else None


def _scalar_in_range(tp, a: C.Allowed | None):
    if a is not None and a.choices:
        return st.sampled_from(a.choices)
    choices = _choices(tp)
    if choices is not None:
        return st.sampled_from(choices)
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(alphabet="abc/._-", max_size=8)
    low = high = None
    if a is not None:
        low = a.gt if a.gt is not None else a.ge
        high = a.lt if a.lt is not None else a.le
    if tp is int:
        lo = -(10**6) if low is None else int(low) + (1 if a.gt is not None else 0)
        hi = lo + 10**6 if high is None else int(high) - (1 if a.lt is not None else 0)
        return st.integers(lo, hi)
    lo = -1e6 if low is None else low
    hi = lo + 1e6 if high is None else high
    open_lo, open_hi = a is not None and a.gt is not None, a is not None and a.lt is not None
    floats = st.floats(lo, hi, exclude_min=open_lo, exclude_max=open_hi)
    # whole numbers too: YAML writes 5, not 5.0, and a float key takes it
    ilo = math.floor(lo) + 1 if open_lo else math.ceil(lo)
    ihi = math.ceil(hi) - 1 if open_hi else math.floor(hi)
    return floats | st.integers(ilo, ihi) if ilo <= ihi else floats


def _range_words(tp, a: C.Allowed, key: str):
    """An out-of-range value and the words its refusal must hold (the allowed range)."""
    out = _scalar_out_of_range(tp, a)
    if out is None:
        return None

    def words(v) -> str:
        if isinstance(v, float) and not math.isfinite(v):
            return f"{key} must be a finite number, got {v}"
        return f"{key} must be {a.describe()}, got "

    return out.map(lambda v: (v, words(v)))


def wrong_values(s: C.Setting):
    """Strategy of (value, words the refusal must hold) for `s`: each must be refused."""
    origin = typing.get_origin(s.type)
    a = s.allowed

    def typed(key):
        return lambda v: (v, f"{key} must be ")

    if origin is dict:
        _, vt = typing.get_args(s.type)

        def entry(k):
            key = f"{s.key}.{k}"
            bad = [_scalar_wrong_type(vt).map(typed(key))]
            if _range_words(vt, a, key) is not None:
                bad.append(_range_words(vt, a, key))
            return st.one_of(bad).map(lambda vw: ({k: vw[0]}, vw[1]))

        unknown = st.text(alphabet="qwz", min_size=1, max_size=4).map(
            lambda k: ({k: 1.0}, f"unknown key {s.key}.{k} (allowed: ")
        )
        not_a_map = st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text())
        return st.one_of(
            st.sampled_from(a.keys).flatmap(entry), unknown, not_a_map.map(typed(s.key))
        )
    if origin is list:
        (it,) = typing.get_args(s.type)
        item = _scalar_wrong_type(it).map(lambda v: ([v], f"{s.key}[0] must be "))
        return st.one_of(item, st.one_of(st.text(), st.integers()).map(typed(s.key)))
    strategies = [_scalar_wrong_type(s.type).map(typed(s.key))]
    if _range_words(s.type, a, s.key) is not None:
        strategies.append(_range_words(s.type, a, s.key))
    return st.one_of(strategies)


def right_values(s: C.Setting):
    origin = typing.get_origin(s.type)
    if origin is dict:
        _, vt = typing.get_args(s.type)
        return st.dictionaries(st.sampled_from(s.allowed.keys), _scalar_in_range(vt, s.allowed))
    if origin is list:
        (it,) = typing.get_args(s.type)
        return st.lists(st.sampled_from(_choices(it)), max_size=3)
    return _scalar_in_range(s.type, s.allowed)


def config_file(tmp_path, key: str, value) -> tuple[object, dict]:
    section, name = key.split(".")
    data = {section: {name: value}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


# -- every key -------------------------------------------------------------------------------
def test_every_key_declares_what_it_allows():
    """A key made with a plain `field()` (no `setting(...)`) fails here, so the tests below
    never miss one; the defaults themselves pass the check."""
    undeclared = [s.key for s in SETTINGS if s.allowed is None]
    assert not undeclared, f"declare with setting(...): {undeclared}"
    assert len(SETTINGS) > 70
    C.check_config(Config())


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
@EXAMPLES
@given(data=st.data())
def test_a_bad_value_is_refused_naming_the_key(tmp_path, s, data):
    value, words = data.draw(wrong_values(s), label="value")
    path, raw = config_file(tmp_path, s.key, value)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"config {path}: {words}"), message  # the key, and the range
    # the same value in Python: the same words, without the file
    section = s.key.split(".")[0]
    with pytest.raises(ConfigError) as py:
        SECTIONS[section](**raw[section])
    assert message == f"config {path}: {py.value}"


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
@EXAMPLES
@given(data=st.data())
def test_a_value_in_range_loads(tmp_path, s, data):
    value = data.draw(right_values(s), label="value")
    path, _ = config_file(tmp_path, s.key, value)
    config = load_config(path)
    section, name = s.key.split(".")
    got = getattr(getattr(config, section), name)
    assert got == value
    if s.type is float:
        assert isinstance(got, float)


def test_the_preset_echoes_each_range():
    """configs/default.yaml says beside each key what it allows, as the declarations do."""
    comments, section = {}, None
    for line in C.default_config_path().read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        name = line.strip().split(":")[0]
        if indent == 0:
            section = name
        elif indent == 2:
            comments[f"{section}.{name}"] = line.partition("#")[2].strip()
    assert {k: v for k, v in comments.items() if v} == {
        s.key: s.allows() for s in SETTINGS if s.allows()
    }


# -- through the command line ----------------------------------------------------------------
REFUSED = {
    "scheduler: {rate_hz: -5}": "scheduler.rate_hz must be > 0 and <= 1000, got -5",
    "scheduler: {rate_hz: 0}": "scheduler.rate_hz must be > 0 and <= 1000, got 0",
    "audio: {block_ms: 0}": "audio.block_ms must be >= 1 and <= 1000, got 0",
    "voice: {window_s: 0}": "voice.window_s must be > 0 and <= 10, got 0",
    "transcriber: {beam_size: 0}": "transcriber.beam_size must be >= 1, got 0",
    "scheduler: {deadline_ms: {face: -1}}": "scheduler.deadline_ms.face must be > 0, got -1",
    "video: {ring_frames: -3}": "video.ring_frames must be >= 1 and <= 1000, got -3",
    "scheduler: {spin_ms: .inf}": "scheduler.spin_ms must be a finite number, got inf",
}


def test_run_refuses_each_file_in_one_line_and_starts_nothing(tmp_path):
    """The issue's files through `affectstream run --sample`: exit 2, one line on stderr that
    names the file, the key and the range, no traceback, no estimate (run at once, in
    parallel: each is a fresh interpreter)."""
    runs = []
    for i, (text, message) in enumerate(REFUSED.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text + "\n")
        cmd = [sys.executable, "-m", "affectstream", "run", "--config", str(path)]
        cmd += ["--sample", "--duration", "2"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs.append((proc, path, message))
    for proc, path, message in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert out == ""  # no estimate, no summary: no stream started
        assert err.splitlines() == [f"affectstream: error: config {path}: {message}"]


def test_the_readme_refusal_is_what_run_prints(tmp_path):
    """README's Configuration section shows the line a bad file gets; it is the real one."""
    from tests.conftest import REPO

    section = (REPO / "README.md").read_text().split("## Configuration\n", 1)[1]
    shown = section.split("```\n", 2)[1].strip()
    (tmp_path / "my.yaml").write_text("scheduler:\n  rate_hz: -5\n")
    cmd = [sys.executable, "-m", "affectstream", "run", "--config", "my.yaml", "--sample"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr.strip()) == (2, "", shown)


def test_a_flag_gets_the_same_check(capsys):
    from affectstream.cli.main import main

    assert main(["run", "--sample", "--rate", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "affectstream: error: --rate: scheduler.rate_hz must be > 0 and <= 1000, got 0"
    assert main(["run", "--sample", "--threads", "0"]) == 2
    assert "--threads: backend.threads must be >= 1, got 0" in capsys.readouterr().err


# -- in Python -------------------------------------------------------------------------------
def test_python_gets_the_check_a_file_gets():
    with pytest.raises(ValueError, match=r"^scheduler\.rate_hz must be > 0 and <= 1000, got -5$"):
        C.SchedulerConfig(rate_hz=-5)
    with pytest.raises(ValueError, match="scheduler.deadline_ms.face must be > 0"):
        Config(scheduler=C.SchedulerConfig(deadline_ms={"face": -1.0}))
    assert Config(scheduler={"rate_hz": 5}).scheduler.rate_hz == 5.0  # a mapping is a section
    assert dataclasses.replace(C.FaceConfig(), detect_every=2).detect_every == 2
    # a value set after the config was made is caught where a stream is built
    config = Config()
    config.audio.block_ms = 0
    with pytest.raises(ConfigError, match="audio.block_ms must be >= 1 and <= 1000, got 0"):
        C.check_config(config)
    with pytest.raises(ConfigError, match="^--x: voice.window_s must be > 0"):
        C.set_key(Config(), "voice.window_s", -1.0, "--x")


def test_a_stream_is_not_built_on_a_bad_config():
    from affectstream.realtime.stream import AffectStream, Inputs

    config = Config()
    config.scheduler.rate_hz = 0.0
    with pytest.raises(ConfigError, match="scheduler.rate_hz must be > 0"):
        AffectStream(config, Inputs(push_video=True, push_audio=True))


# -- a server's session.update ---------------------------------------------------------------
def test_session_update_refuses_what_the_config_check_refuses():
    """NaN passes the message's JSON Schema (no comparison holds for it) and Python's JSON
    parser takes it; the config's check refuses it with the error reply `invalid`, before the
    session's stream is touched, and the session keeps its options."""
    from affectstream.realtime.io.protocol import Limits, MessageError, parse_control
    from affectstream.realtime.io.session import Session, SessionFactory

    factory = SessionFactory(Config(), transcribe=False)
    session = Session("1", factory, Limits(), deliver=lambda t: None, failed=lambda r: None)
    msg = parse_control('{"type": "session.update", "rate_hz": NaN}', Limits())
    with pytest.raises(MessageError) as e:
        asyncio.run(session.update(msg))
    assert e.value.reply() == {
        "type": "error",
        "code": "invalid",
        "message": '"session.update": scheduler.rate_hz must be a finite number, got nan',
    }
    assert session.options.rate_hz == 10.0 and session.stream is None
