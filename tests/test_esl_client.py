"""The Event Socket client against the simulator, through real sockets: each greenswitch defect the controller
cannot live with is shown not to affect it, and the connection comes back after the switch restarts."""

from __future__ import annotations

import logging
import secrets
import socket
import time
import traceback

import gevent
import pytest
from gevent.event import Event as GeventEvent
from gevent.queue import Queue
from gevent.server import StreamServer
from greenswitch.esl import NotConnectedError
from prometheus_client import generate_latest

import controller.metrics  # noqa: F401  (the controller's metrics, registered where generate_latest looks)
from controller.esl import protocol
from controller.esl.backoff import Backoff
from controller.esl.client import (
    AccessDenied,
    AuthenticationError,
    Command,
    CommandError,
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    EventSocketClient,
    api,
    bgapi,
)
from harness import first_line, wait_until

SUBSCRIPTION = ("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB HEARTBEAT DTMF PLAYBACK_START "
                "PLAYBACK_STOP CUSTOM mod_audio_stream::connect mod_audio_stream::disconnect "
                "mod_audio_stream::error mod_audio_stream::json mod_audio_stream::play filestring::open "
                "filestring::close")


def make_client(sim, password="ClueCon", **kwargs) -> EventSocketClient:
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("command_timeout", 2.0)
    kwargs.setdefault("backoff", Backoff(initial_s=0.05, max_s=0.2, jitter=0.0))
    return EventSocketClient("127.0.0.1", sim.esl_port, password, **kwargs)


def connected(sim, **kwargs) -> EventSocketClient:
    client = make_client(sim, **kwargs)
    client.connect()
    client.subscribe()
    return client


class ScriptedSwitch:
    """A raw Event Socket peer on loopback, for what the simulator has no knob for: it sends auth/request,
    then answers only the commands named in `replies` (by first word, with that Reply-Text) and is silent
    to everything else."""

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.port = self.server.server_port

    def _serve(self, sock, address) -> None:
        reader = protocol.CommandReader()
        try:
            sock.sendall(protocol.auth_request())
            while data := sock.recv(65536):
                for command in reader.feed(data):
                    reply = self.replies.get(command.split(" ", 1)[0])
                    if reply is not None:
                        sock.sendall(protocol.command_reply(reply))
        except OSError:
            pass

    def stop(self) -> None:
        self.server.stop(timeout=0)


def secret_password() -> str:
    return f"S3cretPassw0rd-{secrets.token_hex(8)}"


def chained_text(exc: BaseException) -> str:
    """Everything a traceback of `exc` would print, its causes and contexts included."""
    return "".join(traceback.format_exception(exc))


def test_authenticates_and_subscribes_narrowly(sim):
    client = connected(sim)
    try:
        assert sim.received_commands[:2] == ["auth ClueCon", SUBSCRIPTION]
        assert client.api("uuid_exists 00000000-0000-0000-0000-000000000000") == "false"
    finally:
        client.close()


def test_wrong_password_is_a_clear_error(sim):
    client = make_client(sim, password="nope")
    with pytest.raises(AuthenticationError, match="refused the Event Socket password"):
        client.connect()
    assert not client.connected


def test_acl_rejection_is_a_clear_error(sim):
    sim.reject_acl = True
    with pytest.raises(AccessDenied, match="Access Denied, go away"):
        make_client(sim).connect()


def test_refused_connection_is_a_clear_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    client = EventSocketClient("127.0.0.1", port, "ClueCon", connect_timeout=2.0)
    with pytest.raises(ConnectError, match="connection refused"):
        client.connect()


def test_connect_gives_up_when_server_never_sends_auth_request(sim):
    sim.silent_accept = True
    client = make_client(sim, connect_timeout=0.3)
    with gevent.Timeout(5):  # greenswitch waits here forever
        with pytest.raises(ConnectError, match="sent no auth/request"):
            client.connect()


def test_command_in_flight_fails_when_socket_drops(sim):
    client = connected(sim, command_timeout=30.0)
    sim.delay_replies(30.0)
    pending = gevent.spawn(client.api, "status")
    sim.wait_for_command(lambda c: c == "api status", timeout=5)
    sim.drop_esl_connections()
    with gevent.Timeout(5):  # greenswitch's send() never returns here
        with pytest.raises(ConnectionLost):
            pending.get()


