"""`StreamServer`: one websocket endpoint for live estimates, in one of two modes.

- **push mode** (`StreamServer(sessions=SessionFactory(config))`): every connection is its
  own session with its own stream (`session.py`); the client pushes frames and audio and
  receives the estimates of its own stream only. The models are opened once and shared.
- **inputs mode** (`StreamServer(stream)`): the server reads its own inputs (camera, files)
  and every client receives every estimate of that one stream.

Every client has its own bounded queue and sender task, so a slow client drops its own
oldest estimates (counted) and never holds up a stream or the other clients. What clients
send is checked by `protocol.py` (sizes, depth, schemas, rates) before it reaches a stream;
a refused message gets an error reply with a code and the session goes on. With a token,
the handshake of a client without `Authorization: Bearer <token>` is refused (HTTP 401).
The protocol is in docs/server.md; its JSON Schema files are in `schemas/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from http import HTTPStatus

from affectstream.core.clock import now_ns
from affectstream.core.version import __version__
from affectstream.export.batching import batch_stats
from affectstream.realtime.io.protocol import (
    CLOSE_BUSY,
    CLOSE_NORMAL,
    CLOSE_SESSION_FAILED,
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    Limits,
    MessageError,
    close_reason,
    parse_control,
    split_binary,
)
from affectstream.realtime.io.session import Session, SessionFactory

log = logging.getLogger(__name__)


class Client:
    """One connection's outgoing side: a bounded queue that drops its oldest entry when full."""

    def __init__(self, ws, size: int) -> None:
        self.ws = ws
        self.size = size
        self.queue: deque[str] = deque()
        self.dropped = 0  # messages this client lost because it read too slowly
        self.closing = False
        self.close_code, self.close_reason = CLOSE_NORMAL, "stream ended"
        self.session: Session | None = None
        self.protocol = DEFAULT_PROTOCOL  # until its hello asks for another
        self.task: asyncio.Task | None = None  # the pump, once connected
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()

    def offer(self, text: str, droppable: bool = True) -> None:
        """Queue `text`; replies (not droppable) may overfill the queue, but only up to twice
        its size, so a client that never reads cannot make it grow without bound."""
        if len(self.queue) >= (self.size if droppable else 2 * self.size):
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(text)
        self._wake.set()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "stream ended") -> None:
        """Send what is queued, then close with `code`."""
        if not self.closing:
            self.close_code, self.close_reason = code, reason
        self.closing = True
        self._wake.set()

    async def settle(self, timeout_s: float = 1.0) -> None:
        """Before the next message is read, let the pump send the replies queued so far: a
        client that floods is slowed to the pace at which it reads its answers (TCP pushes
        back on it) instead of losing them. Waits at most `timeout_s` for one that does not
        read at all; its replies then drop oldest as its estimates do."""
        await asyncio.sleep(0)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.queue) >= self.size and not self.closing:
            self._sent.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._sent.wait(), max(0.0, left))
            except TimeoutError:
                return

    async def pump(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                while self.queue:
                    await self.ws.send(self.queue.popleft())
                    self._sent.set()
                if self.closing:
                    await self.ws.close(self.close_code, self.close_reason)
                    return
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            pass  # the client went away; its handler cleans up


def exposure_problem(host: str, token: str | None) -> str:
    """Why serving on `host` without a token is refused ("" when it is not): an address
    beyond loopback (another machine could connect) needs a token."""
    if token:
        return ""
    if host == "localhost":
        return ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return ""
    except ValueError:
        pass  # a host name, or "" (every interface): reachable from elsewhere
    return f"{host or 'every interface'} is reachable from other machines: serving it needs a token"


class StreamServer:
    """Serve on ws://host:port until `stop()` (or, in inputs mode, until the stream ends).

    Give `stream` (inputs mode) or `sessions` (push mode). `queue_size`: messages held per
    client before its oldest estimates are dropped. `status_every_s`: how often each client
    gets a status message. `token`: clients must send `Authorization: Bearer <token>`; a
    host beyond loopback without one is a ValueError. `limits`: what a client may send.
    """

    def __init__(
        self,
        stream=None,
        *,
        sessions: SessionFactory | None = None,
        host: str = "127.0.0.1",
        port: int = 8765,
        queue_size: int = 32,
        status_every_s: float = 5.0,
        token: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        if (stream is None) == (sessions is None):
            raise ValueError("give a stream (inputs mode) or sessions=SessionFactory (push mode)")
        if stream is not None and (stream.inputs.push_video or stream.inputs.push_audio):
            raise ValueError(
                "a pushed stream would be shared by every client: for push mode give "
                "sessions=SessionFactory(config), one stream per connection"
            )
        problem = exposure_problem(host, token)
        if problem:
            raise ValueError(problem)
        self.stream = stream
        self.sessions = sessions
        self.host = host
        self.port = port
        self.queue_size = queue_size
        self.status_every_s = status_every_s
        self.token = token or None
        self.limits = limits or Limits()
        self.push = sessions is not None
        self.clients: set[Client] = set()
        self.estimates = 0  # inputs mode: estimates of the shared stream
        self.error: BaseException | None = None
        self._ids = itertools.count(1)
        self.session_prefix = ""  # before each session id: the host's, where several serve
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Event | None = None
        self._stop_requested = False

    @property
    def mode(self) -> str:
        return "push" if self.push else "inputs"

    # -- lifecycle ----------------------------------------------------------------------
    async def serve(self, ready: Callable[[StreamServer], None] | None = None) -> None:
        """Bind, run, and return once stopped (or the inputs ended) and clients are closed.

        In push mode the models are opened first. `ready(server)` is called once bound
        (`server.port` is then the real port).
        """
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        if self.sessions is not None:
            await asyncio.to_thread(self.sessions.open)
        async with serve(
            self.connection,
            self.host,
            self.port,
            max_size=2 * self.limits.max_message_bytes,  # beyond: closed with 1009
            process_request=self._authorize if self.token else None,
            # no per-message deflate: frames are JPEG and audio, which it cannot shrink, and
            # it cost 3 % of the server's CPU samples at 4 sessions (py-spy)
            compression=None,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving on ws://%s:%d (%s mode)", self.host, self.port, self.mode)
            thread = None
            if self.stream is not None:
                thread = threading.Thread(target=self._run_stream, name="affectstream-serve")
                thread.start()
            status = asyncio.create_task(self._status_loop())
            try:
                if ready is not None:
                    ready(self)
                if self._stop_requested:
                    self.stop()
                await self._ended.wait()
            finally:
                if self.stream is not None:
                    self.stream.stop()
                status.cancel()
                if thread is not None:
                    await asyncio.to_thread(thread.join)
                await self.close_clients()
        if self.error is not None:
            raise self.error

    async def attach(self) -> asyncio.Task:
        """Push mode behind another front end, with no socket of its own (the Ray Serve
        session host, `affectstream.serving`): the models open, and the returned task sends
        status messages until cancelled; each connection is then given to `connection(ws)`."""
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        await asyncio.to_thread(self.sessions.open)
        return asyncio.create_task(self._status_loop())

    def stop(self) -> None:
        """End serving after the current ticks; safe from any thread or a signal handler."""
        self._stop_requested = True
        if self.stream is not None:
            self.stream.stop()  # inputs mode: the stream's end ends serve()
        elif self._loop is not None and self._ended is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: serving is over already
                self._loop.call_soon_threadsafe(self._ended.set)

    def _run_stream(self) -> None:
        loop = self._loop
        try:
            for est in self.stream.estimates():  # each client gets its protocol's form
                loop.call_soon_threadsafe(self._broadcast, est.to_json(faces=False), est.to_json())
        except BaseException as e:  # reported by serve() once clients are closed
            log.exception("the stream failed")
            self.error = e
        finally:
            loop.call_soon_threadsafe(self._ended.set)

    async def close_clients(
        self, code: int = CLOSE_NORMAL, reason: str = "stream ended", timeout_s: float = 5.0
    ) -> None:
        """Stop every session, send each client what is queued, then close with `code`."""
        clients = list(self.clients)
        sessions = [c.session.stop() for c in clients if c.session is not None]
        if sessions:
            await asyncio.gather(*sessions)
        for c in clients:
            c.close(code, reason)
        waiters = [c.task for c in clients if c.task is not None]
        if waiters:
            await asyncio.wait(waiters, timeout=timeout_s)

    def _authorize(self, connection, request):
        """The handshake check with a token: HTTP 401 unless the right bearer token came."""
        got = request.headers.get("Authorization", "")
        if hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
            return None
        log.info("refused a client without the token: %s", connection.remote_address)
        response = connection.respond(
            HTTPStatus.UNAUTHORIZED,
            "missing or wrong token: send the header Authorization: Bearer <token>\n",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="affectstream"'
        return response

    # -- outgoing -----------------------------------------------------------------------
    def _broadcast(self, v1: str, v2: str) -> None:
        self.estimates += 1
        for c in self.clients:
            c.offer(v2 if c.protocol >= 2 else v1)

    def status(self, client: Client) -> dict:
        s = client.session
        msg = {
            "type": "status",
            "mode": self.mode,
            "clients": len(self.clients),
            "estimates": s.estimates if s is not None else self.estimates,
            "dropped": client.dropped,
        }
        batches = self.batches()
        if batches:
            msg["batches"] = batches
        return msg

    def batches(self) -> dict:
        """Per model shared by the sessions, the calls its batcher made (export.batching)."""
        out = {}
        shared = self.sessions.predictors if self.sessions is not None else {}
        for name, stats in batch_stats(shared).items():
            s = stats.summary()
            out[name] = {k: s[k] for k in ("requests", "calls", "mean_batch", "max_batch")}
        return out

    def hello(self, client: Client) -> dict:
        s = client.session
        if s is not None:
            rate, video, audio = s.options.rate_hz, self.sessions.video, self.sessions.audio
        else:
            rate = self.stream.config.scheduler.rate_hz
            video = self.stream.video_source is not None
            audio = self.stream.audio_source is not None
        msg = {
            "type": "hello",
            "version": __version__,
            "protocol": client.protocol,
            "mode": self.mode,
            "rate_hz": rate,
            "video": video,
            "audio": audio,
            "session": s.describe() if s is not None else None,
            "limits": self.limits.to_dict(),
        }
        if client.protocol >= 2:
            msg["protocols"] = list(PROTOCOLS)
        return msg

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_every_s)
            for c in self.clients:
                c.offer(json.dumps(self.status(c)), droppable=False)

    # -- incoming -----------------------------------------------------------------------
    async def admit(self) -> bool:
        """Whether one more connection may have a session (`--max-sessions`); a front end
        shared by several processes counts them all (`serving.hosts`)."""
        return len(self.clients) < self.limits.max_sessions

    def released(self) -> None:
        """A connection admitted by `admit()` has ended."""

    async def connection(self, ws) -> None:
        """One connection, until it closes: refused with 1013 past `--max-sessions`, else its
        session, its messages and replies (and `released()` as it leaves)."""
        from websockets.exceptions import ConnectionClosed

        if not await self.admit():
            n = self.limits.max_sessions
            log.info("refused a client, server busy: %s", ws.remote_address)
            await ws.close(CLOSE_BUSY, f"server busy: {n} sessions at once (--max-sessions {n})")
            return
        client = Client(ws, self.queue_size)
        client.task = asyncio.create_task(client.pump())
        self.clients.add(client)
        log.info("client connected: %s", ws.remote_address)
        try:
            if self.sessions is not None:
                client.session = Session(
                    f"{self.session_prefix}{next(self._ids)}",
                    self.sessions,
                    self.limits,
                    deliver=client.offer,
                    failed=lambda reason: client.close(CLOSE_SESSION_FAILED, reason),
                    reply=lambda r: client.offer(json.dumps(r), droppable=False),
                )
                try:
                    await client.session.start()
                except Exception as e:  # this connection ends; the server and others go on
                    log.exception("session %s could not start", client.session.id)
                    client.close(
                        CLOSE_SESSION_FAILED, close_reason(f"session failed to start: {e}")
                    )
                    client.session = None
                    return
            async for message in ws:
                try:
                    reply = await self._on_message(client, message)
                except MessageError as e:
                    reply = e.reply()
                if reply is not None:
                    client.offer(json.dumps(reply), droppable=False)
                    await client.settle()
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            self.released()
            if client.session is not None:
                await client.session.stop()
                client.session = None  # no Client <-> Session cycle: the stream goes now
            if not client.closing:
                client.task.cancel()
            log.info("client left: %s (dropped %d)", ws.remote_address, client.dropped)

    async def _on_message(self, client: Client, message: str | bytes) -> dict | None:
        if isinstance(message, str):
            return await self._on_control(client, parse_control(message, self.limits))
        arrived_ns = now_ns()  # received now; stamped before decoding
        if len(message) > self.limits.max_message_bytes:
            raise MessageError(
                "too_big",
                f"binary message of {len(message)} bytes: at most "
                f"{self.limits.max_message_bytes} (--max-message-bytes)",
            )
        kind, t, payload = split_binary(message)
        if client.session is None:
            raise MessageError(
                "not_push_mode", "this server reads its own inputs (mode inputs): no pushing"
            )
        await client.session.push(kind, t, payload, arrived_ns)
        return None

    async def _on_control(self, client: Client, msg: dict) -> dict:
        kind = msg["type"]
        if kind == "hello":
            if "protocol" in msg:  # from now on this connection speaks that version
                client.protocol = int(msg["protocol"])
                if client.session is not None:
                    client.session.protocol = client.protocol
            return self.hello(client)
        if kind == "status":
            return self.status(client)
        # session.update, the one other type the schemas know
        if client.session is None:
            raise MessageError(
                "not_push_mode", "session.update: clients share this server's one stream"
            )
        return await client.session.update(msg)
