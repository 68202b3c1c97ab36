"""The recorder through real sockets, fed exactly what mod_audio_stream sent in the captures.

The client here is deliberately raw: it replays the captured upgrade request bytes (``Name:value`` without
a space, as the module writes them) with only the path, Host and auth header rewritten, then sends masked
frames as fast as the socket takes them.
"""

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import wave

import gevent
import pytest
from gevent.queue import Queue

from controller.recorder.server import RecorderServer, RecordingRegistry, StreamSpec
from harness import wait_until

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"
OTHER = "0b0e5f4a-8c3d-4e8f-9a6b-1c2d3e4f5a6b"
TOKEN = "t0k3n-for-the-test"
TIMEOUT = 5.0

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10


# ---- a raw WebSocket client -------------------------------------------------------------------------------

def upgrade_request(captured: bytes, path: str, port: int, headers: dict[str, str]) -> bytes:
    """The captured request with its path, Host and auth replaced; every other byte as the module sent it."""
    head, _, _ = captured.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, _old_path, version = lines[0].split(b" ")
    out = [b" ".join([method, path.encode(), version])]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].lower()
        if name == b"host":
            line = b"Host:127.0.0.1:%d" % port
        elif name == b"authorization":
            continue
        out.append(line)
    out += [f"{k}:{v}".encode() for k, v in headers.items()]  # how STREAM_EXTRA_HEADERS are appended
    return b"\r\n".join(out) + b"\r\n\r\n"


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + mask + masked


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())


class RawClient:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes read")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def handshake(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        body = b""
        if status != 101:
            body = self._read(int(headers.get("content-length", 0)))
        return status, headers, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        assert not second & 0x80, "server frames are never masked"
        return first & 0x0F, self._read(n)

    def recv_close(self) -> tuple[int, str]:
        """Skip to the server's close frame and decode it."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def sync(self) -> None:
        """Ping and wait for the pong: the server has processed every frame sent before it."""
        self.send(frame(OP_PING, b"sync"))
        while True:
            opcode, payload = self.recv_frame()
            if opcode == OP_PONG and payload == b"sync":
                return

    def close(self) -> None:
        self.sock.close()


def captured_frames(scenario_dir, conn: str = "conn1") -> list[tuple[int, bytes]]:
    """(opcode, payload) for each frame the module sent, in order, payloads from connN.audio.raw."""
    audio = (scenario_dir / f"{conn}.audio.raw").read_bytes()
    frames, offset = [], 0
    for line in (scenario_dir / f"{conn}.frames.jsonl").read_text().splitlines():
        entry = json.loads(line)
        opcode = entry.get("opcode")
        if opcode == OP_BINARY:
            frames.append((OP_BINARY, audio[offset:offset + entry["len"]]))
            offset += entry["len"]
        elif opcode == OP_TEXT:
            frames.append((OP_TEXT, entry["text"].encode()))
        elif opcode == OP_PING:
            frames.append((OP_PING, entry["ping_payload"].encode()))
        elif opcode == OP_CLOSE:
            frames.append((OP_CLOSE, struct.pack("!H", entry["close_code"]) + entry["close_reason"].encode()))
    assert offset == len(audio)
    return frames


# ---- fixtures ---------------------------------------------------------------------------------------------

class Recorder:
    """A started RecorderServer with its registry, directory and a queue of on_open/on_detach/on_close calls.

    Like the controller when a call hangs up right after its stream closes, it ends the call as soon as a
    connection detaches (unless `end_on_detach=False`), so each stream here is one finalised recording.
    """

    def __init__(self, tmp_path, end_on_detach=True, **options):
        self.directory = tmp_path / "recordings"
        self.registry = RecordingRegistry()
        self.events = Queue()
        self.end_on_detach = end_on_detach
        self.server = RecorderServer(self.registry, self.directory,
                                     on_open=lambda uuid: self.events.put(("open", uuid)),
                                     on_close=lambda uuid, reason: self.events.put(("close", uuid, reason)),
                                     on_detach=self._detached,
                                     **options)
        self.port = self.server.start("127.0.0.1", 0)

    def _detached(self, uuid, reason):
        self.events.put(("detach", uuid, reason))
        if self.end_on_detach:
            self.server.end_call(uuid)

    def expect(self, uuid=UUID, rate=8000, channels=1, token=TOKEN, **extra):
        self.registry.expect(StreamSpec(uuid=uuid, token=token, rate=rate, channels=channels, **extra))

    def drop_after_one_frame(self, captures, clock):
        """The call's stream opens, sends one 20 ms frame of 1s, and drops without a close frame."""
        self.expect()
        client, _ = self.connect(captures)
        clock.advance(0.02)
        client.send(frame(OP_BINARY, pcm(1)))
        client.close()
        assert self.next_event() == ("open", UUID) and self.next_event() == ("detach", UUID, "eof")

    def connect(self, captures, path=f"/calls/{UUID}", headers=None, scenario="mono_8000", conn="conn1"):
        client = RawClient(self.port)
        request = (captures / "ws" / scenario / f"{conn}.request.bin").read_bytes()
        if headers is None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
        return client, client.handshake(upgrade_request(request, path, self.port, headers))

    def next_event(self):
        return self.events.get(timeout=TIMEOUT)

    def wait_closed(self, uuid=UUID):
        """How the stream ended: the connection's reason when it detached first, else the recording's."""
        detached = None
        while True:
            event = self.next_event()
            if event[0] == "detach" and event[1] == uuid:
                detached = event[2]
            if event[0] == "close" and event[1] == uuid:
                return detached or event[2]

    def files(self):
        return sorted(p.relative_to(self.directory).as_posix() for p in self.directory.rglob("*") if p.is_file())

    def only_recording(self):
        (wav_path,) = self.directory.rglob("*.wav")
        return wav_path, json.loads(wav_path.with_suffix(".json").read_text())


@pytest.fixture
def recorder(tmp_path):
    started = []

    def make(**options):
        rec = Recorder(tmp_path, **options)
        started.append(rec)
        return rec

    yield make
    for rec in started:
        rec.server.stop(timeout=2)


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.readframes(w.getnframes())