def test_every_command_has_a_deadline(sim):
    client = connected(sim, command_timeout=0.3)
    sim.delay_replies(5.0)
    with gevent.Timeout(5):
        with pytest.raises(CommandTimeout, match="no reply"):
            client.api("status")
    client.close()


def test_eof_in_the_middle_of_an_event_body_ends_the_session(sim):
    client = connected(sim)
    sim.cut_next_event(after_bytes=200)
    sim.place_call("9999", duration_s=5.0)
    with gevent.Timeout(5):  # greenswitch spins at 100% CPU here instead
        client._receive_events_greenlet.join()
    assert not client.connected
    assert client.last_error == "connection closed in the middle of a message"


def test_same_object_connects_again_after_a_disconnect(sim):
    client = connected(sim)
    sim.drop_esl_connections()
    client._receive_events_greenlet.join(timeout=5)
    assert not client.connected
    client.connect()
    client.subscribe()
    assert client.api("uuid_exists 00000000-0000-0000-0000-000000000000") == "false"
    client.close()


def test_events_arrive_with_exact_headers_and_bodies(sim):
    client = connected(sim)
    answers: Queue = Queue()
    client.register_handle("CHANNEL_ANSWER", answers.put)
    # On the wire the newline is %0A; greenswitch decodes the whole block and turns it into a fake header.
    call = sim.place_call("9999", caller_id_name="Line\nInjected: yes", caller_id_number="100%25",
                          duration_s=5.0)
    event = answers.get(timeout=5)
    assert event.uuid == call.uuid
    assert event.headers["Caller-Caller-ID-Name"] == "Line\nInjected: yes"
    assert "Injected" not in event.headers
    assert event.headers["Caller-Caller-ID-Number"] == "100%25"
    assert event.headers["Caller-Destination-Number"] == "9999"
    # A background job's result is an event body: it comes back whole.
    assert client.bgapi(f"uuid_audio_stream {call.uuid} stop") == "-ERR Operation Failed\n"
    client.close()


def test_blank_header_values_and_module_json_bodies(sim):
    client = connected(sim)
    errors: Queue = Queue()
    client.register_handle("mod_audio_stream::error", errors.put)
    call = sim.place_call("9999", caller_id_name="", duration_s=5.0)
    call.answered.wait(5)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert client.api(f"uuid_audio_stream {call.uuid} start ws://127.0.0.1:{port}/x mono 8000") == "+OK Success\n"
    event = errors.get(timeout=5)
    assert event.body == '{"status":"error","message":{"code":6,"error":"Connection refused (system error 111)"}}'
    assert event.headers["Caller-Caller-ID-Name"] == ""
    client.close()


def test_a_slow_handler_does_not_delay_other_calls(sim):
    client = connected(sim)
    release = GeventEvent()
    seen: Queue = Queue()
    first = sim.place_call("9999", caller_id_number="slow", duration_s=10.0, answer=False)

    def handler(event):
        if event.headers["Caller-Caller-ID-Number"] == "slow":
            release.wait(10)  # a handler stuck on one call (e.g. a slow command)
        seen.put(event.headers["Caller-Caller-ID-Number"])

    client.register_handle("CHANNEL_ANSWER", handler)
    first.answer()
    sim.place_call("9999", caller_id_number="fast", duration_s=10.0)
    assert seen.get(timeout=5) == "fast"
    release.set()
    assert seen.get(timeout=5) == "slow"
    client.close()


def test_reconnects_after_restart_and_events_flow_again(sim):
    connects: Queue = Queue()
    answers: Queue = Queue()
    client = make_client(sim, on_connect=lambda c: connects.put(time.monotonic()))
    client.register_handle("CHANNEL_ANSWER", answers.put)
    client.start()
    try:
        connects.get(timeout=5)
        sim.restart()
        connects.get(timeout=10)
        call = sim.place_call("9999", duration_s=5.0)
        assert answers.get(timeout=5).uuid == call.uuid
        assert sim.received_commands.count(SUBSCRIPTION) == 2
    finally:
        client.close()


# ---- several commands in one write ----


