"""The simulator through real sockets, compared with the FreeSWITCH 1.10.12 captures.

A raw Event Socket client and a tiny WebSocket server (both below) stand in for the controller,
so these tests check the simulator alone. Every wait has a timeout; calls last at most 2 s.
"""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import wave
from collections import deque

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Empty, Queue
from gevent.server import StreamServer

from controller.esl.protocol import MessageReader, parse_event
from controller.simulator import Simulator
from controller.simulator import signals
from controller.simulator import ws_frames as wsf

WAIT = 5.0
SUBSCRIBE = (
    "event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB "
    "CUSTOM mod_audio_stream::connect mod_audio_stream::disconnect mod_audio_stream::error "
    "mod_audio_stream::json mod_audio_stream::play"
)
RIG_ONLY_VARIABLES = {"variable_sip_subject", "variable_DP_MATCH"}  # set by the capture rig's dialplan
# Set when a playback ends (the tone, 1 s in); the stream events here come sooner than in the capture.
PLAYBACK_VARIABLES = {"variable_playback_last_offset_pos", "variable_playback_seconds", "variable_playback_ms",
                      "variable_playback_samples"}


# ---- a raw Event Socket client ----


class EslClient:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.reader = MessageReader()
        self.messages = deque()
        self.events = deque()  # events that arrived while we waited for a reply

    def read(self):
        while not self.messages:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the simulator closed the connection")
            self.messages.extend(self.reader.feed(data))
        return self.messages.popleft()

    def read_until_eof(self) -> bytes:
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def send(self, command: str) -> None:
        self.sock.sendall(command.encode() + b"\n\n")

    def command(self, command: str):
        """Send a command and return its reply; events met on the way are kept for wait_event."""
        self.send(command)
        return self.reply()

    def reply(self):
        """The next reply (command/reply or api/response); events met on the way are kept for wait_event."""
        while True:
            message = self.read()
            if message.content_type in ("command/reply", "api/response"):
                return message
            self.events.append(message)

    def api(self, command: str) -> str:
        return self.command(f"api {command}").text

    def wait_event(self, key: str, uuid: str | None = None):
        """The next event with this name (or CUSTOM subclass), and for this channel if given."""
        while True:
            message = self.events.popleft() if self.events else self.read()
            if not message.content_type.startswith("text/event"):
                continue
            event = parse_event(message)
            if event.key == key and (uuid is None or event.uuid == uuid):
                return event, message

    def login(self, subscription: str | None = SUBSCRIBE) -> "EslClient":
        assert self.read().content_type == "auth/request"
        assert self.command("auth ClueCon").reply_text == "+OK accepted"
        if subscription:
            assert self.command(subscription).reply_text.startswith("+OK event listener enabled")
        return self

    def close(self) -> None:
        self.sock.close()


def event_header_names(message) -> list[str]:
    """Header names of an event in wire order (the product's parser keeps a dict)."""
    if message.content_type == "text/event-json":
        return [name for name, _ in json.loads(message.body, object_pairs_hook=lambda pairs: pairs)]
    head = message.body.partition(b"\n\n")[0]
    return [line.split(b": ", 1)[0].decode() for line in head.split(b"\n")]


def captured_event(captures, name: str):
    raw = (captures / "esl" / "examples" / name).read_bytes()
    [message] = MessageReader().feed(raw)
    return message


def assert_same_layout(mine, captured, not_yet_set=()):
    """Same non-variable headers in the same order; every captured variable present (rig ones aside)."""
    mine_names, captured_names = event_header_names(mine), event_header_names(captured)
    fixed = lambda names: [n for n in names if not n.startswith("variable_")]  # noqa: E731
    assert fixed(mine_names) == fixed(captured_names)
    missing = {n for n in captured_names if n.startswith("variable_")} - set(mine_names)
    assert missing <= RIG_ONLY_VARIABLES | set(not_yet_set)


# ---- a tiny WebSocket server ----


