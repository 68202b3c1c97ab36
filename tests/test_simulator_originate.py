"""The simulator's `originate` (mod_loopback's null endpoint), `show api` and the module fault knobs, through real
sockets; and the pure reading of originate's arguments and tone specs (originate_rules).

What is checked comes from FreeSWITCH 1.10.12's source (mod_commands originate_function and show_function,
switch_ivr_originate, mod_loopback's null endpoint, mod_tone_stream with libteletone, switch_channel_flip_cid)
and, for `show api uuid_audio_stream`, the capture."""

import json
import time

import pytest

from controller.simulator import originate_rules, signals
from controller.simulator import ws_frames as wsf
from test_simulator import WAIT, start_stream

UUID = "0e8d0a34-59f2-4d4c-9a5e-7b0d7c4a1f21"
TONE = "&playback(tone_stream://%(3000,0,440))"


def originate(esl, dial: str = f"{{origination_uuid={UUID}}}null/any", app: str = TONE) -> str:
    return esl.api(f"originate {dial} {app}")


def stream_bytes_per_second(peer, seconds: float) -> float:
    """Bytes of audio the peer receives over `seconds` from its next frame on."""
    peer.next_frame(wsf.BINARY)
    started, total = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        total += len(peer.next_frame(wsf.BINARY)[1])
    return total / (time.monotonic() - started)


# ---- originate through the Event Socket ----


def test_originate_answers_ok_with_the_uuid_after_create_and_answer(sim, esl):
    assert originate(esl, f"{{origination_uuid={UUID},fsctl_test_call=true}}null/any") == f"+OK {UUID}\n"
    created, _ = esl.wait_event("CHANNEL_CREATE", UUID)
    answer, _ = esl.wait_event("CHANNEL_ANSWER", UUID)
    assert answer.get("Event-Sequence") > created.get("Event-Sequence")
    headers = answer.headers
    # What FreeSWITCH gives an originated leg: outbound, named by its endpoint, L16 at 8 kHz, no SIP.
    assert (headers["Call-Direction"], headers["Caller-Logical-Direction"], headers["Channel-HIT-Dialplan"]) == \
        ("outbound", "outbound", "false")
    assert (headers["Channel-Name"], headers["Caller-Destination-Number"], headers["Caller-Context"]) == \
        ("null/any", "any", "default")
    assert (headers["Channel-Read-Codec-Name"], headers["Channel-Read-Codec-Rate"],
            headers["Channel-Read-Codec-Bit-Rate"]) == ("L16", "8000", "128000")
    assert (headers["Channel-State"], headers["Answer-State"], headers["Caller-Source"]) == \
        ("CS_CONSUME_MEDIA", "answered", "mod_loopback")
    # The profile originate makes: no name (left out), number 0000000000, the callee "Outbound Call" <any>.
    assert "Caller-Caller-ID-Name" not in headers and headers["Caller-Caller-ID-Number"] == "0000000000"
    assert (headers["Caller-Callee-ID-Name"], headers["Caller-Callee-ID-Number"]) == ("Outbound Call", "any")
    assert not any(name.startswith("variable_sip_") or name == "Caller-Network-Addr" for name in headers)
    # {vars} become the leg's variables; origination_uuid is used up naming it.
    assert headers["variable_fsctl_test_call"] == "true" and "variable_origination_uuid" not in headers
    assert esl.api(f"uuid_kill {UUID}") == "+OK\n"


def test_originate_works_as_a_background_job(sim, esl):
    reply = esl.command(f"bgapi originate {{origination_uuid={UUID}}}null/any {TONE}")
    assert reply.reply_text.startswith("+OK Job-UUID: ")
    job, _ = esl.wait_event("BACKGROUND_JOB")
    assert (job.body, job.get("Job-Command")) == (f"+OK {UUID}\n", "originate")
    assert sim.live_call(UUID).answered.is_set()
    esl.api(f"uuid_kill {UUID}")


def test_the_tutorial_command_plays_its_tone_once_because_originate_cuts_at_the_first_paren(sim, esl):
    answered_at = time.monotonic()
    assert originate(esl, app="&playback(tone_stream://%(1000,0,440);loops=-1)") == f"+OK {UUID}\n"
    listing = json.loads(esl.api("show channels as json"))["rows"][0]
    assert (listing["application"], listing["application_data"]) == ("playback", "tone_stream://%(1000,0,440")
    hangup, _ = esl.wait_event("CHANNEL_HANGUP_COMPLETE", UUID)
    # The 1 s tone, once; then "has executed the last dialplan instruction, hanging up".
    assert 0.9 <= time.monotonic() - answered_at < 1.5
    assert (hangup.get("Hangup-Cause"), hangup.get("variable_last_app"), hangup.get("variable_last_arg")) == \
        ("NORMAL_CLEARING", "playback", "tone_stream://%(1000,0,440")
    assert hangup.get("variable_playback_ms") == "1000"


