"""Our Twilio Media Streams against a stock Pipecat bot's own code: `parse_telephony_websocket` (how a bot
reads the first two messages) and `TwilioFrameSerializer` (each way). Needs the optional extra
`pip install -e '.[agents]'`; skipped without it (CI stays light)."""

import asyncio
import base64
import json
import math
import struct
from types import SimpleNamespace

import pytest

# The serializer, not the bare name: examples/pipecat/ (no __init__.py) imports as a namespace package "pipecat"
# once another test puts examples/ on sys.path.
pytest.importorskip("pipecat.serializers.twilio",
                    reason="pipecat-ai is not installed: pip install -e '.[agents]' to run these")

from pipecat.audio.dtmf.types import KeypadEntry  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from pipecat.runner.utils import parse_telephony_websocket  # noqa: E402
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402

from controller.relay.audio import pcm_from_ulaw, ulaw_from_pcm  # noqa: E402
from controller.relay.twilio import Clear, Mark, Media, TwilioStream, stream_sid_for  # noqa: E402

UUID = "8f0d2c7e-5c61-4a0b-9d2e-3f4a5b6c7d8e"
SID = stream_sid_for(UUID)
ACCOUNT = "AC" + "0" * 32
PARAMS = {"caller": "1000", "destination": "9999", "rule": "ext9999", "from_number": "1000", "to_number": "9999"}


def run(coro):
    return asyncio.run(coro)


