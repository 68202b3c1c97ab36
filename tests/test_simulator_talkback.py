"""The simulator against the talk-back facts measured on a real FreeSWITCH 1.10.12 + mod_audio_stream from the
caller's RTP (shared/PROTOCOL.md, "Talk-back timings" and "Which mixes carry audio"; issue #16), through real
sockets: the Event Socket api, the module's WebSocket, and the audio the simulated call heard.

- park and sleep write nothing to the channel: mono flows, mixed and stereo deliver 0 bytes for the whole call;
  `endless_playback silence_stream://-1` after answer keeps stereo and mixed flowing (silence on the right while
  nothing plays), a broadcast plays over it, `uuid_break <uuid> all` stops the broadcast and the call carries on;
- two queued broadcasts leave 100 ms (endless_playback) to 180 ms (park) of hole;
- `file_string://a!b!c` (mod_dptools): 250 ms of samples of -1 first (the first file is not native), each file
  opened only when the one before it ends (so files written just in time play with no hole), a name missing
  when its turn comes skipped (`Can't open file`, filestring::fail), the playback over when every name left is
  missing, at most 128 entries (argv[128]: the 128th keeps the rest of the string), and CUSTOM
  filestring::open / filestring::close with the header File.
"""

import base64
import json
import logging
import time

import gevent
import pytest

from controller.esl.protocol import parse_event
from controller.simulator import playback_rules, signals
from controller.simulator import ws_frames as wsf
from test_simulator import WAIT, event_header_names, held_call, start_stream
from test_simulator_playback import PLAYBACK_EVENTS, TICK, playback_events, ticks_of, write_r8

FILESTRING_EVENTS = "event plain CUSTOM filestring::open filestring::close filestring::fail"
LEAD = b"\xff\xff" * 2000  # 250 ms of samples of -1 at 8 kHz
SUBCLASSES = ("filestring::open", "filestring::close", "filestring::fail")


@pytest.fixture
def talk(sim, esl, tmp_path):
    """The switch's temp dir in tmp_path, and the Event Socket client subscribed to the playback events too."""
    sim.temp_dir = str(tmp_path)
    assert esl.command(PLAYBACK_EVENTS).reply_text.startswith("+OK event listener enabled")
    return tmp_path


def filestring_events(sim) -> list[tuple[str, str]]:
    """(open|close|fail, File) for every filestring event the switch fired, in order."""
    out = []
    for event in sim.fired_events:
        headers = dict(event.headers)
        if headers.get("Event-Subclass") in SUBCLASSES:
            out.append((headers["Event-Subclass"].split("::")[1], headers["File"]))
    return out


def next_filestring_event(esl):
    """The next filestring::* event the Event Socket client receives (others are passed over)."""
    while True:
        message = esl.events.popleft() if esl.events else esl.read()
        if message.content_type.startswith("text/event"):
            event = parse_event(message)
            if event.name == "CUSTOM" and event.subclass in SUBCLASSES:
                return event, message


def padded(audio: bytes, frame: int = TICK) -> bytes:
    return audio + b"\xff" * (-len(audio) % frame)


def originate(esl, sim, application: str):
    reply = esl.api(f"originate null/any &{application}")
    assert reply.startswith("+OK "), reply
    call = sim.calls[reply[4:].strip()]
    assert call.answered.wait(WAIT)
    return call


def stream_audio_text(pcm: bytes) -> str:
    return json.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": 8000,
                                                       "audioData": base64.b64encode(pcm).decode()}})


def channels(stereo: bytes) -> tuple[bytes, bytes]:
    left = b"".join(stereo[i : i + 2] for i in range(0, len(stereo), 4))
    right = b"".join(stereo[i + 2 : i + 4] for i in range(0, len(stereo), 4))
    return left, right


# ---- which mixes flow, per dialplan application ----