def test_commands_in_order_go_out_in_one_write_and_each_gives_its_own_result(sim):
    client = connected(sim)
    try:
        call = sim.place_call("9999", duration_s=10.0, auto_hangup=False)
        assert call.answered.wait(5)
        results = client.run_in_order([
            api(f"uuid_setvar_multi {call.uuid} A=1;B=2"),
            bgapi(f"uuid_getvar {call.uuid} B"),  # a job: it runs only after the api before it has answered
            api(f"uuid_getvar {call.uuid} A"),
            bgapi("no_such_api"),
        ])
        assert results == ["+OK\n", "2", "1", "-ERR no_such_api Command not found!\n"]
        [connection] = sim.connections
        sent = [(first_line(c), read) for c, read in zip(connection.commands, connection.command_reads)][-4:]
        assert [c for c, _ in sent] == [f"api uuid_setvar_multi {call.uuid} A=1;B=2", f"bgapi uuid_getvar {call.uuid} B",
                                        f"api uuid_getvar {call.uuid} A", "bgapi no_such_api"]
        assert len({read for _, read in sent}) == 1  # one write, one read at the switch
        assert client._jobs == {}  # nothing left registered
    finally:
        client.close()


def test_commands_in_order_keep_each_ones_timeout(sim):
    client = connected(sim, command_timeout=5.0)
    try:
        sim.delay_replies(0.5)  # each api's reply waits 0.5 s, one after the other
        began = time.monotonic()
        quick, patient = client.run_in_order([api("echo a", timeout=0.2), api("echo b")])
        assert isinstance(quick, CommandTimeout) and str(quick) == "no reply to api echo within 0.2s"
        assert patient == "b" and time.monotonic() - began >= 0.9  # behind the first one's delayed reply
    finally:
        client.close()


def test_a_dropped_connection_fails_every_command_in_order_at_once(sim):
    client = connected(sim, command_timeout=30.0)
    sim.delay_replies(30.0)
    pending = client.send_in_order([api("status"), bgapi("status"), api("echo x")])
    sim.wait_for_command("api status", timeout=5)
    sim.drop_esl_connections()
    with gevent.Timeout(2):  # not the 30 s timeouts
        results = pending.results()
    assert [type(r) for r in results] == [ConnectionLost] * 3
    assert client._jobs == {}


def test_commands_in_order_without_a_connection_or_with_a_bad_one_send_nothing(sim):
    client = make_client(sim)
    results = client.run_in_order([api("status"), bgapi("status")])
    assert [type(r) for r in results] == [NotConnectedError] * 2 and client._jobs == {}
    client = connected(sim)
    try:
        before = len(sim.received_commands)
        with pytest.raises(ValueError, match="^api uuid_kill: the command contains a line break"):
            client.send_in_order([api("status"), api("uuid_kill x\n\nexit")])
        with pytest.raises(ValueError, match="api or bgapi"):
            client.send_in_order([Command("exit", "")])
        assert client.api("echo still in step") == "still in step"  # nothing half-sent before it
        assert sim.received_commands[before:] == ["api echo still in step"] and client._jobs == {}
    finally:
        client.close()


