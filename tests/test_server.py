"""The streaming server on 127.0.0.1: pushed real media in, estimates out, bad messages, file mode."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from affectstream.realtime.io.session import SessionFactory
from affectstream.realtime.io.websocket import Client, StreamServer
from tests.conftest import MEDIA, REPO
from tests.test_run_cli import check_estimate

LIBRIVOX = MEDIA / "speech" / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.wav"


def is_estimate(msg: dict) -> bool:
    return "type" not in msg


@pytest.fixture(scope="module")
def push_server():
    """A push-mode server (face and voice, no transcription) in a thread, on a free port."""
    import torch

    from affectstream.core.config import load_config

    torch.set_num_threads(1)
    sessions = SessionFactory(load_config(), transcribe=False)
    yield from serving(StreamServer(sessions=sessions, port=0, status_every_s=1.0))


def serving(server: StreamServer):
    """Run `server` on its own thread and loop; yield it once bound, stop it after."""
    bound = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(lambda s: bound.set())))
    thread.start()
    assert bound.wait(60), "server did not bind"
    yield server
    server.stop()
    thread.join(30)
    assert not thread.is_alive()


def jpeg_frames(path, n: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", frame)[1].tobytes())
    cap.release()
    return out


def audio_message(pcm_int16: np.ndarray, rate: int) -> bytes:
    return b"\x02" + struct.pack("<I", rate) + pcm_int16.astype("<i2").tobytes()


async def collect(ws, seconds: float) -> list[dict]:
    """Every message received for `seconds`, parsed."""
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return out


def test_push_frames_and_audio_receive_estimates(push_server, megamind):
    frames = jpeg_frames(megamind, 48)  # 2 s at 24 fps
    pcm, rate = sf.read(LIBRIVOX, dtype="int16")
    chunk = rate // 10

    async def main():
        async with connect(f"ws://127.0.0.1:{push_server.port}") as ws:
            await ws.send(json.dumps({"type": "hello"}))
            hello = json.loads(await ws.recv())
            while hello.get("type") != "hello":  # estimates may come first
                hello = json.loads(await ws.recv())
            assert hello["mode"] == "push" and hello["rate_hz"] == 10
            assert hello["video"] and hello["audio"]

            async def push():
                t0, k = time.monotonic(), 0
                for i, jpg in enumerate(frames):
                    await ws.send(b"\x01" + jpg)
                    while k * chunk < min(len(pcm), (i + 1) * rate / 24):  # audio keeps pace
                        await ws.send(audio_message(pcm[k * chunk : (k + 1) * chunk], rate))
                        k += 1
                    await asyncio.sleep(max(0.0, t0 + (i + 1) / 24 - time.monotonic()))

            pusher = asyncio.create_task(push())
            msgs = await collect(ws, 3.5)
            await pusher
            return msgs

    msgs = asyncio.run(main())
    ests = [m for m in msgs if is_estimate(m)]
    assert not [m for m in msgs if m.get("type") == "error"]
    assert ests  # how many in 3.5 s is this machine's figure, not the test's
    for d in ests:
        check_estimate(d)
    ticks = [d["tick"] for d in ests]
    assert ticks == sorted(ticks)
    assert any(d["present"]["face"] for d in ests)  # Megamind's face, pushed as JPEG
    assert any(d["present"]["voice"] for d in ests)  # the librivox speech, pushed as PCM
    statuses = [m for m in msgs if m.get("type") == "status"]
    assert statuses and all(s["dropped"] == 0 and s["mode"] == "push" for s in statuses)


BAD = [
    (b"\x01not an image", "bad_image", "not a JPEG or PNG"),
    (b"\x01" + (MEDIA / "messi5.jpg").read_bytes()[:600], "bad_image", "cannot decode"),
    (b"\x09abc", "unknown_kind", "unknown binary kind 0x09"),
    (b"", "unknown_kind", "empty binary message"),
    (b"\x02\x80", "bad_audio", "too short"),
    (b"\x02" + struct.pack("<I", 16000) + b"\x00\x00\x00", "bad_audio", "not whole int16"),
    (b"\x02" + struct.pack("<I", 0) + b"\x00\x00", "bad_audio", "sample rate 0"),
    (b"\x11\x00\x00", "bad_time", "too short for its 8-byte time"),
    ("{not json", "bad_json", "malformed JSON"),
    ("[1, 2]", "bad_json", "JSON object"),
    ('{"type": "dance"}', "unknown_type", 'unknown message type "dance"'),
    ('{"type": "hello", "x": 1}', "invalid", "'x' was unexpected"),
    ('{"type": "session.update", "rate_hz": 0}', "invalid", "rate_hz: 0 is less than"),
]


def test_bad_messages_get_errors_and_the_stream_goes_on(push_server, megamind):
    good = b"\x01" + jpeg_frames(megamind, 1)[0]

    async def main():
        async with connect(f"ws://127.0.0.1:{push_server.port}") as ws:
            before = [m for m in await collect(ws, 0.5) if is_estimate(m)]
            errors = []
            for message, _, _ in BAD:
                await ws.send(message)
                await ws.send(good)  # the stream keeps taking frames between bad messages
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if m.get("type") == "error":
                        errors.append(m)
                        break
            after = await collect(ws, 1.0)
            await ws.send(json.dumps({"type": "status"}))
            status = [m for m in await collect(ws, 1.0) if m.get("type") == "status"]
            return before, errors, after, status

    before, errors, after, status = asyncio.run(main())
    assert len(errors) == len(BAD)
    for (_, code, expected), got in zip(BAD, errors, strict=True):
        assert got["code"] == code and expected in got["message"], (code, expected, got)
    after_ests = [m for m in after if is_estimate(m)]
    assert before and after_ests  # still streaming, same connection
    assert after_ests[0]["tick"] > before[-1]["tick"]
    assert not [m for m in after if m.get("type") == "error"]
    assert status and status[-1]["clients"] >= 1


def test_a_frame_that_fails_to_decode_later_is_still_answered(push_server, megamind):
    """Frames are decoded only when the face stage reads one; a JPEG whose header passes the
    check on arrival but whose frame header a decoder refuses (0 colour components) is
    answered when the stage reads it, and the session goes on: the good frames after it show a
    face."""
    frames = jpeg_frames(megamind, 48)
    jpeg = frames[0]
    sof = jpeg.index(b"\xff\xc0")
    broken = bytearray(jpeg)
    broken[sof + 9] = 0  # the component count of the frame header
    assert cv2.imdecode(np.frombuffer(bytes(broken), np.uint8), cv2.IMREAD_COLOR) is None

    async def main():
        async with connect(f"ws://127.0.0.1:{push_server.port}") as ws:
            await ws.send(b"\x01" + bytes(broken))  # the newest frame until the stage reads it
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while error.get("type") != "error":  # estimates flow meanwhile
                error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            for frame in frames:  # two seconds of Megamind, at its pace
                await ws.send(b"\x01" + frame)
                await asyncio.sleep(1 / 24)
            return error, await collect(ws, 1.0)

    error, after = asyncio.run(main())
    assert error["code"] == "bad_image" and "cannot decode" in error["message"], error
    assert "stream clock" in error["message"]
    assert any(m["present"]["face"] for m in after if is_estimate(m))
    assert not [m for m in after if m.get("type") == "error"]


@pytest.mark.parametrize(
    "text",
    ["[" * 10000, '{"a": ' * 10000, "1" * 5000],
    ids=["nested-array", "nested-object", "huge-int"],
)
def test_json_the_parser_refuses_is_an_error_reply_and_the_session_goes_on(
    push_server, megamind, text
):
    """Deep nesting (RecursionError in json.loads) and a 5000-digit number (ValueError)."""
    good = b"\x01" + jpeg_frames(megamind, 1)[0]

    async def main():
        async with connect(f"ws://127.0.0.1:{push_server.port}") as ws:
            before = [m for m in await collect(ws, 0.5) if is_estimate(m)]
            await ws.send(text)
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while error.get("type") != "error":  # estimates flow meanwhile
                error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(good)
            await ws.send(json.dumps({"type": "hello"}))
            after = await collect(ws, 1.0)
            return before, error, after

    before, error, after = asyncio.run(main())
    assert "malformed JSON" in error["message"], error
    assert error["code"] == ("bad_json" if text.startswith("1") else "too_deep")
    assert [m for m in after if m.get("type") == "hello"]  # same connection, still served
    after_ests = [m for m in after if is_estimate(m)]
    assert before and after_ests and after_ests[0]["tick"] > before[-1]["tick"]
    assert not [m for m in after if m.get("type") == "error"]


def test_slow_client_queue_drops_oldest_and_counts():
    class Sink:
        sent: list = []

    c = Client(Sink(), size=4)
    for i in range(10):
        c.offer(str(i))
    assert list(c.queue) == ["6", "7", "8", "9"] and c.dropped == 6
    c.offer('{"type": "error"}', droppable=False)  # replies overfill the queue...
    assert len(c.queue) == 5 and c.dropped == 6 and c.queue[-1] == '{"type": "error"}'
    for _ in range(10):
        c.offer("reply", droppable=False)
    assert len(c.queue) == 8 and c.dropped == 13  # ...up to twice its size


def test_default_host_is_localhost(push_server):
    from affectstream.cli.main import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8765
    assert push_server.host == "127.0.0.1"
    with pytest.raises(OSError):  # bound to loopback only: not reachable on another address
        _connect_any_non_loopback(push_server.port)


def _connect_any_non_loopback(port: int) -> None:
    """Connect to `port` on this machine's outward address (the UDP trick sends nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.connect(("10.255.255.255", 1))
            ip = u.getsockname()[0]
        except OSError:
            ip = "127.0.0.1"
    if ip.startswith("127.") or ip == "0.0.0.0":
        pytest.skip("this machine has no non-loopback address to probe")
    with socket.create_connection((ip, port), timeout=2):
        pass


