"""controller.relay.twilio: the messages of a call as Twilio Media Streams sends them, and what agents send."""

import base64
import json

import pytest

from controller.relay.twilio import (
    Clear,
    Mark,
    Media,
    TwilioStream,
    stream_sid_for,
)

UUID = "8f0d2c7e-5c61-4a0b-9d2e-3f4a5b6c7d8e"
SID = "MZ8f0d2c7e5c614a0b9d2e3f4a5b6c7d8e"
ACCOUNT = "AC00000000000000000000000000000000"


def stream(**kw):
    kw.setdefault("custom_parameters", {"caller": "1000", "destination": "9999", "rule": "ext9999"})
    return TwilioStream(SID, UUID, ACCOUNT, **kw)


def b64(data):
    return base64.b64encode(data).decode()


def test_a_short_call_message_for_message():
    s = stream()
    chunks = [bytes([0xFF]) * 160, bytes([0x7E]) * 160, bytes(range(160)), bytes([0x80]) * 160]
    out = [s.connected(), s.start()]
    out += [s.media(c) for c in chunks[:3]]
    out += [s.dtmf("5"), s.media(chunks[3]), s.mark("reply-1"), s.stop()]

    assert out[0] == '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert out[1] == (
        '{"event":"start","sequenceNumber":"1","start":{"accountSid":"' + ACCOUNT + '","streamSid":"' + SID
        + '","callSid":"' + UUID + '","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw",'
        '"sampleRate":8000,"channels":1},"customParameters":{"caller":"1000","destination":"9999",'
        '"rule":"ext9999"}},"streamSid":"' + SID + '"}')
    assert out[2] == ('{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1",'
                      '"timestamp":"0","payload":"' + b64(chunks[0]) + '"},"streamSid":"' + SID + '"}')
    assert out[5] == ('{"event":"dtmf","streamSid":"' + SID + '","sequenceNumber":"5","dtmf":'
                      '{"track":"inbound_track","digit":"5"}}')
    assert out[7] == '{"event":"mark","sequenceNumber":"7","streamSid":"' + SID + '","mark":{"name":"reply-1"}}'
    assert out[8] == ('{"event":"stop","sequenceNumber":"8","stop":{"accountSid":"' + ACCOUNT + '","callSid":"'
                      + UUID + '"},"streamSid":"' + SID + '"}')

    msgs = [json.loads(m) for m in out]
    assert [m["event"] for m in msgs] == ["connected", "start", "media", "media", "media", "dtmf", "media",
                                          "mark", "stop"]
    # sequenceNumber: every message but connected, as text, from "1" at start, one step each.
    assert "sequenceNumber" not in msgs[0] and "streamSid" not in msgs[0]
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(n) for n in range(1, 9)]
    assert all(m["streamSid"] == SID for m in msgs[1:])
    media = [m["media"] for m in msgs if m["event"] == "media"]
    assert [m["chunk"] for m in media] == ["1", "2", "3", "4"]
    assert [m["timestamp"] for m in media] == ["0", "20", "40", "60"]  # the audio's position, in ms
    assert [m["track"] for m in media] == ["inbound"] * 4
    assert [base64.b64decode(m["payload"]) for m in media] == chunks
    assert s.sequence_number == 8


def test_media_timestamp_follows_the_audio_not_the_count():
    s = stream()
    s.connected(), s.start()
    sizes = [160, 80, 400, 160]  # 20, 10, 50, 20 ms
    stamps = [json.loads(s.media(bytes(n)))["media"]["timestamp"] for n in sizes]
    assert stamps == ["0", "20", "30", "80"]


def test_two_tracks_count_chunks_and_time_each():
    s = stream(tracks=("inbound", "outbound"))
    s.connected()
    start = json.loads(s.start())
    assert start["start"]["tracks"] == ["inbound", "outbound"]
    got = [json.loads(s.media(bytes(160), track=t)) for t in ("inbound", "outbound", "inbound", "outbound")]
    assert [(m["sequenceNumber"], m["media"]["track"], m["media"]["chunk"], m["media"]["timestamp"])
            for m in got] == [("2", "inbound", "1", "0"), ("3", "outbound", "1", "0"),
                              ("4", "inbound", "2", "20"), ("5", "outbound", "2", "20")]


def test_custom_parameters_are_all_text():
    s = stream(custom_parameters={"language": "en-GB", "attempt": 2, "vip": True, "none": None, 7: "seven",
                                  "extra": {"a": [1, "b"]}})
    s.connected()
    params = json.loads(s.start())["start"]["customParameters"]
    assert params == {"language": "en-GB", "attempt": "2", "vip": "true", "none": "null", "7": "seven",
                      "extra": '{"a":[1,"b"]}'}
    assert all(isinstance(v, str) for v in params.values())


def test_no_custom_parameters_is_an_empty_object():
    s = TwilioStream(SID, UUID, ACCOUNT)
    s.connected()
    assert json.loads(s.start())["start"]["customParameters"] == {}


def test_messages_out_of_twilios_order_are_refused():
    s = stream()
    with pytest.raises(RuntimeError, match="start after new"):
        s.start()
    s.connected()
    with pytest.raises(RuntimeError, match="media after connected"):
        s.media(bytes(160))
    s.start()
    with pytest.raises(RuntimeError, match="start after started"):
        s.start()
    s.stop()
    for call in (lambda: s.media(bytes(160)), lambda: s.dtmf("1"), lambda: s.mark("m"), s.stop):
        with pytest.raises(RuntimeError, match="after stopped"):
            call()