PLANS = {
    "park": lambda sim, esl: held_call(sim, app="park"),
    "sleep": lambda sim, esl: sim.place_call("9999", plays=None, duration_s=10.0),  # answer + sleep
    "originate &park()": lambda sim, esl: originate(esl, sim, "park()"),
    "originate &sleep(10000)": lambda sim, esl: originate(esl, sim, "sleep(10000)"),
}


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("mix", ["mono", "mixed", "stereo"])
def test_park_and_sleep_send_mono_only_and_mixed_and_stereo_deliver_nothing(sim, esl, ws, plan, mix):
    # Measured: a parked call sends mono at the full rate, mixed and stereo 0 bytes for the whole call (nothing
    # is written to the channel); the same for sleep (100 calls x 15 s: 0 frames each).
    call = PLANS[plan](sim, esl)
    assert call.answered.wait(WAIT)
    assert start_stream(esl, call, ws.url(f"/{mix}"), mix, "8000") == "+OK Success\n"
    esl.wait_event("mod_audio_stream::connect", call.uuid)
    peer = ws.next_peer()
    gevent.sleep(0.6)
    sent = len(sim.streams_for(call.uuid)[0].sent_pcm)
    if mix == "mono":
        assert sent >= 0.4 * 16000 and peer.binary_payloads()
    else:
        assert sent == 0 and peer.binary_payloads() == []
    assert not call.hung_up.is_set()
    call.hangup()
    assert peer.closed.wait(WAIT)
    if mix != "mono":
        assert peer.binary_payloads() == []  # for the whole call


@pytest.mark.parametrize("how", ["place_call", "originate"])
def test_endless_silence_keeps_stereo_flowing_and_a_broken_broadcast_leaves_the_call_up(sim, esl, ws, talk, how):
    # Measured: endless_playback silence_stream://-1 after answer sends stereo at the full rate (left the caller,
    # right what it hears: silence while nothing plays); a broadcast plays over it; uuid_break all stops the
    # broadcast and the call carries on; a later broadcast plays again.
    speech = signals.speech_like(8.0, 8000, seed=5)
    if how == "place_call":
        call = held_call(sim, app="endless_silence", speech=speech, duration_s=8.0)
        assert call.get_variable("current_application") == "endless_playback"
        assert call.get_variable("current_application_data") == "silence_stream://-1"
    else:
        call = originate(esl, sim, "endless_playback(silence_stream://-1)")
        speech = b""  # a null leg says nothing
    start_stream(esl, call, ws.url("/stereo"), "stereo", "8000")
    peer = ws.next_peer()
    for _ in range(5):
        assert len(peer.next_frame(wsf.BINARY)[1]) == 2 * TICK  # flowing before anything is broadcast
    assert esl.api(f"uuid_break {call.uuid}") == "+OK\n"  # with nothing broadcast: the playback goes on
    long_audio, short_audio = signals.tone(440, 3.0, 8000), signals.tone(660, 0.2, 8000)
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'long.r8', long_audio)} aleg")
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'queued.r8', short_audio)} aleg")
    esl.wait_event("PLAYBACK_START", call.uuid)
    gevent.sleep(0.3)
    assert esl.api(f"uuid_break {call.uuid} all") == "+OK\n"
    assert esl.wait_event("PLAYBACK_STOP", call.uuid)[0].get("Playback-Status") == "break"
    gevent.sleep(0.3)
    assert not call.hung_up.is_set()  # the call carries on
    esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / 'later.r8', short_audio)} aleg")
    assert esl.wait_event("PLAYBACK_STOP", call.uuid)[0].get("Playback-Status") == "done"
    gevent.sleep(0.2)
    call.hangup()
    assert peer.closed.wait(WAIT)
    broken, dropped, later = call.playbacks
    assert (broken.status, dropped.status, later.status) == ("break", "dropped", "done")
    assert 0 < broken.frames < 150 and ticks_of(call.heard, later) == short_audio
    # Every tick from the stream's start to the hangup was sent: the right channel is what the caller heard
    # (silence, the broken broadcast, silence, the later one, silence), the left one the caller.
    left, right = channels(sim.streams_for(call.uuid)[0].sent_pcm)
    heard = call.heard
    offset = heard.find(right)
    assert offset > 0 and offset % TICK == 0 and offset + len(right) >= later.end_tick * TICK
    assert offset < broken.first_tick * TICK
    if speech:
        assert left == speech[offset : offset + len(left)]
    assert heard[broken.end_tick * TICK : later.first_tick * TICK] == bytes((later.first_tick - broken.end_tick) * TICK)