def doc_client_source() -> str:
    text = (REPO / "docs" / "server.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    client = next(b for b in blocks if "async for" in b)
    assert len(client.strip().splitlines()) <= 16
    return client


def test_serve_video_file_mode_until_the_server_closes(megamind, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "affectstream", "serve", "--video", megamind, "--fast"]
        + ["--port", "0", "--no-transcribe", "--queue", "1000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.search(r"ws://127\.0\.0\.1:(\d+) \(inputs mode\)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = f"ws://127.0.0.1:{m.group(1)}"
        doc_client = tmp_path / "client.py"
        doc_client.write_text(doc_client_source())
        docs = subprocess.Popen(
            [sys.executable, doc_client, url], stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )

        async def main():
            msgs = []
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                await ws.send(b"\x01abc")  # pushing is refused in file mode
                await ws.send(json.dumps({"type": "session.update", "rate_hz": 5}))  # and this
                try:
                    async for text in ws:
                        msgs.append(json.loads(text))
                except ConnectionClosedOK:
                    pass
                return msgs, ws.close_code

        msgs, code = asyncio.run(asyncio.wait_for(main(), 120))
        assert code == 1000
        hello = next(m for m in msgs if m.get("type") == "hello")
        assert hello["mode"] == "inputs" and hello["video"] and not hello["audio"]
        assert hello["session"] is None  # every client shares the one stream
        errors = [(m["code"], m["message"]) for m in msgs if m.get("type") == "error"]
        assert errors == [
            ("not_push_mode", "this server reads its own inputs (mode inputs): no pushing"),
            ("not_push_mode", "session.update: clients share this server's one stream"),
        ]
        ests = [m for m in msgs if is_estimate(m)]
        # the stream covered the 11 s clip: every 0.1 s a tick or a counted skip (how many a
        # slow machine skips is its own figure, not the test's)
        last = ests[-1]
        assert last["tick"] + 1 + last["dropped"]["ticks_skipped"] >= 100, last["dropped"]
        for d in ests:
            check_estimate(d)
        assert np.mean([d["present"]["face"] for d in ests]) > 0.8
        assert proc.wait(30) == 0
        out, _ = docs.communicate(timeout=30)
        assert docs.returncode == 0
        lines = out.splitlines()
        # estimates flow from the moment of connection, so the hello reply may follow some
        assert sum(x.startswith("hello ") for x in lines) == 1
        assert len(lines) > 5 and all(len(x.split()) >= 2 for x in lines)
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_closes_clients_normally_and_exits_zero():
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "affectstream", "serve", "--port", "0", "--no-audio"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        m = re.search(r":(\d+) \(push mode\)", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.poll() is not None else ""

        async def main():
            async with connect(f"ws://127.0.0.1:{m.group(1)}") as ws:
                first = [x for x in await collect(ws, 1.0) if is_estimate(x)]
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosedOK):
                    while True:
                        await asyncio.wait_for(ws.recv(), 30)
                return first, ws.close_code

        first, code = asyncio.run(main())
        assert first and not any(d["present"]["face"] for d in first)  # nothing pushed yet
        assert code == 1000
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_port_in_use_is_a_one_line_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "affectstream", "serve", "--port", str(port), "--no-audio"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_client_that_vanishes_mid_message_leaves_the_others_untouched(push_server):
    """A raw socket completes the handshake, starts a 1 MB binary frame, sends 100 bytes of
    it and disappears. The server drops that session; a second client, connected before and
    still there after, keeps receiving estimates."""
    import base64
    import os
    import socket

    async def scenario():
        async with connect(f"ws://127.0.0.1:{push_server.port}") as ws:
            before = [m for m in await collect(ws, 1.0) if is_estimate(m)]
            sock = socket.create_connection(("127.0.0.1", push_server.port), timeout=5)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            assert b"101" in sock.recv(4096).split(b"\r\n")[0]
            await asyncio.sleep(0.3)
            clients_with_raw = len(push_server.clients)
            # FIN + binary opcode, masked, 64-bit length 1 MB; then only 100 bytes of it
            header = bytes([0x82, 0x80 | 127]) + (1 << 20).to_bytes(8, "big") + os.urandom(4)
            sock.sendall(header + b"\x01" + os.urandom(99))
            sock.close()  # gone mid-message
            await asyncio.sleep(0.5)
            after = [m for m in await collect(ws, 1.5) if is_estimate(m)]
            return before, clients_with_raw, after

    before, clients_with_raw, after = asyncio.run(scenario())
    assert before and after, "the connected client stopped receiving estimates"
    assert clients_with_raw == 2
    assert after[-1]["tick"] > before[-1]["tick"]
    deadline = time.monotonic() + 5
    while len(push_server.clients) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the second client has closed too; the vanished one is gone
    assert len(push_server.clients) == 0