def test_bad_arguments_say_what_was_wrong():
    with pytest.raises(ValueError, match="tracks .*allowed: one or both of inbound, outbound"):
        stream(tracks=("inbound_track",))
    with pytest.raises(ValueError, match="tracks"):
        stream(tracks=())
    with pytest.raises(ValueError, match="call_sid '' is not a non-empty string"):
        TwilioStream(SID, "", ACCOUNT)
    s = stream()
    s.connected(), s.start()
    with pytest.raises(ValueError, match="digit '55'; allowed: one of 0123456789\\*#ABCD"):
        s.dtmf("55")
    with pytest.raises(ValueError, match="track 'outbound' is not one of this stream's tracks"):
        s.media(bytes(160), track="outbound")
    with pytest.raises(ValueError, match="no audio"):
        s.media(b"")
    assert s.sequence_number == 1  # nothing refused was counted


def test_stream_sid_for_a_uuid():
    assert stream_sid_for(UUID) == SID
    assert len(SID) == 34
    with pytest.raises(ValueError, match="is not a uuid"):
        stream_sid_for("not-a-uuid")


# -- what the agent sends ---------------------------------------------------------------------------------

def agent(msg):
    return json.dumps(msg)


def test_parse_media_mark_clear():
    s = stream()
    audio = bytes(range(256))
    assert s.parse(agent({"event": "media", "streamSid": SID, "media": {"payload": b64(audio)}})) == Media(audio)
    assert s.parse(agent({"event": "mark", "streamSid": SID, "mark": {"name": "my label"}})) == Mark("my label")
    assert s.parse(agent({"event": "clear", "streamSid": SID})) == Clear()
    # Fields Twilio does not read are no reason to refuse a message.
    assert s.parse(agent({"event": "media", "streamSid": SID, "sequenceNumber": "9",
                          "media": {"payload": b64(b"\xff"), "track": "outbound"}})) == Media(b"\xff")


@pytest.mark.parametrize("message,reason", [
    (b'{"event":"clear"}', "a binary frame \\(17 bytes\\); agents send JSON text frames"),
    ("", "not JSON"),
    ("{'event': 'clear'}", "not JSON"),
    ('["clear"]', "not a JSON object but list"),
    ('{"streamSid":"' + SID + '"}', "no 'event'; allowed: media, mark, clear"),
    ('{"event":"start","streamSid":"' + SID + '"}', "event 'start' is not one an agent sends"),
    ('{"event":"hello","streamSid":"' + SID + '"}', "event 'hello' is not one an agent sends"),
    ('{"event":7}', "event 7 is not one an agent sends"),
    ('{"event":"clear"}', "clear: no streamSid"),
    ('{"event":"clear","streamSid":"MZother"}', "clear: streamSid 'MZother' is not this stream's"),
    ('{"event":"media","streamSid":"' + SID + '"}', "media: no 'media' object"),
    ('{"event":"media","streamSid":"' + SID + '","media":"AAAA"}', "media: no 'media' object"),
    ('{"event":"media","streamSid":"' + SID + '","media":{}}', "media.payload is missing"),
    ('{"event":"media","streamSid":"' + SID + '","media":{"payload":5}}', "media.payload is 5"),
    ('{"event":"media","streamSid":"' + SID + '","media":{"payload":"@@@@"}}', "media.payload is not base64"),
    ('{"event":"media","streamSid":"' + SID + '","media":{"payload":"AAA"}}', "media.payload is not base64"),
    ('{"event":"media","streamSid":"' + SID + '","media":{"payload":""}}', "media.payload is empty"),
    ('{"event":"mark","streamSid":"' + SID + '"}', "mark: no 'mark' object"),
    ('{"event":"mark","streamSid":"' + SID + '","mark":{}}', "mark.name is missing"),
    ('{"event":"mark","streamSid":"' + SID + '","mark":{"name":3}}', "mark.name is 3"),
])
def test_parse_refuses_garbage_with_a_reason(message, reason):
    with pytest.raises(ValueError, match=reason) as e:
        stream().parse(message)
    assert "\n" not in str(e.value)


def test_parse_reasons_stay_short():
    with pytest.raises(ValueError) as e:
        stream().parse("x" * 10000)
    assert len(str(e.value)) < 200


def test_call_sids_are_twilios_form_and_the_same_for_the_same_call():
    from controller.relay.twilio import call_sid_for

    assert call_sid_for("166EB301-3ca5-4fc5-9751-d8ca093577dd") == "CA166eb3013ca54fc59751d8ca093577dd"
    with pytest.raises(ValueError, match="is not a uuid"):
        call_sid_for("not-a-uuid")


def test_dropped_audio_moves_the_next_chunks_timestamp_and_number_on():
    s = stream()
    s.connected(), s.start()
    first = json.loads(s.media(bytes(160)))["media"]
    s.skip(160 * 50)  # a second dropped on the way to a slow agent
    after = json.loads(s.media(bytes(160)))["media"]
    assert (first["chunk"], first["timestamp"]) == ("1", "0")
    assert (after["chunk"], after["timestamp"]) == ("52", "1020")  # presentation time, as Twilio's
