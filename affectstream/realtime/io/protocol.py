"""The server's wire protocol: message kinds, error and close codes, limits, and checking what
clients send before any of it reaches a stream.

Everything here is pure (bytes and text in, values or a `MessageError` out), so the server's
handler stays a router and each rule is tested on its own. The JSON messages both ways are
described by versioned JSON Schema files beside this module (`schemas/v1/`, `schemas/v2/`); incoming JSON is
validated against them, so an unknown field or a value out of range is an error that names
it. The binary layouts are in docs/server.md.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from importlib import resources

# The protocol versions the server speaks, each a folder of schemas (`schemas/v2/`). A
# connection speaks DEFAULT_PROTOCOL (1) until its hello asks for another (`"protocol": 2`),
# so a client written for version 1 is served exactly as before; 2 adds `faces` to estimates
# and `primary_face` to session.update. Incoming JSON is checked against the newest client
# schemas (a superset of the older ones).
PROTOCOL_VERSION = 2
PROTOCOLS = (1, 2)
DEFAULT_PROTOCOL = 1

KIND_VIDEO = 0x01  # then JPEG or PNG bytes
KIND_AUDIO = 0x02  # then uint32 LE sample rate, then int16 LE mono PCM
TIMED = 0x10  # kind | TIMED: a float64 LE capture time (s, the client's clock) follows the kind
KIND_VIDEO_TIMED = KIND_VIDEO | TIMED
KIND_AUDIO_TIMED = KIND_AUDIO | TIMED
KINDS = {KIND_VIDEO, KIND_AUDIO, KIND_VIDEO_TIMED, KIND_AUDIO_TIMED}
MAX_SAMPLE_RATE = 384_000
MAX_TIME_S = 1e10  # a capture time's magnitude (seconds: over 300 years of any clock)

# Close codes (RFC 6455 registry): the connection ends; every other problem is an error reply.
CLOSE_NORMAL = 1000  # the server stops, or its file inputs ended
CLOSE_TOO_BIG = 1009  # a message over twice --max-message-bytes (the transport's own limit)
CLOSE_SESSION_FAILED = 1011  # the session's stream failed (the reason says how)
CLOSE_BUSY = 1013  # "try again later": --max-sessions connections are open already


def close_reason(text: str) -> str:
    """`text` cut to the 123 UTF-8 bytes a close frame's reason may hold."""
    return text.encode()[:123].decode(errors="ignore")


# Error codes of {"type": "error", "code": ...}: the message is dropped, the session goes on.
ERROR_CODES = {
    "bad_json": "a text message that is not a JSON object with a string `type`",
    "too_deep": "JSON nested deeper than the depth limit",
    "too_big": "a message over the size limit, or an image over the pixel limit",
    "unknown_type": "a JSON `type` the server does not know",
    "invalid": "a JSON message its schema refuses (unknown field, wrong type, out of range)",
    "unknown_kind": "a binary message with no kind byte, or one the server does not know",
    "bad_image": "a video message that is not a decodable JPEG or PNG",
    "bad_audio": "an audio message with a bad header (rate) or not whole int16 samples",
    "bad_time": "a capture time that is not finite, too far from zero, or goes backwards",
    "rate_limited": "over the frames or audio seconds a session may push per second",
    "not_push_mode": "pushing or session.update to a server that reads its own inputs",
    "off": "pushing a medium this server does not take (--no-video, --no-audio)",
}