def test_the_hangup_shows_the_flipped_caller_id_and_no_rtp(sim, esl):
    originate(esl)
    assert esl.api(f"uuid_kill {UUID}") == "+OK\n"
    hangup, _ = esl.wait_event("CHANNEL_HANGUP_COMPLETE", UUID)
    headers = hangup.headers
    # switch_channel_sort_cid once the application was set: the leg now shows its callee and hit the dialplan.
    assert (headers["Caller-Caller-ID-Name"], headers["Caller-Caller-ID-Number"]) == ("Outbound Call", "any")
    assert (headers["Caller-Orig-Caller-ID-Name"], headers["Caller-Callee-ID-Number"]) == ("", "0000000000")
    assert "Caller-Callee-ID-Name" not in headers
    assert (headers["Channel-HIT-Dialplan"], headers["Caller-Logical-Direction"]) == ("true", "inbound")
    assert (headers["variable_pre_transfer_caller_id_number"], headers["variable_channel_cid_flipped"]) == \
        ("0000000000", "yes")
    assert headers["variable_caller_id"] == '"Outbound Call" <any>'
    assert not any(name.startswith(("variable_rtp_", "variable_sip_")) for name in headers)
    assert (headers["variable_last_app"], headers["Hangup-Cause"]) == ("playback", "NORMAL_CLEARING")


def test_a_tone_played_for_ever_keeps_the_call_up_and_stereo_frames_flowing(sim, esl, ws):
    originate(esl, app="&playback({loops=-1}tone_stream://%(200,0,440))")
    start_stream(esl, sim.live_call(UUID), ws.url("/forever"), "stereo", "8000")
    peer = ws.next_peer()
    assert stream_bytes_per_second(peer, 1.0) == pytest.approx(8000 * 2 * 2, rel=0.1)  # well past 5 loops
    right = b"".join(peer.binary_payloads()[-5:])[2::4] + b"".join(peer.binary_payloads()[-5:])[3::4]
    assert any(right), "the right channel (what the switch plays) carries the tone"
    assert sim.live_call(UUID) is not None
    esl.api(f"uuid_kill {UUID}")


@pytest.mark.parametrize("mix, rate, channels", [("mono", 8000, 1), ("mixed", 16000, 1), ("stereo", 16000, 2)])
def test_while_the_tone_plays_every_mix_carries_rate_x_2_x_channels(sim, esl, ws, mix, rate, channels):
    originate(esl)
    start_stream(esl, sim.live_call(UUID), ws.url("/tone"), mix, str(rate))
    assert stream_bytes_per_second(ws.next_peer(), 1.0) == pytest.approx(rate * 2 * channels, rel=0.1)
    esl.api(f"uuid_kill {UUID}")


def test_a_parked_test_call_streams_mono_but_nothing_mixed_or_stereo(sim, esl, ws):
    originate(esl, app="&park()")
    call = sim.live_call(UUID)
    start_stream(esl, call, ws.url("/mono"), "mono", "8000")
    mono = ws.next_peer()
    assert len(mono.next_frame(wsf.BINARY)[1]) == 320
    assert esl.api(f"uuid_audio_stream {UUID} stop") == "+OK Success\n"
    assert mono.closed.wait(WAIT)
    start_stream(esl, call, ws.url("/stereo"), "stereo", "8000")
    stereo = ws.next_peer()
    esl.wait_event("mod_audio_stream::connect", UUID)
    with pytest.raises(Exception):
        stereo.next_frame(wsf.BINARY, timeout=0.5)  # the switch writes nothing to a parked call
    assert call.application == "park" and not call.hung_up.is_set()
    esl.api(f"uuid_kill {UUID}")


def test_the_rate_variable_sets_the_null_legs_codec(sim, esl):
    originate(esl, f"{{origination_uuid={UUID},rate=16000}}null/any")
    answer, _ = esl.wait_event("CHANNEL_ANSWER", UUID)
    assert answer.get("Channel-Read-Codec-Rate") == "16000" and answer.get("variable_read_rate") == "16000"
    esl.api(f"uuid_kill {UUID}")


def test_originate_errors_are_freeswitchs(sim, esl):
    usage = "-USAGE: " + originate_rules.ORIGINATE_SYNTAX + "\n"
    assert esl.api("originate") == usage
    assert esl.api("originate null/any") == usage
    assert esl.api("originate null/any &park a b c d e f") == usage  # 8 words
    # Only mod_loopback's null endpoint is loaded in the simulator.
    assert esl.api("originate sofia/gateway/gw/1000 &park") == "-ERR CHAN_NOT_IMPLEMENTED\n"
    assert sim.calls == {}


def test_an_origination_uuid_in_use_leaves_the_leg_its_own(sim, esl):
    originate(esl)
    reply = originate(esl)
    assert reply.startswith("+OK ") and reply != f"+OK {UUID}\n"
    other = reply[4:].strip()
    assert sim.live_call(other).endpoint == "null"
    esl.api(f"uuid_kill {UUID}")
    esl.api(f"uuid_kill {other}")


