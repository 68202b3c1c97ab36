"""Talking back into a call, through the simulator's real sockets: a WebSocket server's streamAudio message
becomes a file and a ::play event (mod_audio_stream's processMessage), `uuid_broadcast` plays a file into the
call on the 20 ms media clock (PLAYBACK_START / PLAYBACK_STOP as switch_ivr_play_file fires them), `uuid_break`
stops it, and what the caller hears reaches the mixed and stereo streams. Checked against the captures
(esl/ws_server_streamAudio_play, esl/examples/*PLAYBACK_*) and the measured delays in shared/PROTOCOL.md.
"""

import base64
import json
import os
import time

import pytest
from gevent.queue import Empty

from controller.esl.protocol import parse_event
from controller.simulator import playback_rules, signals, stream_audio_rules
from controller.simulator import ws_frames as wsf
from controller.simulator.playback import BROADCAST_GAPS_S, BROADCAST_START_DELAY_S
from test_simulator import (PLAYBACK_VARIABLES, WAIT, assert_same_layout, captured_event, event_header_names,
                            held_call, start_stream)

TICK = 320  # bytes of one 20 ms frame at 8 kHz
PLAYBACK_EVENTS = "event plain PLAYBACK_START PLAYBACK_STOP"
# Set by the broadcast itself (switch_ivr_parse_event): absent from the capture's dialplan playback.
BROADCAST_VARIABLES = {"variable_current_loop", "variable_total_loops"}


@pytest.fixture
def talk(sim, esl, tmp_path):
    """The switch's temp dir in tmp_path, and the Event Socket client subscribed to the playback events too."""
    sim.temp_dir = str(tmp_path)
    assert esl.command(PLAYBACK_EVENTS).reply_text.startswith("+OK event listener enabled")
    return tmp_path


def write_r8(path, pcm: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(pcm)
    return str(path)


def captured_server_text(captures) -> str:
    """The streamAudio message the capture's WebSocket server sent (ws/server_streamAudio_play)."""
    for line in (captures / "ws" / "server_streamAudio_play" / "conn1.frames.jsonl").read_text().splitlines():
        frame = json.loads(line)
        if frame.get("event") == "server_sent_text":
            return frame["text"]
    raise AssertionError("the capture holds no server text")


def playback_events(sim, uuid: str) -> list:
    return [e for e in sim.fired_events if dict(e.headers).get("Unique-ID") == uuid
            and dict(e.headers).get("Event-Name", "").startswith("PLAYBACK_")]


def fixed_names(message) -> list[str]:
    return [name for name in event_header_names(message) if not name.startswith("variable_")]


def ticks_of(heard: bytes, record) -> bytes:
    return heard[record.first_tick * TICK : record.end_tick * TICK]


# ---- streamAudio: the file and the ::play event ----


def test_stream_audio_becomes_the_captured_play_event_and_a_file(sim, esl, ws, talk, captures):
    call = held_call(sim, plays=None)
    start_stream(esl, call, ws.url("/play"), "mono", "8k")
    peer = ws.next_peer()
    text = captured_server_text(captures)
    peer.send_text(text)
    event, message = esl.wait_event("mod_audio_stream::play", call.uuid)
    path = f"{talk}/{call.uuid}_0.tmp.r8"
    captured = captured_event(captures, "text_event-plain__mod_audio_stream__play.bin")
    captured_body = parse_event(captured).body
    captured_path = json.loads(captured_body)["file"]
    assert event.body == captured_body.replace(captured_path, path)  # key order and form included
    assert_same_layout(message, captured, PLAYBACK_VARIABLES)
    with open(path, "rb") as handle:
        assert handle.read() == base64.b64decode(json.loads(text)["data"]["audioData"])
    peer.send_text(text)
    event, _ = esl.wait_event("mod_audio_stream::play", call.uuid)
    assert json.loads(event.body)["file"] == f"{talk}/{call.uuid}_1.tmp.r8"  # n counts per stream
    call.hangup()


@pytest.mark.parametrize("text, error", [
    ('{"type":"streamAudio"}', "no data in streamAudio"),
    ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000}}',
     "streamAudio missing 'audioData' field"),
    ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000,"audioData":5}}',
     "'audioData' is not a string"),
    ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":12000,"audioData":"AAAA"}}',
     "unsupported sample rate: 12000"),
    ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":"8000","audioData":"AAAA"}}',
     "unsupported sample rate: 0"),
    ('{"type":"streamAudio","data":{"audioDataType":"flac","audioData":"AAAA"}}', "unsupported audio type: flac"),
    ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000,"audioData":"AA A"}}',
     "base64 decode error: Input is not valid base64-encoded data."),
    ('{"type":"streamAudio","data":{"audioDataType":"wav","audioData":"AAAAA"}}', "base64 decode error: basic_string::at"),
])
def test_a_refused_stream_audio_is_logged_and_fires_json_with_the_text(sim, esl, ws, talk, caplog, text, error):
    # audio_streamer_glue.cpp (ec2a781) eventCallback: a message processMessage did not take falls back to ::json.
    call = held_call(sim, plays=None)
    start_stream(esl, call, ws.url("/bad"))
    peer = ws.next_peer()
    peer.send_text(text)
    event, _ = esl.wait_event("mod_audio_stream::json", call.uuid)
    assert event.body == text
    assert f"({call.uuid}) processMessage - {error}" in caplog.text
    assert not os.listdir(talk)
    assert not [e for e in sim.fired_events if dict(e.headers).get("Event-Subclass") == "mod_audio_stream::play"]
    call.hangup()


