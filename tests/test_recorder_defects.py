"""Defects of issue #15, each reproduced through real sockets as a user of the recorder would see it.

Each test states a promise the recorder makes (to the module on the wire, to whoever plays the WAV, to the
operator watching the process) and checks it on what comes out: the bytes, length and gaps of the WAV and
its sidecar, the frames on the socket, the process still alive. The raw client, the `recorder` fixture and
the fake clock are the ones tests/test_recorder_server.py uses.
"""

import errno
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import termios
import time
import wave
from pathlib import Path

import gevent
import pytest
from gevent.queue import Empty

from harness import wait_until
from test_recorder_server import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, OTHER, TIMEOUT, TOKEN, UUID,
                                  FakeClock, RawClient, close_frame, frame, gaps_of, pcm, read_wav,
                                  recorder, upgrade_request)  # noqa: F401  (the fixture, by name)

TESTS = Path(__file__).resolve().parent


# ---- helpers --------------------------------------------------------------------------------------------

def open_files_under(directory):
    """What this process holds open under `directory` (a recording's WAV or .part, say)."""
    root = str(Path(directory).resolve())
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root):
            held.append(target)
    return held


def fill_the_disk_under(monkeypatch, directory):
    """From now on every write that would grow a file under `directory` fails with ENOSPC, as on a full
    volume; rewriting a WAV header in place (offset 0) still works, as it does on a full disk."""
    root = str(Path(directory).resolve())
    real_write, real_writev, real_pwrite, real_ftruncate = os.write, os.writev, os.pwrite, os.ftruncate

    def under(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(root)
        except OSError:
            return False

    def full():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(fd, data):
        if under(fd):
            raise full()
        return real_write(fd, data)

    def writev(fd, buffers):
        if under(fd):
            raise full()
        return real_writev(fd, buffers)

    def pwrite(fd, data, offset):
        if under(fd) and offset >= 44:
            raise full()
        return real_pwrite(fd, data, offset)

    def ftruncate(fd, length):  # long silence extends the file; on some file systems that needs blocks too
        if under(fd) and length > os.fstat(fd).st_size:
            raise full()
        return real_ftruncate(fd, length)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(os, "pwrite", pwrite)


def close_event(rec, uuid=UUID, timeout=TIMEOUT):
    """The reason on_close gave for `uuid`, skipping other events; None if it did not come in `timeout` s."""
    while True:
        try:
            event = rec.events.get(timeout=timeout)
        except Empty:
            return None
        if event[0] == "close" and event[1] == uuid:
            return event[2]


def send_in_time(client, clock, values):
    """One 20 ms frame (8 kHz mono) per value, each arriving as its audio ends; returns the audio sent."""
    sent = b""
    for value in values:
        clock.advance(0.02)
        client.send(frame(OP_BINARY, pcm(value)))
        client.sync()  # stamped before the clock moves on
        sent += pcm(value)
    return sent


def unread_bytes(sock):
    """Bytes waiting in this socket's receive queue (read by nobody yet)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


# ---- A: talk-back to a client that does not read ------------------------------------------------------------

def test_send_text_returns_at_once_even_when_the_module_reads_nothing(recorder, captures):
    """Talk-back never waits for the module: each send_text returns within 0.5 s although the client reads
    nothing, True while the text is queued, and False once the connection's queue is over its bound."""
    rec = recorder()
    rec.expect()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    text = "x" * (256 * 1024)
    answers = []
    try:
        for _ in range(192):  # 48 MiB: beyond the socket buffers and any bound of a few MiB
            began = time.monotonic()
            with gevent.Timeout(0.5, AssertionError(f"send_text blocked for 0.5 s after {len(answers)} texts")):
                answers.append(rec.server.send_text(UUID, text))
            assert time.monotonic() - began < 0.5
            if answers[-1] is False:
                break
    finally:
        client.close()
    assert answers[-1] is False, f"send_text still said True after {len(answers) * len(text)} bytes queued"
    assert answers == [True] * (len(answers) - 1) + [False]


TALKER_SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import pathlib
import sys
import wave

from gevent.queue import Queue

from controller.recorder.server import RecorderServer, RecordingRegistry, StreamSpec
from harness import wait_until
from test_recorder_server import (OP_BINARY, OTHER, TOKEN, UUID, RawClient, close_frame, frame, pcm,
                                  upgrade_request)
from test_recorder_defects import unread_bytes

import gevent

directory, captured = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes()
registry = RecordingRegistry()
events = Queue()
server = RecorderServer(registry, directory, filename_template="{uuid}.wav",
                        on_open=lambda uuid: events.put(("open", uuid)),
                        on_close=lambda uuid, reason: events.put(("close", uuid, reason)),
                        on_detach=lambda uuid, reason: server.end_call(uuid))
port = server.start("127.0.0.1", 0)
for uuid in (UUID, OTHER):
    registry.expect(StreamSpec(uuid=uuid, token=TOKEN, rate=8000, channels=1))


def connect(uuid):
    client = RawClient(port)
    request = upgrade_request(captured, f"/calls/{uuid}", port, {"Authorization": f"Bearer {TOKEN}"})
    assert client.handshake(request)[0] == 101
    assert events.get(timeout=5) == ("open", uuid)
    return client


def wait_closed(uuid):
    while True:
        event = events.get(timeout=5)
        if event[0] == "close" and event[1] == uuid:
            return event[2]


deaf = connect(UUID)  # upgrades, then never reads a byte


def talk():  # an agent talking back as fast as the recorder takes it
    while server.send_text(UUID, "x" * (1 << 20)):
        pass


talker = gevent.spawn(talk)
wait_until(lambda: unread_bytes(deaf.sock) >= 32 * 1024, 5, "talk-back to reach the deaf client")
deaf.close()  # with bytes unread: a reset
print("first call:", wait_closed(UUID), file=sys.stderr)

second = connect(OTHER)
second.send(frame(OP_BINARY, pcm(7)) + frame(OP_BINARY, pcm(8)) + close_frame(1000))
assert second.recv_close()[0] == 1000
print("second call:", wait_closed(OTHER), file=sys.stderr)
talker.kill()
server.stop(timeout=2)
with wave.open(str(directory / f"{OTHER}.wav"), "rb") as w:
    assert w.readframes(w.getnframes()) == pcm(7) + pcm(8), "the second call's WAV is not exact"
print("exact", file=sys.stderr)
"""


def test_a_deaf_client_flooded_with_talk_back_does_not_take_the_process_down(tmp_path, captures):
    """A client that stops reading while an agent talks back, then drops: the recorder process carries on
    (no libev abort, no hang) and the next call is recorded exactly."""
    script = tmp_path / "talker.py"
    script.write_text(TALKER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]))
    try:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "rec"),
                               str(captures / "ws/mono_8000/conn1.request.bin")],
                              capture_output=True, text=True, timeout=20, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the recorder process hung for 20 s (killed); its stderr:\n{exc.stderr}")
    assert "invalid fd" not in done.stderr
    assert done.returncode == 0, f"the recorder process exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "exact" in done.stderr


def read_checked_frame(buffer):
    """The first whole frame in `buffer` as (opcode, payload, rest), None if it is not all there yet; fails
    on anything a well-formed server frame cannot be (a pong inside a text frame shows up as one of these)."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    assert first & 0x80 and not first & 0x70, f"bad first byte {first:#04x}: not a whole, final frame"
    assert not second & 0x80, "server frames are never masked"
    opcode, n, at = first & 0x0F, second & 0x7F, 2
    assert opcode in (OP_TEXT, OP_CLOSE, OP_PONG), f"unexpected opcode {opcode}"
    if n == 126:
        if len(buffer) < 4:
            return None
        n, at = struct.unpack_from("!H", buffer, 2)[0], 4
    elif n == 127:
        if len(buffer) < 10:
            return None
        n, at = struct.unpack_from("!Q", buffer, 2)[0], 10
    assert n <= 1 << 20, f"a {n}-byte frame: not one this test's server sent"
    if len(buffer) < at + n:
        return None
    return opcode, bytes(buffer[at:at + n]), buffer[at + n:]


def slow_window_client(rec, captures):
    """An upgraded client whose receive window is small, so the server's sends to it stall."""
    client = RawClient.__new__(RawClient)
    client.buf = b""
    client.sock = socket.socket()
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    client.sock.settimeout(2.0)
    client.sock.connect(("127.0.0.1", rec.port))
    request = (captures / "ws/mono_8000/conn1.request.bin").read_bytes()
    assert client.handshake(upgrade_request(request, f"/calls/{UUID}", rec.port,
                                            {"Authorization": f"Bearer {TOKEN}"}))[0] == 101
    assert rec.next_event() == ("open", UUID)
    return client


def test_pongs_never_land_inside_a_half_sent_text_frame(recorder, captures):
    """An agent talks back long texts to a module that reads slowly and pings after every read, and the
    agent's link is stopped (its greenlet killed) meanwhile: the module still gets well-formed frames only,
    every accepted text whole and in order, pongs only between frames."""
    rec = recorder()
    rec.expect()
    client = slow_window_client(rec, captures)
    accepted = []

    def talk():
        for n in range(8):
            text = chr(ord("a") + n) * 1_000_000
            if not rec.server.send_text(UUID, text):
                return
            accepted.append(text)

    talker = gevent.spawn(talk)
    wait_until(lambda: talker.dead or unread_bytes(client.sock) > 0, 2.0, "talk-back to reach the client")
    talker.kill()  # the agent hung up: its link stops
    buffer, texts, pongs, pings = b"", [], [], []

    def receive():
        nonlocal buffer
        try:
            chunk = client.sock.recv(16384)  # small reads, a ping after each of the first 64
        except socket.timeout:
            partial = buffer[:12].hex(" ")
            pytest.fail(f"the stream stopped inside a frame ({len(buffer)} bytes of it, beginning {partial}); "
                        f"a pong inside it: {bytes([0x80 | OP_PONG]) in buffer}")
        assert chunk, "the server closed the connection"
        buffer += chunk
        if len(pings) < 64:
            pings.append(f"p{len(pings)}".encode())
            client.send(frame(OP_PING, pings[-1]))

    def next_frame():
        nonlocal buffer
        while (got := read_checked_frame(buffer)) is None:
            receive()
        opcode, payload, buffer = got
        if opcode == OP_PONG:
            pongs.append(payload)
        return opcode, payload

    try:
        while len(texts) < len(accepted):
            opcode, payload = next_frame()
            assert opcode != OP_CLOSE, "closed before every accepted text arrived"
            if opcode == OP_TEXT:
                texts.append(payload)
        pings.append(b"last")
        client.send(frame(OP_PING, b"last"))  # answered after every frame already going out
        while next_frame() != (OP_PONG, b"last"):
            pass
        client.send(close_frame(1000))
        while next_frame()[0] != OP_CLOSE:
            pass
    finally:
        client.close()
    assert accepted, "send_text accepted nothing"
    assert [t.decode() for t in texts] == accepted
    unanswered = iter(pings)
    assert pongs and all(pong in unanswered for pong in pongs), "a pong for no ping, or out of order"


# ---- B: one writer per recording ----------------------------------------------------------------------------

def test_a_close_while_the_tick_writes_a_long_silence_gives_a_wav_as_long_as_the_call(recorder, captures):
    """48 kHz stereo: 0.1 s of audio, 30 min with nothing played, one more frame, then the module closes as
    the call ends at 1802.5 s. The WAV is exactly 1802.5 s long and its gaps never overlap, even though
    the periodic tick is writing the long silence when the close arrives."""
    rate, frame_bytes = 48000, 4
    clock = FakeClock(1000.0)
    rec = recorder(end_on_detach=False, clock=clock, tick_interval_s=3600)  # the tick is driven by hand
    rec.expect(rate=rate, channels=2)
    client, _ = rec.connect(captures, scenario="stereo_16000")
    assert rec.next_event() == ("open", UUID)
    audio = []
    for n in range(5):  # 5 x 20 ms, in time
        clock.now = 1000.0 + 0.02 * (n + 1)
        audio.append(bytes([n + 1, 0]) * (960 * 2))
        client.send(frame(OP_BINARY, audio[-1]))
        client.sync()
    clock.now = 2800.0  # 30 min later the switch plays something again: a deficit, held back until settled
    audio.append(bytes([9, 0]) * (960 * 2))
    client.send(frame(OP_BINARY, audio[-1]))
    client.sync()
    clock.now = 2802.5  # past the settle time: the next tick decides the deficit and writes ~30 min of silence
    try:
        ticking = gevent.spawn(rec.server._tick)
        client.send(close_frame(1000, "Normal closure"))  # ... and the call ends while it does
        assert client.recv_close()[0] == 1000
        ended = gevent.spawn(rec.server.end_call, UUID, at=2802.5)
        assert close_event(rec, timeout=30) is not None, "the recording was never finalised"
        gevent.joinall([ticking, ended], timeout=TIMEOUT)
        (wav_path,) = rec.directory.rglob("*.wav")
        side = json.loads(wav_path.with_suffix(".json").read_text())
        with wave.open(str(wav_path), "rb") as w:
            n_frames = w.getnframes()
            gaps = sorted(gaps_of(side))
            kept, position = [], 0
            for start, length, _cause in gaps:
                w.setpos(position)
                kept.append(w.readframes(start - position))
                position = start + length
            w.setpos(position)
            kept.append(w.readframes(n_frames - position))
        assert n_frames / rate == 1802.5, f"the WAV is {n_frames / rate:.3f} s long, the call 1802.5 s"
        assert wav_path.stat().st_size == 44 + n_frames * frame_bytes
        for (start, length, _), (next_start, _, _) in zip(gaps, gaps[1:]):
            assert start + length <= next_start, f"overlapping gaps: {gaps}"
        assert sum(length for _, length, _ in gaps) == n_frames - len(b"".join(audio)) // frame_bytes
        assert b"".join(kept) == b"".join(audio)  # the audio outside the gaps is what was sent, in order
    finally:
        for path in rec.directory.rglob("*.wav*"):
            path.unlink()  # 346 MB


# ---- C and D: write errors while detaching and while resuming ------------------------------------------------

def test_a_full_disk_while_detaching_still_finalises_the_recording(recorder, captures, monkeypatch):
    """Audio held back for a suspected gap, then the disk fills and the module closes: once the call ends
    the recording is finalised anyway, with what reached the disk, its file closed, and the error said."""
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, tick_interval_s=3600)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    audio = send_in_time(client, clock, range(1, 11))
    (part,) = rec.directory.rglob("*.wav.part")
    wait_until(lambda: part.stat().st_size == 44 + len(audio), 2.0, "the audio to reach the file")
    clock.advance(5.0)  # a frame 5 s late: held back until it shows whether audio is missing
    client.send(frame(OP_BINARY, pcm(99)))
    client.sync()
    fill_the_disk_under(monkeypatch, rec.directory)
    client.send(close_frame(1000))
    assert client.recv_close()[0] == 1000
    wait_until(lambda: rec.server.open_recordings() == [], 2.0, "the connection to end")
    rec.server.end_call(UUID, at=clock())
    reason = close_event(rec)
    assert reason is not None, f"the recording was never finalised: {rec.files()}"
    assert not list(rec.directory.rglob("*.part"))
    assert open_files_under(rec.directory) == []
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == audio
    assert reason in ("write_error", "client_close") and side["close_reason"] == reason
    assert "No space left on device" in side["error"]


def test_a_full_disk_while_resuming_after_a_restart_leaves_one_finished_wav(recorder, captures, monkeypatch):
    """A call recorded before a clean stop is continued by the next process while the disk is full: the call
    still has exactly one WAV (no second file, no .part), no descriptor stays open, and on_close fires."""
    clock = FakeClock()
    before = recorder(end_on_detach=False, clock=clock, wall_clock=lambda: 20_000.0)
    before.expect()
    client, _ = before.connect(captures)
    clock.advance(0.02)
    client.send(frame(OP_BINARY, pcm(1)))
    client.sync()
    before.server.stop(timeout=2)  # SIGTERM
    assert client.recv_close() == (1001, "recorder stopping")
    assert before.next_event() == ("open", UUID) and before.next_event() == ("close", UUID, "server_stop")
    wav_path, _ = before.only_recording()
    assert open_files_under(before.directory) == []

    after = recorder(end_on_detach=False, clock=FakeClock(5.0), wall_clock=lambda: 20_010.0)  # up 10 s later
    fill_the_disk_under(monkeypatch, after.directory)  # the restart's 10 s of silence cannot be written
    after.expect()
    client, (status, _, _) = after.connect(captures)
    if status == 101:
        client.recv_close()
    after.server.end_call(UUID)
    reason = close_event(after)
    monkeypatch.undo()
    assert sorted(after.directory.rglob("*.wav")) == [wav_path], "a second file for the call"
    assert not list(after.directory.rglob("*.part"))
    assert open_files_under(after.directory) == []
    assert reason is not None, "on_close never fired"
    assert read_wav(wav_path)[3].startswith(pcm(1))


# ---- E: a replaced connection's audio -----------------------------------------------------------------------

def test_audio_the_replaced_connection_had_received_is_kept_before_the_new_ones(recorder, captures):
    """A restart's new connection arrives while frames of the old one still wait in its socket: every byte
    the old connection sent is in the WAV, before the new connection's audio."""
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, poll_interval_s=1.0)  # the poller sleeps 1 s between reads
    rec.expect()
    first, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    first.send(frame(OP_BINARY, pcm(1)))
    first.sync()  # read and answered: the poller now sleeps a second
    clock.advance(0.04)
    first.send(frame(OP_BINARY, pcm(2)) + frame(OP_BINARY, pcm(3)))  # waiting, unread, in the old socket
    second, (status, _, _) = rec.connect(captures)
    assert status == 101
    assert first.recv_close() == (1000, "replaced by a newer connection")
    clock.advance(0.02)
    second.send(frame(OP_BINARY, pcm(4)) + close_frame(1000))
    assert second.recv_close()[0] == 1000
    wait_until(lambda: rec.server.open_recordings() == [], 3.0, "the second connection to end")
    rec.server.end_call(UUID)
    assert close_event(rec) is not None
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(2) + pcm(3) + pcm(4)
    assert side["connections"] == 2