def test_a_background_job_whose_result_comes_with_its_reply_is_not_missed():
    # The job's event in the same read as the +OK Job-UUID: its waiter must exist before the command is written.
    def serve(sock, address):
        reader = protocol.CommandReader()
        sock.sendall(protocol.auth_request())
        while data := sock.recv(65536):
            for command in reader.feed(data):
                line, _, header = command.partition("\n")
                if line.startswith("bgapi "):
                    job = header.split(": ", 1)[1]
                    event = protocol.event_message("plain", [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", job)],
                                                   "+OK Success\n")
                    sock.sendall(protocol.command_reply(f"+OK Job-UUID: {job}", [("Job-UUID", job)]) + event)
                elif line.startswith("api "):
                    sock.sendall(protocol.api_response("-ERR busy\n"))
                else:  # auth, event
                    sock.sendall(protocol.command_reply("+OK accepted" if line.startswith("auth") else "+OK"))

    server = StreamServer(("127.0.0.1", 0), serve)
    server.start()
    client = EventSocketClient("127.0.0.1", server.server_port, "ClueCon", connect_timeout=1.0, command_timeout=1.0)
    try:
        client.connect()
        client.subscribe()
        assert client.run_in_order([api("uuid_setvar_multi x A=1"), bgapi("uuid_audio_stream x start")]) == [
            "-ERR busy\n", "+OK Success\n"]
    finally:
        client.close()
        server.stop(timeout=0)


def test_a_refused_bgapi_in_order_is_a_command_error():
    switch = ScriptedSwitch({"auth": "+OK accepted", "event": "+OK event listener enabled plain",
                             "bgapi": "-ERR permission denied"})
    client = EventSocketClient("127.0.0.1", switch.port, "ClueCon", connect_timeout=1.0, command_timeout=0.5)
    try:
        client.connect()
        client.subscribe()
        [refused] = client.run_in_order([bgapi("uuid_audio_stream x start")])
        assert isinstance(refused, CommandError) and str(refused) == "bgapi refused: '-ERR permission denied'"
    finally:
        client.close()
        switch.stop()


# ---- secrets ----


def test_a_password_that_gets_no_answer_reaches_no_log_error_or_metric(caplog):
    password = secret_password()
    caplog.set_level(logging.DEBUG)
    switch = ScriptedSwitch({})  # greets, then never answers auth
    client = EventSocketClient("127.0.0.1", switch.port, password, connect_timeout=1.0, command_timeout=0.2,
                               backoff=Backoff(initial_s=0.05, max_s=0.1, jitter=0.0))
    other = EventSocketClient("127.0.0.1", switch.port, password, connect_timeout=1.0, command_timeout=0.2)
    try:
        client.start()
        wait_until(lambda: sum("no answer to auth" in r.getMessage() for r in caplog.records) >= 2, 10,
                   "two failed attempts to authenticate")
        with pytest.raises(ConnectError, match="no answer to auth") as raised:
            other.connect()
    finally:
        client.close()
        other.close()
        switch.stop()
    assert "no reply to auth within" in client.last_error
    assert password not in client.last_error
    assert password not in chained_text(raised.value)
    assert password not in caplog.text  # messages and any tracebacks, every logger
    assert all(password not in r.getMessage() for r in caplog.records)
    assert password not in generate_latest().decode()


def test_commands_are_named_without_their_arguments_in_errors(caplog):
    secret = secret_password()
    caplog.set_level(logging.DEBUG)
    switch = ScriptedSwitch({"auth": "+OK accepted", "event": "+OK event listener enabled plain",
                             "bgapi": "+OK Job-UUID: 1"})  # never answers api, never runs the job
    client = EventSocketClient("127.0.0.1", switch.port, "ClueCon", connect_timeout=1.0, command_timeout=0.2)
    try:
        client.connect()
        client.subscribe()
        with pytest.raises(CommandTimeout, match="^no result for background job bgapi uuid_setvar") as no_job:
            client.bgapi(f"uuid_setvar 00000000-0000-0000-0000-000000000000 token {secret}")
        # Last: the unanswered api's waiter stays queued and would take any later reply.
        with pytest.raises(CommandTimeout, match="^no reply to api uuid_setvar within") as no_reply:
            client.api(f"uuid_setvar 00000000-0000-0000-0000-000000000000 token {secret}")
        with pytest.raises(ValueError, match="^api uuid_setvar: the command contains a line break") as smuggled:
            client.api(f"uuid_setvar 00000000-0000-0000-0000-000000000000 token {secret}\n\nexit")
        in_order = client.run_in_order([api(f"uuid_setvar_multi 00000000-0000-0000-0000-000000000000 t={secret}"),
                                        bgapi(f"uuid_audio_stream 00000000-0000-0000-0000-000000000000 start {secret}")])
    finally:
        client.close()
        switch.stop()
    assert [str(e) for e in in_order] == ["no reply to api uuid_setvar_multi within 0.2s",
                                          "no reply to bgapi uuid_audio_stream within 0.2s"]
    for raised in (no_reply, no_job, smuggled):
        assert secret not in chained_text(raised.value)
    assert all(secret not in chained_text(e) for e in in_order)
    assert secret not in caplog.text


# ---- lifecycle ----


def test_close_before_any_connect_is_clean():
    client = EventSocketClient("127.0.0.1", 1, "ClueCon")  # never connects: nothing is dialled
    client.close()
    client.close()
    assert not client.connected and not client.connected_event.is_set()
    with pytest.raises(NotConnectedError):
        client.api("status")


# ---- when commands may go out ----


def test_a_command_issued_while_connecting_waits_for_auth_and_subscription(sim):
    sim.delay_handshake(0.3)  # a window in which the socket is up but the handshake still runs
    client = make_client(sim)
    client.start()
    try:
        sim.wait_for_command("auth ", timeout=5)
        assert client.connected and not client.connected_event.is_set()
        early = gevent.spawn(client.api, "uuid_exists 00000000-0000-0000-0000-000000000000")
        assert early.get(timeout=5) == "false"  # a real reply, not -ERR command not found
        assert [first_line(c) for c in sim.received_commands] == [
            "auth ClueCon", SUBSCRIPTION, "api uuid_exists 00000000-0000-0000-0000-000000000000"]
    finally:
        client.close()


def test_a_command_fails_at_once_with_no_connection_or_when_the_handshake_is_cut(sim):
    client = make_client(sim, command_timeout=30.0)
    with gevent.Timeout(1):
        with pytest.raises(NotConnectedError):
            client.api("status")  # never connected
    sim.delay_handshake(30.0)
    client.start()
    try:
        sim.wait_for_command("auth ", timeout=5)
        waiting = gevent.spawn(client.api, "status")
        sim.drop_esl_connections()
        with gevent.Timeout(2):  # not the 30 s command timeout
            with pytest.raises(NotConnectedError):
                waiting.get()
    finally:
        client.close()


# ---- a switch that stops reading ----


def test_a_command_the_switch_does_not_read_times_out_and_the_client_reconnects(sim):
    connects: Queue = Queue()
    client = make_client(sim, command_timeout=1.0, on_connect=connects.put)
    client.start()
    try:
        connects.get(timeout=5)
        sim.stop_reading()
        big = gevent.spawn(client.api, "echo " + "x" * (16 * 1024 * 1024))  # far more than socket buffers hold
        small = gevent.spawn(client.api, "status")  # queued behind it
        with gevent.Timeout(5):  # the send used to block for ever, and every later command behind it
            with pytest.raises(CommandTimeout, match="^api echo could not be sent within 1s"):
                big.get()
            with pytest.raises((CommandTimeout, NotConnectedError)):
                small.get()
        assert client.last_error.startswith("api echo could not be sent within 1s")
        connects.get(timeout=5)
        assert client.api("echo back again") == "back again"
        assert sim.received_commands.count("auth ClueCon") == 2
    finally:
        client.close()


# ---- a half-open connection ----


def test_the_socket_has_nodelay_and_short_keepalive(sim):
    client = connected(sim)
    try:
        sock = client.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert [sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, option))
                    for option in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")] == [10, 5, 3]
    finally:
        client.close()


