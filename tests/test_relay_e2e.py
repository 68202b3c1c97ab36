"""Voice agents end to end, through real sockets: the simulated switch streams a call, the controller relays it
to an agent over Twilio Media Streams (or raw), and plays the agent's audio back into the call through the
module (streamAudio -> ::play -> uuid_broadcast). What the caller heard is read from the simulator."""

from __future__ import annotations

import base64
import json
import os
import sys
import time

import pytest
from gevent.queue import Queue
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler
from harness import Harness, wait_until

from controller.relay.audio import ulaw_from_pcm
from controller.simulator import signals
from controller.simulator.listen import find

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import echo_agent  # noqa: E402

RATE = 8000


class ScriptedAgent:
    """An agent that records every message and lets the test send its own."""

    def __init__(self, *, protocol: str = "twilio") -> None:
        self.protocol = protocol
        self.connections: list[list] = []  # per connection, the messages received (text parsed as JSON)
        self.sockets: list = []
        self.arrived = Queue()
        self.server = WSGIServer(("127.0.0.1", 0), self._app, handler_class=WebSocketHandler, log=None)
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.server_port}/media?key=s3cr3t"

    def _app(self, environ, start_response):
        ws = environ["wsgi.websocket"]
        received: list = []
        self.connections.append(received)
        self.sockets.append(ws)
        while True:
            message = ws.receive()
            if message is None:
                break
            parsed = json.loads(message) if isinstance(message, str) else bytes(message)
            received.append(parsed)
            self.arrived.put(parsed)
        return []

    def messages(self, event: str, connection: int = -1) -> list[dict]:
        return [m for m in self.connections[connection] if isinstance(m, dict) and m.get("event") == event]

    def send(self, message: dict, connection: int = -1) -> None:
        self.sockets[connection].send(json.dumps(message))

    def say(self, pcm: bytes, connection: int = -1) -> None:
        """Audio for the caller, as Twilio agents send it: 20 ms µ-law media messages, all at once."""
        sid = self.messages("start", connection)[0]["start"]["streamSid"]
        ulaw = ulaw_from_pcm(pcm)
        for at in range(0, len(ulaw), 160):
            self.send({"event": "media", "streamSid": sid,
                       "media": {"payload": base64.b64encode(ulaw[at:at + 160]).decode()}}, connection)

    def stream_sid(self, connection: int = -1) -> str:
        return self.messages("start", connection)[0]["start"]["streamSid"]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def relay_rule(url: str, extra: str = "") -> str:
    return f"""\
- name: ext9999
  match: {{destination: "9999"}}
  metadata: {{queue: support}}
  relay: {{url: "{url}", custom_parameters: {{lang: en-GB}}{extra}}}
"""


@pytest.fixture
def agent():
    made = []

    def make(**options):
        a = ScriptedAgent(**options)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()


def parked_call_with_agent(sim, tmp_path, agent, **options):
    """(agent, harness, call): a relayed call on hold for as long as the test wants (in endless_playback of
    silence, as agent calls should be), its agent already told of it. The caller hangs up when the test says."""
    a = agent(protocol=options.get("protocol", "twilio"))
    extra = ", protocol: raw" if options.get("protocol") == "raw" else ""
    h = Harness(sim, tmp_path / "rec", relay_rule(a.url, extra)).start()
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False, plays=None, app="endless_silence")
    wait_until(lambda: a.connections and len(a.connections[0]) >= options.get("messages", 2), 10,
               "the agent to hear of the call")
    return a, h, call


def test_the_twilio_message_sequence_and_every_field(sim, tmp_path, agent):
    a = agent()
    h = Harness(sim, tmp_path / "rec", relay_rule(a.url)).start()
    try:
        speech = signals.speech_like(1.0, RATE, seed=5)
        call = sim.place_call("9999", caller_id_number="1001", speech=speech, duration_s=1.0, plays=None)
        assert call.hung_up.wait(10)
        h.wait_closed(call.uuid)
        wait_until(lambda: a.messages("stop"), 5, "the stop message")
    finally:
        h.stop()
    [stream] = sim.streams_for(call.uuid)
    events = [m["event"] for m in a.connections[0]]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert set(events[2:-1]) == {"media"}
    assert a.connections[0][0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = a.connections[0][1]
    sid = start["streamSid"]
    assert start["sequenceNumber"] == "1" and start["start"]["streamSid"] == sid and sid.startswith("MZ")
    call_sid = "CA" + call.uuid.replace("-", "")  # Twilio's form; the uuid itself is a parameter
    assert start["start"]["callSid"] == call_sid and start["start"]["accountSid"].startswith("AC")
    # In the order Twilio writes them.
    assert list(start["start"]) == ["accountSid", "streamSid", "callSid", "tracks", "mediaFormat", "customParameters"]
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["customParameters"] == {"uuid": call.uuid, "caller": "1001", "destination": "9999",
                                                  "rule": "ext9999",
                                                  "from_number": "1001", "to_number": "9999",
                                                  "queue": "support", "lang": "en-GB"}
    media = a.messages("media")
    assert [m["sequenceNumber"] for m in media] == [str(n) for n in range(2, 2 + len(media))]
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 1 + len(media))]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * n) for n in range(len(media))]
    assert {m["media"]["track"] for m in media} == {"inbound"} and {m["streamSid"] for m in media} == {sid}
    # The caller's audio, every byte of it, as 8 kHz µ-law in 20 ms chunks.
    sent = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert {len(base64.b64decode(m["media"]["payload"])) for m in media} == {160}
    assert sent == ulaw_from_pcm(stream.sent_pcm)[:len(sent)] and len(stream.sent_pcm) // 2 - len(sent) < 160
    stop = a.messages("stop")[0]
    assert stop["stop"] == {"accountSid": start["start"]["accountSid"], "callSid": call_sid}
    assert stop["sequenceNumber"] == str(2 + len(media))
    relay = h.recording(call.uuid).sidecar["relay"]
    assert relay["connections"] == 1 and relay["dropped_ms"] == 0 and "s3cr3t" not in json.dumps(relay)