# ---- G: the end of a recording --------------------------------------------------------------------------------

@pytest.mark.parametrize("hangup", ["before_the_close_arrives", "after_the_close_arrived"])
def test_a_late_hangup_does_not_lengthen_the_wav_past_the_modules_close(recorder, captures, hangup):
    """The module sends its audio in time and closes; the controller reports the hangup 0.4 s later than
    that. The WAV holds exactly the audio: it ends at the close, no tail of silence."""
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, tick_interval_s=3600)
    rec.expect()
    client, _ = rec.connect(captures)
    assert rec.next_event() == ("open", UUID)
    audio = send_in_time(client, clock, range(1, 26))  # 0.5 s; the close arrives as its last frame ends
    closed_at = clock()
    if hangup == "before_the_close_arrives":
        rec.server.end_call(UUID, at=closed_at + 0.4)
        client.send(close_frame(1000))
        assert client.recv_close()[0] == 1000
    else:
        client.send(close_frame(1000))
        assert client.recv_close()[0] == 1000
        assert rec.next_event() == ("detach", UUID, "client_close")
        clock.advance(0.4)
        rec.server.end_call(UUID, at=closed_at + 0.4)
    assert close_event(rec) == "client_close"
    wav_path, side = rec.only_recording()
    assert gaps_of(side) == []
    assert read_wav(wav_path)[3] == audio