def test_the_files_go_at_stop_and_at_hangup_but_stay_after_a_server_close(sim, esl, ws, talk):
    call = held_call(sim, plays=None)
    message = json.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": 16000,
                                                          "audioData": base64.b64encode(bytes(640)).decode()}})
    start_stream(esl, call, ws.url("/first"))
    peer = ws.next_peer()
    peer.send_text(message)
    first = json.loads(esl.wait_event("mod_audio_stream::play", call.uuid)[0].body)["file"]
    assert first == f"{talk}/{call.uuid}_0.tmp.r16"
    peer.close(1000, "done")
    esl.wait_event("mod_audio_stream::disconnect", call.uuid)
    assert os.path.exists(first)  # the stream stays attached: no cleanup yet
    assert esl.api(f"uuid_audio_stream {call.uuid} stop") == "+OK Success\n"
    assert not os.path.exists(first)
    start_stream(esl, call, ws.url("/second"))
    peer = ws.next_peer()
    peer.send_text(message)
    second = json.loads(esl.wait_event("mod_audio_stream::play", call.uuid)[0].body)["file"]
    assert second == first and os.path.exists(second)  # a new stream counts from 0 again
    call.hangup()
    assert not os.path.exists(second)


def test_cjson_and_base64_quirks_of_the_module():
    # cJSON 1.7.12: keys match ignoring case (first match), numbers print as %1.15g, text after the value is
    # ignored; base64.cpp: padding optional, '=' ends a chunk, url-safe characters accepted.
    request = stream_audio_rules.read_message(
        '{"TYPE":"streamAudio","Data":{"AudioData":"QUJD","audioDataType":"raw","sampleRate":8000.0,'
        '"x":[1,2.5,true,null,"\\u00e9\\n"],"audioData":"keep"}} trailing')
    assert request.suffix == ".r8" and request.audio == b"ABC"
    assert stream_audio_rules.play_body(request.details, "/t/f.r8") == (
        '{"audioDataType":"raw","sampleRate":8000,"x":[1,2.5,true,null,"\u00e9\\n"],"audioData":"keep",'
        '"file":"/t/f.r8"}')
    assert [stream_audio_rules.base64_decode(t) for t in ("QQ", "QQ==", "QU=D", "-_-_")] == \
        [b"A", b"A", b"A", bytes([0xFB, 0xFF, 0xBF])]
    assert stream_audio_rules.read_message('{"type":"transcript"}') is None
    assert stream_audio_rules.read_message("not json") is None
    assert stream_audio_rules.read_message('{"type":"streamAudio","data":{"audioDataType":"raw",'
                                           '"sampleRate":8000.9,"audioData":""}}').suffix == ".r8"  # valueint