class FakeClock:
    """The recorder's clock, moved only by the test: arrival times and therefore gaps are exact."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


# ---- the captured streams ---------------------------------------------------------------------------------

SCENARIOS = [
    ("mono_8000", "conn1", 8000, 1),
    ("mono_16000", "conn1", 16000, 1),
    ("stereo_8000", "conn1", 8000, 2),
    ("stereo_16000", "conn1", 16000, 2),
    ("mono_8000_buf100", "conn1", 8000, 1),
    ("mono_16000_buf100", "conn1", 16000, 1),
    ("stereo_8000_buf100", "conn1", 8000, 2),
    ("main_plain", "conn2", 8000, 1),
    ("mono_8000_heartbeat2", "conn1", 8000, 1),
]


@pytest.mark.parametrize("scenario, conn, rate, channels", SCENARIOS)
def test_captured_stream_is_recorded_byte_for_byte(recorder, captures, scenario, conn, rate, channels):
    rec = recorder()
    rec.expect(rate=rate, channels=channels, caller="1000", destination="9999", rule_name="all")
    client, (status, headers, _) = rec.connect(captures, scenario=scenario, conn=conn)
    key = [line for line in (captures / "ws" / scenario / f"{conn}.request.bin").read_bytes().split(b"\r\n")
           if line.startswith(b"Sec-WebSocket-Key:")][0].split(b":", 1)[1]
    assert status == 101
    assert headers["sec-websocket-accept"] == base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
    assert rec.next_event() == ("open", UUID)
    assert rec.server.open_recordings() == [UUID]

    frames = captured_frames(captures / "ws" / scenario, conn)
    client.send(b"".join(frame(op, payload) for op, payload in frames))
    pongs = []
    while True:
        opcode, payload = client.recv_frame()
        if opcode == OP_CLOSE:
            break
        pongs.append((opcode, payload))
    # The module's close is echoed with its code; its pings were answered with their payload.
    assert struct.unpack("!H", payload[:2])[0] == 1000
    assert pongs == [(OP_PONG, p) for op, p in frames if op == OP_PING]
    assert rec.wait_closed() == "client_close"
    assert rec.server.open_recordings() == []
    client.close()

    wav_path, side = rec.only_recording()
    audio = (captures / "ws" / scenario / f"{conn}.audio.raw").read_bytes()
    assert read_wav(wav_path) == (rate, channels, 2, audio)
    raw = wav_path.read_bytes()
    assert raw[:4] == b"RIFF" and struct.unpack_from("<I", raw, 4)[0] == 36 + len(audio)
    assert struct.unpack_from("<I", raw, 40)[0] == len(audio) == len(raw) - 44
    texts = [payload.decode() for op, payload in frames if op == OP_TEXT]
    assert [t["text"] for t in side["text_frames"]] == texts
    assert side["frames"] == sum(op == OP_BINARY for op, _ in frames)
    assert side["bytes"] == len(audio) and side["duration_s"] == round(len(audio) / (2 * channels * rate), 3)
    assert (side["close_reason"], side["close_code"], side["close_text"]) == ("client_close", 1000, "Normal closure")
    assert (side["caller"], side["destination"], side["rule"]) == ("1000", "9999", "all")
    assert wav_path.relative_to(rec.directory).parts[1] == f"{UUID}.wav"  # {date}/{uuid}.wav


def test_upgrade_request_is_replayed_with_the_modules_header_format(captures):
    request = upgrade_request((captures / "ws/mono_8000_extra_headers/conn1.request.bin").read_bytes(),
                              f"/calls/{UUID}", 4321, {"Authorization": "Bearer x"})
    lines = request.split(b"\r\n")
    assert lines[:3] == [f"GET /calls/{UUID} HTTP/1.1".encode(), b"Host:127.0.0.1:4321", b"Upgrade:websocket"]
    assert b"X-Call-Id:abc123" in lines and lines.count(b"Authorization:Bearer x") == 1
    assert not any(b": " in line for line in lines[1:])


def test_header_is_current_while_the_call_is_still_streaming(recorder, captures):
    # What the lead's SIGKILL test relies on: mid-call, the .part on disk plays up to the last update.
    rec = recorder()
    rec.expect()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    audio = (captures / "ws/mono_8000/conn1.audio.raw").read_bytes()[:48000]  # 3 s
    client.send(b"".join(frame(OP_BINARY, audio[i:i + 320]) for i in range(0, len(audio), 320)))
    client.sync()
    (part,) = rec.directory.rglob("*.wav.part")
    assert read_wav(part)[3] == audio
    assert not list(rec.directory.rglob("*.wav"))
    client.send(close_frame(1000, "Normal closure"))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"


# ---- refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, headers, status, why", [
    # A call nobody expects and a live call with the wrong token: the same answer (no live-call oracle).
    (f"/calls/{OTHER}", None, 403, "no stream is expected for this call with this token"),
    (f"/calls/{UUID}", {"Authorization": "Bearer wrong"}, 403, "no stream is expected for this call with this token"),
    (f"/calls/{UUID}", {}, 401, "missing 'Authorization: Bearer <token>'"),
    (f"/calls/{UUID}", {"Authorization": f"Basic {TOKEN}"}, 401, "missing 'Authorization: Bearer"),
    ("/calls/../../etc", None, 404, "unknown path"),
    ("/calls/%2e%2e/%2e%2e/etc", None, 404, "unknown path"),
    ("/calls/%2e%2e%2f%2e%2e%2fetc", None, 404, "unknown path"),
    (f"/calls/{UUID}/../../x", None, 404, "unknown path"),
    ("/calls/not-a-uuid", None, 404, "not a call uuid"),
    (f"/calls/{UUID}x", None, 404, "not a call uuid"),
    (f"/calls/{UUID[:-1]}", None, 404, "not a call uuid"),
    ("/", None, 404, "unknown path"),
    (f"/stream?call={UUID}", None, 404, "unknown path"),
])
def test_refused_requests_get_a_clear_status_and_nothing_is_written(recorder, captures, caplog, path, headers,
                                                                    status, why):
    rec = recorder()
    rec.expect()
    with caplog.at_level(logging.WARNING, logger="controller.recorder"):
        client, (got, response_headers, body) = rec.connect(captures, path=path, headers=headers)
    assert got == status
    assert why in body.decode()
    if status == 401:
        assert response_headers["www-authenticate"].startswith("Bearer")
    assert client.sock.recv(1) == b""  # and the connection is closed
    assert rec.files() == []
    assert any(str(status) in r.getMessage() and why in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text


def test_a_new_connection_for_a_call_replaces_the_old_one_and_continues_its_file(recorder, captures):
    # A restart writes stop and start together: the module's new connection can arrive before the old
    # one's close has been read. It takes over; the old one is closed; one file, no refusal, no error.
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.expect()
    first, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    first.send(frame(OP_BINARY, pcm(1)))
    first.sync()
    second, (status, _, _) = rec.connect(captures)
    assert status == 101
    assert first.recv_close() == (1000, "replaced by a newer connection")
    assert rec.next_event() == ("detach", UUID, "replaced") and rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    second.send(frame(OP_BINARY, pcm(2)) + close_frame(1000))
    assert second.recv_close()[0] == 1000
    assert rec.next_event() == ("detach", UUID, "client_close")
    rec.server.end_call(UUID)
    assert rec.next_event() == ("close", UUID, "client_close")
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(2) and side["connections"] == 2


def test_forgotten_call_is_refused_but_an_open_recording_carries_on(recorder, captures):
    rec = recorder()
    rec.expect()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    rec.registry.forget(UUID)  # hangup seen by the controller before the module closes
    client.send(frame(OP_BINARY, b"\x02\x00" * 160) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    assert read_wav(rec.only_recording()[0])[3] == b"\x02\x00" * 160
    _, (status, _, _) = rec.connect(captures)
    assert status == 403


def test_plain_http_request_with_the_right_token_is_told_to_upgrade(recorder):
    rec = recorder()
    rec.expect()
    client = RawClient(rec.port)
    status, _, body = client.handshake(
        f"GET /calls/{UUID} HTTP/1.1\r\nHost:x\r\nAuthorization:Bearer {TOKEN}\r\n\r\n".encode())
    assert status == 426 and b"WebSocket" in body
    assert rec.files() == []


def test_client_that_never_finishes_its_request_is_dropped(recorder):
    rec = recorder(handshake_timeout_s=0.2)
    client = RawClient(rec.port)
    client.send(b"GET /calls/")
    assert client.sock.recv(1) == b""  # within TIMEOUT, or recv raises socket.timeout


# ---- endings -------------------------------------------------------------------------------------------

def test_tcp_drop_mid_call_finalises_what_arrived(recorder, captures):
    rec = recorder()
    rec.expect()
    client, _ = rec.connect(captures)
    client.send(frame(OP_BINARY, b"\x03\x00" * 160) + frame(OP_BINARY, b"\x04\x00" * 160)[:100])
    client.close()
    assert rec.wait_closed() == "eof"
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == b"\x03\x00" * 160
    assert side["close_reason"] == "eof" and side["close_code"] is None


def test_max_bytes_closes_with_1000_and_keeps_exactly_the_limit(recorder, captures):
    rec = recorder(max_bytes=1000)
    rec.expect()
    client, _ = rec.connect(captures)
    audio = (captures / "ws/mono_8000/conn1.audio.raw").read_bytes()
    client.send(b"".join(frame(OP_BINARY, audio[i:i + 320]) for i in range(0, 3200, 320)))
    assert client.recv_close() == (1000, "max_bytes")
    assert rec.wait_closed() == "max_bytes"
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == audio[:1000]
    assert (side["close_reason"], side["close_code"]) == ("max_bytes", 1000)


def test_max_duration_closes_with_1000(recorder, captures):
    rec = recorder(max_duration_s=1.0)
    rec.expect(rate=16000)
    client, _ = rec.connect(captures)
    audio = (captures / "ws/mono_16000/conn1.audio.raw").read_bytes()
    client.send(b"".join(frame(OP_BINARY, audio[i:i + 640]) for i in range(0, 64000, 640)))
    assert client.recv_close() == (1000, "max_duration")
    assert rec.wait_closed() == "max_duration"
    assert read_wav(rec.only_recording()[0])[3] == audio[:32000]


def test_max_duration_also_ends_a_silent_stream_on_wall_time(recorder, captures):
    rec = recorder(max_duration_s=0.3, tick_interval_s=0.05)
    rec.expect()
    client, _ = rec.connect(captures)
    client.send(frame(OP_BINARY, b"\x05\x00" * 160))  # then nothing, as a leaked or paused stream
    assert client.recv_close() == (1000, "max_duration")
    assert rec.wait_closed() == "max_duration"
    assert read_wav(rec.only_recording()[0])[3] == b"\x05\x00" * 160


def test_stop_finalises_every_open_recording(recorder, captures):
    rec = recorder()
    clients = []
    for uuid in (UUID, OTHER):
        rec.expect(uuid=uuid)
        client, (status, _, _) = rec.connect(captures, path=f"/calls/{uuid}")
        assert status == 101
        client.send(frame(OP_BINARY, b"\x06\x00" * 160))
        client.sync()
        clients.append(client)
    assert sorted(rec.server.open_recordings()) == sorted([UUID, OTHER])
    rec.server.stop(timeout=3)
    for client in clients:
        assert client.recv_close() == (1001, "recorder stopping")
    reasons = {event[1]: event[2] for event in (rec.next_event() for _ in range(4)) if event[0] == "close"}
    assert reasons == {UUID: "server_stop", OTHER: "server_stop"}
    wavs = sorted(rec.directory.rglob("*.wav"))
    assert len(wavs) == 2 and not list(rec.directory.rglob("*.part"))
    assert all(read_wav(w)[3] == b"\x06\x00" * 160 for w in wavs)


def test_one_bad_client_does_not_harm_another(recorder, captures):
    rec = recorder(max_frame_bytes=64 * 1024)
    rec.expect(uuid=UUID)
    rec.expect(uuid=OTHER)
    good, _ = rec.connect(captures, path=f"/calls/{UUID}")
    bad, _ = rec.connect(captures, path=f"/calls/{OTHER}")
    good.send(frame(OP_BINARY, b"\x07\x00" * 160))
    # The bad one announces a 1 TiB frame: refused with 1009, never buffered.
    bad.send(struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"mask")
    assert bad.recv_close()[0] == 1009
    assert rec.wait_closed(OTHER) == "protocol_error"
    # ... and another sends reserved bits (no extension was negotiated): 1002.
    rec.expect(uuid="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    worse, _ = rec.connect(captures, path="/calls/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    worse.send(frame(OP_BINARY, b"xx", rsv=0x40))
    assert worse.recv_close()[0] == 1002
    assert rec.wait_closed("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee") == "protocol_error"
    good.send(frame(OP_BINARY, b"\x08\x00" * 160) + close_frame(1000))
    assert good.recv_close()[0] == 1000
    assert rec.wait_closed(UUID) == "client_close"
    good_wav = next(rec.directory.rglob(f"{UUID}.wav"))
    assert read_wav(good_wav)[3] == b"\x07\x00" * 160 + b"\x08\x00" * 160
    side = json.loads(next(rec.directory.rglob(f"{OTHER}.json")).read_text())
    assert "exceeds the 65536-byte limit" in side["error"]


def test_failing_callback_does_not_break_the_recording(tmp_path, captures):
    registry = RecordingRegistry()
    registry.expect(StreamSpec(uuid=UUID, token=TOKEN, rate=8000, channels=1))
    done = Queue()

    def explode(uuid):
        raise RuntimeError("callback bug")

    server = RecorderServer(registry, tmp_path, on_open=explode, on_close=lambda u, r: done.put(r),
                            on_detach=lambda u, r: server.end_call(u))
    port = server.start()
    try:
        client = RawClient(port)
        request = upgrade_request((captures / "ws/mono_8000/conn1.request.bin").read_bytes(), f"/calls/{UUID}",
                                  port, {"Authorization": f"Bearer {TOKEN}"})
        assert client.handshake(request)[0] == 101
        client.send(frame(OP_BINARY, b"\x09\x00" * 160) + close_frame(1000))
        assert client.recv_close()[0] == 1000
        assert done.get(timeout=TIMEOUT) == "client_close"
    finally:
        server.stop(timeout=2)
    (wav_path,) = tmp_path.rglob("*.wav")
    assert read_wav(wav_path)[3] == b"\x09\x00" * 160


def test_unwritable_directory_closes_with_1011(recorder, captures, tmp_path):
    rec = recorder(filename_template="blocked/{uuid}.wav")
    (rec.directory / "blocked").write_text("a file where a directory should be")
    rec.expect()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    assert client.recv_close() == (1011, "recorder cannot write")
    assert rec.files() == ["blocked"]


def test_capture_with_its_own_auth_header_is_accepted_as_sent(recorder, captures):
    # mono_8000_extra_headers carries STREAM_EXTRA_HEADERS exactly as the module appended them:
    # "Authorization:Bearer t0k3n" and "X-Call-Id:abc123", no spaces. Only the path is changed here.
    rec = recorder()
    rec.expect(token="t0k3n")
    captured = (captures / "ws/mono_8000_extra_headers/conn1.request.bin").read_bytes()
    request = captured.replace(b"GET /mono_8000_extra_headers ", f"GET /calls/{UUID} ".encode(), 1)
    assert b"\r\nAuthorization:Bearer t0k3n\r\n" in request and b"Host:127.0.0.1:8080" in request
    client = RawClient(rec.port)
    assert client.handshake(request)[0] == 101
    frames = captured_frames(captures / "ws/mono_8000_extra_headers")
    client.send(b"".join(frame(op, payload) for op, payload in frames))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    assert read_wav(rec.only_recording()[0])[3] == (captures / "ws/mono_8000_extra_headers/conn1.audio.raw").read_bytes()


def test_concurrent_calls_of_different_formats_stay_separate(recorder, captures):
    rec = recorder()
    streams = {
        "11111111-1111-4111-8111-111111111111": ("mono_8000", 8000, 1),
        "22222222-2222-4222-8222-222222222222": ("stereo_16000", 16000, 2),
        "33333333-3333-4333-8333-333333333333": ("mono_16000_buf100", 16000, 1),
        "44444444-4444-4444-8444-444444444444": ("stereo_8000", 8000, 2),
    }
    for uuid, (_, rate, channels) in streams.items():
        rec.expect(uuid=uuid, rate=rate, channels=channels)

    def stream(uuid, scenario):
        client, (status, _, _) = rec.connect(captures, path=f"/calls/{uuid}", scenario=scenario)
        assert status == 101
        for op, payload in captured_frames(captures / "ws" / scenario):
            client.send(frame(op, payload))
            gevent.sleep(0)  # a yield, not a wait: the four calls' frames reach the recorder interleaved
        code = client.recv_close()[0]
        client.close()
        return code

    jobs = [gevent.spawn(stream, uuid, scenario) for uuid, (scenario, _, _) in streams.items()]
    gevent.joinall(jobs, timeout=TIMEOUT, raise_error=True)
    assert [job.value for job in jobs] == [1000] * 4
    for uuid, (scenario, rate, channels) in streams.items():
        wav_path = next(rec.directory.rglob(f"{uuid}.wav"))
        assert read_wav(wav_path) == (rate, channels, 2, (captures / "ws" / scenario / "conn1.audio.raw").read_bytes())


def test_path_prefix_from_the_public_url(recorder, captures):
    rec = recorder(path_prefix="/rec")
    rec.expect()
    client, (status, _, _) = rec.connect(captures, path=f"/rec/calls/{UUID}")
    assert status == 101
    client.send(close_frame(1000))
    assert client.recv_close()[0] == 1000
    _, (status, _, body) = rec.connect(captures, path=f"/calls/{UUID}")
    assert status == 404 and b"streams go to /rec/calls/<uuid>" in body
    with pytest.raises(ValueError, match="path_prefix must be empty or like '/recorder'"):
        RecorderServer(RecordingRegistry(), "x", path_prefix="rec/")


def test_invalid_utf8_text_frame_is_a_protocol_error(recorder, captures):
    rec = recorder()
    rec.expect()
    client, _ = rec.connect(captures)
    client.send(frame(OP_BINARY, b"\x01\x00" * 4) + frame(OP_TEXT, b"\xff\xfe bad"))
    assert client.recv_close()[0] == 1007
    assert rec.wait_closed() == "protocol_error"
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == b"\x01\x00" * 4 and side["close_code"] == 1007


def test_other_methods_are_refused(recorder):
    rec = recorder()
    rec.expect()
    client = RawClient(rec.port)
    status, _, body = client.handshake(f"POST /calls/{UUID} HTTP/1.1\r\nHost:x\r\nContent-Length:0\r\n\r\n".encode())
    assert status == 405 and b"WebSocket upgrades" in body


def test_streams_beyond_the_limit_are_refused_with_503_and_the_rest_carry_on(recorder, captures):
    rec = recorder(max_streams=1)
    rec.expect(uuid=UUID)
    rec.expect(uuid=OTHER)
    first, (status, _, _) = rec.connect(captures, path=f"/calls/{UUID}")
    assert status == 101
    _, (status, _, body) = rec.connect(captures, path=f"/calls/{OTHER}")
    assert status == 503 and b"limit is 1" in body
    first.send(frame(OP_BINARY, b"\x03\x00" * 160) + close_frame(1000))
    assert first.recv_close()[0] == 1000
    assert rec.wait_closed(UUID) == "client_close"
    assert [p.name for p in rec.directory.rglob("*.wav")] == [f"{UUID}.wav"]


def test_a_dropped_stream_resumes_into_the_same_file_with_the_gap_as_silence(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, jitter_s=0.05, clock=clock)
    rec.expect()
    first, _ = rec.connect(captures)
    clock.advance(0.02)
    first.send(frame(OP_BINARY, b"\x01\x00" * 160))
    assert rec.next_event() == ("open", UUID)
    first.close()  # TCP gone mid-call
    assert rec.next_event() == ("detach", UUID, "eof")
    clock.advance(0.3)  # the outage lasts a while before audio flows again
    second, (status, _, _) = rec.connect(captures)
    assert status == 101
    assert rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    second.send(frame(OP_BINARY, b"\x02\x00" * 160) + close_frame(1000))
    assert second.recv_close()[0] == 1000
    assert rec.next_event() == ("detach", UUID, "client_close")
    rec.server.end_call(UUID)
    assert rec.next_event() == ("close", UUID, "client_close")
    wav_path, side = rec.only_recording()
    assert gaps_of(side) == [(160, 2400, "stream_lost")]  # 0.3 s at 8000 Hz
    assert read_wav(wav_path)[3] == b"\x01\x00" * 160 + b"\x00\x00" * 2400 + b"\x02\x00" * 160
    assert side["connections"] == 2


# ---- one recording per call: drops, restarts, the end of the call (fake clock: exact gaps) -----------------

def pcm(value, frames=160):
    return bytes([value, 0]) * frames


def gaps_of(side):
    return [(g["start_frame"], g["frames"], g["cause"]) for g in side["gaps"]]


@pytest.mark.parametrize("ending", ["eof", "client_close"])
def test_a_second_connection_continues_the_same_file_with_the_outage_as_silence(recorder, captures, ending):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.expect()
    first, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    first.send(frame(OP_BINARY, pcm(1)))
    if ending == "eof":
        first.close()  # TCP gone mid-call
    else:
        first.send(close_frame(1000, "Normal closure"))  # what the module sends on stop (a restart)
        assert first.recv_close()[0] == 1000
    assert rec.next_event() == ("detach", UUID, ending)
    assert rec.server.open_recordings() == []
    (part,) = rec.directory.rglob("*.wav.part")
    assert read_wav(part)[3] == pcm(1)  # detached: unfinished, but its header is current
    clock.advance(2.5)
    second, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    second.send(frame(OP_BINARY, pcm(2)) + close_frame(1000))
    assert second.recv_close()[0] == 1000
    assert rec.next_event() == ("detach", UUID, "client_close")
    rec.server.end_call(UUID)
    assert rec.next_event() == ("close", UUID, "client_close")
    rec.server.end_call(UUID)  # a second hangup report changes nothing
    assert rec.events.empty()
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 20000) + pcm(2)
    assert gaps_of(side) == [(160, 20000, "stream_lost")]
    assert (side["connections"], side["captured_s"], side["captured_ratio"]) == (2, 0.04, round(0.04 / 2.54, 4))
    assert rec.files() == sorted(p.relative_to(rec.directory).as_posix()
                                 for p in (wav_path, wav_path.with_suffix(".json")))


def test_silence_inside_a_connection_comes_from_arrival_times(recorder, captures):
    clock = FakeClock()
    rec = recorder(clock=clock)
    rec.expect(channels=2)  # stereo: frames only while the switch plays
    client, _ = rec.connect(captures, scenario="stereo_8000")
    sent = b""
    for n, late in enumerate([0.0, 0.05, 0.0, 1.5, 0.0]):  # jitter of 50 ms, then 1.5 s with nothing played
        clock.advance(0.02 + late)
        client.send(frame(OP_BINARY, bytes([n + 1, 0]) * 320))
        client.sync()  # stamped before the clock moves on
        sent += bytes([n + 1, 0]) * 320
    client.send(close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    wav_path, side = rec.only_recording()
    # The 50 ms of jitter inserted nothing. The 4th frame covers [1.61, 1.63) s with 0.06 s written: 1.55 s
    # of silence (the timeline is absolute, so the jitter absorbed earlier is part of it now). The frame
    # after it came in step: nothing caught up, so at the close the deficit is decided as a hole.
    assert gaps_of(side) == [(480, 12400, "no_audio")]
    assert read_wav(wav_path)[3] == sent[:3 * 640] + bytes(12400 * 4) + sent[3 * 640:]


def test_end_call_pads_the_tail_to_when_the_call_ended(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.drop_after_one_frame(captures, clock)
    clock.advance(4.0)  # the stream never came back; the call went on for 4 s
    rec.server.end_call(UUID, at=clock())
    assert rec.next_event() == ("close", UUID, "eof")
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 32000)
    assert gaps_of(side) == [(160, 32000, "tail")]
    assert side["duration_s"] == 4.02 and side["close_reason"] == "eof"


def test_end_call_while_attached_finalises_when_the_connection_closes(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.sync()
    clock.advance(1.0)
    rec.server.end_call(UUID, at=clock())  # the hangup event came before the module's close
    client.sync()
    assert rec.server.open_recordings() == [UUID] and list(rec.directory.rglob("*.wav.part"))
    client.send(close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.next_event() == ("close", UUID, "client_close")  # finalised, not detached
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 8000)
    assert gaps_of(side) == [(160, 8000, "tail")] and side["connections"] == 1


def test_a_stream_that_never_returns_is_finalised_after_linger(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, linger_s=30.0, tick_interval_s=0.01)
    rec.drop_after_one_frame(captures, clock)
    clock.advance(30.5)  # the controller never said the call was over
    assert rec.next_event() == ("close", UUID, "linger")
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1)  # the outage after the last detach is unknown: no tail
    assert side["close_reason"] == "linger" and side["gaps"] == []


def open_idle_client(recorder, captures, heartbeat_s):
    """A recorder with a 60 s idle floor and a hand-driven ticker (so "not yet" is checked without waiting),
    and one connected stream whose rule pings every ``heartbeat_s`` seconds."""
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, idle_timeout_s=60.0, tick_interval_s=3600)
    rec.expect(heartbeat_s=heartbeat_s)
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    return rec, client, clock


def test_a_client_silent_past_the_idle_timeout_is_closed_1001_and_can_resume(recorder, captures):
    rec, client, clock = open_idle_client(recorder, captures, heartbeat_s=15)  # 3 missed pings: under the floor
    clock.advance(50.0)
    client.sync()  # a ping is a sign of life too
    clock.advance(50.0)
    rec.server._tick()
    assert rec.server.open_recordings() == [UUID] and rec.events.empty()
    clock.advance(10.5)
    rec.server._tick()
    assert client.recv_close() == (1001, "idle timeout")
    assert rec.next_event() == ("detach", UUID, "idle_timeout")
    clock.advance(2.0)  # the controller restarts the stream
    again, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    again.send(frame(OP_BINARY, pcm(3)) + close_frame(1000))
    assert again.recv_close()[0] == 1000
    rec.server.end_call(UUID)
    assert rec.wait_closed() == "client_close"
    wav_path, side = rec.only_recording()
    # Connected and silent for 110.5 s, then 2 s without a connection (less the frame's own 20 ms).
    assert gaps_of(side) == [(0, 884000, "no_audio"), (884000, 15840, "stream_lost")]
    assert side["connections"] == 2 and read_wav(wav_path)[3] == pcm(0, 899840) + pcm(3)


def test_a_stream_without_pings_may_stay_silent_as_long_as_the_call_lasts(recorder, captures):
    # Without a heartbeat the module sends nothing while paused, or in mixed mode while nothing is played:
    # closing such a connection would end a legal pause (and the restart would undo it).
    rec, client, clock = open_idle_client(recorder, captures, heartbeat_s=0)
    clock.advance(3600.0)
    rec.server._tick()
    assert rec.server.open_recordings() == [UUID] and rec.events.empty()
    client.send(frame(OP_BINARY, pcm(1)) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    rec.server.end_call(UUID)
    assert rec.wait_closed() == "client_close"
    assert gaps_of(rec.only_recording()[1]) == [(0, 28800000 - 160, "no_audio")]


def test_a_slow_heartbeat_gets_three_missed_pings_before_the_connection_counts_as_dead(recorder, captures):
    rec, client, clock = open_idle_client(recorder, captures, heartbeat_s=40)  # 3 missed pings: 120 s
    clock.advance(119.0)
    rec.server._tick()
    assert rec.events.empty()
    clock.advance(1.5)
    rec.server._tick()
    assert client.recv_close() == (1001, "idle timeout")
    assert rec.next_event() == ("detach", UUID, "idle_timeout")


def one_frame_after_restart(recorder, captures, wall_time, value):
    """A new recorder process, started at `wall_time`, whose stream for the call sends one frame of `value`
    and closes, and the call ends; returns it (its recordings are the earlier process's files continued)."""
    after = recorder(end_on_detach=False, clock=FakeClock(5.0), wall_clock=lambda: wall_time)
    after.expect()
    client, (status, _, _) = after.connect(captures)
    assert status == 101
    after.server.clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(value)) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    after.server.end_call(UUID)
    assert after.wait_closed() == "client_close"
    return after


