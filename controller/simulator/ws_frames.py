"""WebSocket bytes as mod_audio_stream's client writes and reads them (RFC 6455). No sockets here.

Hand-written on purpose: the simulator must control every byte (the module's colon-without-space
upgrade request, masked frames of odd sizes) and report exactly what it sent.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NORMAL_CLOSURE = 1000
NO_STATUS = 1005  # a close frame without a code (RFC 6455 7.1.5)
MAX_RESPONSE_HEAD = 16 * 1024
MAX_MESSAGE = 16 * 1024 * 1024


class WsProtocolError(Exception):
    """The server sent bytes that are not a WebSocket frame we can accept."""


def upgrade_request(url_host_port: str, path: str, key: str, extra_headers: list[tuple[str, str]]) -> bytes:
    """The module's upgrade request, byte for byte: no space after the colons, Origin last but the
    STREAM_EXTRA_HEADERS entries (see ws/*/connN.request.bin in the captures)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host:{url_host_port}",
        "Upgrade:websocket",
        "Connection:upgrade",
        f"Sec-WebSocket-Key:{key}",
        "Sec-WebSocket-Version:13",
        f"Origin:http://{url_host_port}",
        *(f"{name}:{value}" for name, value in extra_headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")


@dataclass(frozen=True)
class UpgradeResponse:
    status: int
    headers: dict[str, str]  # names lower-cased

    def accepts(self, key: str) -> bool:
        return (
            self.status == 101
            and self.headers.get("upgrade", "").lower() == "websocket"
            and self.headers.get("sec-websocket-accept", "") == accept_for(key)
        )


def parse_upgrade_response(head: bytes) -> UpgradeResponse:
    """The server's answer up to the blank line; raises WsProtocolError when it is not HTTP."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WsProtocolError(f"not an HTTP status line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return UpgradeResponse(int(parts[1]), headers)


def encode_frame(opcode: int, payload: bytes, mask: bytes | None, fin: bool = True) -> bytes:
    """One frame; a client masks every frame (mask = 4 bytes), a server never does (mask = None)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    if len(mask) != 4:
        raise ValueError(f"a frame mask is 4 bytes; got {len(mask)}")
    return head + mask + apply_mask(payload, mask)


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def close_payload(code: int | None, reason: str = "") -> bytes:
    if code is None:
        return b""
    return struct.pack("!H", code) + reason.encode("utf-8")


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame; a close without a code reads as 1005."""
    if len(payload) < 2:
        return NO_STATUS, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True
    masked: bool = False


class FrameReader:
    """Incremental frame parser: feed() bytes, get whole frames (unmasked) back.

    Fragmented data messages come back as one frame with the first fragment's opcode; control
    frames may arrive between fragments and come back on their own.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: list[Frame] = []

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while (frame := self._next()) is not None:
            if frame.opcode >= CLOSE:
                frames.append(frame)
                continue
            if frame.opcode == CONTINUATION and not self._fragments:
                raise WsProtocolError("continuation frame without a message to continue")
            if frame.opcode != CONTINUATION and self._fragments:
                raise WsProtocolError("new data frame before the fragmented message ended")
            self._fragments.append(frame)
            if frame.fin:
                first = self._fragments[0]
                payload = b"".join(f.payload for f in self._fragments)
                self._fragments.clear()
                frames.append(Frame(first.opcode, payload, True, first.masked))
        return frames

    def _next(self) -> Frame | None:
        if len(self._buffer) < 2:
            return None
        first, second = self._buffer[0], self._buffer[1]
        if first & 0x70:
            raise WsProtocolError("reserved bits set; no extension was negotiated")
        opcode, masked, length = first & 0x0F, bool(second & 0x80), second & 0x7F
        offset = 2
        if length == 126:
            if len(self._buffer) < 4:
                return None
            length = struct.unpack_from("!H", self._buffer, 2)[0]
            offset = 4
        elif length == 127:
            if len(self._buffer) < 10:
                return None
            length = struct.unpack_from("!Q", self._buffer, 2)[0]
            offset = 10
        if length > MAX_MESSAGE:
            raise WsProtocolError(f"frame of {length} bytes is larger than allowed ({MAX_MESSAGE})")
        mask = b""
        if masked:
            if len(self._buffer) < offset + 4:
                return None
            mask = bytes(self._buffer[offset : offset + 4])
            offset += 4
        if len(self._buffer) < offset + length:
            return None
        payload = bytes(self._buffer[offset : offset + length])
        del self._buffer[: offset + length]
        if masked:
            payload = apply_mask(payload, mask)
        return Frame(opcode, payload, bool(first & 0x80), masked)