# ---- uuid_broadcast and uuid_break: replies ----


def test_broadcast_and_break_answer_as_mod_commands_does(sim, esl, talk):
    call = held_call(sim, plays=None)
    usage = "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    assert esl.api("uuid_broadcast") == usage
    assert esl.api(f"uuid_broadcast {call.uuid}") == usage
    assert esl.api("uuid_broadcast no-such-uuid /tmp/x.wav") == "-ERR invalid uuid\n"
    assert esl.api(f"uuid_broadcast {call.uuid} {talk}/missing.wav aleg") == "+OK Message sent\n"
    assert esl.api("uuid_break") == "-USAGE: <uuid> [all]\n"
    assert esl.api("uuid_break no-such-uuid all") == "-ERR No such channel!\n"
    assert esl.api(f"uuid_break {call.uuid} all") == "+OK\n"
    assert esl.command(f"bgapi uuid_broadcast {call.uuid} {talk}/missing.wav").reply_text.startswith("+OK Job-UUID")
    job, _ = esl.wait_event("BACKGROUND_JOB")
    assert job.body == "+OK Message sent\n"
    assert esl.api("show api uuid_broadcast").split("\n")[1] == \
        "uuid_broadcast,Execute dialplan application,<uuid> <path> [aleg|bleg|holdb|both],mod_commands"
    assert esl.api("show api uuid_break").split("\n")[1] == \
        "uuid_break,Break out of media sent to channel,<uuid> [all],mod_commands"
    call.hangup()


@pytest.mark.parametrize("name, content", [
    ("missing.r8", None), ("x.r48", bytes(640)), ("x.r64", bytes(640)), ("x.pcmu", bytes(160)), ("x.mp3", b"ID3"),
    ("x.wav", b"not a wav"),
])
def test_a_file_freeswitch_cannot_open_fires_no_playback_event(sim, esl, talk, name, content):
    path = talk / name
    if content is not None:
        path.write_bytes(content)
    call = held_call(sim, plays=None)
    assert esl.api(f"uuid_broadcast {call.uuid} {path} aleg") == "+OK Message sent\n"
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "failed"
    assert playback_events(sim, call.uuid) == []
    assert call.get_variable("current_application_response") == "FILE NOT FOUND"
    call.hangup()


# ---- a broadcast: timing, events, what the caller hears ----