def write_killed_recording(directory, uuid, audio, stale_header_bytes):
    """What a SIGKILLed recorder leaves: a .part whose header counts less than the file holds, and the
    sidecar it wrote when the recording opened."""
    from controller.recorder.filenames import FilenameTemplate
    from controller.recorder.recording import Recording

    recording = Recording.open(StreamSpec(uuid=uuid, token=TOKEN, rate=8000, channels=1), directory,
                               FilenameTemplate("{uuid}.wav"))
    recording.on_audio(audio)
    recording.writer._flush()
    recording.writer.abandon()
    part = recording.writer.part_path
    raw = bytearray(part.read_bytes())
    raw[40:44] = struct.pack("<I", stale_header_bytes)
    raw[4:8] = struct.pack("<I", 36 + stale_header_bytes)
    part.write_bytes(bytes(raw))
    os.utime(part, (10_000.0, 10_000.0))  # when it was last written, in wall time
    return recording.path


def test_after_a_kill_the_next_process_continues_the_same_file(tmp_path, recorder, captures):
    directory = tmp_path / "recordings"
    audio = bytes(range(1, 201)) * 80  # 1 s
    path = write_killed_recording(directory, UUID, audio, stale_header_bytes=6400)
    unclaimed = write_killed_recording(directory, OTHER, audio[:3200], stale_header_bytes=0)
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, wall_clock=lambda: 10_003.0)  # up 3 s after the kill
    assert read_wav(unclaimed)[3] == audio[:3200]  # repaired at start: all of it counts, and it is final
    assert json.loads(unclaimed.with_suffix(".json").read_text())["close_reason"] == "recovered"
    rec.expect()  # the controller announces the live call again and restarts its stream
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(7)) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.next_event() == ("open", UUID) and rec.next_event() == ("detach", UUID, "client_close")
    rec.server.end_call(UUID)
    assert rec.next_event() == ("close", UUID, "client_close")
    assert sorted(p.name for p in directory.rglob("*.wav*")) == sorted([path.name, unclaimed.name])
    side = json.loads(path.with_suffix(".json").read_text())
    assert read_wav(path)[3] == audio + pcm(0, 24000) + pcm(7)
    assert gaps_of(side) == [(8000, 24000, "controller_restart")]
    assert (side["connections"], side["close_reason"], side["error"]) == (2, "client_close", None)


