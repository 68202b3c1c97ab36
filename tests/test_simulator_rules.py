"""The simulator's pure parts, checked against the FreeSWITCH captures: no sockets, no waiting.

The socket-level behaviour (Event Socket, WebSocket streaming, faults) is in test_simulator.py.
"""

import json
from array import array
from urllib.parse import unquote

import pytest

from controller.esl import protocol
from controller.simulator import audio_stream_rules as rules
from controller.simulator import signals
from controller.simulator import ws_frames as wsf
from controller.simulator.media import CallMedia, FrameChunker, Playback, StreamAudio


def split_capture_stream(data: bytes):
    """(outer headers, body, raw bytes) of every message in a captured recv stream."""
    pos = 0
    while pos < len(data):
        end = data.index(b"\n\n", pos)
        headers = dict(line.split(": ", 1) for line in data[pos:end].decode().split("\n"))
        length = int(headers.get("Content-Length", 0))
        yield headers, data[end + 2 : end + 2 + length], data[pos : end + 2 + length]
        pos = end + 2 + length


def ordered_event(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], str]:
    """An event's headers with order and repeats kept (the product's parser keeps neither)."""
    if content_type == "text/event-json":
        pairs = json.loads(body, object_pairs_hook=lambda items: items)
        own_body = next((v for k, v in pairs if k == "_body"), "")
        headers = []
        for name, value in pairs:
            if name == "_body" or (name == "Content-Length" and own_body):
                continue
            headers.append((name, "ARRAY::" + "|:".join(value) if isinstance(value, list) else value))
        return headers, own_body
    head, _, rest = body.partition(b"\n\n")
    headers = [(n.decode(), unquote(v.decode())) for n, v in (line.split(b": ", 1) for line in head.split(b"\n"))]
    if headers[-1][0] == "Content-Length" and rest:
        return headers[:-1], rest.decode()
    return headers, ""


# ---- the event encoder (controller/esl/protocol.py) against every captured event ----


def test_every_captured_event_reencodes_byte_for_byte(captures):
    checked = 0
    for capture in sorted((captures / "esl").glob("*.recv.bin")):
        for headers, body, raw in split_capture_stream(capture.read_bytes()):
            kind = headers["Content-Type"]
            if not kind.startswith("text/event-"):
                continue
            event_headers, own_body = ordered_event(kind, body)
            event_format = "json" if kind == "text/event-json" else "plain"
            assert protocol.event_message(event_format, event_headers, own_body) == raw, capture.name
            checked += 1
    assert checked > 400


def test_json_events_keep_a_repeated_header_and_write_arrays_as_arrays():
    encoded = json.loads(
        protocol.json_event_body([("Hangup-Cause", "NORMAL_CLEARING"), ("Hangup-Cause", "NORMAL_CLEARING"),
                                  ("variable_DP_MATCH", "ARRAY::hold6000|:6000")]),
        object_pairs_hook=lambda items: items,
    )
    assert encoded == [("Hangup-Cause", "NORMAL_CLEARING"), ("Hangup-Cause", "NORMAL_CLEARING"),
                       ("variable_DP_MATCH", ["hold6000", "6000"])]


# ---- how FreeSWITCH splits the module's command line ----


def test_metadata_keeps_the_rest_of_the_line_with_its_spaces():
    words = rules.separate_words('u start ws://h:1/x mono 8k {"meta":"initial metadata","with":"spaces in it"}')
    assert words == ["u", "start", "ws://h:1/x", "mono", "8k", '{"meta":"initial metadata","with":"spaces in it"}']


def test_send_text_and_stop_carry_only_the_first_word():
    # main_plain_ctl: `stop {"bye":"final text"}` sent {"bye":"final
    assert rules.separate_words('u stop {"bye":"final text"}')[2] == '{"bye":"final'
    assert rules.interpret(rules.separate_words("u send_text one two")) == rules.SendText("one")


def test_quotes_and_backslashes_in_metadata_get_mangled_like_freeswitch_does():
    words = rules.separate_words("u start ws://h mono 8k {\\\"k\\\":\\\"it's\\\"} 'a b' c\\\\d")
    # \" becomes ", a pair of single quotes vanishes (it's + 'a), the lone last one stays, \\ becomes \
    assert words[5] == "{\"k\":\"its\"} a b' c\\d"