def test_an_unknown_application_hangs_the_leg_up_as_destination_out_of_order(sim, esl):
    assert originate(esl, app="&no_such_app(x)") == f"+OK {UUID}\n"
    hangup, _ = esl.wait_event("CHANNEL_HANGUP_COMPLETE", UUID)
    assert hangup.get("Hangup-Cause") == "DESTINATION_OUT_OF_ORDER"


# ---- show api and the module's fault knobs ----


def test_show_api_uuid_audio_stream_matches_the_capture(sim, esl, captures):
    misc = json.loads((captures / "notes" / "notes_misc_shutdown.json").read_text())["misc"]
    assert esl.api("show api uuid_audio_stream") == misc["show api uuid_audio_stream"]
    assert esl.api("show api no_such_api") == "\n0 total.\n"
    listing = esl.api("show api").split("\n")
    assert listing[0] == "name,description,syntax,ikey" and listing[-2] == f"{len(listing) - 4} total."
    names = [line.split(",", 1)[0] for line in listing[1:-3]]
    assert names == sorted(names) and {"originate", "uuid_audio_stream", "uuid_kill"} <= set(names)


def test_a_switch_without_the_module_says_so_everywhere(sim, esl):
    sim.audio_stream_loaded = False
    assert esl.api("module_exists mod_audio_stream") == "false"
    assert esl.api(f"uuid_audio_stream {UUID} stop") == "-ERR uuid_audio_stream Command not found!\n"
    assert esl.api("show api uuid_audio_stream") == "\n0 total.\n"
    assert esl.api("module_exists mod_loopback") == "true"


def test_a_module_that_ignores_the_rate_streams_at_its_own(sim, esl, ws):
    sim.module_stream_rate = 16000
    originate(esl)
    start_stream(esl, sim.live_call(UUID), ws.url("/rate"), "mono", "8000")
    peer = ws.next_peer()
    assert len(peer.next_frame(wsf.BINARY)[1]) == 640  # 20 ms at 16 kHz, though 8000 was asked for
    [stream] = sim.streams_for(UUID)
    assert (stream.rate, stream.sent_rate) == (8000, 16000)
    esl.api(f"uuid_kill {UUID}")


# ---- originate's arguments and tone specs (pure) ----


def test_originate_reads_its_words_and_dial_string_as_freeswitch_does():
    request = originate_rules.parse_originate(
        "{origination_uuid=u1,a=x\\,y,c='p,q'}[b=2]null/any &playback(tone_stream://%(1000,0,440);loops=-1) "
        "undef ctx")
    # The quotes went with the split at spaces, so only the escaped comma stays in its value.
    assert request.variables == [("origination_uuid", "u1"), ("a", "x,y"), ("c", "p"), ("b", "2")]
    assert (request.endpoint, request.target) == ("null", "any")
    assert (request.application, request.application_data) == ("playback", "tone_stream://%(1000,0,440")
    assert (request.dialplan, request.context) == ("XML", "ctx")
    assert originate_rules.parse_originate("null/a,null/b 9999").legs == 2
    assert originate_rules.parse_originate("null/a 9999").extension == "9999"


@pytest.mark.parametrize("path, seconds, plays", [
    ("tone_stream://%(1000,0,440", 1.0, 1),  # what originate leaves of the tutorial's command
    ("tone_stream://%(1000,0,440);loops=-1", 1.0, originate_rules.FOREVER),
    ("{loops=-1}tone_stream://%(1000,0,440)", 1.0, originate_rules.FOREVER),
    ("tone_stream://%(1000,0,440);loops=3", 1.0, 3),
    ("tone_stream://%(1000,0,440);loops=0", 1.0, 1),
    ("tone_stream://%(500,500,440,480);L=2", 2.0, 1),
    ("tone_stream://%(200,0,440);%(300,100,480)", 0.6, 1),
    ("silence_stream://250", 0.25, 1),
    ("silence_stream://0", 0.0, originate_rules.FOREVER),
])
def test_what_a_playback_plays(path, seconds, plays):
    played = originate_rules.file_audio(path, 8000)
    assert len(played.audio) == int(seconds * 8000) * 2 and played.plays == plays


def test_a_tone_is_the_tone_then_its_silence():
    audio = originate_rules.file_audio("tone_stream://%(100,50,440)", 8000).audio
    assert audio == signals.tone(440, 0.1, 8000) + bytes(800)


def test_a_file_the_simulator_lacks_plays_nothing():
    assert originate_rules.file_audio("/usr/share/sounds/x.wav", 8000) is None
    assert originate_rules.application("playback", "/x.wav", 8000).played is None
    assert not originate_rules.application("bridge", "user/1000", 8000).known


def test_the_standalone_simulator_takes_the_module_knobs():
    from controller.simulator.__main__ import parse_args

    args = parse_args(["--without-audio-stream", "--module-rate", "16000"])
    assert (args.without_audio_stream, args.module_rate) == (True, 16000)
    with pytest.raises(SystemExit):
        parse_args(["--module-rate", "12000"])