def test_after_a_clean_stop_the_next_process_continues_the_same_file(recorder, captures):
    clock = FakeClock()
    before = recorder(end_on_detach=False, clock=clock, wall_clock=lambda: 20_000.0)
    before.expect()
    client, _ = before.connect(captures)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.sync()
    before.server.stop(timeout=2)  # SIGTERM: finalised, and noted as the call's file
    assert client.recv_close() == (1001, "recorder stopping")
    assert before.next_event() == ("open", UUID) and before.next_event() == ("close", UUID, "server_stop")
    wav_path, side = before.only_recording()
    assert side["close_reason"] == "server_stop"

    after = one_frame_after_restart(recorder, captures, wall_time=20_004.0, value=2)
    assert after.only_recording()[0] == wav_path
    side = json.loads(wav_path.with_suffix(".json").read_text())
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 32000) + pcm(2)
    assert gaps_of(side) == [(160, 32000, "controller_restart")] and side["connections"] == 2


def test_a_failing_disk_under_one_call_ends_only_that_recording(recorder, captures, monkeypatch):
    import errno

    from controller.recorder import wav as wav_module

    rec = recorder(filename_template="{destination}/{uuid}.wav")
    rec.expect(uuid=UUID, destination="full")
    rec.expect(uuid=OTHER, destination="fine")
    real_write = os.write

    def write(fd, data):  # the volume under "full/" has no space left; the rest of the disk is fine
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(rec.directory / "full")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    failing, _ = rec.connect(captures, path=f"/calls/{UUID}")
    fine, _ = rec.connect(captures, path=f"/calls/{OTHER}")
    monkeypatch.setattr(wav_module.os, "write", write)
    second = b"".join(frame(OP_BINARY, pcm(n % 250 + 1)) for n in range(50))  # 1 s: the header is due
    failing.send(second)
    fine.send(second)
    assert failing.recv_close() == (1011, "recording failed")
    assert rec.wait_closed(UUID) == "write_error"
    fine.send(frame(OP_BINARY, pcm(9)) + close_frame(1000))
    assert fine.recv_close()[0] == 1000
    assert rec.wait_closed(OTHER) == "client_close"
    side = json.loads(next(rec.directory.rglob(f"{UUID}.json")).read_text())
    assert side["close_reason"] == "write_error" and "No space left on device" in side["error"]
    assert read_wav(next(rec.directory.rglob(f"{OTHER}.wav")))[3] == \
        b"".join(pcm(n % 250 + 1) for n in range(50)) + pcm(9)


