"""examples/echo_agent.py: its end of speech on audio alone, and one call against it over a real WebSocket,
driven by the controller's own TwilioStream messages."""

import base64
import importlib.util
import json
import math
import os
import socket
import struct

import gevent
import pytest

from controller.relay.audio import ULAW_20MS, ulaw_from_pcm
from controller.relay.twilio import TwilioStream
from controller.simulator import ws_frames as wsf

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("echo_agent", os.path.join(HERE, "..", "examples", "echo_agent.py"))
echo_agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(echo_agent)

SID = "MZ8f0d2c7e5c614a0b9d2e3f4a5b6c7d8e"
UUID = "8f0d2c7e-5c61-4a0b-9d2e-3f4a5b6c7d8e"


def silence(seconds):
    return b"\xff" * round(8000 * seconds)


def tone(seconds, freq=440, amplitude=8000):
    n = round(8000 * seconds)
    pcm = struct.pack(f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))
    return ulaw_from_pcm(pcm)


def chunks(ulaw, size=ULAW_20MS):
    return [ulaw[i:i + size] for i in range(0, len(ulaw), size)]


# -- end of speech, on audio alone ------------------------------------------------------------------------

def test_an_utterance_ends_after_0_6_s_of_quiet():
    ep = echo_agent.Endpointer()
    speech = tone(1.0)
    results = [ep.push(c) for c in chunks(silence(0.5) + speech + silence(0.58))]
    assert not any(done for _, done in results)  # 0.58 s of quiet is not the end yet
    assert sum(started for started, _ in results) == 1
    started, done = ep.push(silence(0.02))
    assert not started and len(done) == 1
    # pre-roll 0.2 s + the speech + tail 0.1 s, cut on 20 ms frames
    assert done[0] == silence(0.2) + speech + silence(0.1)


def test_a_click_is_not_speech_and_odd_chunk_sizes_do_not_matter():
    ep = echo_agent.Endpointer()
    audio = silence(0.3) + tone(0.06) + silence(1.0) + tone(0.5) + silence(0.7)
    out = []
    for c in chunks(audio, 77):  # the agent need not get 20 ms messages
        out += ep.push(c)[1]
    assert out == [silence(0.2) + tone(0.5) + silence(0.1)]


def test_a_long_utterance_is_cut_at_the_maximum():
    ep = echo_agent.Endpointer(max_utterance_s=1.0)
    out = []
    for c in chunks(tone(2.5)):
        out += ep.push(c)[1]
    assert [len(u) for u in out] == [8000, 8000]


# -- one call over a real WebSocket -----------------------------------------------------------------------

class Client:
    """The controller's side, minimal: a masked-frame WebSocket client on a gevent socket."""

    def __init__(self, port, path="/media"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(wsf.upgrade_request(f"127.0.0.1:{port}", path, key, []))
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert wsf.parse_upgrade_response(head).accepts(key)
        self.reader = wsf.FrameReader()
        self.frames = self.reader.feed(rest)

    def send(self, text):
        self.sock.sendall(wsf.encode_frame(wsf.TEXT, text.encode(), os.urandom(4)))

    def receive(self, timeout=5.0):
        """The next message from the agent, as JSON; None when it closed."""
        with gevent.Timeout(timeout):
            while not self.frames:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.frames += self.reader.feed(data)
        frame = self.frames.pop(0)
        if frame.opcode == wsf.CLOSE:
            return None
        return json.loads(frame.payload)

    def close(self):
        self.sock.close()


@pytest.fixture
def agent():
    server = echo_agent.make_server("127.0.0.1", 0, pause_s=0.05)
    server.start()
    yield server.server_port
    server.stop(timeout=1)


@pytest.fixture(autouse=True)
def gevent_socket(monkeypatch):
    # The client must yield to the agent's greenlets in this one process.
    import gevent.socket
    monkeypatch.setattr(socket, "create_connection", gevent.socket.create_connection)


def test_a_call_hears_itself_back_and_a_barge_in_clears(agent):
    c = Client(agent)
    s = TwilioStream(SID, UUID, "AC" + "0" * 32, {"caller": "1000"})
    c.send(s.connected())
    c.send(s.start())
    c.send("{not json")  # logged and ignored: the call goes on
    c.sock.sendall(wsf.encode_frame(wsf.BINARY, b"\x00\x01", os.urandom(4)))
    speech = tone(0.8)
    for chunk in chunks(silence(0.4) + speech + silence(0.7)):
        c.send(s.media(chunk))

    replies = []
    while (m := c.receive())["event"] == "media":
        assert m["streamSid"] == SID and set(m) == {"event", "streamSid", "media"}
        replies.append(base64.b64decode(m["media"]["payload"]))
    assert m == {"event": "mark", "streamSid": SID, "mark": {"name": "reply-1"}}
    assert {len(r) for r in replies} == {ULAW_20MS}
    assert b"".join(replies) == silence(0.2) + speech + silence(0.1)  # what it heard, said back
    c.send(s.mark("reply-1"))  # played

    # The second reply is still playing (its mark not echoed) when the caller speaks: the agent clears.
    for chunk in chunks(tone(0.4, freq=300) + silence(0.7)):
        c.send(s.media(chunk))
    while (m := c.receive())["event"] == "media":
        pass
    assert m["mark"]["name"] == "reply-2"
    for chunk in chunks(tone(0.3)):
        c.send(s.media(chunk))
    assert c.receive() == {"event": "clear", "streamSid": SID}
    c.send(s.mark("reply-2"))  # the controller echoes the dropped reply's mark at the clear
    c.send(s.dtmf("5"))
    c.send(s.stop())
    assert c.receive() is None  # the agent closes after stop
    c.close()
