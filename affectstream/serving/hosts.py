"""Session hosts: the WebSocket ingress of the Ray Serve application, and the registry that
counts their sessions.

A `SessionHost` replica runs today's push-mode server code (`realtime.io.websocket`,
`session.py`) behind the Serve proxy: every connection routed to it gets a `Session` with its
own `AffectStream` (ring buffers, tracker, VAD, transcript, fusion history), held in this
replica for the life of the socket. Models placed remote are called through their deployments
(`remote.py`); the others are opened once per replica and shared by its sessions, as in one
process. The protocol is the same: the token is checked at the handshake (HTTP 401), each
message by `protocol.py`, and a message over twice the size limit closes with 1009.

The `Registry` (one replica) counts the sessions of every host, so `--max-sessions` bounds
the whole application and the refusal is our own close 1013 (a full Ray Serve replica would
hold the handshake instead). Hosts report every `HEARTBEAT_S`; a host that stops reporting
(killed, its node lost) is forgotten after `EXPIRE_S`. The registry also carries the two
orders that close sessions with 1012 (service restart) so that clients reconnect: `drain`
(the application is shutting down) and a newer deployment announced by `serve --ray`
before it deploys (a redeploy: the old hosts are about to be stopped). The announcement
comes first because Serve stops an old host while its sockets are still open (it waits
`graceful_shutdown_timeout_s` for them, then kills it: clients would see 1006), and it may
stop the old hosts before any new one has started.
"""

import asyncio
import contextlib
import hmac
import itertools
import logging
import time
from typing import Any

from fastapi import FastAPI, WebSocket
from ray import serve
from starlette.responses import PlainTextResponse

from affectstream.core.config import Config
from affectstream.realtime.io.protocol import CLOSE_BUSY, CLOSE_TOO_BIG, Limits
from affectstream.realtime.io.session import SessionFactory
from affectstream.realtime.io.websocket import StreamServer

log = logging.getLogger(__name__)

CLOSE_RESTART = 1012  # RFC 6455 "service restart": reconnect
HEARTBEAT_S = 0.5
EXPIRE_S = 3.0


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Registry:
    """Sessions per host, the newest deployment generation, and the drain order."""

    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.draining = False
        self.announced = 0  # the generation a redeploy is bringing (`announce`)

    def _fresh(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        for h in [h for h, v in self.hosts.items() if now - v["seen"] > EXPIRE_S]:
            del self.hosts[h]
        return self.hosts

    def _entry(self, host: str, sessions: int = 0) -> dict[str, Any]:
        entry = self.hosts.setdefault(host, {"sessions": sessions, "generation": 0})
        entry["seen"] = time.monotonic()
        return entry

    async def admit(self, host: str, max_sessions: int) -> bool:
        """One more session on `host`, unless the application holds `max_sessions`."""
        hosts = self._fresh()
        if self.draining or sum(v["sessions"] for v in hosts.values()) >= max_sessions:
            return False
        self._entry(host)["sessions"] += 1
        return True

    async def release(self, host: str) -> None:
        if host in self.hosts:
            self.hosts[host]["sessions"] = max(0, self.hosts[host]["sessions"] - 1)

    async def heartbeat(self, host: str, info: dict[str, Any]) -> tuple[str, int]:
        """A host's report (its `generation`, where it runs, `sessions` it holds: counted
        only when the registry does not know the host, as after a restart of its own; admit
        and release keep the count); the answer: "serve", or "restart" when it must close
        its sessions with 1012, and the sessions of the whole application (for `status`)."""
        entry = self._entry(host, info["sessions"])
        entry.update({k: v for k, v in info.items() if k != "sessions"})
        hosts = self._fresh()
        newest = max(self.announced, *(v["generation"] for v in hosts.values()))
        order = "restart" if self.draining or info["generation"] < newest else "serve"
        return order, sum(v["sessions"] for v in hosts.values())

    async def announce(self, generation: int) -> None:
        """A redeploy of `generation` is coming: the hosts of older ones close their sessions
        with 1012 at their next heartbeat and take no more, so clients reconnect (and reach a
        new host once one is up)."""
        self.announced = max(self.announced, generation)

    async def drain(self) -> int:
        """Close every session with 1012 and admit no more; returns the sessions still open."""
        self.draining = True
        return sum(v["sessions"] for v in self._fresh().values())

    async def describe(self) -> dict[str, Any]:
        return {"draining": self.draining, "hosts": dict(self._fresh())}


def app_deleting(app: str) -> bool:
    """Whether Serve is deleting the application (`serve.delete`, `serve shutdown`): it then
    waits `graceful_shutdown_timeout_s` for a host's open sockets and kills the host, so the
    host closes them with 1012 first."""
    status = serve.status().applications.get(app)
    return status is not None and status.status == "DELETING"


class _Socket:
    """A Starlette WebSocket (through the Serve proxy) as the server code uses a `websockets`
    connection: `send`, `close`, `remote_address`, iteration over messages; a dropped
    connection raises `ConnectionClosed`. A binary message over `max_bytes` closes with 1009,
    as the `websockets` server does past its `max_size`."""

    def __init__(self, ws: WebSocket, max_bytes: int) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        client = ws.client
        self.remote_address = (client.host, client.port) if client else None

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send_text(text)
        except Exception:  # disconnected: Starlette raises WebSocketDisconnect or RuntimeError
            raise ConnectionClosed(None, None) from None

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):  # already closed by the client
            await self.ws.close(code, reason)

    async def __aiter__(self):
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is None:
                yield msg.get("text") or ""
                continue
            if len(data) > self.max_bytes:
                await self.close(CLOSE_TOO_BIG, f"message of {len(data)} bytes is too big")
                return
            yield data