def test_an_unrepairable_part_left_at_start_does_not_stop_the_recorder(tmp_path, recorder, captures):
    directory = tmp_path / "recordings"
    directory.mkdir()
    (directory / "empty.wav.part").write_bytes(b"")  # a process killed before it wrote a header
    rec = recorder()
    rec.expect()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    client.send(frame(OP_BINARY, pcm(1)) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    assert read_wav(rec.only_recording()[0])[3] == pcm(1)
    assert (directory / "empty.wav.part").read_bytes() == b""


def test_a_stop_while_the_stream_is_down_keeps_the_calls_timeline_across_the_restart(recorder, captures):
    clock, wall = FakeClock(), [20_000.0]
    before = recorder(end_on_detach=False, clock=clock, wall_clock=lambda: wall[0])
    before.expect()
    client, _ = before.connect(captures)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.close()  # the stream drops; the controller is restarting it ...
    assert before.next_event() == ("open", UUID) and before.next_event() == ("detach", UUID, "eof")
    clock.advance(20.0)
    wall[0] += 20.0
    before.server.stop(timeout=2)  # ... when SIGTERM comes, 20 s later
    assert before.next_event() == ("close", UUID, "server_stop")

    after = one_frame_after_restart(recorder, captures, wall_time=20_024.0, value=2)  # up 4 s later
    wav_path, side = after.only_recording()
    # 20 ms of audio, 20 s without a stream, 4 s without a recorder, 20 ms of audio: the call's 24.04 s.
    assert gaps_of(side) == [(160, 160000, "stream_lost"), (160160, 32000, "controller_restart")]
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 192000) + pcm(2)
    assert side["duration_s"] == 24.04 and side["connections"] == 2


