"""`affectstream serve --ray` on a two-node local Ray cluster (head 127.0.0.2, second node
127.0.0.3; nothing travels to the machine's network address): the server's client tests
against it (hostile messages each answered, sessions isolated, token refused or accepted,
1013 when full), work on both nodes, batches above 1 in a remote model, a killed session
host's client sees the close and a new session works, and 1012 on a redeploy, on a delete
by Ray's own tools and on shutdown.

The cluster and the command take most of the time; the module prints how long it took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import REPO, require_module
from tests.test_server import LIBRIVOX, is_estimate, jpeg_frames
from tests.test_server_sessions import (
    AUTH,
    LIMITS,
    TOKEN,
    check_schema,
    check_token,
    closed_by_server,
    hostile_messages,
    no_face_jpeg,
    push_media,
    reader,
    validators,
)

# Ray Serve's own pydantic models warn on import (ray 2.60)
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")

HEAD, SECOND = "127.0.0.2", "127.0.0.3"
CONFIG = """\
serving:
  remote: [voice, fusion]  # batched deployments; the face model runs in each session host
  hosts: 2
  hosts_per_node: 1        # one session host on each node
  host_cpus: 1.0
  model_cpus: 0.5
  batch_wait_ms: 10.0
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, request):
    """The cluster, `affectstream serve --ray ADDRESS` on it, and this process connected to
    it (to read the registry and the models' batch sizes and to kill a host)."""
    ray = require_module("ray", "pip install -e '.[ray]'")
    from ray.cluster_utils import Cluster

    t0 = time.monotonic()
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' processes inherit them
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"node_ip_address": HEAD, "num_cpus": 3, "include_dashboard": False},
    )
    cluster.add_node(node_ip_address=SECOND, num_cpus=2)
    cluster.wait_for_nodes()
    config = tmp_path_factory.mktemp("ray") / "serving.yaml"
    config.write_text(CONFIG)
    port = free_port(HEAD)
    command = [
        sys.executable, "-m", "affectstream", "serve", "--ray", cluster.address,
        "--host", HEAD, "--port", str(port), "--token", TOKEN, "--config", str(config),
        "--no-transcribe", "--status-every", "1",
        "--max-sessions", str(LIMITS.max_sessions),
        "--max-message-bytes", str(LIMITS.max_message_bytes),
        "--max-fps", str(LIMITS.max_fps), "--max-audio-rate", str(LIMITS.max_audio_rate),
    ]  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        """`serve --ray` with these flags: the first deploys, a later one redeploys."""
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        procs.append(proc)
        return proc

    proc = start()
    try:
        assert_ready(proc)
        started = time.monotonic() - t0
        ray.init(address=cluster.address, log_to_driver=False)
        yield {
            "url": f"ws://{HEAD}:{port}",
            "proc": proc,
            "start": start,
            "ray": ray,
            "config": config,
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    took = time.monotonic() - t0
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # printed even when the tests pass
            reporter.write_line(
                f"\ntests/test_serving_ray.py: the Ray tests took {took:.1f} s "
                f"(cluster and serve --ray up: {started:.1f} s)"
            )


def assert_ready(proc: subprocess.Popen) -> None:
    """Read `serve --ray`'s output up to its line saying it serves (Ray's own log lines, such
    as a raylet's warning, may come first); fail if it ends without one."""
    seen = []
    for line in proc.stdout:
        if "(push mode, Ray Serve on" in line:
            return
        seen.append(line)
    raise AssertionError(f"serve --ray ended (exit code {proc.wait()}) without serving: {seen}")


def registry_view() -> dict:
    from ray import serve

    return serve.get_deployment_handle("Registry", "affectstream").describe.remote().result()


def sessions_below(n: int, timeout_s: float = 10.0) -> None:
    """Wait until the registry counts fewer than `n` sessions (a host reports a session's end
    a few milliseconds after the client sees its close)."""
    end = time.monotonic() + timeout_s
    while sum(h["sessions"] for h in registry_view()["hosts"].values()) >= n:
        assert time.monotonic() < end, registry_view()
        time.sleep(0.05)


def batches(model: str) -> dict:
    from ray import serve

    handle = serve.get_deployment_handle(f"model-{model}", "affectstream")
    return handle.describe.remote().result()["batches"]


def test_sessions_isolated_hostile_answered_and_busy_on_two_nodes(ray_server, megamind):
    url, vals = ray_server["url"], validators()
    mega = jpeg_frames(megamind, 120)
    speech, rate = sf.read(LIBRIVOX, dtype="int16")
    messi, silence = [no_face_jpeg()], np.zeros(16000 * 8, np.int16)
    hostile = hostile_messages(300)
    seconds = 6.0

    opened: list[asyncio.Event] = []

    async def hello(ws, got: list) -> None:
        """Send hello and wait for the answer: this session exists."""
        await ws.send(json.dumps({"type": "hello"}))
        while not [m for _, m in got if m.get("type") == "hello"]:
            await asyncio.sleep(0.05)
        opened.pop().set()

    async def media_session(frames, pcm, r) -> list:
        async with connect(url, additional_headers=AUTH) as ws:
            got: list = []
            task = asyncio.create_task(reader(ws, got))
            await hello(ws, got)
            await push_media(ws, frames, pcm, r, seconds)
            await ws.close()
            await task
            return got

    async def hostile_session() -> list:
        async with connect(url, additional_headers=AUTH, max_size=None) as ws:
            got: list = []
            task = asyncio.create_task(reader(ws, got))
            await hello(ws, got)
            # one valid timed frame and audio piece, so that time 0.0 is "backwards" later
            await ws.send(b"\x11" + struct.pack("<d", 1e6) + messi[0])
            await ws.send(b"\x12" + struct.pack("<dI", 1e6, 16000) + bytes(320))
            for message, _ in hostile:
                await ws.send(message)
            await ws.send(json.dumps({"type": "hello"}))  # answered after all the above
            while len([m for _, m in got if m.get("type") == "hello"]) < 2:
                await asyncio.sleep(0.05)
            await ws.close()
            await task
            return got

    async def scenario():
        events = [asyncio.Event() for _ in range(3)]
        opened.extend(events)
        a = asyncio.create_task(media_session(mega, speech, rate))
        b = asyncio.create_task(media_session(messi, silence, 16000))
        c = asyncio.create_task(hostile_session())
        for e in events:
            await asyncio.wait_for(e.wait(), 60)
        busy = await closed_by_server(url, None)  # a 4th session while the three are open
        c_msgs = await c
        await asyncio.to_thread(sessions_below, LIMITS.max_sessions)  # c's place is free
        too_big = await closed_by_server(url, b"\x01" + bytes(2 * LIMITS.max_message_bytes + 1))
        return await a, await b, c_msgs, busy, too_big

    a, b, c, busy, too_big = asyncio.run(asyncio.wait_for(scenario(), 180))

    assert busy[0] == 1013 and "server busy: 3 sessions at once" in busy[1], busy
    assert too_big[0] == 1009, too_big
    for _, m in a + b + c:
        check_schema(m, vals)
    # the hostile session: each message answered by an error of its kind, in order
    errors = [m for _, m in c if m.get("type") == "error"]
    assert len(errors) >= len(hostile)
    for i, ((message, codes), e) in enumerate(zip(hostile, errors[: len(hostile)], strict=True)):
        assert e["code"] in codes, (i, message[:60], e)
    # each session sees only its own media, and the two media sessions were not disturbed
    a_ests = [m for _, m in a if is_estimate(m)]
    b_ests = [m for _, m in b if is_estimate(m)]
    assert a_ests and b_ests
    late = a_ests[len(a_ests) // 4 :]
    faces = Counter(m["status"]["face"].split(":")[0] for m in late)
    assert np.mean([m["present"]["face"] for m in late]) > 0.5, faces
    assert any(m["present"]["voice"] for m in a_ests)
    assert not any(m["present"]["face"] or m["present"]["voice"] for m in b_ests)
    for msgs in (a, b):
        assert not [m for _, m in msgs if m.get("type") == "error"]
        assert all(np.diff([m["t"] for _, m in msgs if is_estimate(m)]) > 0)
    # session ids name their host: three sessions, and hosts on both nodes served them
    ids = {m["session"]["id"] for _, m in a + b + c if m.get("type") == "hello"}
    assert len(ids) == 3, ids
    hosts = registry_view()["hosts"]
    assert {h["node_ip"] for h in hosts.values()} == {HEAD, SECOND}, hosts
    assert all(h["served"] > 0 for h in hosts.values()), hosts
    # the remote models batched the sessions' requests
    fusion, voice = batches("fusion"), batches("voice")
    assert fusion["requests"] > 0 and voice["requests"] > 0
    assert max(fusion["max_batch"], voice["max_batch"]) > 1, (fusion, voice)


def test_status_counts_the_sessions_of_every_host(ray_server):
    """Three sessions open at once (on both hosts): each one's status says 3, not the count
    of the host that holds it."""
    url = ray_server["url"]

    async def scenario():
        sockets = [await connect(url, additional_headers=AUTH) for _ in range(3)]
        try:
            ids = []
            for ws in sockets:
                await ws.send(json.dumps({"type": "hello"}))
                while (m := json.loads(await ws.recv())).get("type") != "hello":
                    pass
                ids.append(m["session"]["id"])
            end = time.monotonic() + 30
            while True:  # the hosts hear the registry's count at their next heartbeat
                counts = []
                for ws in sockets:
                    await ws.send(json.dumps({"type": "status"}))
                    while (m := json.loads(await ws.recv())).get("type") != "status":
                        pass
                    counts.append(m["clients"])
                if counts == [3, 3, 3] or time.monotonic() > end:
                    return ids, counts
                await asyncio.sleep(0.5)
        finally:
            for ws in sockets:
                await ws.close()

    ids, counts = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 2, ids  # both hosts hold sessions
    assert counts == [3, 3, 3], (ids, counts)
    sessions_below(1)


def test_no_token_or_a_wrong_one_is_refused_at_the_handshake(ray_server):
    check_token(ray_server["url"])


def test_an_agents_recognizer_runs_on_the_remote_models(ray_server):
    """An agent's own process (here the test's, connected to the cluster) keeps its session
    state in a `Recognizer` and calls the cluster's voice and fusion deployments."""
    from affectstream import Recognizer
    from affectstream.core.config import load_config
    from affectstream.serving.remote import RemoteBackend, remote_predictors

    config = load_config(ray_server["config"])
    predictors = remote_predictors(config)
    assert set(predictors) == {"voice", "fusion"}
    assert all(isinstance(p.backend, RemoteBackend) for p in predictors.values())
    before = batches("voice")["requests"]
    speech, rate = sf.read(LIBRIVOX, dtype="int16")
    step = rate // 25
    got: list = []
    with Recognizer(config, push=True, transcribe=False, predictors=predictors) as rec:
        rec.on_estimate(got.append)
        t0 = time.monotonic()
        for i in range(100):  # 4 s of speech in 40 ms pieces, at real pace
            time.sleep(max(0.0, t0 + (i + 1) * 0.04 - time.monotonic()))
            rec.push_audio(speech[i * step : (i + 1) * step], rate, t=t0 + i * 0.04)
        time.sleep(0.5)
    assert any(e.present["voice"] for e in got), [e.status["voice"] for e in got]
    assert batches("voice")["requests"] > before


async def hello_and_estimates(url: str, n: int = 3, timeout_s: float = 90.0) -> tuple:
    """Connect (again until a session opens), then its hello and `n` estimates."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            async with connect(url, additional_headers=AUTH) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                hello, ests = None, []
                while hello is None or len(ests) < n:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if m.get("type") == "hello":
                        hello = m
                    elif is_estimate(m):
                        ests.append(m)
                return hello, ests
        except (ConnectionClosed, OSError, TimeoutError):
            if time.monotonic() > end:
                raise
            await asyncio.sleep(1.0)


def test_a_killed_session_host_drops_its_client_and_a_new_session_works(ray_server):
    ray, url = ray_server["ray"], ray_server["url"]

    async def scenario():
        async with connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            while (m := json.loads(await ws.recv())).get("type") != "hello":
                pass
            host = m["session"]["id"].rsplit("-", 1)[0]
            actor = (await asyncio.to_thread(registry_view))["hosts"][host]["actor"]
            ray.kill(ray.get_actor(actor, namespace="serve"))
            t = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            closed = (ws.close_code, time.monotonic() - t)
        return host, closed, await hello_and_estimates(url)

    host, closed, (hello, ests) = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert closed[0] not in (None, 1000) and closed[1] < 30, closed
    assert hello["session"]["id"] and len(ests) == 3


def test_a_redeploy_closes_sessions_with_1012_and_the_new_hosts_serve(ray_server):
    """A second `serve --ray` with the same flags is a newer deploy: the session open on the
    old hosts is closed with 1012 (reconnect), and a new session is served by a new host."""
    url = ray_server["url"]

    async def scenario():
        hello, _ = await hello_and_estimates(url, n=1)  # serving again after the kill
        old = {hello["session"]["id"].rsplit("-", 1)[0]}
        async with connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            while (m := json.loads(await ws.recv())).get("type") != "hello":
                pass
            old.add(m["session"]["id"].rsplit("-", 1)[0])
            redeploy = ray_server["start"]()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 120)
            closed = ws.close_code, ws.close_reason
        await asyncio.to_thread(assert_ready, redeploy)
        return old, closed, await hello_and_estimates(url, n=1)

    old, closed, (hello, _) = asyncio.run(asyncio.wait_for(scenario(), 240))
    assert closed[0] == 1012 and "reconnect" in closed[1], closed
    assert hello["session"]["id"].rsplit("-", 1)[0] not in old, (hello, old)


def test_deleting_the_app_with_rays_own_tools_closes_sessions_with_1012(ray_server):
    """`serve.delete` (or `serve shutdown`) skips our registry; the hosts see the application
    deleting and close their sessions with 1012 before Serve kills them. Then `serve --ray`
    deploys it again, for the shutdown test."""
    from ray import serve

    url = ray_server["url"]

    async def scenario():
        await hello_and_estimates(url, n=1)
        async with connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            while (json.loads(await ws.recv())).get("type") != "hello":
                pass
            deleted = asyncio.create_task(asyncio.to_thread(serve.delete, "affectstream"))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
            await deleted
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert code == 1012 and "reconnect" in reason, (code, reason)
    ray_server["proc"] = ray_server["start"]()
    assert_ready(ray_server["proc"])


def test_shutdown_closes_sessions_with_1012(ray_server):
    proc, url = ray_server["proc"], ray_server["url"]

    async def scenario():
        await hello_and_estimates(url, n=1)  # serving again after the kill
        async with connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            await ws.recv()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert code == 1012 and "reconnect" in reason, (code, reason)
    assert proc.wait(60) == 0