# ---- smaller ones --------------------------------------------------------------------------------------------

def test_the_stream_limit_lets_a_calls_restart_replace_its_connection(recorder, captures):
    """At max_streams=1 a second connection for the SAME call (its restart) takes over and continues the
    one WAV; a connection for another call is still refused with 503."""
    clock = FakeClock()
    rec = recorder(end_on_detach=False, clock=clock, max_streams=1)
    rec.expect(uuid=UUID)
    rec.expect(uuid=OTHER)
    first, (status, _, _) = rec.connect(captures)
    assert status == 101 and rec.next_event() == ("open", UUID)
    clock.advance(0.02)
    first.send(frame(OP_BINARY, pcm(1)))
    first.sync()
    second, (status, _, _) = rec.connect(captures)
    assert status == 101
    assert first.recv_close() == (1000, "replaced by a newer connection")
    _, (status, _, _) = rec.connect(captures, path=f"/calls/{OTHER}")
    assert status == 503
    clock.advance(0.02)
    second.send(frame(OP_BINARY, pcm(2)) + close_frame(1000))
    assert second.recv_close()[0] == 1000
    wait_until(lambda: rec.server.open_recordings() == [], 2.0, "the second connection to end")
    rec.server.end_call(UUID)
    assert close_event(rec) == "client_close"
    wav_path, side = rec.only_recording()
    assert read_wav(wav_path)[3] == pcm(1) + pcm(2) and side["connections"] == 2


def internal_greenlets(server):
    """{attribute path: greenlet} for the greenlets the server keeps, one level of objects deep."""
    found = {}
    for name, value in vars(server).items():
        if isinstance(value, gevent.Greenlet):
            found[name] = value
        elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
            for inner, deeper in vars(value).items():
                if isinstance(deeper, gevent.Greenlet):
                    found[f"{name}.{inner}"] = deeper
    return found


def test_health_names_a_dead_internal_loop(recorder):
    """server.health() is [] while the recorder works, and names the dead part once its loop greenlet dies.

    Written against the rewrite's health(); the loop is found among the greenlets the server keeps (the
    poller's, preferably), since its attribute name is the rewrite's to choose.
    """
    rec = recorder()
    assert rec.server.health() == []
    loops = internal_greenlets(rec.server)
    assert loops, "the server keeps no greenlet to kill"
    name = next((n for n in loops if "poll" in n.lower()), next(iter(loops)))
    loops[name].kill(RuntimeError("a bug in the loop"), block=True, timeout=TIMEOUT)
    problems = rec.server.health()
    assert problems and all(isinstance(p, str) and p for p in problems), problems