def test_a_call_whose_earlier_connection_failed_still_continues_its_file_after_a_stop(recorder, captures):
    clock = FakeClock()
    before = recorder(end_on_detach=False, clock=clock, wall_clock=lambda: 20_000.0)
    before.expect()
    client, _ = before.connect(captures)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)) + frame(OP_BINARY, b"xx", rsv=0x40))  # garbage: close 1002
    assert client.recv_close()[0] == 1002
    assert before.next_event() == ("open", UUID) and before.next_event() == ("detach", UUID, "protocol_error")
    client, _ = before.connect(captures)  # the controller restarted the stream
    client.send(frame(OP_BINARY, pcm(2)))
    client.sync()
    before.server.stop(timeout=2)
    assert client.recv_close() == (1001, "recorder stopping")
    wav_path, side = before.only_recording()
    assert side["close_reason"] == "server_stop" and "reserved bits" in side["error"]

    after = one_frame_after_restart(recorder, captures, wall_time=20_000.0, value=3)
    assert after.only_recording()[0] == wav_path  # the same file, not a second one
    assert read_wav(wav_path)[3] == pcm(1) + pcm(2) + pcm(3)


def test_a_connection_still_open_after_the_call_ended_is_closed_after_a_grace(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, end_grace_s=3.0, tick_interval_s=3600)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.sync()
    clock.advance(1.0)
    rec.server.end_call(UUID, at=clock())  # the hangup; the module's close never comes (its host died)
    clock.advance(2.9)
    rec.server._tick()
    assert rec.server.open_recordings() == [UUID] and rec.events.empty()
    clock.advance(0.2)
    rec.server._tick()
    assert client.recv_close() == (1000, "call_end")
    assert rec.next_event() == ("close", UUID, "call_end")
    assert not list(rec.directory.rglob("*.part"))
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 8000)  # to the hangup, not to the end of the grace
    assert gaps_of(side) == [(160, 8000, "tail")] and side["close_reason"] == "call_end"


