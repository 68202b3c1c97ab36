"""controller.relay.raw: a JSON hello, then the PCM as the module sent it; binary PCM back from the agent."""

import json

import pytest

from controller.relay.raw import Audio, RawStream

UUID = "8f0d2c7e-5c61-4a0b-9d2e-3f4a5b6c7d8e"


def stream(**kw):
    args = dict(uuid=UUID, caller="1000", destination="9999", rule="ext9999", rate=16000, channels=1,
                metadata={"campaign": "spring", "n": 3})
    args.update(kw)
    return RawStream(**args)


def test_the_hello_holds_the_calls_details():
    s = stream()
    assert s.start() == ('{"uuid":"' + UUID + '","caller":"1000","destination":"9999","rule":"ext9999",'
                         '"rate":16000,"channels":1,"encoding":"pcm_s16le","metadata":{"campaign":"spring",'
                         '"n":3}}')
    assert json.loads(stream(channels=2, rate=8000, metadata=None).start())["metadata"] is None
    assert json.loads(stream(metadata="text as the module got it").start())["metadata"] == \
        "text as the module got it"


def test_audio_goes_as_the_module_sent_it():
    s = stream(channels=2)
    frames = [bytes(range(256)) * 5, bytes(1280), b"\x01\x02\x03\x04"]  # any size of whole L,R frames
    assert [s.audio(f) for f in frames] == frames
    with pytest.raises(ValueError, match="6 bytes is not a whole number of 4-byte sample frames"):
        s.audio(bytes(6))


def test_binary_from_the_agent_is_audio_to_play():
    s = stream()
    assert s.parse(b"\x00\x01" * 160) == Audio(b"\x00\x01" * 160)
    assert s.parse(bytearray(b"\x10\x00")) == Audio(b"\x10\x00")


@pytest.mark.parametrize("message,reason", [
    ('{"event":"media"}', "a text frame \\(17 characters\\) means nothing in the raw protocol"),
    ("x" * 500, "a text frame \\(500 characters\\)"),
    (b"", "an empty binary frame"),
    (b"\x00\x01\x02", "3 bytes is not whole 16-bit samples"),
])
def test_anything_else_is_refused_with_a_reason(message, reason):
    with pytest.raises(ValueError, match=reason) as e:
        stream().parse(message)
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


def test_bad_details_fail_where_the_stream_is_made():
    with pytest.raises(ValueError, match="channels 3; allowed: 1 \\(mono, mixed\\) or 2 \\(stereo\\)"):
        stream(channels=3)
    with pytest.raises(ValueError, match="rate 0"):
        stream(rate=0)
    with pytest.raises(ValueError, match="metadata cannot be sent as JSON"):
        stream(metadata={"when": object()})