def test_a_broadcast_is_heard_130_ms_later_and_the_caller_hears_the_file(sim, esl, talk, captures):
    # Measured from the caller's RTP (PROTOCOL.md, "Talk-back timings"): heard 130 ms after the api call.
    call = held_call(sim, plays=None, duration_s=3.0)
    audio = signals.tone(440, 0.3, 8000)  # 15 whole frames
    path = write_r8(talk / "hello.r8", audio)
    asked = time.monotonic()
    assert esl.api(f"uuid_broadcast {call.uuid} {path} aleg") == "+OK Message sent\n"
    replied = time.monotonic()
    start, start_message = esl.wait_event("PLAYBACK_START", call.uuid)
    started = time.monotonic()
    assert started - asked >= BROADCAST_START_DELAY_S - 0.020 and started - replied <= 0.15 + 0.3
    stop, stop_message = esl.wait_event("PLAYBACK_STOP", call.uuid)
    assert start.get("Playback-File-Path") == stop.get("Playback-File-Path") == path
    assert stop.get("Playback-Status") == "done"
    assert start.get("variable_current_application") == "playback"
    assert start.get("variable_current_application_data") == path
    assert (stop.get("variable_playback_ms"), stop.get("variable_playback_samples")) == ("300", "2400")
    # The captured events are of a tone_stream (Playback-File-Type): a file has no such header.
    for mine, name in ((start_message, "PLAYBACK_START"), (stop_message, "PLAYBACK_STOP")):
        captured = captured_event(captures, f"text_event-plain__{name}.bin")
        assert fixed_names(mine) == [n for n in fixed_names(captured) if n != "Playback-File-Type"]
    [record] = call.playbacks
    assert record.status == "done" and record.frames == 15
    heard_at = call.broadcasts.time_of(record.first_tick)  # its first frame, on the 20 ms clock
    assert BROADCAST_START_DELAY_S == 0.13
    assert 0.13 - 0.001 <= heard_at - record.asked_at < 0.13 + 0.020
    # PLAYBACK_START: at the tick before its first frame.
    assert call.broadcasts.time_of(record.first_tick - 1) - 0.001 <= record.started_at < heard_at
    assert abs((record.stopped_at - record.started_at) - 0.3) < 0.06  # STOP right after the last frame
    heard = call.heard
    assert ticks_of(heard, record) == audio == record.heard
    assert heard[: record.first_tick * TICK] == bytes(record.first_tick * TICK)
    call.hangup()


def test_a_tone_stream_broadcast_has_the_captured_header_layout(sim, esl, talk, captures):
    call = held_call(sim, plays=None)
    assert esl.api(f"uuid_broadcast {call.uuid} tone_stream://%(500,0,800)") == "+OK Message sent\n"
    _, start = esl.wait_event("PLAYBACK_START", call.uuid)
    stop_event, stop = esl.wait_event("PLAYBACK_STOP", call.uuid)
    for mine, name in ((start, "PLAYBACK_START"), (stop, "PLAYBACK_STOP")):
        captured = captured_event(captures, f"text_event-plain__{name}.bin")
        assert_same_layout(mine, captured, PLAYBACK_VARIABLES)
        assert BROADCAST_VARIABLES <= set(event_header_names(mine))
    assert stop_event.get("Playback-File-Type") == "tone_stream"
    assert (stop_event.get("variable_playback_ms"), stop_event.get("variable_playback_samples")) == ("500", "4000")
    [record] = call.playbacks
    assert ticks_of(call.heard, record) == signals.tone(800, 0.5, 8000)
    call.hangup()


@pytest.mark.parametrize("app, hole_ms", [("sleep", 180), ("park", 180), ("endless_silence", 100)])
def test_two_queued_broadcasts_leave_the_hole_measured_for_the_calls_application(sim, esl, talk, app, hole_ms):
    # Measured from the caller's RTP: 100 ms in endless_playback silence_stream://-1, 180 ms parked (sleep: its
    # loop takes broadcasts as park's does).
    call = held_call(sim, plays=None, app=app)
    first_audio, second_audio = signals.tone(440, 0.2, 8000), signals.tone(660, 0.2, 8000)
    for name, audio in (("a.r8", first_audio), ("b.r8", second_audio)):
        assert esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / name, audio)} aleg") == "+OK Message sent\n"
    esl.wait_event("PLAYBACK_START", call.uuid)
    esl.wait_event("PLAYBACK_STOP", call.uuid)
    stopped = time.monotonic()
    esl.wait_event("PLAYBACK_START", call.uuid)
    assert 0.06 <= time.monotonic() - stopped <= 0.3
    esl.wait_event("PLAYBACK_STOP", call.uuid)
    first, second = call.playbacks
    hole = second.first_tick - first.end_tick
    assert hole == round(BROADCAST_GAPS_S[call.plan] / 0.020) == hole_ms // 20
    heard = call.heard
    assert ticks_of(heard, first) == first_audio and ticks_of(heard, second) == second_audio
    assert heard[first.end_tick * TICK : second.first_tick * TICK] == bytes(hole * TICK)
    call.hangup()