def test_a_stopped_stream_that_never_closes_ends_where_it_was_stopped(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, end_grace_s=3.0, tick_interval_s=3600)
    rec.expect()
    client, _ = rec.connect(captures)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.sync()
    clock.advance(1.0)
    rec.server.end_call(UUID)  # stopped on purpose (no `at`); the module never closes
    clock.advance(3.5)
    rec.server._tick()
    assert client.recv_close() == (1000, "call_end")
    assert rec.wait_closed() == "call_end"
    assert gaps_of(rec.only_recording()[1]) == [(160, 8000, "tail")]


def test_silence_for_an_outage_counts_against_the_recordings_limit(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, max_duration_s=10.0, tick_interval_s=3600)
    rec.drop_after_one_frame(captures, clock)
    clock.advance(25.0)  # a 25 s outage under a 10 s limit
    second, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    second.send(frame(OP_BINARY, pcm(2)))
    second.sync()
    rec.server._tick()  # the wall-clock limit is the tick's to see
    assert second.recv_close() == (1000, "max_duration")
    assert rec.next_event() == ("close", UUID, "max_duration")
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(0, 79840)
    assert gaps_of(side) == [(160, 79840, "stream_lost")] and side["close_reason"] == "max_duration"


def test_a_long_outage_is_written_at_once_and_no_other_greenlet_sees_it_half_written(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, tick_interval_s=3600)
    rec.drop_after_one_frame(captures, clock)
    writer = rec.server.book[UUID].recording.writer
    clock.advance(1200.0)  # 19.2 MB of silence
    second, _ = rec.connect(captures)
    seen, done = set(), []

    def watch():  # another greenlet: does it get to run while the silence is written?
        while not done:
            seen.add(writer.data_bytes)
            gevent.sleep(0)

    watcher = gevent.spawn(watch)
    try:
        second.send(frame(OP_BINARY, pcm(2)) + close_frame(1000))
        assert second.recv_close()[0] == 1000
    finally:
        done.append(True)
        watcher.join(timeout=TIMEOUT)
    # 20 minutes of silence is one file extension: nothing else runs while a recording is half written.
    assert seen <= {320, 320 + 2 * 9599840 + 320}
    rec.server.end_call(UUID)
    assert rec.wait_closed() == "client_close"
    assert gaps_of(rec.only_recording()[1]) == [(160, 9599840, "stream_lost")]


def test_a_client_dribbling_its_request_is_dropped_at_the_handshake_deadline(recorder):
    rec = recorder(handshake_timeout_s=0.5)
    client = RawClient(rec.port)
    request = f"GET /calls/{UUID} HTTP/1.1\r\nHost:x\r\nX-Pad:{'a' * 1000}".encode()

    def dribble():  # one byte every 0.1 s: each read is quick, the request never ends
        for byte in request:
            client.send(bytes([byte]))
            gevent.sleep(0.1)

    dribbler = gevent.spawn(dribble)
    try:
        try:
            assert client.sock.recv(1) == b""  # within TIMEOUT, or recv raises socket.timeout
        except ConnectionResetError:
            pass  # closed with a dribbled byte unread: also closed
    finally:
        dribbler.kill()