@pytest.mark.parametrize(
    "text, words",
    [
        # mod_commands' uuid_setvar_multi splits at ';': spaces inside a value stay, around a part they go.
        ('A=1;B={"k":"Bearer x y"} ;C', ["A=1", 'B={"k":"Bearer x y"}', "C"]),
        (" A = 1 ", ["A = 1"]),  # the part is trimmed, not the name or the value around '='
        (";A=1;;B=2;", ["", "A=1", "", "B=2"]),  # empty parts between delimiters, none after the last
        ("", []),
        ("A='x;y';B=\\;z", ["A=x;y", "B=;z"]),  # a quoted or escaped ';' does not split
        ("A=it's;B=2", ["A=it's", "B=2"]),  # a lone quote is kept (and does not group)
        ("A=a\\sb\\\\c", ["A=a b\\c"]),  # \s is a space, \\ a backslash
        ("^^:A=1:B=2;3", ["A=1", "B=2;3"]),  # ^^<c> picks another delimiter
        ("a;b;c;d", ["a", "b;c;d"]),  # limit 2 here: the last word keeps the rest
    ],
)
def test_switch_separate_string_at_a_delimiter_other_than_space(text, words):
    assert rules.separate_string(text, ";", 2 if text == "a;b;c;d" else 64) == words


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ws://127.0.0.1:8080", ("ws", "127.0.0.1", 8080, "/")),
        ("ws://h:8080/calls/x?t=1", ("ws", "h", 8080, "/calls/x?t=1")),
        ("wss://rec.example-1.net/in", ("wss", "rec.example-1.net", 443, "/in")),
        ("ws://h:8080?x", None),
        ("http://127.0.0.1:8080", None),
        ("ws://under_score:80", None),
        ("ws://h:80a/x", None),
        ("ws://:80/x", None),
    ],
)
def test_the_modules_url_rules(url, expected):
    parsed = rules.parse_ws_url(url)
    assert (None if parsed is None else (parsed.scheme, parsed.host, parsed.port, parsed.path)) == expected


@pytest.mark.parametrize(
    "rate_word, outcome",
    [("8k", 8000), ("16k", 16000), ("8000", 8000), ("24000", 24000), ("48000", 48000),
     ("12000", rules.FAILED), ("abc", "leak"), ("0", "leak")],
)
def test_rate_rules_including_the_leaking_junk_rates(rate_word, outcome):
    request = rules.interpret(["u", "start", "ws://h:1", "mono", rate_word])
    if outcome == "leak":
        assert isinstance(request, rules.Start) and request.leaks
    elif isinstance(outcome, str):
        assert request == rules.Reply(outcome)
    else:
        assert request == rules.Start(rules.parse_ws_url("ws://h:1"), "mono", outcome, None)


def test_replies_that_need_no_channel_state():
    assert rules.usage_error(rules.separate_words("")) and rules.usage_error(["u"])
    assert rules.usage_error(["u", "start", "ws://h:1"])
    assert rules.interpret(["u", "start", "ws://h:1", "quad", "8k"]) == rules.Reply("")  # -> "-ERR no reply"
    assert rules.interpret(["u", "send_text"]) == rules.Reply("")
    assert rules.interpret(["u", "frobnicate"]) == rules.Reply(rules.FAILED)
    assert rules.interpret(["u", "STOP"]) == rules.Stop(None)  # subcommands ignore case; mix types do not
    assert rules.interpret(["u", "start", "ws://h:1", "MONO"]) == rules.Reply("")


def test_usage_reply_is_the_captured_one(captures):
    notes = json.loads((captures / "notes" / "notes_handshake_main_plain_main_json_formats_failures.json").read_text())
    assert rules.USAGE == notes["main_plain"]["no_args"]


def test_channel_variables_the_module_reads():
    assert rules.buffer_ms(None) == (20, None)
    assert rules.buffer_ms("100") == (100, None)
    ms, warning = rules.buffer_ms("30")
    assert ms == 20 and "30" in warning
    # Sorted like the captured request: Authorization before X-Call-Id, whatever the JSON order.
    assert rules.extra_headers('{"X-Call-Id":"abc123","Authorization":"Bearer t0k3n","n":1}') == (
        [("Authorization", "Bearer t0k3n"), ("X-Call-Id", "abc123")], None)
    assert rules.extra_headers("not json")[0] == []
    assert rules.heartbeat_s("2") == 2 and rules.heartbeat_s(None) == 0


# ---- audio per mix type, and framing ----


