"""The recorder's WebSocket frame reader on bytes alone: what comes out of what goes in, however it is cut."""

from __future__ import annotations

import os
import struct

import pytest

from controller.recorder.frames import (CLOSE_NO_STATUS, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, OP_BINARY, OP_CLOSE,
                                        OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, FrameReader, close_frame,
                                        encode_frame, parse_close, unmask)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A frame as a client (mod_audio_stream) writes it: masked with a fresh key."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def audio(n: int, size: int = 320) -> bytes:
    return bytes([n % 256, 0]) * (size // 2)


def test_one_audio_frame():
    reader = FrameReader(max_message=1 << 20)
    assert reader.feed(client_frame(OP_BINARY, audio(1))) == [(OP_BINARY, audio(1))]
    assert not reader.mid_frame


def test_every_frame_in_one_read_comes_out_in_order():
    stream = b"".join(client_frame(OP_BINARY, audio(n)) for n in range(20)) + client_frame(OP_TEXT, b'{"a":1}')
    assert FrameReader(1 << 20).feed(stream) == [(OP_BINARY, audio(n)) for n in range(20)] + [(OP_TEXT, b'{"a":1}')]


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 100, 331])
def test_frames_cut_anywhere_come_out_whole(cut):
    frames = [client_frame(OP_BINARY, audio(n, size)) for n, size in enumerate([10, 320, 1280, 70000, 2])]
    stream = b"".join(frames)
    reader = FrameReader(1 << 20)
    out = []
    for start in range(0, len(stream), cut):
        out += reader.feed(memoryview(stream)[start:start + cut])
    assert out == [(OP_BINARY, audio(n, size)) for n, size in enumerate([10, 320, 1280, 70000, 2])]
    assert not reader.mid_frame


def test_a_frame_split_across_reads_is_waited_for():
    frame = client_frame(OP_BINARY, audio(5))
    reader = FrameReader(1 << 20)
    assert reader.feed(frame[:100]) == [] and reader.mid_frame
    assert reader.feed(frame[100:]) == [(OP_BINARY, audio(5))]


def test_a_fragmented_message_is_joined_and_control_frames_may_come_between():
    stream = (client_frame(OP_BINARY, b"ab", fin=False) + client_frame(OP_PING, b"ping")
              + client_frame(OP_CONTINUATION, b"cd", fin=False) + client_frame(OP_CONTINUATION, b"ef"))
    assert FrameReader(1 << 20).feed(stream) == [(OP_PING, b"ping"), (OP_BINARY, b"abcdef")]


@pytest.mark.parametrize("frame, code, problem", [
    (client_frame(OP_BINARY, b"xx", rsv=0x40), CLOSE_PROTOCOL_ERROR, "reserved bits"),
    (client_frame(OP_BINARY, b"xx", masked=False), CLOSE_PROTOCOL_ERROR, "unmasked"),
    (client_frame(OP_PING, b"x" * 126), CLOSE_PROTOCOL_ERROR, "control frame longer than 125"),
    (client_frame(OP_CLOSE, b"", fin=False), CLOSE_PROTOCOL_ERROR, "fragmented"),
    (client_frame(0x3, b"x"), CLOSE_PROTOCOL_ERROR, "unknown opcode 0x3"),
    (client_frame(OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR, "no message to continue"),
    (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), CLOSE_PROTOCOL_ERROR,
     "a new message began"),
])
def test_protocol_violations_end_the_stream_after_what_came_before(frame, code, problem):
    reader = FrameReader(1 << 20)
    before = client_frame(OP_BINARY, audio(1))
    assert reader.feed(before + frame + client_frame(OP_BINARY, audio(2))) == [(OP_BINARY, audio(1))]
    assert reader.error.code == code and problem in reader.error.problem
    assert reader.feed(client_frame(OP_BINARY, audio(3))) == []  # nothing more is read


def test_an_oversized_frame_is_refused_on_its_header_before_its_payload_arrives():
    reader = FrameReader(max_message=1000)
    header = client_frame(OP_BINARY, bytes(70000))[:14]  # 2 + 8 length bytes + 4 mask bytes
    assert reader.feed(header) == []
    assert reader.error.code == CLOSE_TOO_BIG and "70000-byte frame" in reader.error.problem


def test_a_message_grown_too_big_from_fragments_is_refused():
    reader = FrameReader(max_message=1000)
    reader.feed(client_frame(OP_BINARY, bytes(600), fin=False))
    reader.feed(client_frame(OP_CONTINUATION, bytes(600)))
    assert reader.error.code == CLOSE_TOO_BIG and "message 1200 bytes" in reader.error.problem


def test_unmask_is_the_rfc_xor():
    payload, key = os.urandom(1001), os.urandom(4)
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(b"", key) == b""


def test_server_frames_are_final_unmasked_and_sized():
    assert encode_frame(OP_PONG, b"ping") == b"\x8a\x04ping"
    assert encode_frame(OP_BINARY, bytes(300))[:4] == b"\x82\x7e\x01\x2c"
    assert encode_frame(OP_BINARY, bytes(70000))[:10] == b"\x82\x7f" + struct.pack("!Q", 70000)
    assert close_frame(1001, "recorder stopping") == b"\x88\x13\x03\xe9recorder stopping"
    assert len(close_frame(1000, "x" * 200)) == 2 + 125  # a control frame carries at most 125 bytes
    assert parse_close(b"\x03\xe8Normal closure") == (1000, "Normal closure")
    assert parse_close(b"") == (CLOSE_NO_STATUS, "")
