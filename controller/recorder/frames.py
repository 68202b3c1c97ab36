"""WebSocket frames as the recorder reads and writes them (RFC 6455 section 5): bytes in, messages out. Pure.

The recorder reads whatever its socket holds in one ``recv`` and hands it to ``FrameReader.feed``, which
returns every complete message in it: one call per wake-up however many frames arrived, each payload unmasked
in one operation. This is the hot path of the process (a frame every 20 ms per call), so it does no more
than the protocol needs: client frames must be masked, reserved bits must be clear (no extension is ever
negotiated), control frames must be short and whole, and no message may exceed ``max_message`` bytes.
A violation ends the stream: ``feed`` returns the messages before it and sets ``error`` (a ``FrameError``
with the close code to answer it with).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes (RFC 6455 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005  # only ever reported: the peer's close frame had no code
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")


class FrameError(Exception):
    """The peer broke the protocol; ``code`` is the close code that says so."""

    def __init__(self, code: int, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = problem


def unmask(payload, mask) -> bytes:
    """XOR the payload with its 4-byte mask, as one big integer: a per-byte loop costs ~100x more CPU."""
    n = len(payload)
    if not n:
        return b""
    key = (bytes(mask) * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameReader:
    """Turns the byte stream from one client into messages: ``(opcode, payload)`` with ``payload`` bytes.

    Data messages come out whole (fragments joined) with OP_TEXT or OP_BINARY; control frames come out as
    they arrive, between fragments if need be. Text is returned as bytes: the caller decodes it.
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._fragments: list[bytes] = []  # a fragmented message so far
        self._fragment_opcode = 0
        self._fragment_bytes = 0
        self.error: FrameError | None = None  # the protocol violation that ended the stream

    @property
    def mid_frame(self) -> bool:
        """Whether bytes of an unfinished frame or message are waiting (an EOF now cuts a frame short)."""
        return bool(self._buffer) or bool(self._fragments)

    def feed(self, data) -> list[tuple[int, bytes]]:
        """Every message completed by ``data``, in order; the rest is kept for the next call. After a
        violation, the messages before it (and ``error`` is set: nothing more is read)."""
        if self.error is not None:
            return []
        if self._buffer:
            self._buffer += data
            view = self._buffer
        else:
            view = data
        size = len(view)
        messages: list[tuple[int, bytes]] = []
        pos = 0
        while size - pos >= 2:
            first, second = view[pos], view[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = _LENGTH16.unpack_from(view, start)[0]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = _LENGTH64.unpack_from(view, start)[0]
                start += 8
            opcode = first & 0x0F
            # A final, masked binary frame within the limit (every audio frame) needs no further look.
            if first != 0x82 or not second & 0x80 or length > self.max_message or self._fragments:
                self.error = self._violation(first, second, opcode, length)
                if self.error is not None:
                    return messages
            end = start + 4 + length
            if size < end:
                break
            payload = unmask(view[start + 4:end], view[start:start + 4])
            pos = end
            if opcode == OP_BINARY and first & 0x80 and not self._fragments:
                messages.append((OP_BINARY, payload))  # the common case: one whole audio frame
            elif opcode in _CONTROL_OPCODES:
                messages.append((opcode, payload))
            else:
                self.error = self._data_frame(first & 0x80, opcode, payload, messages)
                if self.error is not None:
                    return messages
        if pos == size:
            if self._buffer:
                self._buffer = bytearray()
        elif pos or view is not self._buffer:
            self._buffer = bytearray(view[pos:])
        return messages

    def _violation(self, first: int, second: int, opcode: int, length: int) -> FrameError | None:
        if first & 0x70:
            return FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set in a frame, but no extension was negotiated")
        if not second & 0x80:
            return FrameError(CLOSE_PROTOCOL_ERROR, "an unmasked frame from the client")
        if opcode in _CONTROL_OPCODES:
            if length > 125 or not first & 0x80:
                return FrameError(CLOSE_PROTOCOL_ERROR, "a control frame longer than 125 bytes or fragmented")
        elif opcode not in _DATA_OPCODES:
            return FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        elif length > self.max_message or self._fragment_bytes + length > self.max_message:
            # Refused on its header: a huge frame is never buffered.
            return FrameError(CLOSE_TOO_BIG, f"a {length}-byte frame (message {self._fragment_bytes + length} "
                                             f"bytes) exceeds the {self.max_message}-byte limit")
        return None

    def _data_frame(self, fin: int, opcode: int, payload: bytes, messages: list) -> FrameError | None:
        if opcode == OP_CONTINUATION:
            if not self._fragments:
                return FrameError(CLOSE_PROTOCOL_ERROR, "a continuation frame with no message to continue")
        elif self._fragments:
            return FrameError(CLOSE_PROTOCOL_ERROR, "a new message began before the last one ended")
        else:
            self._fragment_opcode = opcode
        if fin and not self._fragments:
            messages.append((opcode, payload))
            return None
        self._fragments.append(payload)
        self._fragment_bytes += len(payload)
        if fin:
            messages.append((self._fragment_opcode, b"".join(self._fragments)))
            self._fragments, self._fragment_bytes = [], 0
        return None


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A server frame: final, unmasked (servers never mask)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + _LENGTH16.pack(n)
    else:
        head = bytes((0x80 | opcode, 127)) + _LENGTH64.pack(n)
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame carrying its status code (and at most 123 bytes of reason, the control frame limit)."""
    return encode_frame(OP_CLOSE, _LENGTH16.pack(code) + reason.encode("utf-8")[:123])


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a peer's close frame (1005 when it carried no code)."""
    if len(payload) >= 2:
        return _LENGTH16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")
    return CLOSE_NO_STATUS, ""


# ---- what a message means to the recorder (audio aside, which is the hot path's own) ---------------------

@dataclass(frozen=True)
class Reply:
    """A frame to answer with; ``closes``: the stream is over (the peer closed, or broke the protocol)."""

    frame: bytes
    closes: bool = False
    code: int | None = None  # the close code the peer sent, or the one we refuse with
    text: str | None = None  # the peer's close reason
    problem: str | None = None  # what the peer did wrong


def interpret(opcode: int, payload: bytes) -> str | Reply | None:
    """A text message (str), a ping or close to answer (Reply), or nothing to do (a pong: the peer is alive)."""
    if opcode == OP_TEXT:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return refusal(FrameError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text frame"))
    if opcode == OP_PING:
        return Reply(encode_frame(OP_PONG, payload))
    if opcode == OP_CLOSE:
        code, text = parse_close(payload)
        return Reply(close_frame(code if code != CLOSE_NO_STATUS else CLOSE_NORMAL), closes=True, code=code,
                     text=text)
    return None


def refusal(error: FrameError) -> Reply:
    """The close that answers a protocol violation."""
    text = ("frame too large" if error.code == CLOSE_TOO_BIG else
            error.problem if error.code == CLOSE_INVALID_DATA else "protocol error")
    return Reply(close_frame(error.code, text), closes=True, code=error.code, problem=error.problem)