def test_endings_are_either_detaches_or_final_and_an_internal_error_is_final(recorder, captures, monkeypatch):
    from controller.recorder.recording import DELIBERATE_REASONS, LOST_REASONS, Ending, Recording

    assert all(not e.final for e in LOST_REASONS) and all(e.final for e in DELIBERATE_REASONS)
    # The module is always told why the recorder ended its connection or its recording.
    assert all(e.close is not None for e in Ending if e.final and e not in (Ending.LINGER, Ending.RULE_MAX_DURATION))
    assert Ending.INTERNAL_ERROR.final and Ending.INTERNAL_ERROR not in LOST_REASONS

    def broken(self, data, arrival=None):
        raise RuntimeError("a bug in the recorder")

    monkeypatch.setattr(Recording, "on_audio", broken)
    rec = recorder()
    rec.expect()
    client, _ = rec.connect(captures)
    client.send(frame(OP_BINARY, pcm(1)))
    assert client.recv_close() == (1011, "recording failed")
    assert rec.next_event() == ("open", UUID)
    assert rec.next_event() == ("close", UUID, "internal_error")  # on_close only, never on_detach
    assert "a bug in the recorder" in rec.only_recording()[1]["error"]


# ---- what a kill, a full disk or a bug in the upkeep can cost -------------------------------------------

def test_audio_reaches_the_file_within_a_flush_interval_even_while_the_clock_stands_still(recorder, captures):
    # The recorder's clock never moves, so no header refresh is ever due: only the flush timer writes.
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    client.send(frame(OP_BINARY, pcm(1)) + frame(OP_BINARY, pcm(2)))
    client.sync()
    (part,) = rec.directory.rglob("*.wav.part")
    # What a SIGKILL now would leave: the page cache keeps what reached the file, the process's buffer is lost.
    wait_until(lambda: part.stat().st_size == 44 + 640, 2.0, "the two frames to reach the file")
    assert part.read_bytes()[44:] == pcm(1) + pcm(2)


def test_one_failing_upkeep_does_not_stop_the_upkeep_of_the_other_calls(recorder, captures, monkeypatch, caplog):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, tick_interval_s=3600)  # ticks driven by hand
    rec.expect(uuid=UUID)
    rec.expect(uuid=OTHER)
    broken, _ = rec.connect(captures, path=f"/calls/{UUID}")
    fine, _ = rec.connect(captures, path=f"/calls/{OTHER}")
    assert {rec.next_event(), rec.next_event()} == {("open", UUID), ("open", OTHER)}
    broken.send(frame(OP_BINARY, pcm(1)))
    fine.send(frame(OP_BINARY, pcm(2)))
    broken.sync()
    fine.sync()

    def tick():
        raise ZeroDivisionError("a bug in one call's upkeep")

    monkeypatch.setattr(rec.server.book[UUID].recording, "tick", tick)
    clock.advance(1.5)  # both headers are due
    rec.server._tick()
    assert rec.server.upkeep_errors == 1 and "a bug in one call's upkeep" in caplog.text
    (part,) = rec.directory.rglob(f"{OTHER}.wav.part")
    assert read_wav(part)[3] == pcm(2)  # the other call's header was refreshed after the failure
    clock.advance(1.5)
    rec.server._tick()  # and the next tick runs too
    assert rec.server.upkeep_errors == 2


def test_a_final_sidecar_that_cannot_be_written_is_written_once_space_returns(recorder, captures, monkeypatch):
    import errno

    from controller.recorder import sidecar as sidecar_module

    clock = FakeClock()
    rec = recorder(clock=clock, tick_interval_s=0.01)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    disk = {"full": True}
    real_replace = os.replace

    def replace(src, dst):  # the sidecar's atomic rename is what fails when the disk is full
        if disk["full"] and str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(sidecar_module.os, "replace", replace)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1)  # the WAV is complete...
    assert side["close_reason"] is None  # ...its sidecar is still the one written when the call began
    disk["full"] = False
    clock.advance(5.0)
    wait_until(lambda: rec.only_recording()[1]["close_reason"] == "client_close", 2.0,
               "the final sidecar to be written")
    side = rec.only_recording()[1]
    assert (side["bytes"], side["duration_s"], side["frames"]) == (320, 0.02, 1)


def test_live_stats_say_what_each_open_recording_holds_and_a_test_stream_leaves_no_file(recorder, captures):
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock)
    rec.expect(uuid=UUID, rule_name="ext9999")
    rec.expect(uuid=OTHER, discard=True)  # the doctor's test call
    kept, _ = rec.connect(captures, path=f"/calls/{UUID}")
    test, _ = rec.connect(captures, path=f"/calls/{OTHER}")
    assert {rec.next_event(), rec.next_event()} == {("open", UUID), ("open", OTHER)}
    clock.advance(0.02)
    kept.send(frame(OP_BINARY, pcm(1)) + frame(OP_BINARY, pcm(2)))
    test.send(frame(OP_BINARY, pcm(3)))
    kept.sync()
    test.sync()
    clock.advance(0.5)
    stats = rec.server.live_stats()
    assert stats[UUID] == {"rule": "ext9999", "rate": 8000, "channels": 1, "path": stats[UUID]["path"],
                           "seconds": 0.04, "bytes": 640, "frames": 2, "received_bytes": 640, "arrived_bytes": 640,
                           "connected": True, "last_frame_age_s": 0.5,
                           "connections": 1, "gaps": 0, "gap_seconds": 0.0, "no_audio_warning": None}
    assert stats[OTHER]["bytes"] == 320
    test.send(close_frame(1000))
    assert test.recv_close()[0] == 1000
    rec.server.end_call(OTHER)
    assert rec.wait_closed(OTHER) == "client_close"
    assert not list(rec.directory.rglob(f"*{OTHER}*"))  # counted, then removed
    assert OTHER not in rec.server.live_stats() and UUID in rec.server.live_stats()


def test_a_stereo_stream_that_never_delivers_says_so_once_and_its_silence_is_no_audio(recorder, captures, caplog):
    clock = FakeClock()
    rec = recorder(clock=clock, tick_interval_s=3600)
    rec.expect(channels=2, mix="stereo")
    client, _ = rec.connect(captures, scenario="stereo_8000")
    assert rec.next_event() == ("open", UUID)
    client.sync()
    clock.advance(4.9)
    rec.server._tick()
    assert rec.server.live_stats()[UUID]["no_audio_warning"] is None
    with caplog.at_level(logging.WARNING, logger="controller.recorder"):
        clock.advance(0.2)
        rec.server._tick()
        rec.server._tick()
    [line] = [r.getMessage() for r in caplog.records if "delivered no audio" in r.getMessage()]
    assert "parked or sleeping" in line and "endless_playback silence_stream://-1" in line
    assert "delivered no audio" in rec.server.live_stats()[UUID]["no_audio_warning"]
    clock.advance(10.0)
    client.send(close_frame(1000))
    assert rec.wait_closed() == "client_close"
    _, side = rec.only_recording()
    assert [(g["cause"], g["length_s"]) for g in side["gaps"]] == [("no_audio", 15.1)]  # not "tail"
