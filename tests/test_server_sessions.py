"""Push-mode sessions on a live server: each connection sees only its own media, 1,000 hostile
messages each get an error while the other sessions keep their rate, limits and their codes
(busy 1013, too big 1009, rate limits), the token, session.update, and every message both ways
against its JSON Schema."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import soundfile as sf
from jsonschema import Draft202012Validator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from affectstream.realtime.io import protocol
from affectstream.realtime.io.protocol import Limits
from affectstream.realtime.io.session import SessionFactory
from affectstream.realtime.io.websocket import StreamServer
from tests.conftest import MEDIA, REPO
from tests.test_server import LIBRIVOX, audio_message, is_estimate, jpeg_frames, serving

TOKEN = "s3cret-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_message_bytes=256 * 1024, max_fps=30.0, max_audio_rate=2.0, max_sessions=3)
MESSI = MEDIA / "messi5.jpg"  # a football scene with one 37 px face


def no_face_jpeg() -> bytes:
    """messi5.jpg below its one face (which BlazeFace finds): a scene with no face."""
    import cv2

    return cv2.imencode(".jpg", cv2.imread(str(MESSI))[150:])[1].tobytes()


@pytest.fixture(scope="module")
def server():
    """A push-mode server with a token and small limits (face and voice, no transcription)."""
    import torch

    from affectstream.core.config import load_config

    torch.set_num_threads(1)
    sessions = SessionFactory(load_config(), transcribe=False)
    yield from serving(
        StreamServer(sessions=sessions, port=0, status_every_s=1.0, token=TOKEN, limits=LIMITS)
    )


def url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


# -- schemas --------------------------------------------------------------------------------
def validators() -> dict:
    return {name: protocol.validator("server", name) for name in protocol.schema_names("server")}


def check_schema(msg: dict, vals: dict) -> None:
    name = msg.get("type", "estimate")
    errors = sorted(vals[name].iter_errors(msg), key=str)
    assert not errors, (name, errors[0].message, msg)


def test_every_schema_is_valid_json_schema_and_names_its_version():
    names = {d: protocol.schema_names(d) for d in ("client", "server")}
    assert names == {
        "client": ["hello", "session.update", "status"],
        "server": ["error", "estimate", "hello", "session", "status"],
    }
    for d, ns in names.items():
        for n in ns:
            s = protocol.schema(d, n)
            Draft202012Validator.check_schema(s)
            assert s["$id"] == f"affectstream/server/v1/{d}/{n}.json"
    codes = protocol.schema("server", "error")["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(protocol.ERROR_CODES)  # one list of codes


def test_the_pixel_check_reads_png_and_jpeg_headers():
    assert protocol.image_size(MESSI.read_bytes()) == (548, 342)
    assert protocol.image_size(png_header(20000, 30000)) == (20000, 30000)
    with pytest.raises(protocol.MessageError, match="over 16777216 pixels"):
        protocol.check_image(png_header(20000, 30000), Limits().max_pixels)


def test_client_clock_never_maps_a_time_after_its_arrival():
    """The first frame arrives 300 ms late (the server was busy): later frames, on time, are
    still mapped to their arrival, not 300 ms into the future; gaps between times are kept."""
    from affectstream.realtime.io.session import ClientClock

    c = ClientClock()
    s = 10**12  # arrival times on the stream clock, ns
    assert c.to_stream_ns(5.0, "video", 0.0, s + 300_000_000) == s + 300_000_000
    assert c.to_stream_ns(5.1, "video", 0.0, s + 100_000_000) == s + 100_000_000
    assert c.to_stream_ns(5.2, "video", 0.0, s + 250_000_000) == s + 200_000_000  # 50 ms late
    assert c.to_stream_ns(5.16, "audio", 0.04, s + 200_000_000) == s + 160_000_000
    with pytest.raises(ValueError, match="must not go backwards"):
        c.to_stream_ns(5.0, "video", 0.0, s + 300_000_000)


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring width x height, and no image data."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


# -- the hostile barrage --------------------------------------------------------------------
def hostile_messages(n: int = 1000) -> list[tuple[str | bytes, set[str]]]:
    """`n` malformed or hostile messages, each with the error codes that may answer it."""
    rng = random.Random(7)
    jpg = no_face_jpeg()
    video = {"bad_image", "rate_limited"}  # frames count against the frame rate first
    pcm = struct.pack("<I", 16000) + bytes(320)
    nested = json.dumps({"type": "hello", "x": [[[[[[[[[1]]]]]]]]]})
    templates = [
        ('{"type": 5}', {"bad_json"}),
        ('{"type": null}', {"bad_json"}),
        ('{"type": ["hello"]}', {"bad_json"}),
        ('"hello"', {"bad_json"}),
        ("42", {"bad_json"}),
        ("[]", {"bad_json"}),
        ("{}", {"bad_json"}),
        ("{not json", {"bad_json"}),
        ('{"type": "hello"}garbage', {"bad_json"}),
        ("1" * 5000, {"bad_json"}),
        ('{"type": "dance"}', {"unknown_type"}),
        ('{"type": "HELLO"}', {"unknown_type"}),
        (json.dumps({"type": "x" * 20000}), {"unknown_type"}),
        ('{"type": "hello", "evil": 1}', {"invalid"}),
        ('{"type": "status", "verbose": true}', {"invalid"}),
        ('{"type": "session.update", "rate_hz": "fast"}', {"invalid"}),
        ('{"type": "session.update", "rate_hz": -1}', {"invalid"}),
        ('{"type": "session.update", "rate_hz": 1e9}', {"invalid"}),
        # NaN passes the schema (no comparison holds); the config check refuses it
        ('{"type": "session.update", "rate_hz": NaN}', {"invalid"}),
        ('{"type": "session.update", "rate_hz": true}', {"invalid"}),
        ('{"type": "session.update", "modalities": {"smell": true}}', {"invalid"}),
        ('{"type": "session.update", "modalities": {"face": "yes"}}', {"invalid"}),
        ('{"type": "session.update", "modalities": []}', {"invalid"}),
        ("[" * 5000, {"too_deep"}),
        ('{"a":' * 3000 + "1" + "}" * 3000, {"too_deep"}),
        (json.dumps(json.loads("[" * 20 + "]" * 20)), {"too_deep"}),
        (nested, {"too_deep"}),
        (" " * (LIMITS.max_text_bytes + 1), {"too_big"}),
        (b"\x01" + bytes(LIMITS.max_message_bytes + 1), {"too_big"}),
        (b"\x01", video),
        (b"\x01not an image", video),
        (b"\x01" + jpg[:200], video),
        (b"\x01" + jpg[:2000], video),
        (b"\x01" + b"\x89PNG\r\n\x1a\n" + bytes(40), video),
        (b"\x01" + png_header(20000, 30000), {"too_big", "rate_limited"}),
        (b"\x02", {"bad_audio"}),
        (b"\x02\x01\x02", {"bad_audio"}),
        (b"\x02" + struct.pack("<I", 0) + bytes(4), {"bad_audio"}),
        (b"\x02" + struct.pack("<I", 10**6) + bytes(4), {"bad_audio"}),
        (b"\x02" + struct.pack("<I", 16000) + bytes(3), {"bad_audio"}),
        (b"\x11", {"bad_time"}),
        (b"\x11" + struct.pack("<d", math.nan) + jpg, {"bad_time"}),
        (b"\x12" + struct.pack("<d", math.inf) + pcm, {"bad_time"}),
        (b"\x11" + struct.pack("<d", 1e300) + jpg, {"bad_time"}),  # ns would overflow
        (b"\x12" + struct.pack("<d", -1e300) + pcm, {"bad_time"}),
        (b"\x11" + struct.pack("<d", 0.0) + jpg, {"bad_time", "rate_limited"}),  # backwards
        (b"\x12" + struct.pack("<d", 0.0) + pcm, {"bad_time", "rate_limited"}),
        (b"", {"unknown_kind"}),
        (b"\x00", {"unknown_kind"}),
        (b"\x03abc", {"unknown_kind"}),
        (b"\xff" * 100, {"unknown_kind"}),
    ]
    out = [templates[i % len(templates)] for i in range(n)]
    for _ in range(n // 10):  # and random bytes after each kind byte
        kind = rng.choice([0x01, 0x02, 0x11, 0x12, 0x7F])
        out[rng.randrange(n)] = (
            bytes([kind]) + rng.randbytes(rng.randrange(0, 64)),
            {"bad_image", "bad_audio", "bad_time", "rate_limited", "unknown_kind"},
        )
    return out


async def reader(ws, into: list) -> None:
    """Every message of `ws` with its arrival time, until the connection closes."""
    try:
        async for text in ws:
            into.append((time.monotonic(), json.loads(text)))
    except ConnectionClosed:
        pass


async def push_media(ws, frames: list[bytes], pcm: np.ndarray, rate: int, seconds: float):
    """Frames at 24 fps and audio in 40 ms pieces, both with capture times (kinds 0x11/0x12)."""
    t0, step, k = time.monotonic(), rate // 25, 0
    for i in range(int(seconds * 24)):
        t = t0 + i / 24
        await asyncio.sleep(max(0.0, t - time.monotonic()))
        await ws.send(b"\x11" + struct.pack("<d", t) + frames[i % len(frames)])
        while (k + 1) * step <= len(pcm) and t0 + (k + 1) / 25 <= t:  # pieces captured by t
            piece = audio_message(pcm[k * step : (k + 1) * step], rate)[1:]
            await ws.send(b"\x12" + struct.pack("<d", t0 + k / 25) + piece)
            k += 1


async def closed_by_server(server_url: str, message: bytes | None, timeout_s: float = 20) -> tuple:
    """Connect, send `message`, and wait for the server to close: (code, reason)."""
    async with connect(server_url, additional_headers=AUTH) as ws:
        if message is not None:
            await ws.send(message)
        deadline = time.monotonic() + timeout_s  # a session that was let in sends estimates
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                await asyncio.wait_for(ws.recv(), timeout_s)
            raise AssertionError(f"the server did not close the connection in {timeout_s} s")
        return ws.close_code, ws.close_reason


def test_sessions_are_isolated_and_survive_a_hostile_neighbour(server, megamind):
    vals = validators()
    mega = jpeg_frames(megamind, 120)
    speech, rate = sf.read(LIBRIVOX, dtype="int16")
    messi, silence = [no_face_jpeg()], np.zeros(16000 * 8, np.int16)
    hostile = hostile_messages()
    seconds = 6.0
    busy_checked = threading.Event()  # the hostile client stays until the 4th was refused

    async def hostile_session(log: list, refused: dict) -> dict:
        async with connect(url(server), additional_headers=AUTH, max_size=None) as ws:
            got: list = []
            task = asyncio.create_task(reader(ws, got))
            await asyncio.sleep(0.5)
            # one valid timed frame and audio piece, so that time 0.0 is "backwards" later
            await ws.send(b"\x11" + struct.pack("<d", 1e6) + messi[0])
            await ws.send(b"\x12" + struct.pack("<d", 1e6) + struct.pack("<I", 16000) + bytes(320))
            log.append(time.monotonic())
            for message, _ in hostile:
                await ws.send(message)
            log.append(time.monotonic())
            # floods of valid pushes: past the frame and audio budgets each is refused
            t_flood = time.monotonic()
            for _ in range(90):
                await ws.send(b"\x01" + messi[0])
            quarter = audio_message(np.zeros(4000, np.int16), 16000)  # 0.25 s
            for _ in range(40):
                await ws.send(quarter)
            refused["elapsed"] = time.monotonic() - t_flood
            await ws.send(json.dumps({"type": "hello"}))  # answered after all the above
            while not (hello := [t for t, m in got if m.get("type") == "hello"]):
                await asyncio.sleep(0.05)
            await ws.send(json.dumps({"type": "status"}))
            while not any(m.get("type") == "status" and t > hello[0] for t, m in got):
                await asyncio.sleep(0.05)
            while not busy_checked.is_set():  # still one of the 3 when the 4th knocks
                await asyncio.sleep(0.05)
            await ws.close()
            await task
            return got

    async def media_session(frames, pcm, r, update: bool = False) -> list:
        async with connect(url(server), additional_headers=AUTH) as ws:
            got: list = []
            task = asyncio.create_task(reader(ws, got))
            await ws.send(json.dumps({"type": "hello"}))
            await push_media(ws, frames, pcm, r, seconds)
            if update:  # this session alone: 5 estimates a second, no face
                await ws.send(
                    json.dumps(
                        {"type": "session.update", "rate_hz": 5, "modalities": {"face": False}}
                    )
                )
                await asyncio.sleep(2.0)
            await ws.close()
            await task
            return got

    async def refused_connection(delay: float, message: bytes | None) -> tuple:
        await asyncio.sleep(delay)
        return await closed_by_server(url(server), message)

    async def scenario():
        log, refused = [], {}
        a = asyncio.create_task(media_session(mega, speech, rate))
        b = asyncio.create_task(media_session(messi, silence, 16000, update=True))
        # the hostile client on its own thread and loop, as another process would be
        c = asyncio.create_task(asyncio.to_thread(asyncio.run, hostile_session(log, refused)))
        busy = await refused_connection(1.0, None)  # a 4th connection at once
        busy_checked.set()
        shared = [cl.session.stream.predictors for cl in list(server.clients) if cl.session]
        c_msgs = await c
        too_big = await refused_connection(0.2, b"\x01" + bytes(2 * LIMITS.max_message_bytes + 1))
        return await a, await b, c_msgs, log, refused, busy, too_big, shared

    a, b, c, log, refused, busy, too_big, shared = asyncio.run(scenario())

    # limits that close: the 4th connection and the message over twice the size limit
    assert busy[0] == 1013 and "server busy: 3 sessions at once" in busy[1], busy
    assert too_big[0] == 1009, too_big
    # one copy of the models, shared by every session
    assert len(shared) == 3
    for name in ("face", "voice"):
        assert (
            shared[0][name]
            is shared[1][name]
            is shared[2][name]
            is server.sessions.predictors[name]
        )

    # every message both ways is in the schemas
    for _, m in a + b + c:
        check_schema(m, vals)

    # the hostile session: each of the 1,000 answered by an error of its kind, in order
    errors = [m for t, m in c if m.get("type") == "error" and t >= log[0]]
    assert len(errors) >= len(hostile)
    for i, ((message, codes), e) in enumerate(zip(hostile, errors[: len(hostile)], strict=True)):
        assert e["code"] in codes, (i, message[:60], e)
    flood = [e["code"] for e in errors[len(hostile) :]]  # the floods of valid pushes
    assert set(flood) <= {"rate_limited"}
    budget = (1 + refused["elapsed"]) * (LIMITS.max_fps + LIMITS.max_audio_rate / 0.25)
    assert len(flood) >= 130 - budget - 2, (len(flood), refused)
    status = [m for _, m in c if m.get("type") == "status"]
    assert status[-1]["dropped"] == 0 and status[-1]["estimates"] > 0
    assert [m for _, m in c if is_estimate(m)]  # its own stream went on through it all

    # the others went on while it went on: estimates arrived between its first bad message and
    # its last answer (how many a second is this machine's figure, not the test's)
    for msgs in (a, b):
        ests = [(t, m) for t, m in msgs if is_estimate(m)]
        during = [t for t, _ in ests if log[0] <= t <= c[-1][0]]
        assert during, (log, c[-1][0], [t for t, _ in ests])
        assert not [m for _, m in msgs if m.get("type") == "error"]

    # each session sees only its own media
    a_ests = [m for _, m in a if is_estimate(m)]
    b_ests = [m for _, m in b if is_estimate(m)]
    a_late = a_ests[len(a_ests) // 4 :]
    assert np.mean([m["present"]["face"] for m in a_late]) > 0.5  # Megamind
    assert any(m["present"]["voice"] for m in a_ests)  # the librivox speech
    assert not any(m["present"]["face"] or m["present"]["voice"] for m in b_ests)
    assert all(m["status"]["face"] != "ok" for m in b_ests)

    # session.update: B's reply, then its restarted stream at 5 Hz with the face off
    hello = next(m for _, m in b if m.get("type") == "hello")
    assert hello["session"]["rate_hz"] == 10 and hello["session"]["modalities"]["face"]
    i = next(i for i, (_, m) in enumerate(b) if m.get("type") == "session")
    reply = b[i][1]
    assert reply["rate_hz"] == 5 and reply["modalities"] == {
        "face": False,
        "voice": True,
        "text": False,
    }
    assert reply["id"] == hello["session"]["id"]
    after = [(t, m) for t, m in b[i + 1 :] if is_estimate(m)]
    assert after and after[0][1]["tick"] == 0
    assert all(m["status"]["face"] == "off" for _, m in after)
    # at 5 Hz: no tick before its 0.2 s slot on the new stream's clock (at 10 Hz, tick 1
    # would come at 0.1 s)
    assert len(after) >= 2
    assert all(m["tick"] + m["dropped"]["ticks_skipped"] <= m["t"] * 5 + 1e-6 for _, m in after)


def test_no_token_or_a_wrong_one_is_refused_at_the_handshake(server):
    check_token(url(server))


def check_token(server_url: str) -> None:
    """No token, a wrong one, or one without "Bearer": HTTP 401 at the handshake; the right
    one: the hello reply (also run against `serve --ray`, tests/test_serving_ray.py)."""

    async def attempt(headers):
        try:
            async with connect(server_url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                # estimates and a periodic status may come first on a busy machine
                while (m := json.loads(await ws.recv())).get("type") not in ("hello", "error"):
                    pass
                return m
        except InvalidStatus as e:
            return e.response

    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        r = asyncio.run(attempt(headers))
        assert r.status_code == 401 and b"Authorization: Bearer" in r.body, headers
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    hello = asyncio.run(attempt(AUTH))
    assert hello["type"] == "hello" and hello["protocol"] == 1 and hello["mode"] == "push"
    assert hello["limits"] == LIMITS.to_dict()


def test_binding_beyond_loopback_without_a_token_is_refused_at_start():
    from affectstream.realtime.io.websocket import exposure_problem

    assert exposure_problem("127.0.0.1", None) == exposure_problem("::1", None) == ""
    assert exposure_problem("localhost", None) == exposure_problem("0.0.0.0", "t") == ""
    env = {k: v for k, v in os.environ.items() if k != "AFFECTSTREAM_TOKEN"}
    r = subprocess.run(
        [sys.executable, "-m", "affectstream", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2
    assert "0.0.0.0 is reachable from other machines: serving it needs a token" in r.stderr
    assert "--token" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- the README's server example and examples/client.py -----------------------------------
def readme_server_commands() -> tuple[list[str], list[str]]:
    """The two commands of the README's "Serve agents over a websocket" block."""
    import re
    import shlex

    text = (REPO / "README.md").read_text()
    section = text.split("## Serve agents over a websocket", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    serve, client = (shlex.split(line.rstrip(" &")) for line in block.strip().splitlines())
    return serve, client


def test_the_readme_server_example_and_the_example_client():
    """The README's commands as written, with a free port (`--port 0`, then `--url`)."""
    serve, client = readme_server_commands()
    assert serve[:2] == ["affectstream", "serve"] and client[:2] == [
        "python3",
        "examples/client.py",
    ]
    env = {k: v for k, v in os.environ.items() if k != "AFFECTSTREAM_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "affectstream", *serve[1:], "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "(push mode)" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        ws_url = line.split()[2]
        run = [sys.executable, *client[1:], "--url", ws_url]
        r = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=90, env=env)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        hello = json.loads(next(x for x in lines if x.startswith("hello ")).split(" ", 1)[1])
        check_schema(hello, validators())
        assert hello["mode"] == "push" and not hello["session"]["modalities"]["text"]
        ests = [x for x in lines if " s  " in x and "face=" in x]
        assert ests, r.stdout  # how many in its 5 s is this machine's figure, not the test's
        assert sum("face=ok" in x for x in ests) > len(ests) / 2  # Megamind's face
        assert any("voice=ok" in x for x in ests)  # the librivox speech
        assert lines[-1] == f"{len(ests)} estimates, 0 errors"
        # without the token: refused at the handshake
        i = run.index("--token")
        nope = run[:i] + run[i + 2 :]
        r = subprocess.run(nope, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 1 and "refused the connection: HTTP 401" in r.stderr
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