@pytest.mark.parametrize("application, hole_ms", [("endless_playback(silence_stream://-1)", 100), ("park()", 180)])
def test_an_originated_legs_application_sets_the_hole_between_queued_broadcasts(sim, esl, talk, application, hole_ms):
    call = originate(esl, sim, application)
    audio = signals.tone(440, 0.1, 8000)
    for name in ("a.r8", "b.r8"):
        esl.api(f"uuid_broadcast {call.uuid} {write_r8(talk / name, audio)} aleg")
    first, second = call.playbacks
    assert second.finished.wait(WAIT) and second.status == "done"
    assert (second.first_tick - first.end_tick) * 20 == hole_ms
    heard = call.heard
    assert heard[first.end_tick * TICK : second.first_tick * TICK] == bytes(hole_ms // 20 * TICK)
    call.hangup()


def test_the_gaps_are_knobs_per_application_and_one_for_all(sim, esl, talk):
    sim.broadcast_gaps_s["park"] = 0.04
    call = held_call(sim, plays=None, app="park")
    path = write_r8(talk / "a.r8", signals.tone(440, 0.1, 8000))
    for _ in range(2):
        esl.api(f"uuid_broadcast {call.uuid} {path}")
    first, second = call.playbacks
    assert second.finished.wait(WAIT)
    assert second.first_tick - first.end_tick == 2
    sim.broadcast_gap_s = 0.1  # one hole for every application
    for _ in range(2):
        esl.api(f"uuid_broadcast {call.uuid} {path}")
    third, fourth = call.playbacks[2:]
    assert fourth.finished.wait(WAIT)
    assert fourth.first_tick - third.end_tick == 5
    call.hangup()


# ---- file_string:// chains ----


@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_file_string_leads_with_250_ms_of_minus_one_and_fires_open_and_close_per_file(sim, esl, talk, captures,
                                                                                       rate):
    assert esl.command(FILESTRING_EVENTS).reply_text.startswith("+OK")
    parts = [signals.tone(hz, 0.1, 8000) for hz in (440, 550)]
    paths = [write_r8(talk / f"part{i}.r8", audio) for i, audio in enumerate(parts)]
    call = held_call(sim, plays=None, codec_rate=rate)
    spec = "file_string://" + "!".join(paths)
    assert esl.api(f"uuid_broadcast {call.uuid} {spec} aleg") == "+OK Message sent\n"
    received = []
    for _ in range(4):
        event, message = next_filestring_event(esl)
        received.append((event.get("Event-Subclass"), event.get("File")))
        names = event_header_names(message)
        # switch_event_create_subclass with no channel data: the core headers, then File.
        assert names[:2] == ["Event-Subclass", "Event-Name"] and names[-1] == "File"
        assert "Unique-ID" not in names and not any(name.startswith("variable_") for name in names)
        assert (event.get("Event-Name"), event.get("Event-Calling-File")) == ("CUSTOM", "mod_dptools.c")
    assert received == [("filestring::open", paths[0]), ("filestring::close", paths[0]),
                        ("filestring::open", paths[1]), ("filestring::close", paths[1])]
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "done"
    lead = b"\xff\xff" * (rate // 1000 * 250)  # at the channel's rate
    played = lead + b"".join(signals.resample(part, 8000, rate) for part in parts)
    heard = call.heard[record.first_tick * rate // 25 : record.end_tick * rate // 25]
    assert heard == padded(played, rate // 25)
    call.hangup()


def test_a_just_in_time_chain_of_40_ms_pieces_from_the_module_plays_with_no_hole(sim, esl, ws, talk):
    # Measured: naming the module's future files (<temp dir>/<uuid>_<n>.tmp.r8, n from 0 per stream start) in one
    # file_string and writing each just in time, 40 ms pieces in real time, played with no hole.
    assert esl.command(FILESTRING_EVENTS).reply_text.startswith("+OK")
    call = held_call(sim, app="endless_silence", duration_s=10.0)
    start_stream(esl, call, ws.url("/agent"), "mono", "8k")
    peer = ws.next_peer()
    pieces = [signals.speech_like(0.04, 8000, seed=20 + n) for n in range(40)]
    began = time.monotonic()
    peer.send_text(stream_audio_text(pieces[0]))
    event, _ = esl.wait_event("mod_audio_stream::play", call.uuid)
    first = json.loads(event.body)["file"]
    assert first == f"{talk}/{call.uuid}_0.tmp.r8"
    names = [f"{talk}/{call.uuid}_{n}.tmp.r8" for n in range(len(pieces))]
    spec = "file_string://" + "!".join(names)
    assert len(spec) > 2400  # as long as the measured chain: the Event Socket api takes it whole
    asked = time.monotonic()
    assert esl.api(f"uuid_broadcast {call.uuid} {spec} aleg") == "+OK Message sent\n"
    for n, piece in enumerate(pieces[1:], start=1):
        gevent.sleep(max(0.0, began + n * 0.040 - time.monotonic()))
        peer.send_text(stream_audio_text(piece))
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "done"
    assert filestring_events(sim) == [(kind, name) for name in names for kind in ("open", "close")]
    assert ticks_of(call.heard, record) == padded(LEAD + b"".join(pieces))  # no hole
    # Heard: 130 ms to the broadcast's first frame (on a tick), then the lead.
    first_piece_heard = call.broadcasts.time_of(record.first_tick) + 0.25
    assert 0.38 - 0.001 <= first_piece_heard - record.asked_at < 0.40 + 0.001
    assert record.asked_at - asked < 0.1
    call.hangup()


def test_a_name_missing_when_its_turn_comes_is_skipped_with_filestring_fail(sim, esl, talk, caplog):
    caplog.set_level(logging.ERROR, logger="controller.simulator.playback")
    a, c = signals.tone(440, 0.1, 8000), signals.tone(660, 0.1, 8000)
    call = held_call(sim, plays=None)
    path_a, path_c = write_r8(talk / "a.r8", a), write_r8(talk / "c.r8", c)
    missing = str(talk / "b.r8")
    esl.api(f"uuid_broadcast {call.uuid} file_string://{path_a}!{missing}!{path_c} aleg")
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "done"
    write_r8(talk / "b.r8", signals.tone(550, 0.1, 8000))  # too late: its turn has passed
    assert filestring_events(sim) == [("open", path_a), ("close", path_a), ("fail", missing), ("open", path_c),
                                      ("close", path_c)]
    assert f"Can't open file {missing}" in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert ticks_of(call.heard, record) == padded(LEAD + a + c)
    call.hangup()


def test_when_every_name_left_is_missing_the_playback_ends(sim, esl, talk):
    a = signals.tone(440, 0.11, 8000)  # 880 samples: the last frame padded
    call = held_call(sim, plays=None)
    path_a = write_r8(talk / "a.r8", a)
    gone = [str(talk / "x.r8"), str(talk / "y.r8")]
    esl.api(f"uuid_broadcast {call.uuid} file_string://{path_a}!{gone[0]}!{gone[1]}")
    stop, _ = esl.wait_event("PLAYBACK_STOP", call.uuid)
    assert stop.get("Playback-Status") == "done"
    [record] = call.playbacks
    assert record.frames == -(-(2000 + 880) // 160) == 18
    assert ticks_of(call.heard, record) == padded(LEAD + a)
    assert filestring_events(sim) == [("open", path_a), ("close", path_a), ("fail", gone[0]), ("fail", gone[1])]
    call.hangup()


def test_a_file_string_with_no_name_that_opens_fails_with_fail_events_only(sim, esl, talk):
    call = held_call(sim, plays=None)
    gone = [str(talk / "x.r8"), str(talk / "y.r8")]
    esl.api(f"uuid_broadcast {call.uuid} file_string://{gone[0]}!{gone[1]}")
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "failed"
    assert playback_events(sim, call.uuid) == []
    assert call.get_variable("current_application_response") == "FILE NOT FOUND"
    assert filestring_events(sim) == [("fail", gone[0]), ("fail", gone[1])]
    call.hangup()


def test_no_lead_when_the_first_name_is_missing(sim, esl, talk):
    # next_file sets the 250 ms only when entry 0 is the one that opened.
    b = signals.tone(440, 0.1, 8000)
    call = held_call(sim, plays=None)
    path_b = write_r8(talk / "b.r8", b)
    esl.api(f"uuid_broadcast {call.uuid} file_string://{talk}/missing.r8!{path_b}")
    [record] = call.playbacks
    assert record.finished.wait(WAIT) and record.status == "done"
    assert ticks_of(call.heard, record) == b
    call.hangup()


def test_at_most_128_entries_the_128th_keeps_the_rest_and_opens_nothing(sim, esl, talk):
    # file_string_context's argv[128] (switch_separate_string): with 130 names the 128th entry is
    # "f127!f128!f129", which names no file: 127 files play.
    pieces = [signals.tone(300 + 5 * n, 0.02, 8000) for n in range(130)]
    paths = [write_r8(talk / f"f{n}.r8", piece) for n, piece in enumerate(pieces)]
    call = held_call(sim, plays=None, duration_s=10.0)
    esl.api(f"uuid_broadcast {call.uuid} file_string://{'!'.join(paths)}")
    [record] = call.playbacks
    assert record.finished.wait(10) and record.status == "done"
    events = filestring_events(sim)
    rest = "!".join(paths[127:])
    assert events[-1] == ("fail", rest)
    assert [name for kind, name in events if kind == "open"] == paths[:127]
    assert ticks_of(call.heard, record) == padded(LEAD + b"".join(pieces[:127]))
    call.hangup()


def test_a_file_shorter_than_what_the_frame_lacks_gives_a_padded_frame_mid_chain(tmp_path):
    # switch_ivr_play_file reads when its buffer holds no more than a frame and takes what it then holds, a frame
    # at most, padding a short one with samples of -1: a piece that cannot fill the frame leaves a little hole.
    a, b, c = (signals.tone(hz, seconds, 8000) for hz, seconds in ((440, 300 / 8000), (550, 50 / 8000),
                                                                    (660, 0.04)))
    names = [write_r8(tmp_path / f"{name}.r8", audio) for name, audio in zip("abc", (a, b, c))]
    player = playback_rules.ChainPlayer(playback_rules.FileString("file_string://" + "!".join(names), 8000), 160)
    steps = player.chain.next_file()
    reads = []
    while not player.ended:
        player.make_ready_frames()
        if player.ended:
            break
        reads.append(player.count)  # the frame that needed a read
        steps += player.make_frame_with_read()
    assert [(s.kind, s.name) for s in steps] == [("open", names[0]), ("close", names[0]), ("open", names[1]),
                                                 ("close", names[1]), ("open", names[2]), ("close", names[2])]
    # The lead alone (12 frames and a half), then a; b is opened at frame 14 and cannot fill it (60 + 50 < 160).
    assert reads == [0, 12, 14, 15, 16]
    assert bytes(player.frames) == LEAD + a + b + b"\xff" * 100 + c