class WsPeer:
    """One connection the simulator opened to the test server, as the server saw it."""

    def __init__(self, sock):
        self.sock = sock
        self.request = b""
        self.frames = Queue()  # (opcode, payload) as they arrive
        self.all_frames = []
        self.closed = Event()

    def binary_payloads(self):
        return [payload for opcode, payload in self.all_frames if opcode == wsf.BINARY]

    def next_frame(self, opcode=None, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
            if opcode is None or frame[0] == opcode:
                return frame

    def send_text(self, text: str) -> None:
        self.sock.sendall(wsf.encode_frame(wsf.TEXT, text.encode(), None))

    def close(self, code: int, reason: str) -> None:
        self.sock.sendall(wsf.encode_frame(wsf.CLOSE, wsf.close_payload(code, reason), None))

    def abort(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class WsServer:
    """mode: accept (101, record frames) | refuse503 | bad_accept (101 with a wrong
    Sec-WebSocket-Accept) | hang (never answer the upgrade)."""

    def __init__(self, mode: str = "accept"):
        self.mode = mode
        self.peers = Queue()
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def next_peer(self, timeout=WAIT) -> WsPeer:
        return self.peers.get(timeout=timeout)

    def _handle(self, sock, address) -> None:
        peer = WsPeer(sock)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            peer.request, rest = data.split(b"\r\n\r\n", 1)
            peer.request += b"\r\n\r\n"
            self.peers.put(peer)
            if self.mode == "hang":
                while sock.recv(4096):
                    pass
                return
            if self.mode == "refuse503":
                sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            key = re.search(rb"Sec-WebSocket-Key:\s*(\S+)", peer.request).group(1).decode()
            if self.mode == "bad_accept":
                key += "x"
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + wsf.accept_for(key).encode() + b"\r\n\r\n")
            reader = wsf.FrameReader()
            while True:
                for frame in reader.feed(rest):
                    peer.all_frames.append((frame.opcode, frame.payload))
                    peer.frames.put((frame.opcode, frame.payload))
                    if frame.opcode == wsf.CLOSE:
                        sock.sendall(wsf.encode_frame(wsf.CLOSE, frame.payload, None))
                        return
                rest = sock.recv(65536)
                if not rest:
                    return
        except OSError:
            return
        finally:
            peer.closed.set()
            sock.close()

    def stop(self) -> None:
        self.server.stop(timeout=0)


@pytest.fixture
def sim():
    simulator = Simulator().start()
    yield simulator
    simulator.stop()


def start_stream(esl, call, url: str, mix: str = "mono", rate: str = "8k", metadata: str = "") -> str:
    return esl.api(f"uuid_audio_stream {call.uuid} start {url} {mix} {rate} {metadata}".rstrip())


def held_call(sim, **options):
    """A call that stays up until the test hangs it up; returns it once answered."""
    options.setdefault("duration_s", 2.0)
    call = sim.place_call("9999", auto_hangup=False, **options)
    assert call.answered.wait(WAIT)
    return call


# ---- Event Socket: handshake, auth, subscriptions ----


def test_the_captured_handshake_session_gets_byte_identical_replies(sim, captures):
    sent = (captures / "esl" / "handshake_auth_ok.sent.bin").read_bytes()
    expected = (captures / "esl" / "handshake_auth_ok.recv.bin").read_bytes()
    client = EslClient(sim.esl_port)
    for command in sent.decode().split("\n\n")[:-1]:
        client.send(command)
    assert client.read_until_eof() == expected


def test_wrong_password_gets_invalid_and_goodbye_then_the_socket_closes(sim, captures):
    client = EslClient(sim.esl_port)
    client.send("auth WrongPassword")
    assert client.read_until_eof() == (captures / "esl" / "handshake_auth_bad.recv.bin").read_bytes()


def test_commands_before_auth_are_not_found_and_auth_still_works(sim):
    client = EslClient(sim.esl_port)
    assert client.read().content_type == "auth/request"
    assert client.command("api status").reply_text == "-ERR command not found"
    assert client.command("auth ClueCon").reply_text == "+OK accepted"


def test_acl_rejection_is_rude_and_sends_no_auth_request(sim):
    sim.reject_acl = True
    client = EslClient(sim.esl_port)
    assert client.read_until_eof() == (
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n")


def test_silent_accept_never_sends_the_auth_request(sim):
    sim.silent_accept = True
    client = EslClient(sim.esl_port)
    client.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        client.sock.recv(1)


def test_filter_lets_only_matching_events_through(sim):
    client = EslClient(sim.esl_port).login()
    assert client.command("filter Unique-ID nobody").reply_text == "+OK filter added. [Unique-ID]=[nobody]"
    call = held_call(sim)
    assert client.command("filter Event-Name CHANNEL_HANGUP_COMPLETE").reply_text.startswith("+OK filter added")
    call.hangup()
    event, _ = client.wait_event("CHANNEL_HANGUP_COMPLETE")
    assert event.uuid == call.uuid
    # Nothing else got through: the create, answer and hangup were filtered out.
    assert not [m for m in client.events if parse_event(m).name != "CHANNEL_HANGUP_COMPLETE"]
    assert client.api("status").startswith("UP ")
    assert not client.events and not client.messages


def test_noevents_stops_delivery_and_event_names_add_up(sim):
    client = EslClient(sim.esl_port).login("event plain CHANNEL_ANSWER")
    assert client.command("event plain CHANNEL_HANGUP").reply_text == "+OK event listener enabled plain"
    call = held_call(sim)
    client.wait_event("CHANNEL_ANSWER", call.uuid)
    call.hangup()
    client.wait_event("CHANNEL_HANGUP", call.uuid)
    assert client.command("noevents").reply_text == "+OK no longer listening for events"
    assert client.command("noevents").reply_text == "-ERR not listening for events"
    held_call(sim).hangup()
    assert client.api("status").startswith("UP ") and not client.events


# ---- channel events ----


def test_call_events_have_the_captured_layout_and_this_calls_values(sim, esl, captures):
    before_us = time.time_ns() // 1000
    call = sim.place_call("9999", caller_id_number="1000", caller_id_name="Alice", duration_s=1.1)
    seen = {}
    for name in ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        event, message = esl.wait_event(name, call.uuid)
        assert_same_layout(message, captured_event(captures, f"text_event-plain__{name}.bin"))
        seen[name] = (event, message)
    answer = seen["CHANNEL_ANSWER"][0]
    assert (answer.get("Call-Direction"), answer.get("Channel-Call-UUID")) == ("inbound", call.uuid)
    assert (answer.get("Caller-Destination-Number"), answer.get("Caller-Caller-ID-Number")) == ("9999", "1000")
    assert (answer.get("Caller-Caller-ID-Name"), answer.get("Caller-Context")) == ("Alice", "default")
    assert before_us <= int(answer.get("Event-Date-Timestamp")) <= time.time_ns() // 1000
    complete_names = event_header_names(seen["CHANNEL_HANGUP_COMPLETE"][1])
    assert complete_names.count("Hangup-Cause") == 2
    assert seen["CHANNEL_HANGUP_COMPLETE"][0].get("variable_billsec") == "1"
    sequences = [int(seen[n][0].get("Event-Sequence")) for n in seen]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4


def test_json_events_carry_the_same_headers_as_the_capture(sim, captures):
    client = EslClient(sim.esl_port).login(SUBSCRIBE.replace("event plain", "event json"))
    call = held_call(sim)
    event, message = client.wait_event("CHANNEL_ANSWER", call.uuid)
    assert message.content_type == "text/event-json"
    assert_same_layout(message, captured_event(captures, "text_event-json__CHANNEL_ANSWER.bin"))
    assert event.get("Unique-ID") == call.uuid


def test_a_bridged_b_leg_answers_first_with_the_same_destination(sim, esl):
    call = sim.place_call("9999", bridge_to="1001", duration_s=0.5)
    first, _ = esl.wait_event("CHANNEL_ANSWER")
    second, _ = esl.wait_event("CHANNEL_ANSWER")
    assert (first.uuid, second.uuid) == (call.b_leg.uuid, call.uuid)
    assert first.get("Call-Direction") == "outbound" and second.get("Call-Direction") == "inbound"
    assert first.get("Caller-Destination-Number") == second.get("Caller-Destination-Number") == "9999"
    assert first.get("Channel-Call-UUID") == call.uuid
    assert call.b_leg.hung_up.wait(WAIT)


# ---- api ----


def test_misc_api_replies_match_the_capture(sim, esl, captures):
    misc = json.loads((captures / "notes" / "notes_misc_shutdown.json").read_text())["misc"]
    for command in ("show channels as json", "show channels", "uuid_kill 00000000-0000-0000-0000-000000000000",
                    "uuid_setvar 00000000-0000-0000-0000-000000000000 X 1",
                    "uuid_exists 00000000-0000-0000-0000-000000000000", "no_such_command",
                    "module_exists mod_audio_stream", "version"):
        assert esl.api(command) == misc[command], command
    status, captured_status = esl.api("status").split("\n"), misc["status"].split("\n")
    assert re.fullmatch(r"UP 0 years, 0 days, 0 hours, 0 minutes, \d+ seconds, \d+ milliseconds, \d+ microseconds",
                        status[0])
    assert status[1] == captured_status[1] and status[5:] == captured_status[5:]


def test_show_channels_as_json_lists_a_live_call_with_the_captured_columns(sim, esl, captures):
    notes = json.loads((captures / "notes" / "notes_handshake_main_plain_main_json_formats_failures.json").read_text())
    captured_row = json.loads(notes["main_plain"]["show_channels_json"])["rows"][0]
    call = held_call(sim)
    listing = json.loads(esl.api("show channels as json"))
    assert listing["row_count"] == 1
    [row] = listing["rows"]
    assert list(row) == list(captured_row)
    assert (row["uuid"], row["dest"], row["direction"], row["callstate"]) == (call.uuid, "9999", "inbound", "ACTIVE")
    assert esl.api("show channels").splitlines()[0] == notes["main_plain"]["show_channels_plain"].splitlines()[0]


def test_uuid_commands_on_a_live_call(sim, esl):
    call = held_call(sim)
    assert esl.api(f"uuid_exists {call.uuid}") == "true"
    assert esl.api(f"uuid_setvar {call.uuid} STREAM_EXTRA_HEADERS {{\"a\":\"b c\"}}") == "+OK\n"
    assert call.get_variable("STREAM_EXTRA_HEADERS") == '{"a":"b c"}'
    assert esl.api(f"uuid_getvar {call.uuid} STREAM_EXTRA_HEADERS") == '{"a":"b c"}'
    assert esl.api(f"uuid_getvar {call.uuid} NOPE") == "_undef_"
    assert esl.api(f"uuid_setvar {call.uuid}") == "-USAGE: <uuid> <var> [value]\n"
    assert esl.api(f"uuid_kill {call.uuid}") == "+OK\n"
    assert call.hung_up.is_set() and esl.api(f"uuid_exists {call.uuid}") == "false"
    event, _ = esl.wait_event("CHANNEL_HANGUP_COMPLETE", call.uuid)
    assert event.get("Hangup-Cause") == "NORMAL_CLEARING" and event.get("variable_last_app") == "sleep"


def test_uuid_setvar_multi_sets_each_variable_with_mod_commands_replies(sim, esl):
    call = held_call(sim)
    call.set_variables(GONE="x", ALSO_GONE="y")
    headers = '{"Authorization":"Bearer t0k3n-with-16-chars"}'
    reply = esl.api(f"uuid_setvar_multi {call.uuid} STREAM_BUFFER_SIZE=100; STREAM_EXTRA_HEADERS={headers} "
                    f";A=x=y;GONE;ALSO_GONE=;EXPANDED=${{caller_id_number}}")
    assert reply == "+OK\n"  # once, for six variables
    assert call.get_variable("STREAM_BUFFER_SIZE") == "100"
    assert call.get_variable("STREAM_EXTRA_HEADERS") == headers  # its space kept, the trailing one trimmed
    assert call.get_variable("A") == "x=y"  # split at the first '='
    assert call.get_variable("GONE") is None and call.get_variable("ALSO_GONE") is None  # no value: unset
    assert call.get_variable("EXPANDED") is None  # "${" is refused by the channel, yet counted as set
    # An empty name adds an error line before the +OK; nothing set at all falls through to the usage.
    assert esl.api(f"uuid_setvar_multi {call.uuid} =1;B=2") == "-ERR No variable specified\n+OK\n"
    assert esl.api(f"uuid_setvar_multi {call.uuid} =1") == ("-ERR No variable specified\n"
                                                           "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n")
    assert call.get_variable("B") == "2"


def test_uuid_setvar_multi_without_a_channel_or_arguments(sim, esl):
    usage = "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
    unknown = "00000000-0000-0000-0000-000000000000"
    # mod_commands writes the -ERR and then falls through to the usage as well.
    assert esl.api(f"uuid_setvar_multi {unknown} A=1") == "-ERR No such channel!\n" + usage
    assert esl.api("uuid_setvar_multi") == usage
    assert esl.api(f"uuid_setvar_multi {unknown}") == usage  # no space after the uuid: not even looked up
    assert esl.api(f"uuid_setvar_multi {unknown}   ") == usage  # the api's arguments are trimmed first
    call = held_call(sim)
    assert esl.api(f"uuid_setvar_multi {call.uuid.upper()} A=1") == "-ERR No such channel!\n" + usage


def test_commands_written_together_are_read_together_and_run_in_order(sim, esl):
    call = held_call(sim)
    connection = sim.all_connections[-1]
    esl.sock.sendall(f"api uuid_setvar_multi {call.uuid} A=1;B=2\n\n"
                     f"bgapi uuid_getvar {call.uuid} B\nJob-UUID: after-the-setvar\n\n".encode())
    assert esl.reply().text == "+OK\n"
    assert esl.reply().reply_text == "+OK Job-UUID: after-the-setvar"
    event, _ = esl.wait_event("BACKGROUND_JOB")
    assert event.body == "2"  # the api ran before the job that came behind it
    setvar, job = connection.commands[-2:]
    assert setvar.startswith("api uuid_setvar_multi") and job.startswith("bgapi uuid_getvar")
    assert connection.command_reads[-2] == connection.command_reads[-1]
    esl.api("status")
    assert connection.command_reads[-1] == connection.command_reads[-2] + 1  # a later write, a later read


def test_bgapi_answers_at_once_then_a_background_job_event(sim, esl, captures):
    call = held_call(sim)
    reply = esl.command(f"bgapi uuid_audio_stream {call.uuid} send_text bg-text")
    job = reply.headers["Job-UUID"]
    assert reply.reply_text == f"+OK Job-UUID: {job}"
    event, message = esl.wait_event("BACKGROUND_JOB")
    assert_same_layout(message, captured_event(captures, "text_event-plain__BACKGROUND_JOB.bin"))
    assert (event.get("Job-UUID"), event.get("Job-Command")) == (job, "uuid_audio_stream")
    assert event.get("Job-Command-Arg") == f"{call.uuid} send_text bg-text"
    assert event.body == "-ERR Operation Failed\n"  # no stream attached yet
    # A Job-UUID the client chose is the one used.
    esl.sock.sendall(b"bgapi status\nJob-UUID: my-own-job\n\n")
    assert esl.read().reply_text == "+OK Job-UUID: my-own-job"
    event, _ = esl.wait_event("BACKGROUND_JOB")
    assert event.get("Job-UUID") == "my-own-job" and event.body.startswith("UP ")


# ---- mod_audio_stream: the captured control session ----


def test_the_captured_control_session_gets_the_same_replies(sim, ws, captures):
    """Replays main_plain_ctl (every bad argument, start with metadata, second start, send_text,
    pause, resume, show channels, bgapi, stop with text, restart at 16k) against the simulator."""
    capture_uuid = "166eb301-3ca5-4fc5-9751-d8ca093577dd"
    sent = (captures / "esl" / "main_plain_ctl.sent.bin").read_text().split("\n\n")[:-1]
    captured_replies = [
        message for message in MessageReader().feed((captures / "esl" / "main_plain_ctl.recv.bin").read_bytes())
        if message.content_type in ("command/reply", "api/response")
    ]
    esl = EslClient(sim.esl_port)
    assert esl.read().content_type == "auth/request"
    call = held_call(sim, duration_s=2.0)
    ws_host = f"127.0.0.1:{ws.port}"
    for command, captured in zip(sent, captured_replies, strict=True):
        reply = esl.command(command.replace(capture_uuid, call.uuid).replace("127.0.0.1:8080", ws_host))
        if "show channels" in command:
            assert reply.text.splitlines()[0][:20] == captured.text.splitlines()[0][:20]
        elif command.startswith("bgapi"):
            assert reply.reply_text.startswith("+OK Job-UUID: ")
        else:
            assert (reply.reply_text, reply.text) == (captured.reply_text, captured.text), command
        if command.endswith('"spaces in it"}'):  # the good start: let both streams connect, like the capture
            esl.wait_event("mod_audio_stream::connect", call.uuid)
            esl.wait_event("mod_audio_stream::connect", call.uuid)
    leaked, first, second = ws.next_peer(), ws.next_peer(), ws.next_peer()
    assert leaked.request.startswith(b"GET / HTTP/1.1\r\n")  # the `mono abc` start that failed, yet connected
    assert first.request.startswith(f"GET /stream?call={call.uuid} HTTP/1.1".encode())
    assert first.closed.wait(WAIT)  # every frame of the stopped stream has reached the server
    assert first.all_frames[0] == (wsf.TEXT, b'{"meta":"initial metadata","with":"spaces in it"}')  # before audio
    texts = [payload.decode() for opcode, payload in first.all_frames if opcode == wsf.TEXT]
    assert texts == ['{"meta":"initial metadata","with":"spaces in it"}', '{"type":"note","n":1}', "bg-text",
                     '{"bye":"final']
    assert first.all_frames[-1] == (wsf.CLOSE, wsf.close_payload(1000, "Normal closure"))
    assert len(second.next_frame(wsf.BINARY)[1]) == 640  # restarted at 16k
    call.hangup()
    assert second.closed.wait(WAIT)
    assert [s.leaked for s in sim.streams_for(call.uuid)] == [True, False, False]
    assert not leaked.closed.is_set()  # the leak outlives the call


# ---- mod_audio_stream: streaming ----


def test_upgrade_request_matches_the_capture_apart_from_key_path_and_host(sim, esl, ws, captures):
    call = held_call(sim)
    extra = '{"X-Call-Id":"abc123","Authorization":"Bearer t0k3n"}'
    assert esl.api(f"uuid_setvar {call.uuid} STREAM_EXTRA_HEADERS {extra}") == "+OK\n"
    assert start_stream(esl, call, ws.url("/mono_8000_extra_headers"), rate="8000") == "+OK Success\n"
    request = ws.next_peer().request
    captured = (captures / "ws" / "mono_8000_extra_headers" / "conn1.request.bin").read_bytes()
    normalise = lambda raw: re.sub(rb"Sec-WebSocket-Key:\S+", b"Sec-WebSocket-Key:K",  # noqa: E731
                                   raw.replace(f"127.0.0.1:{ws.port}".encode(), b"HOST"))
    assert normalise(request) == normalise(captured.replace(b"127.0.0.1:8080", f"127.0.0.1:{ws.port}".encode()))
    assert sim.streams_for(call.uuid)[0].request_bytes == request


def test_frame_sizes_per_mix_rate_and_buffer_match_the_captures(sim, esl, ws, captures):
    notes = json.loads((captures / "notes" / "notes_handshake_main_plain_main_json_formats_failures.json").read_text())
    scenarios = [name for name in notes if name.startswith(("mono_", "mixed_", "stereo_"))
                 and "binary_size_histogram" in notes[name].get("ws_summary", {})]
    assert len(scenarios) >= 10
    call = held_call(sim, plays=[(0.0, 60.0)], duration_s=60.0)  # always playing: mixed/stereo flow too
    for name in scenarios:
        note = notes[name]
        [captured_size] = [int(size) for size in note["ws_summary"]["binary_size_histogram"]]
        call.set_variable("STREAM_BUFFER_SIZE", note["vars"].get("STREAM_BUFFER_SIZE"))
        assert start_stream(esl, call, ws.url(f"/{name}"), note["mix"], note["rate"]) == "+OK Success\n", name
        peer = ws.next_peer()
        sizes = {len(peer.next_frame(wsf.BINARY)[1]) for _ in range(2)}
        assert sizes == {captured_size}, name
        assert esl.api(f"uuid_audio_stream {call.uuid} stop") == "+OK Success\n"
        assert peer.closed.wait(WAIT)
    call.hangup()


def test_mono_audio_is_exactly_the_callers_speech_and_the_record_matches_the_wire(sim, esl, ws):
    speech = signals.speech_like(2.0, 8000, seed=5)
    call = held_call(sim, speech=speech)
    start_stream(esl, call, ws.url("/mono"))
    peer = ws.next_peer()
    for _ in range(10):
        peer.next_frame(wsf.BINARY)
    call.hangup()
    assert peer.closed.wait(WAIT)
    [stream] = sim.streams_for(call.uuid)
    assert stream.ended.wait(WAIT) and stream.end_reason == "hangup"
    assert stream.sent_pcm == b"".join(peer.binary_payloads())
    offset = speech.find(stream.sent_pcm)
    assert offset >= 0 and offset % 320 == 0  # whole 20 ms packets of what the caller said
    assert peer.all_frames[-1] == (wsf.CLOSE, wsf.close_payload(1000, "Normal closure"))
    times = [t for t, _ in stream.binary_frames]
    assert 0.12 <= times[9] - times[0] <= 0.4  # real-time pace: one frame per 20 ms


def test_stereo_is_caller_left_and_played_audio_right_only_while_playing(sim, esl, ws):
    speech = signals.speech_like(2.0, 8000, seed=3)
    played = signals.tone(800, 0.4, 8000)
    call = held_call(sim, speech=speech, plays=[(0.3, 0.7, played)])
    start_stream(esl, call, ws.url("/stereo"), "stereo", "8000")
    peer = ws.next_peer()
    frames = [peer.next_frame(wsf.BINARY)[1] for _ in range(20)]  # the 0.4 s window = 20 frames of 20 ms
    with pytest.raises(Empty):
        peer.next_frame(wsf.BINARY, timeout=0.3)  # after the window: nothing, though the call goes on
    call.hangup()
    audio = b"".join(frames)
    left = b"".join(audio[i : i + 2] for i in range(0, len(audio), 4))
    right = b"".join(audio[i + 2 : i + 4] for i in range(0, len(audio), 4))
    assert right == played and left == speech[int(0.3 * 16000) : int(0.7 * 16000)]


def test_pause_sends_nothing_until_resume(sim, esl, ws):
    call = held_call(sim)
    start_stream(esl, call, ws.url("/pause"))
    peer = ws.next_peer()
    peer.next_frame(wsf.BINARY)
    assert esl.api(f"uuid_audio_stream {call.uuid} pause") == "+OK Success\n"
    with pytest.raises(Empty):
        for _ in range(3):  # a frame already on the wire may still land; then silence
            peer.next_frame(wsf.BINARY, timeout=0.25)
    assert esl.api(f"uuid_audio_stream {call.uuid} resume") == "+OK Success\n"
    assert len(peer.next_frame(wsf.BINARY)[1]) == 320
    call.hangup()


def test_a_stream_started_before_the_answer_sends_audio_from_the_answer_on(sim, esl, ws):
    call = sim.place_call("9999", answer=False, auto_hangup=False)
    assert start_stream(esl, call, ws.url("/early")) == "+OK Success\n"
    peer = ws.next_peer()
    with pytest.raises(Empty):
        peer.next_frame(wsf.BINARY, timeout=0.2)
    call.answer()
    assert len(peer.next_frame(wsf.BINARY)[1]) == 320
    call.hangup()


def test_heartbeat_pings_with_payload_ping(sim, esl, ws):
    call = held_call(sim, variables={"STREAM_HEART_BEAT": "1"})
    start_stream(esl, call, ws.url("/hb"))
    assert ws.next_peer().next_frame(wsf.PING, timeout=2.0) == (wsf.PING, b"ping")
    call.hangup()


def test_stop_sends_only_the_first_word_then_normal_closure_and_no_event(sim, esl, ws):
    call = held_call(sim)
    start_stream(esl, call, ws.url("/stop"))
    esl.wait_event("mod_audio_stream::connect", call.uuid)
    peer = ws.next_peer()
    assert esl.api(f"uuid_audio_stream {call.uuid} stop bye now") == "+OK Success\n"
    assert peer.next_frame(wsf.TEXT) == (wsf.TEXT, b"bye")
    assert peer.next_frame(wsf.CLOSE) == (wsf.CLOSE, wsf.close_payload(1000, "Normal closure"))
    assert esl.api(f"uuid_audio_stream {call.uuid} stop") == "-ERR Operation Failed\n"
    call.hangup()
    esl.wait_event("CHANNEL_HANGUP_COMPLETE", call.uuid)
    assert not [m for m in esl.events if parse_event(m).key.startswith("mod_audio_stream")]


@pytest.mark.parametrize("code", [1000, 1011])
def test_server_close_fires_disconnect_and_the_stream_stays_attached(sim, esl, ws, captures, code):
    call = held_call(sim)
    start_stream(esl, call, ws.url("/close"))
    _, connect = esl.wait_event("mod_audio_stream::connect", call.uuid)
    assert_same_layout(connect, captured_event(captures, "text_event-plain__mod_audio_stream__connect.bin"),
                       PLAYBACK_VARIABLES)
    peer = ws.next_peer()
    peer.next_frame(wsf.BINARY)
    peer.close(code, "server bye")
    assert peer.next_frame(wsf.CLOSE) == (wsf.CLOSE, wsf.close_payload(code, "server bye"))  # echoed
    event, message = esl.wait_event("mod_audio_stream::disconnect", call.uuid)
    captured = captured_event(captures, f"text_event-plain__mod_audio_stream__disconnect_code{code}.bin")
    assert event.body == parse_event(captured).body
    assert_same_layout(message, captured, PLAYBACK_VARIABLES)
    command = f"uuid_audio_stream {call.uuid}"
    assert esl.api(f"{command} send_text after-close") == "+OK Success\n"
    assert esl.api(f"{command} pause") == "+OK Success\n"
    assert start_stream(esl, call, ws.url("/again")) == "-ERR Operation Failed\n"
    assert esl.api(f"{command} stop") == "+OK Success\n"
    assert start_stream(esl, call, ws.url("/third")) == "+OK Success\n"
    esl.wait_event("mod_audio_stream::connect", call.uuid)
    call.hangup()


def error_cases():
    return ["refused", "refuse503", "bad_accept", "hang", "server_abort", "abort_ws_tcp"]


@pytest.mark.parametrize("case", error_cases())
def test_connection_errors_fire_the_captured_error_and_detach_the_stream(sim, esl, captures, case):
    expected = {
        "refused": (6, "Connection refused (system error 111)", "error_code6"),
        "refuse503": (6, "WebSocket upgrade failed", "error_code6"),
        "bad_accept": (6, "WebSocket upgrade failed", "error_code6"),
        "hang": (10, "Timeout", "error_code10"),
        "server_abort": (1, "Connection closed without WebSocket CLOSE (abnormal EOF)", "error_code1"),
        "abort_ws_tcp": (1, "Connection closed without WebSocket CLOSE (abnormal EOF)", "error_code1"),
    }[case]
    code, text, example = expected
    server = WsServer(case if case in ("refuse503", "bad_accept", "hang") else "accept")
    if case == "refused":
        server.stop()  # nothing listens on that port any more
    call = held_call(sim)
    started = time.monotonic()
    assert start_stream(esl, call, server.url("/x")) == "+OK Success\n"
    if case in ("server_abort", "abort_ws_tcp"):
        esl.wait_event("mod_audio_stream::connect", call.uuid)
        peer = server.next_peer()
        peer.next_frame(wsf.BINARY)
        if case == "server_abort":
            peer.abort()
        else:
            sim.streams_for(call.uuid)[0].abort_ws_tcp()
    event, message = esl.wait_event("mod_audio_stream::error", call.uuid)
    assert json.loads(event.body) == {"status": "error", "message": {"code": code, "error": text}}
    assert event.body == json.dumps(json.loads(event.body), separators=(",", ":"))
    assert_same_layout(message, captured_event(captures, f"text_event-plain__mod_audio_stream__{example}.bin"),
                       PLAYBACK_VARIABLES)
    if case == "hang":
        assert 0.9 <= time.monotonic() - started <= 2.0
    # The module detached the stream itself: nothing to stop, and a new start is allowed.
    assert esl.api(f"uuid_audio_stream {call.uuid} stop") == "-ERR Operation Failed\n"
    assert esl.api(f"uuid_audio_stream {call.uuid} send_text x") == "-ERR Operation Failed\n"
    assert start_stream(esl, call, server.url("/again")) == "+OK Success\n"
    call.hangup()
    server.stop()


def test_server_text_becomes_a_json_event_and_stream_audio_a_play_event(sim, esl, ws, captures):
    call = held_call(sim)
    start_stream(esl, call, ws.url("/text"))
    peer = ws.next_peer()
    peer.next_frame(wsf.BINARY)
    peer.send_text('{"type":"transcript","text":"hello from ws server"}')
    event, message = esl.wait_event("mod_audio_stream::json", call.uuid)
    assert event.body == '{"type":"transcript","text":"hello from ws server"}'
    assert_same_layout(message, captured_event(captures, "text_event-plain__mod_audio_stream__json.bin"),
                       PLAYBACK_VARIABLES)
    audio = signals.tone(400, 0.1, 8000)
    peer.send_text(json.dumps({"type": "streamAudio", "data": {
        "audioDataType": "raw", "sampleRate": 8000, "audioData": __import__("base64").b64encode(audio).decode()}}))
    event, message = esl.wait_event("mod_audio_stream::play", call.uuid)
    played = json.loads(event.body)
    assert list(played) == ["audioDataType", "sampleRate", "file"] and played["file"].endswith("_0.tmp.r8")
    with open(played["file"], "rb") as handle:
        assert handle.read() == audio
    call.hangup()
    assert sim.streams_for(call.uuid)[0].ended.wait(WAIT)
    assert not os.path.exists(played["file"])


def test_a_junk_rate_fails_yet_leaks_a_connected_websocket(sim, esl, ws):
    call = held_call(sim)
    assert start_stream(esl, call, ws.url("/leak"), rate="abc") == "-ERR Operation Failed\n"
    esl.wait_event("mod_audio_stream::connect", call.uuid)
    peer = ws.next_peer()
    [leak] = sim.leaked_streams
    assert leak.connected.wait(WAIT) and leak.uuid == call.uuid
    assert esl.api(f"uuid_audio_stream {call.uuid} stop") == "-ERR Operation Failed\n"  # not attached
    call.hangup()
    with pytest.raises(Empty):
        peer.next_frame(timeout=0.3)  # no audio, no close: it outlives the call
    assert not leak.ended.is_set()
    sim.stop()
    assert leak.ended.wait(WAIT) and peer.closed.wait(WAIT)


@pytest.mark.parametrize("option, sizes", [({"odd_frames": True}, {321, 319}), ({"frame_sizes": [100, 7]}, {100, 7})])
def test_frame_size_faults_recut_the_same_audio(sim, esl, ws, option, sizes):
    call = held_call(sim, **option)
    start_stream(esl, call, ws.url("/odd"))
    peer = ws.next_peer()
    seen = {len(peer.next_frame(wsf.BINARY)[1]) for _ in range(6)}
    assert seen == sizes
    esl.api(f"uuid_audio_stream {call.uuid} stop")
    assert peer.closed.wait(WAIT)
    [stream] = sim.streams_for(call.uuid)
    assert stream.sent_pcm == b"".join(peer.binary_payloads())
    assert len(stream.sent_pcm) % 320 == 0  # whole 20 ms buffers, however they were cut
    call.hangup()


# ---- faults and lifecycle ----


def test_drop_esl_connections_closes_without_a_notice(sim, esl):
    sim.drop_esl_connections()
    assert esl.read_until_eof() == b""
    other = EslClient(sim.esl_port).login()
    sim.drop_esl_connections(reset=True)
    with pytest.raises(ConnectionResetError):
        other.read_until_eof()


def test_cut_next_event_sends_part_of_it_then_closes(sim, esl):
    sim.cut_next_event(after_bytes=50)
    sim.place_call("9999", duration_s=0.5)
    data = esl.read_until_eof()
    assert len(data) == 50 and data.startswith(b"Content-Length: ")


def test_delayed_replies_hold_back_the_reply_and_the_events_behind_it(sim, esl):
    sim.delay_replies(0.3)
    started = time.monotonic()
    esl.send("api status")
    sim.wait_for_command("api status")  # the api is running (held) when the call comes in
    call = sim.place_call("9999", duration_s=0.5)
    first = esl.read()
    assert first.content_type == "api/response" and time.monotonic() - started >= 0.3
    assert parse_event(esl.read()).name == "CHANNEL_CREATE"
    sim.delay_replies(0)
    assert call.hung_up.wait(WAIT)


def test_restart_keeping_calls_sends_the_shutdown_notice_and_comes_back_on_the_same_port(sim, esl, captures):
    call = held_call(sim)
    port = sim.esl_port
    sim.restart(keep_calls=True)
    assert esl.read_until_eof().endswith((captures / "esl" / "examples" /
                                          "text_disconnect-notice__shutdown.bin").read_bytes())
    assert sim.esl_port == port
    again = EslClient(port).login(subscription=None)
    assert json.loads(again.api("show channels as json"))["rows"][0]["uuid"] == call.uuid
    core = sim.identity.core_uuid
    sim.restart()
    assert call.hung_up.is_set() and sim.identity.core_uuid != core


def test_stop_sends_shutdown_events_then_the_notice(sim, captures):
    client = EslClient(sim.esl_port).login("event plain ALL")
    sim.stop()
    names = []
    while True:
        message = client.read()
        if message.content_type == "text/disconnect-notice":
            break
        names.append(parse_event(message).name)
    assert names[-2:] == ["SHUTDOWN", "MODULE_UNLOAD"]
    assert message.body == b"The system is being shut down.\n"
    assert client.read_until_eof() == b""


def test_received_commands_are_kept_in_order(sim, esl):
    esl.api("status")
    start = len(sim.received_commands)
    gevent.spawn(esl.api, "uuid_exists nobody")
    assert sim.wait_for_command("api uuid_exists", start=start) == "api uuid_exists nobody"
    assert sim.received_commands[:2] == ["auth ClueCon", SUBSCRIBE]
    other = EslClient(sim.esl_port).login(subscription=None)
    other.api("version")
    first, second = sim.all_connections
    assert first.commands == ["auth ClueCon", SUBSCRIBE, "api status", "api uuid_exists nobody"]
    assert second.commands == ["auth ClueCon", "api version"]
    with pytest.raises(TimeoutError, match="api never"):
        sim.wait_for_command("api never", timeout=0.1)


def test_place_call_explains_bad_arguments(sim, tmp_path):
    with pytest.raises(ValueError, match="codec_rate must be one of"):
        sim.place_call("9999", codec_rate=11025)
    with pytest.raises(ValueError, match="even number of bytes"):
        sim.place_call("9999", speech=b"\x00\x01\x02")
    with pytest.raises(ValueError, match="0 <= start_s < end_s"):
        sim.place_call("9999", plays=[(2.0, 1.0)])
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(3200))
    with pytest.raises(ValueError, match="must be mono 16-bit PCM"):
        sim.place_call("9999", speech=stereo)


def test_the_standalone_simulator_places_a_call_and_stops_on_sigterm():
    command = [sys.executable, "-m", "controller.simulator", "--esl-port", "0", "--call", "9999",
               "--caller", "2000", "--duration", "0.3", "--first-call-after", "0.5"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = Queue()
    gevent.spawn(lambda: [lines.put(line) for line in process.stderr])
    try:
        while not (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", lines.get(timeout=WAIT))):
            pass
        client = EslClient(int(match.group(1))).login()
        event, _ = client.wait_event("CHANNEL_HANGUP_COMPLETE")
        assert (event.get("Caller-Destination-Number"), event.get("Caller-Caller-ID-Number")) == ("9999", "2000")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT) == 0
        assert client.read().body == b"The system is being shut down.\n"
    finally:
        if process.poll() is None:
            process.kill()