def test_the_caller_hears_their_own_speech_back_through_the_echo_agent(sim, tmp_path):
    server = echo_agent.make_server("127.0.0.1", 0, pause_s=0.3)
    server.start()
    h = Harness(sim, tmp_path / "rec", relay_rule(f"ws://127.0.0.1:{server.server_port}/media")).start()
    try:
        utterance = signals.speech_like(1.5, RATE, seed=3)
        call = sim.place_call("9999", speech=utterance + bytes(2 * RATE * 4), duration_s=5.5, plays=None,
                              app="endless_silence")  # the agent dialplan: a break ends a sleep
        assert call.hung_up.wait(15)
        h.wait_closed(call.uuid)
    finally:
        h.stop()
        server.stop(timeout=1)
    score, delay = find(call.heard, utterance)
    assert score >= 0.9, f"the reply does not sound like the caller (correlation {score:.3f})"
    # 1.5 s of speech, 0.6 s of silence to end the utterance, the agent's 0.3 s pause, the module and the
    # switch (200 ms to start a broadcast): the reply begins about 2.6 s after the call did.
    assert 2.3 <= delay <= 3.2
    # One reply, one file_string chain (so no hole inside it), stopped once its speech had played.
    [playback] = call.playbacks
    assert playback.path.startswith("file_string://") and playback.status == "break"
    relay = h.recording(call.uuid).sidecar["relay"]
    assert relay["talk_back_broadcasts"] == 1 and relay["talk_back_chunks"] <= 12  # pieces of 0.2 s or more
    # The reply is a turn on the call's timeline (the console draws it): where the caller heard it, in the WAV.
    [turn] = relay["turns"]
    assert abs(turn["start_s"] - delay) <= 0.1 and turn["end_s"] >= delay + 1.5 - 0.1


def test_a_mark_comes_back_after_its_audio_has_played_not_before(sim, tmp_path, agent):
    a, h, call = parked_call_with_agent(sim, tmp_path, agent)
    try:
        a.say(signals.tone(440, 1.0, RATE))
        a.send({"event": "mark", "streamSid": a.stream_sid(), "mark": {"name": "reply-1"}})
        wait_until(lambda: a.messages("mark"), 10, "the mark back")
        [playback] = call.playbacks
        # Its audio was heard out before the echo: the chain was stopped only after it.
        heard = find(call.heard, signals.tone(440, 1.0, RATE))
        assert heard[0] >= 0.99
        assert a.messages("mark")[0]["mark"] == {"name": "reply-1"}
        assert a.messages("mark")[0]["streamSid"] == a.stream_sid()
        call.hangup()
    finally:
        h.stop()


def test_clear_stops_what_plays_at_once_and_returns_the_pending_marks(sim, tmp_path, agent):
    a, h, call = parked_call_with_agent(sim, tmp_path, agent)
    try:
        a.say(signals.tone(440, 3.0, RATE))
        a.send({"event": "mark", "streamSid": a.stream_sid(), "mark": {"name": "long-reply"}})
        wait_until(lambda: call.playbacks and call.playbacks[0].started_at is not None, 10, "the reply to play")
        cleared_at = time.monotonic()  # the simulator's playback records are on this clock
        a.send({"event": "clear", "streamSid": a.stream_sid()})
        wait_until(lambda: call.playbacks[0].stopped_at is not None, 5, "the playback to stop")
        assert call.playbacks[0].status == "break"
        assert call.playbacks[0].stopped_at - cleared_at <= 0.1  # barge-in: within 100 ms of the clear
        wait_until(lambda: a.messages("mark"), 5, "the pending mark back")
        assert a.messages("mark")[0]["mark"]["name"] == "long-reply"
        call.hangup()
        h.wait_closed(call.uuid)
        [turn] = h.recording(call.uuid).sidecar["relay"]["turns"]  # the console shows where it was cut
        assert turn["cleared_s"] is not None and turn["start_s"] <= turn["end_s"]
    finally:
        h.stop()