def tone_pcm(rate, seconds, freq=440, amplitude=8000):
    n = round(rate * seconds)
    return struct.pack(f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def frequency(pcm, rate):
    # Rising zero crossings per second, between the first and the last one.
    xs = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    ups = [i for i in range(1, len(xs)) if xs[i - 1] < 0 <= xs[i]]
    return (len(ups) - 1) * rate / (ups[-1] - ups[0])


def started_stream():
    s = TwilioStream(SID, UUID, ACCOUNT, PARAMS)
    return s, [s.connected(), s.start()]


def serializer(pipeline_rate):
    # auto_hang_up needs Twilio's REST API and credentials; behind this controller a bot hangs up by
    # closing its WebSocket, so it is off (examples/pipecat/README.md).
    ser = TwilioFrameSerializer(SID, call_sid=UUID, params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
    # setup() reads only the pipeline's input rate of its FrameProcessorSetup.
    run(ser.setup(SimpleNamespace(audio_in_sample_rate=pipeline_rate)))
    return ser


class FakeWebSocket:
    """What parse_telephony_websocket reads of FastAPI's WebSocket: iter_text()."""

    def __init__(self, messages):
        self.messages = list(messages)
        self.read = 0

    async def iter_text(self):
        for m in self.messages:
            self.read += 1
            yield m


def test_a_bot_takes_our_connected_and_start_as_a_twilio_call():
    s, first = started_stream()
    ws = FakeWebSocket(first + [s.media(b"\xff" * 160)])
    transport, call = run(parse_telephony_websocket(ws))
    assert transport == "twilio"
    assert ws.read == 2  # exactly two messages: the first media message is left for the transport
    assert call.stream_id == SID and call.call_id == UUID
    assert call.body == PARAMS  # customParameters reach the bot's code
    assert (call.from_number, call.to_number) == ("1000", "9999")  # promoted from those two parameters


def test_without_connected_a_bot_would_eat_the_first_media_message():
    # Why connected must come first: the bot reads two messages whatever they are.
    s, first = started_stream()
    ws = FakeWebSocket([first[1], s.media(b"\xff" * 160), s.media(b"\xff" * 160)])
    transport, _ = run(parse_telephony_websocket(ws))
    assert transport == "twilio" and ws.read == 2


def test_our_media_becomes_the_bots_input_audio_at_8k():
    s, _ = started_stream()
    ser = serializer(8000)
    ulaw = ulaw_from_pcm(tone_pcm(8000, 0.02))
    frame = run(ser.deserialize(s.media(ulaw)))
    assert isinstance(frame, InputAudioRawFrame)
    assert (frame.sample_rate, frame.num_channels) == (8000, 1)
    assert frame.audio == pcm_from_ulaw(ulaw)  # the very samples


def test_our_media_becomes_the_bots_input_audio_at_16k():
    s, _ = started_stream()
    ser = serializer(16000)
    ulaw = ulaw_from_pcm(tone_pcm(8000, 1.0))
    frames = [run(ser.deserialize(s.media(ulaw[i:i + 160]))) for i in range(0, len(ulaw), 160)]
    frames = [f for f in frames if f is not None]  # soxr may hold back its first chunk
    assert all(isinstance(f, InputAudioRawFrame) and f.sample_rate == 16000 for f in frames)
    audio = b"".join(f.audio for f in frames)
    assert 32000 - 2 * 1600 <= len(audio) <= 32000  # one second at 16 kHz, less soxr's delay (< 0.1 s)
    assert frequency(audio, 16000) == pytest.approx(440, abs=1)  # the tone kept its pitch


def test_the_other_messages_mean_nothing_to_it_but_dtmf():
    s, first = started_stream()
    ser = serializer(8000)
    frame = run(ser.deserialize(s.dtmf("5")))
    assert isinstance(frame, InputDTMFFrame) and frame.button == KeypadEntry.FIVE
    assert run(ser.deserialize(s.dtmf("A"))) is None  # its keypad has no A-D
    for text in first + [s.mark("reply-1"), s.stop()]:
        assert run(ser.deserialize(text)) is None


def test_its_audio_and_interruption_are_our_media_and_clear():
    s, _ = started_stream()
    ser = serializer(8000)
    pcm = tone_pcm(8000, 0.04)  # stock Pipecat sends 40 ms payloads
    text = run(ser.serialize(OutputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1)))
    assert s.parse(text) == Media(ulaw_from_pcm(pcm))
    assert s.parse(run(ser.serialize(InterruptionFrame()))) == Clear()


def test_its_audio_at_24k_arrives_as_8k_ulaw():
    s, _ = started_stream()
    ser = serializer(16000)
    pcm = tone_pcm(24000, 1.0)
    ulaw = b""
    for i in range(0, len(pcm), 1920):  # 40 ms chunks, as its output transport sends them
        text = run(ser.serialize(OutputAudioRawFrame(audio=pcm[i:i + 1920], sample_rate=24000, num_channels=1)))
        if text is not None:
            msg = s.parse(text)
            assert isinstance(msg, Media)
            ulaw += msg.ulaw
    assert 8000 - 800 <= len(ulaw) <= 8000  # one second at 8 kHz, less soxr's delay (< 0.1 s)
    assert frequency(pcm_from_ulaw(ulaw), 8000) == pytest.approx(440, abs=1)


def test_a_mark_a_bot_sends_as_a_transport_message_is_our_mark():
    # Stock Pipecat never sends marks; a bot that wants them sends one through the transport.
    s, _ = started_stream()
    ser = serializer(8000)
    frame = OutputTransportMessageFrame(message={"event": "mark", "streamSid": SID, "mark": {"name": "greeting"}})
    assert s.parse(run(ser.serialize(frame))) == Mark("greeting")


def test_our_message_texts_are_what_it_parses_as_json():
    s, first = started_stream()
    payload = json.loads(s.media(b"\x01\x02"))["media"]["payload"]
    assert base64.b64decode(payload) == b"\x01\x02"
    for text in first + [s.media(b"\x00" * 160), s.dtmf("#"), s.stop()]:
        assert isinstance(json.loads(text), dict)


def test_the_example_bot_takes_a_call_and_talks_back():
    # examples/pipecat/bot.py in its own process (uvicorn, FastAPI, Pipecat's transport), driven over a real
    # WebSocket by our messages: it answers with Twilio media for our streamSid, our audio echoed.
    pytest.importorskip("uvicorn", reason="uvicorn is not installed: pip install -e '.[agents]'")
    pytest.importorskip("fastapi", reason="fastapi is not installed: pip install -e '.[agents]'")
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from test_relay_echo_agent import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pipecat", "bot.py")
    log = tempfile.TemporaryFile()  # a file, not a pipe: Pipecat logs a lot, and a full pipe would stall it
    proc = subprocess.Popen([sys.executable, bot, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log)

    def output():
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + 45  # importing Pipecat takes seconds
        while True:
            assert proc.poll() is None, output()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the bot never listened"
                time.sleep(0.2)
        c = Client(port, path="/ws")
        s, first = started_stream()
        for text in first:
            c.send(text)
        ulaw = ulaw_from_pcm(tone_pcm(8000, 0.5))
        for i in range(0, len(ulaw), 160):
            c.send(s.media(ulaw[i:i + 160]))
        back = b""
        # Its output goes out in 40 ms messages: the last 20 ms waits for audio to complete it.
        while len(back) < len(ulaw) - 320:
            msg = s.parse(json.dumps(c.receive(timeout=10)))
            assert isinstance(msg, Media)
            back += msg.ulaw
        assert back == ulaw[:len(back)]  # at 8 kHz end to end nothing resamples: the very bytes
        c.send(s.stop())
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
