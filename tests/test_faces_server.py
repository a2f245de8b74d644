"""The server's protocol 2: a client that asks for it gets every face in each estimate and can
choose the primary face; a client that does not ask is served protocol 1 exactly as before."""

from __future__ import annotations

import asyncio
import json
import struct
import time

import cv2
import pytest
from websockets.asyncio.client import connect

from affectstream.realtime.io import protocol
from affectstream.realtime.io.session import SessionFactory
from affectstream.realtime.io.websocket import StreamServer
from tests.test_faces import LEFT, RIGHT, _frame, _photos
from tests.test_server import is_estimate, serving


@pytest.fixture(scope="module")
def faces_server():
    import torch

    from affectstream.core.config import load_config

    torch.set_num_threads(1)
    sessions = SessionFactory(load_config(), audio=False, transcribe=False)
    yield from serving(StreamServer(sessions=sessions, port=0, status_every_s=1.0))


def _check(msg: dict, version: int) -> None:
    name = msg.get("type", "estimate")
    errors = list(protocol.validator("server", name, version).iter_errors(msg))
    assert not errors, (version, name, errors[0].message, msg)


def test_both_protocols_have_every_schema_and_name_their_version():
    for v in protocol.PROTOCOLS:
        for d in ("client", "server"):
            for n in protocol.schema_names(d, v):
                assert protocol.schema(d, n, v)["$id"] == f"affectstream/server/v{v}/{d}/{n}.json"
    assert "faces" in protocol.schema("server", "estimate", 2)["required"]
    assert "faces" not in protocol.schema("server", "estimate", 1)["properties"]


def test_protocol_2_carries_faces_and_a_client_chooses_the_primary(faces_server):
    ph = _photos()
    jpg = cv2.imencode(".jpg", _frame([(ph[LEFT], 240, 170), (ph[RIGHT], 170, 470)]))[1]
    frame = jpg.tobytes()
    url = f"ws://127.0.0.1:{faces_server.port}"

    async def push(ws, seconds: float) -> None:
        t0 = time.monotonic()
        for i in range(int(seconds * 15)):
            t = t0 + i / 15
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            await ws.send(b"\x11" + struct.pack("<d", t) + frame)

    async def session(ask: int | None, choose: bool) -> tuple[list, list]:
        got: list = []
        async with connect(url) as ws:

            async def read():
                async for text in ws:
                    got.append((time.monotonic(), json.loads(text)))

            reader = asyncio.create_task(read())
            hello = {"type": "hello"} | ({"protocol": ask} if ask else {})
            await ws.send(json.dumps(hello))
            await push(ws, 3.0)
            t_choose = time.monotonic()
            if choose:
                ests = [m for _, m in got if is_estimate(m) and m.get("faces")]
                small = next(f["id"] for f in ests[-1]["faces"] if f["box"][0] >= 320)
                await ws.send(json.dumps({"type": "session.update", "primary_face": small}))
            await push(ws, 2.5)
            reader.cancel()
        return got, t_choose

    async def main():
        return await asyncio.gather(session(2, True), session(None, False))

    (v2, t_choose), (v1, _) = asyncio.run(main())
    for msgs, version in ((v2, 2), (v1, 1)):
        assert not [m for _, m in msgs if m.get("type") == "error"], msgs
        for _, m in msgs:
            _check(m, version)
    hello2 = next(m for _, m in v2 if m.get("type") == "hello")
    assert hello2["protocol"] == 2 and hello2["protocols"] == [1, 2]
    hello1 = next(m for _, m in v1 if m.get("type") == "hello")
    assert hello1["protocol"] == 1 and "protocols" not in hello1
    assert all("faces" not in m for _, m in v1 if is_estimate(m))
    ests = [(t, m) for t, m in v2 if is_estimate(m) and m["present"]["face"]]
    assert ests and all(len(m["faces"]) == 2 for _, m in ests)

    def primary(m):
        p = next(f for f in m["faces"] if f["primary"])
        return "left" if p["box"][0] < 320 else "right"

    before = [m for t, m in ests if t < t_choose]
    after = [m for t, m in ests if t > t_choose + 1.0]
    assert before and after
    assert {primary(m) for m in before} == {"left"}  # the larger face, by default
    assert {primary(m) for m in after} == {"right"}  # the client's choice, no restart
    assert max(m["tick"] for m in after) > max(m["tick"] for m in before)
    reply = [m for _, m in v2 if m.get("type") == "session"]
    assert reply  # session.update is answered with the session, which echoes the choice
    assert reply[-1]["primary_face"] == next(f["id"] for f in after[-1]["faces"] if f["primary"])
    assert hello2["session"]["primary_face"] is None  # the largest face until one is chosen