def test_two_calls_never_hear_each_others_agent(sim, tmp_path):
    server = echo_agent.make_server("127.0.0.1", 0, pause_s=0.3)
    server.start()
    h = Harness(sim, tmp_path / "rec", relay_rule(f"ws://127.0.0.1:{server.server_port}/media")).start()
    try:
        first = signals.speech_like(1.5, RATE, seed=11)
        second = signals.tone(330, 1.5, RATE)
        calls = [sim.place_call("9999", speech=speech + bytes(2 * RATE * 4), duration_s=5.5, plays=None,
                                app="endless_silence")
                 for speech in (first, second)]
        for call in calls:
            assert call.hung_up.wait(15)
            h.wait_closed(call.uuid)
    finally:
        h.stop()
        server.stop(timeout=1)
    own = [find(call.heard, speech)[0] for call, speech in zip(calls, (first, second))]
    other = [find(call.heard, speech)[0] for call, speech in zip(calls, (second, first))]
    assert min(own) >= 0.9 and max(other) < 0.5, (own, other)


@pytest.mark.parametrize("how", ["refused", "no_upgrade"])
def test_an_unreachable_agent_never_harms_the_call_or_its_recording(sim, tmp_path, how):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    if how == "no_upgrade":
        listener.listen(8)  # accepts TCP, never answers the upgrade: every attempt times out
    else:
        listener.close()  # nothing listens: every attempt is refused
    url = f"ws://127.0.0.1:{listener.getsockname()[1] if how == 'no_upgrade' else 1}/media"
    h = Harness(sim, tmp_path / "rec", relay_rule(url, ", max_queue_s: 0.2")).start()
    try:
        call = sim.place_call("9999", duration_s=2.0)
        assert call.hung_up.wait(10)
        assert h.wait_closed(call.uuid) == "client_close"
    finally:
        h.stop()
        listener.close()
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm  # the recording never noticed
    relay = recording.sidecar["relay"]
    assert relay["connections"] == 0 and relay["sent_ms"] == 0
    assert relay["dropped_ms"] >= 1500  # the queue stayed bounded (0.2 s): the rest was dropped and counted
    if how == "refused":
        assert "cannot connect" in relay["last_error"]


def test_an_agent_that_drops_is_reconnected_as_a_fresh_stream_and_garbage_is_ignored(sim, tmp_path, agent):
    a, h, call = parked_call_with_agent(sim, tmp_path, agent, messages=12)
    try:
        a.sockets[0].send("not json at all")
        a.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": "AAAA"}})
        first_sid = a.stream_sid(0)
        a.sockets[0].close()  # the agent drops mid-call
        wait_until(lambda: len(a.connections) == 2 and len(a.messages("media", 1)) >= 10, 15,
                   "media on a second connection")
        assert [m["event"] for m in a.connections[1][:2]] == ["connected", "start"]
        assert a.stream_sid(1) != first_sid and a.messages("start", 1)[0]["sequenceNumber"] == "1"
        call.hangup()
        h.wait_closed(call.uuid)
    finally:
        h.stop()
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm
    assert recording.sidecar["relay"]["connections"] == 2 and recording.sidecar["relay"]["bad_messages"] == 2


def test_raw_protocol_hello_then_the_pcm_and_binary_frames_are_played(sim, tmp_path, agent):
    a, h, call = parked_call_with_agent(sim, tmp_path, agent, protocol="raw", messages=20)
    try:
        hello = a.connections[0][0]
        assert hello == {"uuid": call.uuid, "caller": "1000", "destination": "9999", "rule": "ext9999",
                         "rate": 8000, "channels": 1, "encoding": "pcm_s16le", "metadata": {"queue": "support"}}
        reply = signals.tone(440, 0.5, RATE)
        a.sockets[0].send(reply, binary=True)
        wait_until(lambda: call.playbacks and call.playbacks[0].stopped_at is not None, 10, "the reply played")
        played_to = len(call.heard)
        wait_until(lambda: len(call.heard) >= played_to + 3200, 5, "0.2 s more of the call after it")
        call.hangup()
        h.wait_closed(call.uuid)
    finally:
        h.stop()
    [stream] = sim.streams_for(call.uuid)
    assert b"".join(m for m in a.connections[0][1:] if isinstance(m, bytes)) == stream.sent_pcm
    assert find(call.heard, reply)[0] >= 0.99


def test_the_callers_keys_reach_a_twilio_agent(sim, tmp_path, agent):
    a, h, call = parked_call_with_agent(sim, tmp_path, agent)
    try:
        call.press("5")
        wait_until(lambda: a.messages("dtmf"), 5, "the dtmf message")
        [dtmf] = a.messages("dtmf")
        assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"} and dtmf["streamSid"] == a.stream_sid()
        call.hangup()
    finally:
        h.stop()