def test_mono_is_the_callers_audio_and_mixed_stereo_only_sound_while_the_switch_plays():
    speech = signals.speech_like(1.0, 8000)
    played = signals.tone(800, 0.2, 8000)
    media = CallMedia(8000, speech, (Playback(0.4, 0.6, played),))
    mono, mixed, stereo = (StreamAudio(media, mix, 8000) for mix in ("mono", "mixed", "stereo"))
    assert mono.chunk(3) == speech[3 * 320 : 4 * 320]
    assert mixed.chunk(3) is None and stereo.chunk(3) is None  # tick 3 = 60 ms: nothing playing
    tick = 25  # 500 ms: 100 ms into the playback
    assert mixed.chunk(tick) == signals.mix(speech[tick * 320 : (tick + 1) * 320], played[5 * 320 : 6 * 320])
    both = stereo.chunk(tick)
    assert both == signals.interleave(speech[tick * 320 : (tick + 1) * 320], played[5 * 320 : 6 * 320])
    assert len(StreamAudio(media, "stereo", 16000).chunk(tick)) == 1280
    assert mono.chunk(10_000) == bytes(320)  # after the speech the caller is silent


def test_frames_are_whole_buffers_and_a_partial_buffer_is_dropped():
    chunker = FrameChunker(1600)
    sent = [frame for _ in range(12) for frame in chunker.push(bytes(320))]
    assert [len(frame) for frame in sent] == [1600, 1600] and chunker.flush() == []


def test_odd_frame_sizes_carry_the_same_bytes():
    audio = bytes(range(256)) * 30
    normal = FrameChunker(320)
    odd = FrameChunker(320, [321, 319])
    plain = [f for i in range(0, len(audio), 160) for f in normal.push(audio[i : i + 160])]
    recut = [f for i in range(0, len(audio), 160) for f in odd.push(audio[i : i + 160])] + odd.flush()
    assert b"".join(recut) == b"".join(plain)
    assert {len(f) for f in recut[:-1]} == {321, 319}


def test_resample_keeps_duration_and_mix_saturates():
    assert len(signals.resample(signals.tone(440, 0.5, 8000), 8000, 16000)) == 16000
    loud = signals.tone(100, 0.1, 8000, amplitude=30000)
    doubled = array("h", signals.mix(loud, loud))
    assert (max(doubled), min(doubled)) == (32767, -32768)
    with pytest.raises(ValueError, match="odd"):
        signals.resample(b"\x00\x01\x02", 8000, 16000)


# ---- WebSocket bytes ----


def test_upgrade_request_has_the_captured_layout(captures):
    captured = (captures / "ws" / "mono_8000_extra_headers" / "conn1.request.bin").read_bytes()
    key = [line.split(b":", 1)[1] for line in captured.split(b"\r\n") if line.startswith(b"Sec-WebSocket-Key:")][0]
    built = wsf.upgrade_request("127.0.0.1:8080", "/mono_8000_extra_headers", key.decode(),
                                [("Authorization", "Bearer t0k3n"), ("X-Call-Id", "abc123")])
    assert built == captured


def test_client_frames_are_masked_and_read_back():
    mask = b"\x01\x02\x03\x04"
    for payload in (b"", b"ping", bytes(320), bytes(70_000)):
        frame = wsf.encode_frame(wsf.BINARY, payload, mask)
        assert frame[1] & 0x80
        [decoded] = wsf.FrameReader().feed(frame)
        assert (decoded.opcode, decoded.payload, decoded.masked) == (wsf.BINARY, payload, True)


def test_fragmented_text_and_interleaved_ping_from_a_server():
    reader = wsf.FrameReader()
    data = (wsf.encode_frame(wsf.TEXT, b"hel", None, fin=False) + wsf.encode_frame(wsf.PING, b"p", None)
            + wsf.encode_frame(wsf.CONTINUATION, b"lo", None))
    frames = [reader.feed(bytes([byte])) for byte in data]
    flat = [frame for batch in frames for frame in batch]
    assert [(f.opcode, f.payload) for f in flat] == [(wsf.PING, b"p"), (wsf.TEXT, b"hello")]


def test_close_payloads():
    assert wsf.parse_close(wsf.close_payload(1011, "server bye")) == (1011, "server bye")
    assert wsf.parse_close(b"") == (1005, "")
    response = wsf.parse_upgrade_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    assert response.accepts("dGhlIHNhbXBsZSBub25jZQ==")  # RFC 6455's example key
    assert not wsf.parse_upgrade_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").accepts("x")