def test_heartbeats_keep_the_connection_and_a_half_open_one_is_replaced(sim):
    sim.heartbeat_interval_s = 0.2
    connects: Queue = Queue()
    heartbeats: Queue = Queue()
    client = make_client(sim, liveness_timeout=1.0, on_connect=lambda c: connects.put(time.monotonic()))
    client.register_handle("HEARTBEAT", heartbeats.put)
    client.start()
    try:
        connects.get(timeout=5)
        for _ in range(15):  # 3 s: three liveness timeouts with nothing but heartbeats
            heartbeats.get(timeout=5)
        assert sim.received_commands.count("auth ClueCon") == 1 and client.connected_event.is_set()
        frozen_at = time.monotonic()
        sim.freeze_esl_connections()
        reconnected_at = connects.get(timeout=5)
        assert reconnected_at - frozen_at >= 0.7  # the last heartbeat came at most 0.2 s before the freeze
        assert client.last_error.startswith(f"nothing received from 127.0.0.1:{sim.esl_port} for 1 s")
        assert sim.received_commands.count("auth ClueCon") == 2
        heartbeats.get(timeout=5)  # flowing again, on the new connection
    finally:
        client.close()


def test_liveness_timeout_must_be_positive_or_none():
    with pytest.raises(ValueError, match="liveness_timeout"):
        EventSocketClient("127.0.0.1", 1, "ClueCon", liveness_timeout=0)
    assert EventSocketClient("127.0.0.1", 1, "ClueCon").liveness_timeout == 60.0