class HostedServer(StreamServer):
    """The push-mode server of one session host, its sessions counted by the `Registry`."""

    def __init__(self, host_id: str, registry, **kwargs) -> None:
        super().__init__(**kwargs)
        self.host_id = host_id
        self.registry = registry
        self.session_prefix = f"{host_id}-"
        self.served = 0  # sessions admitted since the host started
        self.remote_batches: dict[str, dict] = {}  # the remote models' batches, refreshed
        self.app_sessions = 0  # of every host, as the registry last counted them

    def batches(self) -> dict:
        return {**super().batches(), **self.remote_batches}

    def status(self, client) -> dict:
        """`clients` counts the connections of the whole application, not this host's only
        (the registry's count, at most a heartbeat old, and never fewer than this host's)."""
        msg = super().status(client)
        msg["clients"] = max(msg["clients"], self.app_sessions)
        return msg

    async def admit(self) -> bool:
        ok = await self.registry.admit.remote(self.host_id, self.limits.max_sessions)
        self.served += ok
        return ok

    def released(self) -> None:
        self.registry.release.remote(self.host_id)


api = FastAPI()


@serve.deployment
@serve.ingress(api)
class SessionHost:
    """One session host (see the module docstring). `options`: the server's flags (`token`,
    `limits`, `queue_size`, `status_every_s`, `video`, `audio`, `transcribe`, `generation`)."""

    async def __init__(
        self, config: Config, options: dict[str, Any], registry, models: dict[str, Any]
    ) -> None:
        import ray

        from affectstream.serving.models import where
        from affectstream.serving.remote import remote_predictors

        self.options = options
        self.registry = registry
        self.models = {m: h for m, h in models.items() if m != "stt"}  # those that batch
        ctx = serve.get_replica_context()
        self.host_id = ctx.replica_id.unique_id
        self.app_name = ctx.app_name  # (`app` is the ingress's FastAPI app)
        self.where = {**where(), "actor": ray.get_runtime_context().get_actor_name()}
        predictors = await asyncio.to_thread(remote_predictors, config, models)
        factory = SessionFactory(
            config,
            video=options["video"],
            audio=options["audio"],
            transcribe=options["transcribe"],
            predictors=predictors,
        )
        self.server = HostedServer(
            self.host_id,
            registry,
            sessions=factory,
            queue_size=options["queue_size"],
            status_every_s=options["status_every_s"],
            limits=options["limits"],
            token=options["token"],
            host="127.0.0.1",  # not bound: the token's exposure check is the CLI's
        )
        self.limits: Limits = options["limits"]
        self._status = await self.server.attach()
        self._restarting = False
        self._beat = asyncio.create_task(self._heartbeat())
        self._watch = asyncio.create_task(self._watch_app())
        log.info("session host %s on %s", self.host_id, self.where["node_ip"])

    async def _heartbeat(self) -> None:
        for beat in itertools.count():
            if beat % 4 == 0:  # the remote models' batch counts, for status messages
                with contextlib.suppress(Exception):
                    for name, handle in self.models.items():
                        described = handle.describe.remote()
                        b = (await asyncio.wait_for(described, 4 * HEARTBEAT_S))["batches"]
                        keys = ("requests", "calls", "mean_batch", "max_batch")
                        self.server.remote_batches[name] = {k: b[k] for k in keys}
            info = {
                "sessions": len(self.server.clients),
                "served": self.server.served,
                "generation": self.options["generation"],
                **self.where,
            }
            with contextlib.suppress(Exception):  # the registry restarting: try again
                call = self.registry.heartbeat.remote(self.host_id, info)
                # (a deleted registry holds the call: time it out, so the loop goes on)
                order, self.server.app_sessions = await asyncio.wait_for(call, 4 * HEARTBEAT_S)
                if order == "restart":
                    await self._restart()
            await asyncio.sleep(HEARTBEAT_S)

    async def _watch_app(self) -> None:
        """Every second, whether Ray's own tools are deleting the application (they skip
        the registry); its own task, as a registry being deleted holds the heartbeat."""
        while not self._restarting:
            with contextlib.suppress(Exception):
                if await asyncio.to_thread(app_deleting, self.app_name):
                    await self._restart()
            await asyncio.sleep(2 * HEARTBEAT_S)

    async def _restart(self) -> None:
        """Close every session with 1012 (clients reconnect) and take no more."""
        if not self._restarting:
            self._restarting = True
            await self.server.close_clients(CLOSE_RESTART, "service restart: reconnect")

    def _authorized(self, ws: WebSocket) -> bool:
        token = self.options["token"]
        if not token:
            return True
        got = ws.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    @api.websocket("/")  # (no `from __future__ import annotations` here: FastAPI reads the
    async def connect(self, ws: WebSocket) -> None:  # annotation to find the socket)
        if not self._authorized(ws):
            log.info("refused a client without the token: %s", ws.client)
            response = PlainTextResponse(
                "missing or wrong token: send the header Authorization: Bearer <token>\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="affectstream"'},
            )
            await ws.send_denial_response(response)
            return
        await ws.accept()
        sock = _Socket(ws, 2 * self.limits.max_message_bytes)
        if self._restarting:
            await sock.close(CLOSE_RESTART, "service restart: reconnect")
            return
        await self.server.connection(sock)

    def check_health(self) -> None:
        if self._beat.done():
            raise RuntimeError("the session host's heartbeat stopped")

    async def __del__(self) -> None:
        if not hasattr(self, "_beat"):
            return  # the constructor failed: nothing to close
        await self._restart()
        self._status.cancel()
        self._beat.cancel()
        self._watch.cancel()


__all__ = ["CLOSE_BUSY", "CLOSE_RESTART", "HostedServer", "Registry", "SessionHost"]