def test_the_measured_delays_are_knobs(sim, esl, talk):
    sim.broadcast_start_delay_s, sim.broadcast_gap_s = 0.04, 0.06
    call = held_call(sim, plays=None)
    path = write_r8(talk / "short.r8", signals.tone(440, 0.1, 8000))
    esl.api(f"uuid_broadcast {call.uuid} {path}")
    esl.api(f"uuid_broadcast {call.uuid} {path}")
    first, second = call.playbacks
    assert second.finished.wait(WAIT)
    assert first.started_at - first.asked_at < 0.04 + 0.03
    assert second.first_tick - first.end_tick == 3
    call.hangup()


def test_one_file_string_plays_three_files_back_to_back_with_one_pair_of_events(sim, esl, talk):
    parts = [signals.tone(hz, 0.1, 8000) for hz in (440, 550, 660)]
    paths = [write_r8(talk / f"part{i}.r8", audio) for i, audio in enumerate(parts)]
    call = held_call(sim, plays=None)
    spec = "file_string://" + "!".join(paths)
    assert esl.api(f"uuid_broadcast {call.uuid} {spec} aleg") == "+OK Message sent\n"
    start, _ = esl.wait_event("PLAYBACK_START", call.uuid)
    stop, _ = esl.wait_event("PLAYBACK_STOP", call.uuid)
    assert start.get("Playback-File-Path") == stop.get("Playback-File-Path") == spec
    assert len(playback_events(sim, call.uuid)) == 2  # one START and one STOP for the whole file_string
    [record] = call.playbacks
    # mod_dptools' file_string: 250 ms of samples of -1 first, then the parts with nothing between them.
    lead = b"\xff\xff" * 2000
    played = lead + b"".join(parts)
    assert ticks_of(call.heard, record) == played + b"\xff" * (-len(played) % TICK)
    call.hangup()


def test_uuid_break_stops_at_the_next_tick_and_all_drops_the_queue(sim, esl, ws, talk):
    call = held_call(sim, plays=None, duration_s=3.0)
    start_stream(esl, call, ws.url("/break"), "stereo", "8000")
    peer = ws.next_peer()
    long_path = write_r8(talk / "long.r8", signals.tone(440, 2.0, 8000))
    short_path = write_r8(talk / "short.r8", signals.tone(660, 0.2, 8000))
    for path in (long_path, short_path, short_path):
        esl.api(f"uuid_broadcast {call.uuid} {path} aleg")
    esl.wait_event("PLAYBACK_START", call.uuid)
    for _ in range(10):
        peer.next_frame(wsf.BINARY)  # ten frames of it have reached the stream
    broadcaster = call.broadcasts
    before = time.monotonic()
    assert esl.api(f"uuid_break {call.uuid} all") == "+OK\n"
    after = time.monotonic()
    stop, _ = esl.wait_event("PLAYBACK_STOP", call.uuid)
    arrived = time.monotonic()
    assert stop.get("Playback-Status") == "break"
    broken, dropped, dropped_too = call.playbacks
    # The frame in flight still goes out; the break is seen right after it, at the next tick.
    assert broadcaster.tick_at(before) + 2 <= broken.end_tick <= broadcaster.tick_at(after) + 2
    assert arrived - after <= 0.020 + 0.08  # at the next tick (the bound allows for a loaded machine)
    assert int(stop.get("variable_playback_last_offset_pos")) == broken.frames * 160
    assert dropped.status == dropped_too.status == "dropped"
    assert [dict(e.headers)["Event-Name"] for e in playback_events(sim, call.uuid)] == ["PLAYBACK_START",
                                                                                     "PLAYBACK_STOP"]
    heard = call.heard
    assert ticks_of(heard, broken) == broken.heard == signals.tone(440, 2.0, 8000)[: broken.frames * TICK]
    assert not call.hung_up.is_set()  # parked: the break flag it leaves changes nothing
    call.hangup()
    assert heard[broken.end_tick * TICK :] == bytes(len(heard) - broken.end_tick * TICK)


