"""The simulator's newer fidelity, through real sockets: TCP_NODELAY, echo, chosen channel uuids."""

from __future__ import annotations

import json
import socket

import pytest

from test_simulator import EslClient, WsServer, held_call, start_stream


@pytest.fixture
def ws():
    server = WsServer()
    yield server
    server.stop()


@pytest.fixture
def esl(sim):
    client = EslClient(sim.esl_port).login()
    yield client
    client.close()


# ---- Event Socket connections ----


def test_event_socket_connections_have_tcp_nodelay(sim, esl):
    [connection] = sim.connections
    assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_echo_returns_its_argument(sim, esl):
    assert esl.api("echo hello there") == "hello there"


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