class MessageError(ValueError):
    """A client message the server cannot use: `code` (one of ERROR_CODES) and a sentence."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code

    def reply(self) -> dict:
        return {"type": "error", "code": self.code, "message": str(self)}


@dataclass(frozen=True)
class Limits:
    """What one client may send. Past a limit the message is refused with an error reply
    (its code in brackets) and the session goes on; only a message over twice
    `max_message_bytes` ends the connection (close code 1009), as the transport cannot read
    it at all.

    `max_message_bytes`: a binary message [too_big]. `max_text_bytes`: a JSON message
    [too_big]. `max_json_depth`: nesting of a JSON message [too_deep]. `max_pixels`: width x
    height of a pushed image, read from its header before decoding [too_big]. `max_fps`:
    frames a session may push per second, `max_audio_rate`: audio seconds per second, both
    over any one-second window (a token bucket holding one second's worth) [rate_limited].
    `max_sessions`: connections at once; the next is closed with 1013 "server busy".
    """

    max_message_bytes: int = 16 * 1024 * 1024
    max_text_bytes: int = 64 * 1024
    max_json_depth: int = 8
    max_pixels: int = 4096 * 4096
    max_fps: float = 60.0
    max_audio_rate: float = 2.0
    max_sessions: int = 8

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


class Budget:
    """A token bucket: `per_s` units a second, holding at most one second's worth."""

    def __init__(self, per_s: float, clock=time.monotonic) -> None:
        self.per_s = float(per_s)
        self.level = self.per_s
        self._clock = clock
        self._t = clock()

    def take(self, amount: float) -> bool:
        now = self._clock()
        self.level = min(self.per_s, self.level + (now - self._t) * self.per_s)
        self._t = now
        if amount > self.level:
            return False
        self.level -= amount
        return True


# -- binary messages ------------------------------------------------------------------------
def split_binary(message: bytes) -> tuple[int, float | None, bytes]:
    """(kind without the TIMED bit, capture time or None, payload) of a binary message."""
    if not message:
        raise MessageError(
            "unknown_kind", "empty binary message: need a kind byte (0x01 video, 0x02 audio)"
        )
    kind = message[0]
    if kind not in KINDS:
        raise MessageError(
            "unknown_kind",
            f"unknown binary kind 0x{kind:02x}: 0x01 video, 0x02 audio "
            "(0x11, 0x12: the same with a capture time)",
        )
    if not kind & TIMED:
        return kind, None, message[1:]
    what = "video" if kind == KIND_VIDEO_TIMED else "audio"
    if len(message) < 9:
        raise MessageError("bad_time", f"timed {what} message too short for its 8-byte time")
    (t,) = struct.unpack_from("<d", message, 1)
    if not math.isfinite(t):
        raise MessageError("bad_time", f"timed {what} message: capture time {t} is not finite")
    if abs(t) > MAX_TIME_S:  # in nanoseconds it would overflow the stream clock
        raise MessageError(
            "bad_time", f"timed {what} message: capture time {t:g} s is beyond ±{MAX_TIME_S:g} s"
        )
    return kind & ~TIMED, t, message[9:]


def image_size(payload: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, without decoding the image.

    Only PNG and JPEG are taken: other formats OpenCV reads (TIFF, WebP, ...) are more
    decoder surface than a frame needs. A header that declares no size is a bad image.
    """
    if payload[:8] == b"\x89PNG\r\n\x1a\n":
        if len(payload) < 24 or payload[12:16] != b"IHDR":
            raise MessageError("bad_image", "video message: PNG without an IHDR header")
        return struct.unpack_from(">II", payload, 16)
    if payload[:2] != b"\xff\xd8":
        raise MessageError("bad_image", "video message: not a JPEG or PNG file")
    i, n = 2, len(payload)
    while i + 4 <= n:  # walk the JPEG segments up to the frame header (SOFn)
        if payload[i] != 0xFF:
            break
        marker = payload[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack_from(">H", payload, i + 2)
        sof = 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)
        if sof and i + 9 <= n:
            height, width = struct.unpack_from(">HH", payload, i + 5)
            return width, height
        if length < 2:
            break
        i += 2 + length
    raise MessageError("bad_image", "video message: JPEG without a frame header (SOF)")


def check_image(payload: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a pushed JPEG or PNG, checked without decoding it: not empty, not
    over `max_pixels`, and whole (a JPEG's end-of-image marker after its scan, a PNG's IEND).

    The server decodes a frame only when a stage reads it (`EncodedFrame`), so what can be
    told from the bytes alone is told here, in the reply to the message itself.
    """
    if not payload:
        raise MessageError("bad_image", "video message has no image bytes")
    width, height = image_size(payload)
    if width * height > max_pixels:
        raise MessageError(
            "too_big", f"video message: {width}x{height} image is over {max_pixels} pixels"
        )
    if width == 0 or height == 0:
        raise MessageError("bad_image", f"video message: {width}x{height} image is empty")
    if payload[:2] == b"\xff\xd8":
        scan, end = payload.find(b"\xff\xda"), payload.rfind(b"\xff\xd9")
        if scan < 0 or end < scan:
            raise MessageError(
                "bad_image",
                f"video message: cannot decode {len(payload)} bytes as JPEG: no end-of-image "
                "marker after the image data (truncated?)",
            )
    elif payload.rfind(b"IEND") < 0:
        raise MessageError(
            "bad_image",
            f"video message: cannot decode {len(payload)} bytes as PNG: no IEND chunk "
            "(truncated?)",
        )
    return width, height


def parse_audio(payload: bytes) -> tuple[bytes, int]:
    """`payload` after the kind (and time): uint32 LE sample rate, then int16 LE mono PCM."""
    if len(payload) < 4:
        raise MessageError(
            "bad_audio", f"audio message too short: {len(payload)} bytes, need a 4-byte rate"
        )
    (rate,) = struct.unpack_from("<I", payload)
    pcm = payload[4:]
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise MessageError(
            "bad_audio", f"audio message: sample rate {rate} out of range 1..{MAX_SAMPLE_RATE}"
        )
    if len(pcm) % 2:
        raise MessageError(
            "bad_audio", f"audio message: {len(pcm)} PCM bytes is not whole int16 samples"
        )
    return pcm, rate


# -- JSON messages --------------------------------------------------------------------------
def parse_control(text: str, limits: Limits) -> dict:
    """A client's JSON message, checked against its size, depth and schema."""
    if len(text) > limits.max_text_bytes:
        raise MessageError(
            "too_big", f"text message of {len(text)} characters: at most {limits.max_text_bytes}"
        )
    too_deep = MessageError(
        "too_deep", f"malformed JSON: nested too deeply (more than {limits.max_json_depth} levels)"
    )
    try:
        msg = json.loads(text)
    except RecursionError:  # "[" * 10000: the parser recurses once per level
        raise too_deep from None
    except ValueError as e:  # JSONDecodeError, or an integer of over 4300 digits
        raise MessageError("bad_json", f"malformed JSON: {e}") from None
    if json_depth(msg) > limits.max_json_depth:
        raise too_deep
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise MessageError("bad_json", 'a text message must be a JSON object with a "type"')
    kind = msg["type"]
    validators = client_validators()
    if kind not in validators:
        known = ", ".join(f'"{k}"' for k in sorted(validators))
        raise MessageError("unknown_type", f'unknown message type "{kind[:80]}": use {known}')
    from jsonschema.exceptions import best_match

    error = best_match(validators[kind].iter_errors(msg))
    if error is not None:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
        raise MessageError("invalid", f'"{kind}"{where}: {error.message}'[:300])
    return msg


def json_depth(value) -> int:
    """Nesting depth of parsed JSON: a scalar 0, [] or {} 1, {"a": [1]} 2 (no recursion)."""
    depth, level = 0, [(value, 1)]
    while level:
        v, d = level.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth = max(depth, d)
            level.extend((x, d + 1) for x in v)
    return depth


def _folder(direction: str, version: int):
    if version not in PROTOCOLS:
        raise ValueError(f"unknown protocol version {version} (known: {PROTOCOLS})")
    return resources.files("affectstream.realtime.io") / "schemas" / f"v{version}" / direction


@cache
def schema(direction: str, name: str, version: int = DEFAULT_PROTOCOL) -> dict:
    """The JSON Schema of one message: `direction` "client" (to the server) or "server", in
    protocol `version` (by default the one a connection speaks until its hello asks)."""
    return json.loads((_folder(direction, version) / f"{name}.json").read_text())


def schema_names(direction: str, version: int = DEFAULT_PROTOCOL) -> list[str]:
    return sorted(
        p.name.removesuffix(".json")
        for p in _folder(direction, version).iterdir()
        if p.name.endswith(".json")
    )


def validator(direction: str, name: str, version: int = DEFAULT_PROTOCOL):
    """A Draft 2020-12 validator of one message's schema; `$ref`s between the schemas of
    one direction (hello's `session`) resolve through a registry of them all."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    found = [schema(direction, n, version) for n in schema_names(direction, version)]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in found)
    s = schema(direction, name, version)
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s, registry=registry)


@lru_cache(maxsize=1)
def client_validators() -> dict:
    """One validator per client message type, by its `type` (hello, status, session.update),
    of the newest protocol (it takes every older client's messages too)."""
    out = {}
    for name in schema_names("client", PROTOCOL_VERSION):
        s = schema("client", name, PROTOCOL_VERSION)
        out[s["properties"]["type"]["const"]] = validator("client", name, PROTOCOL_VERSION)
    return out