def test_uuid_break_without_all_lets_the_queued_broadcast_play(sim, esl, talk):
    call = held_call(sim, plays=None)
    long_path = write_r8(talk / "long.r8", signals.tone(440, 2.0, 8000))
    short_audio = signals.tone(660, 0.2, 8000)
    short_path = write_r8(talk / "short.r8", short_audio)
    esl.api(f"uuid_broadcast {call.uuid} {long_path}")
    esl.api(f"uuid_broadcast {call.uuid} {short_path}")
    esl.wait_event("PLAYBACK_START", call.uuid)
    assert esl.api(f"uuid_break {call.uuid}") == "+OK\n"
    assert esl.wait_event("PLAYBACK_STOP", call.uuid)[0].get("Playback-Status") == "break"
    start, _ = esl.wait_event("PLAYBACK_START", call.uuid)
    assert start.get("Playback-File-Path") == short_path
    assert esl.wait_event("PLAYBACK_STOP", call.uuid)[0].get("Playback-Status") == "done"
    broken, played = call.playbacks
    assert played.first_tick - broken.end_tick == 9  # 180 ms: the hole between two broadcasts on this call
    assert ticks_of(call.heard, played) == short_audio
    call.hangup()


def test_a_break_ends_a_sleeping_calls_sleep_and_the_dialplan_hangs_up(sim, esl, talk):
    # switch_ivr_parse_event: a broken broadcast leaves CF_BREAK set; switch_ivr_sleep returns on it.
    call = sim.place_call("9999", plays=None, duration_s=10.0)
    assert call.answered.wait(WAIT)
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'long.r8', signals.tone(440, 2.0, 8000))}")
    esl.wait_event("PLAYBACK_START", call.uuid)
    esl.api(f"uuid_break {call.uuid}")
    assert esl.wait_event("PLAYBACK_STOP", call.uuid)[0].get("Playback-Status") == "break"
    stopped = time.monotonic()
    hangup, _ = esl.wait_event("CHANNEL_HANGUP", call.uuid)
    assert hangup.get("Hangup-Cause") == "NORMAL_CLEARING" and time.monotonic() - stopped < 0.1


def test_an_idle_break_ends_the_sleep_too_but_a_parked_call_stays(sim, esl, talk):
    sleeping = sim.place_call("9999", plays=None, duration_s=10.0)
    parked = held_call(sim, plays=None)
    assert sleeping.answered.wait(WAIT)
    assert esl.api(f"uuid_break {parked.uuid}") == "+OK\n"
    assert esl.api(f"uuid_break {sleeping.uuid}") == "+OK\n"
    sent = time.monotonic()
    esl.wait_event("CHANNEL_HANGUP", sleeping.uuid)
    assert time.monotonic() - sent < 0.1  # at the sleep's next frame
    assert not parked.hung_up.is_set()
    parked.hangup()


def test_a_sleep_that_runs_out_waits_for_the_broadcast_under_way(sim, esl, talk):
    # The broadcast runs inside the sleep's loop: the dialplan moves on only when it is over.
    call = sim.place_call("9999", plays=None, duration_s=0.3)
    assert call.answered.wait(WAIT)
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'long.r8', signals.tone(440, 0.6, 8000))}")
    stop, _ = esl.wait_event("PLAYBACK_STOP", call.uuid)
    assert stop.get("Playback-Status") == "done"
    esl.wait_event("CHANNEL_HANGUP", call.uuid)
    [record] = call.playbacks
    assert record.frames == 30


