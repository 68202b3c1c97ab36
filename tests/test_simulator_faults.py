"""The simulator's newer fidelity and fault knobs, through real sockets: HEARTBEAT, TCP_NODELAY, chosen channel
uuids, a switch that stops reading, a half-open Event Socket, and a killed FreeSWITCH."""

from __future__ import annotations

import json
import re
import select
import socket

import pytest

from controller.simulator import Simulator
from controller.simulator import ws_frames as wsf
from test_simulator import WAIT, EslClient, captured_event, event_header_names, held_call, start_stream


def no_data_waiting(sock) -> bool:
    """True when nothing, not even an EOF, is waiting to be read (checked without waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


# ---- HEARTBEAT ----


def test_heartbeat_fires_every_20_s_by_default():
    assert Simulator().heartbeat_interval_s == 20.0
    assert Simulator(heartbeat_interval_s=None).heartbeat_interval_s is None


@pytest.mark.parametrize("event_format", ["plain", "json"])
def test_heartbeats_have_the_captured_layout_and_come_every_interval(sim, captures, event_format):
    call = held_call(sim)
    sim.heartbeat_interval_s = 0.1
    client = EslClient(sim.esl_port).login(f"event {event_format} HEARTBEAT")
    try:
        first, message = client.wait_event("HEARTBEAT")
        second, _ = client.wait_event("HEARTBEAT")
    finally:
        client.close()
    captured = captured_event(captures, f"text_event-{event_format}__HEARTBEAT.bin")
    assert event_header_names(message) == event_header_names(captured)
    assert first.get("Core-UUID") == sim.identity.core_uuid
    assert (first.get("Event-Info"), first.get("FreeSWITCH-Version")) == ("System Ready", "1.10.12-release~64bit")
    assert first.get("Event-Calling-Function") == "send_heartbeat"
    assert (first.get("Session-Count"), first.get("Session-Since-Startup")) == ("1", "1")  # the held call
    assert re.fullmatch(r"0 years, 0 days, 0 hours, 0 minutes, \d+ seconds, \d+ milliseconds, \d+ microseconds",
                        first.get("Up-Time"))
    assert re.fullmatch(r"\d+\.\d{6}", first.get("Idle-CPU"))
    apart_us = int(second.get("Event-Date-Timestamp")) - int(first.get("Event-Date-Timestamp"))
    assert 80_000 <= apart_us <= 1_000_000
    assert int(second.get("Event-Sequence")) > int(first.get("Event-Sequence"))
    call.hangup()


# ---- Event Socket connections ----


def test_event_socket_connections_have_tcp_nodelay(sim, esl):
    [connection] = sim.connections
    assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_echo_returns_its_argument(sim, esl):
    assert esl.api("echo hello there") == "hello there"


def test_a_switch_that_stops_reading_fills_the_buffers_and_still_serves_new_connections(sim, esl):
    sim.stop_reading()
    esl.sock.setblocking(False)
    sent, chunk = 0, b"api echo " + b"x" * 65536
    with pytest.raises(BlockingIOError):
        while sent < 256 * 1024 * 1024:  # far beyond any socket buffer
            sent += esl.sock.send(chunk)
    assert sim.received_commands == ["auth ClueCon", esl_subscription(sim)]
    other = EslClient(sim.esl_port).login(subscription=None)
    assert other.api("echo still here") == "still here"
    other.close()


def esl_subscription(sim) -> str:
    return sim.all_connections[0].commands[1]


def test_a_frozen_connection_stays_open_and_silent_while_others_go_on(sim, esl):
    frozen = esl
    sim.freeze_esl_connections()
    frozen.send("api status")
    sim.heartbeat_interval_s = 0.05
    other = EslClient(sim.esl_port).login("event plain HEARTBEAT")
    for _ in range(3):  # the clock: other connections hear the switch all this time
        other.wait_event("HEARTBEAT")
    assert other.api("echo alive") == "alive"
    assert "api status" not in sim.received_commands  # what arrives on a frozen connection is ignored
    assert no_data_waiting(frozen.sock)  # no reply, no heartbeat, and no EOF: open at TCP level
    assert len(sim.connections) == 2
    other.close()


# ---- chosen uuids ----


def test_a_chosen_uuid_is_used_as_written_and_found_only_by_the_exact_string(sim, esl, ws):
    chosen = "ABCDEF01-2345-4789-ABCD-0123456789AB"
    lower = chosen.lower()
    call = held_call(sim, uuid=chosen)
    assert call.uuid == chosen
    answer, _ = esl.wait_event("CHANNEL_ANSWER")
    assert (answer.uuid, answer.get("Channel-Call-UUID")) == (chosen, chosen)
    assert json.loads(esl.api("show channels as json"))["rows"][0]["uuid"] == chosen
    # FreeSWITCH's session hash is case-sensitive: the lower-case spelling names no channel.
    assert (esl.api(f"uuid_exists {chosen}"), esl.api(f"uuid_exists {lower}")) == ("true", "false")
    assert esl.api(f"uuid_getvar {lower} uuid") == "-ERR No such channel!\n"
    assert esl.api(f"uuid_setvar {lower} STREAM_BUFFER_SIZE 40") == "-ERR No such channel!\n"
    assert esl.api(f"uuid_kill {lower}") == "-ERR No such channel!\n"
    assert start_stream(esl, call, ws.url()).replace(chosen, lower) == "+OK Success\n"  # exact spelling works
    lower_start = esl.api(f"uuid_audio_stream {lower} start {ws.url('/other')} mono 8k")
    assert lower_start == "-ERR Operation Failed\n"
    assert [stream.uuid for stream in sim.streams] == [chosen]
    with pytest.raises(ValueError, match="already has uuid"):
        sim.place_call("9999", uuid=chosen)
    call.hangup()


# ---- a killed FreeSWITCH ----


def test_a_crash_ends_every_connection_without_a_word_and_comes_back_empty(sim, esl, ws):
    call = held_call(sim, bridge_to="user/1001")
    assert start_stream(esl, call, ws.url()) == "+OK Success\n"
    esl.wait_event("mod_audio_stream::connect", call.uuid)
    peer = ws.next_peer()
    peer.next_frame(wsf.BINARY)  # audio is flowing
    [stream] = sim.streams
    port, core_uuid, fired = sim.esl_port, sim.identity.core_uuid, len(sim.fired_events)

    sim.crash()

    try:
        assert esl.read_until_eof() == b""  # no disconnect notice, no hangup events: FIN
    except ConnectionResetError:
        pass  # or RST, had the switch left data unread
    assert peer.closed.wait(WAIT)
    assert wsf.CLOSE not in [opcode for opcode, _ in peer.all_frames]  # no close frame
    assert stream.ended.is_set() and "crashed" in stream.end_reason and "no WebSocket close frame" in stream.end_reason
    assert stream.events == ["connect"]  # no ::error, no ::disconnect
    assert call.vanished and call.b_leg.vanished and call.hung_up.is_set() and call.hangup_cause == ""
    assert list(sim.fired_events)[fired:] == []  # nothing fired, not even to nobody
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT)

    sim.start()
    assert sim.esl_port == port and sim.identity.core_uuid != core_uuid
    again = EslClient(port).login()
    assert again.api("show channels as json") == '{"row_count": 0}\n'
    assert again.api(f"uuid_exists {call.uuid}") == "false"
    again.close()
