"""`StreamServer`: one websocket endpoint that fans an `AffectStream`'s estimates out to clients.

Interactive agents (voice bots, avatars) connect, receive every estimate as a JSON text
message, and in push mode send their own video frames and audio. The estimate generator
blocks, so it runs in a thread and hands each estimate to the asyncio loop; every client has
its own bounded queue and sender task, so a slow client drops its own oldest estimates
(counted) and never holds up the stream or the others. The protocol is in docs/server.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from affectstream.core.clock import now_ns
from affectstream.core.version import __version__

log = logging.getLogger(__name__)

KIND_VIDEO = 0x01  # then JPEG or PNG bytes
KIND_AUDIO = 0x02  # then uint32 LE sample rate, then int16 LE mono PCM
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_SAMPLE_RATE = 384_000
CLOSE_NORMAL = 1000


class MessageError(ValueError):
    """A client message the server cannot use; its text goes back in an error reply."""


class Client:
    """One connection's outgoing side: a bounded queue that drops its oldest entry when full."""

    def __init__(self, ws, size: int) -> None:
        self.ws = ws
        self.size = size
        self.queue: deque[str] = deque()
        self.dropped = 0  # estimates this client lost because it read too slowly
        self.closing = False
        self.task: asyncio.Task | None = None  # the pump, once connected
        self._wake = asyncio.Event()

    def offer(self, text: str, droppable: bool = True) -> None:
        """Queue `text`; replies (not droppable) may overfill the queue, but only up to twice
        its size, so a client that never reads cannot make it grow without bound."""
        if len(self.queue) >= (self.size if droppable else 2 * self.size):
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(text)
        self._wake.set()

    def close(self) -> None:
        """Send what is queued, then close with a normal close code."""
        self.closing = True
        self._wake.set()

    async def pump(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                while self.queue:
                    await self.ws.send(self.queue.popleft())
                if self.closing:
                    await self.ws.close(CLOSE_NORMAL, "stream ended")
                    return
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            pass  # the client went away; its handler cleans up


def decode_image(payload: bytes) -> np.ndarray:
    import cv2

    if not payload:
        raise MessageError("video message has no image bytes")
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MessageError(f"video message: cannot decode {len(payload)} bytes as JPEG or PNG")
    return image


def parse_audio(payload: bytes) -> tuple[bytes, int]:
    """`payload` after the kind byte: uint32 LE sample rate, then int16 LE mono samples."""
    if len(payload) < 4:
        raise MessageError(f"audio message too short: {len(payload)} bytes, need a 4-byte rate")
    (rate,) = struct.unpack_from("<I", payload)
    pcm = payload[4:]
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise MessageError(f"audio message: sample rate {rate} out of range 1..{MAX_SAMPLE_RATE}")
    if len(pcm) % 2:
        raise MessageError(f"audio message: {len(pcm)} PCM bytes is not whole int16 samples")
    return pcm, rate


class StreamServer:
    """Serve `stream` on ws://host:port until its inputs end or `stop()`.

    `queue_size`: estimates held per client before its oldest are dropped. `status_every_s`:
    how often each client gets a status message (its drop count, the client count).
    """

    def __init__(
        self,
        stream,
        host: str = "127.0.0.1",
        port: int = 8765,
        queue_size: int = 32,
        status_every_s: float = 5.0,
    ) -> None:
        self.stream = stream
        self.host = host
        self.port = port
        self.queue_size = queue_size
        self.status_every_s = status_every_s
        inp = stream.inputs
        self.push = bool(inp.push_video or inp.push_audio)
        self.clients: set[Client] = set()
        self.estimates = 0
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Event | None = None
        self._stop_requested = False

    @property
    def mode(self) -> str:
        return "push" if self.push else "inputs"

    # -- lifecycle ----------------------------------------------------------------------
    async def serve(self, ready: Callable[[StreamServer], None] | None = None) -> None:
        """Bind, run the stream, and return once it has ended and clients are closed.

        `ready(server)` is called once bound (`server.port` is then the real port).
        """
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        async with serve(self._handle, self.host, self.port, max_size=MAX_MESSAGE_BYTES) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving on ws://%s:%d (%s mode)", self.host, self.port, self.mode)
            thread = threading.Thread(target=self._run_stream, name="affectstream-serve")
            thread.start()
            status = asyncio.create_task(self._status_loop())
            try:
                if ready is not None:
                    ready(self)
                if self._stop_requested:
                    self.stream.stop()
                await self._ended.wait()
            finally:
                self.stream.stop()
                status.cancel()
                await asyncio.to_thread(thread.join)
                await self._close_clients()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """End the stream after its current tick; safe from any thread or a signal handler."""
        self._stop_requested = True
        self.stream.stop()

    def _run_stream(self) -> None:
        loop = self._loop
        try:
            for est in self.stream.estimates():
                loop.call_soon_threadsafe(self._broadcast, est.to_json())
        except BaseException as e:  # reported by serve() once clients are closed
            log.exception("the stream failed")
            self.error = e
        finally:
            loop.call_soon_threadsafe(self._ended.set)

    async def _close_clients(self, timeout_s: float = 5.0) -> None:
        clients = list(self.clients)
        for c in clients:
            c.close()
        waiters = [c.task for c in clients if c.task is not None]
        if waiters:
            await asyncio.wait(waiters, timeout=timeout_s)

    # -- outgoing -----------------------------------------------------------------------
    def _broadcast(self, text: str) -> None:
        self.estimates += 1
        for c in self.clients:
            c.offer(text)

    def status(self, client: Client) -> dict:
        return {
            "type": "status",
            "mode": self.mode,
            "clients": len(self.clients),
            "estimates": self.estimates,
            "dropped": client.dropped,
        }

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_every_s)
            for c in self.clients:
                c.offer(json.dumps(self.status(c)), droppable=False)

    # -- incoming -----------------------------------------------------------------------
    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        client = Client(ws, self.queue_size)
        client.task = asyncio.create_task(client.pump())
        self.clients.add(client)
        log.info("client connected: %s", ws.remote_address)
        try:
            async for message in ws:
                try:
                    reply = await self._on_message(client, message)
                except MessageError as e:
                    reply = {"type": "error", "message": str(e)}
                if reply is not None:
                    client.offer(json.dumps(reply), droppable=False)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            if not client.closing:
                client.task.cancel()
            log.info("client left: %s (dropped %d)", ws.remote_address, client.dropped)

    async def _on_message(self, client: Client, message: str | bytes) -> dict | None:
        if isinstance(message, str):
            return self._on_control(client, message)
        if not message:
            raise MessageError("empty binary message: need a kind byte (0x01 video, 0x02 audio)")
        kind, payload = message[0], message[1:]
        if kind not in (KIND_VIDEO, KIND_AUDIO):
            raise MessageError(f"unknown binary kind 0x{kind:02x}: 0x01 video, 0x02 audio")
        if not self.push:
            raise MessageError("this server reads its own inputs (mode inputs): no pushing")
        t_ns = now_ns()  # received now; stamped before decoding
        try:
            if kind == KIND_VIDEO:
                if self.stream.video_source is None:
                    raise MessageError("video is off on this server (--no-video)")
                image = await asyncio.to_thread(decode_image, payload)
                self.stream.push_frame(image, t_ns)
            else:
                if self.stream.audio_source is None:
                    raise MessageError("audio is off on this server (--no-audio)")
                pcm, rate = parse_audio(payload)
                self.stream.push_audio(pcm, rate)
        except MessageError:
            raise
        except (ValueError, RuntimeError) as e:
            raise MessageError(str(e)) from None
        return None

    def _on_control(self, client: Client, text: str) -> dict:
        try:
            msg = json.loads(text)
        except RecursionError:  # "[" * 10000: the parser recurses once per level
            raise MessageError("malformed JSON: nested too deeply") from None
        except ValueError as e:  # JSONDecodeError, or an integer of over 4300 digits
            raise MessageError(f"malformed JSON: {e}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise MessageError('a text message must be a JSON object with a "type"')
        kind = msg["type"]
        if kind == "hello":
            return {
                "type": "hello",
                "version": __version__,
                "mode": self.mode,
                "rate_hz": self.stream.config.scheduler.rate_hz,
                "video": self.stream.video_source is not None,
                "audio": self.stream.audio_source is not None,
            }
        if kind == "status":
            return self.status(client)
        raise MessageError(f'unknown message type "{kind}": use "hello" or "status"')