def test_a_hangup_stops_the_playback_with_status_done_between_the_hangup_events(sim, esl, talk):
    call = held_call(sim, plays=None)
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'long.r8', signals.tone(440, 2.0, 8000))}")
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'next.r8', signals.tone(440, 0.2, 8000))}")
    esl.wait_event("PLAYBACK_START", call.uuid)
    assert esl.api(f"uuid_kill {call.uuid}") == "+OK\n"
    names = [dict(e.headers)["Event-Name"] for e in sim.fired_events if dict(e.headers).get("Unique-ID") == call.uuid]
    assert names[-3:] == ["CHANNEL_HANGUP", "PLAYBACK_STOP", "CHANNEL_HANGUP_COMPLETE"]
    stop, _ = esl.wait_event("PLAYBACK_STOP", call.uuid)
    assert stop.get("Playback-Status") == "done"
    played, never = call.playbacks
    assert played.frames < 100 and never.status == "dropped"


# ---- what the caller hears reaches the streams ----


@pytest.mark.parametrize("mix", ["stereo", "mixed", "mono"])
def test_the_broadcast_is_the_right_channel_of_stereo_part_of_mixed_and_absent_from_mono(sim, esl, ws, talk, mix):
    speech = signals.speech_like(3.0, 8000, seed=4)
    call = held_call(sim, plays=None, speech=speech, duration_s=3.0)
    start_stream(esl, call, ws.url(f"/{mix}"), mix, "8000")
    peer = ws.next_peer()
    if mix == "mono":
        peer.next_frame(wsf.BINARY)  # mono flows from the start
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'played.r8', signals.tone(500, 0.3, 8000))}")
    esl.wait_event("PLAYBACK_STOP", call.uuid)
    [record] = call.playbacks
    caller = speech[record.first_tick * TICK : record.end_tick * TICK]
    if mix == "mono":
        while len(b"".join(peer.binary_payloads())) < record.end_tick * TICK:
            peer.next_frame(wsf.BINARY)
        sent = sim.streams_for(call.uuid)[0].sent_pcm
        offset = speech.find(sent)
        assert offset >= 0 and offset % TICK == 0  # only what the caller says
    else:
        frames = [peer.next_frame(wsf.BINARY)[1] for _ in range(record.frames)]  # only while it plays
        audio = b"".join(frames)
        if mix == "stereo":
            left = b"".join(audio[i : i + 2] for i in range(0, len(audio), 4))
            right = b"".join(audio[i + 2 : i + 4] for i in range(0, len(audio), 4))
            assert left == caller and right == record.heard
        else:
            assert audio == signals.mix(caller, record.heard)
        with pytest.raises(Empty):
            peer.next_frame(wsf.BINARY, timeout=0.2)  # nothing plays after it: nothing is sent
    call.hangup()


def test_raw_24_and_32_khz_files_are_read_as_wider_samples_as_mod_sndfile_does(tmp_path):
    pcm = signals.tone(440, 0.3, 24000)
    path = tmp_path / "x.tmp.r24"
    path.write_bytes(pcm)
    opened = playback_rules.open_playable(str(path), 8000)
    assert opened.native_rate == 24000 and opened.native_samples == len(pcm) // 3  # 24-bit samples
    assert len(opened.audio) == 2 * (len(pcm) // 3) // 3  # 2/3 as long, at 8 kHz
    assert playback_rules.open_playable(str(tmp_path / "x.tmp.r48"), 8000) is None


def test_a_key_press_fires_dtmf_with_the_channels_headers_then_the_digit(sim, esl):
    assert esl.command("event plain DTMF").reply_text.startswith("+OK")
    call = held_call(sim)
    call.press("7")
    event, message = esl.wait_event("DTMF", call.uuid)
    assert (event.get("DTMF-Digit"), event.get("DTMF-Duration"), event.get("DTMF-Source")) == ("7", "2000", "RTP")
    names = event_header_names(message)
    assert names[0] == "Event-Name" and names[-3:] == ["DTMF-Digit", "DTMF-Duration", "DTMF-Source"]
    assert "Caller-Destination-Number" in names and any(name.startswith("variable_") for name in names)
