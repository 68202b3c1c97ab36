"""The controller end to end through its real sockets: simulated FreeSWITCH -> ESL -> commands -> module
WebSocket -> recorder -> WAV. What a user sees: the commands sent, and the bytes in the WAV."""

from __future__ import annotations

import json

import pytest
from controller.simulator import signals
from harness import first_line, wait_until


RULE_9999 = """\
- name: ext9999
  match: {destination: "9999"}
  mix: %s
  rate: %d
"""


def test_matched_answer_sends_the_exact_command_sequence(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000))
    call = sim.place_call("9999", duration_s=1.0)
    uuid = call.uuid
    assert call.hung_up.wait(10)
    h.wait_closed(uuid)
    commands = h.commands_for(uuid)
    # The token is random per call: read it from what was sent, then check everything else exactly.
    token = json.loads(commands[0].split(";STREAM_EXTRA_HEADERS=", 1)[1])["Authorization"].split(" ")[1]
    assert commands == [
        f"api uuid_setvar_multi {uuid} STREAM_BUFFER_SIZE=20;STREAM_HEART_BEAT=0;STREAM_MESSAGE_DEFLATE=false;"
        f'STREAM_EXTRA_HEADERS={{"Authorization":"Bearer {token}"}}',
        f"bgapi uuid_audio_stream {uuid} start ws://127.0.0.1:{h.controller.recorder_port}/calls/{uuid} mono 8000",
    ]
    assert len(token) >= 16
    # The sidecar says which switch the call was on (its CHANNEL_ANSWER's FreeSWITCH-Hostname), from the start.
    assert h.recording(uuid).sidecar["switch"] == "freeswitch-sim"


def commands_and_reads(sim, uuid: str) -> list[tuple[str, int]]:
    """(command, which recv() the switch read it in) for every command naming `uuid`, on any connection."""
    return [(first_line(command), (connection.number, read)) for connection in sim.all_connections
            for command, read in zip(connection.commands, connection.command_reads) if uuid in command]


def test_the_stream_starts_within_one_round_trip_of_the_answer(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000))
    sim.wait_for_command("api show channels as json", timeout=5)  # the reconcile after connecting goes first
    # Every api reply now takes a second: a start written only after the variables' reply would come that
    # much later. It comes in the same read instead, i.e. in the same write as the variables.
    sim.delay_replies(1.0)
    call = sim.place_call("9999", duration_s=2.0)
    start = sim.wait_for_command(lambda c: f"uuid_audio_stream {call.uuid} start" in c, timeout=5)
    (setvar, setvar_read), (started, start_read) = commands_and_reads(sim, call.uuid)
    assert setvar.startswith(f"api uuid_setvar_multi {call.uuid} ") and started == first_line(start)
    assert setvar_read == start_read
    sim.delay_replies(0)
    assert call.hung_up.wait(10)
    assert h.wait_closed(call.uuid) == "client_close"


def test_a_restart_writes_stop_variables_and_start_together_and_the_stream_uses_the_rules_variables(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000) + "  buffer_ms: 100\n  heartbeat_s: 5\n")
    call = sim.place_call("9999", duration_s=3.0)
    sim.wait_for_command(lambda c: f"uuid_audio_stream {call.uuid} start" in c, timeout=5)
    wait_until(lambda: sim.streams_for(call.uuid) and sim.streams_for(call.uuid)[0].frames, 5, "the first frames")
    sim.streams_for(call.uuid)[0].abort_ws_tcp()  # ::error: the controller restarts the stream
    wait_until(lambda: len(sim.streams_for(call.uuid)) == 2, 10, "the restarted stream")
    commands = commands_and_reads(sim, call.uuid)
    assert [c.split()[:3] for c, _ in commands] == [
        ["api", "uuid_setvar_multi", call.uuid], ["bgapi", "uuid_audio_stream", call.uuid],
        ["api", "uuid_audio_stream", call.uuid], ["api", "uuid_setvar_multi", call.uuid],
        ["bgapi", "uuid_audio_stream", call.uuid]]
    assert commands[2][0].endswith(" stop") and len({read for _, read in commands[2:]}) == 1
    # The module read the variables when it started each stream: they were set before the start ran.
    for stream in sim.streams_for(call.uuid):
        assert stream.buffer_ms == 100 and stream.heartbeat_s == 5
        assert dict(stream.extra_headers)["Authorization"] == f"Bearer {h.controller.calls.calls[call.uuid].token}"
    assert call.hung_up.wait(10)
    assert h.wait_closed(call.uuid) == "client_close"
    assert h.recording(call.uuid).sidecar["connections"] == 2  # the recorder took both: the token was right


def test_variables_refused_for_a_channel_the_switch_does_not_have_fail_the_start_with_that_detail(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000))
    # The reconcile after connecting must be over first, or its listing would forget the ghost at once: a
    # reply that comes after its reply comes after it has run.
    sim.wait_for_command("api show channels as json", timeout=5)
    h.controller.esl.api("echo after the reconcile")
    ghost = sim.place_call("9999", answer=False, auto_hangup=False)
    sim.forget_call(ghost)  # the switch no longer has it, yet an answer for it arrives
    sim.fire_channel_event(ghost, "CHANNEL_ANSWER", "answered")
    wait_until(lambda: ghost.uuid in h.controller.calls.calls and h.controller.calls.calls[ghost.uuid].errors, 5,
               "the start's result")
    # mod_commands follows its -ERR with a usage line: only the first line is the detail.
    assert list(h.controller.calls.calls[ghost.uuid].errors) == ["start refused: -ERR No such channel!"]
    assert [c.split()[:2] for c in h.commands_for(ghost.uuid)] == [
        ["api", "uuid_setvar_multi"], ["bgapi", "uuid_audio_stream"]]
    assert sim.streams_for(ghost.uuid) == []


def test_a_start_with_invalid_arguments_sends_nothing(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000))
    h.controller.public_url = "ws://under_score:8080"  # the module would refuse this host
    call = sim.place_call("9999", duration_s=1.0)
    wait_until(lambda: call.uuid in h.controller.calls.calls and h.controller.calls.calls[call.uuid].permanent, 5,
               "the start to be given up")
    assert h.controller.calls.calls[call.uuid].errors[0].startswith("recorder public_url 'ws://under_score:8080'")
    assert call.hung_up.wait(10)
    assert h.commands_for(call.uuid) == [] and sim.streams_for(call.uuid) == []


@pytest.mark.parametrize("mix,rate,channels", [("mono", 8000, 1), ("mono", 16000, 1), ("mixed", 16000, 1),
                                              ("stereo", 8000, 2)])
def test_wav_holds_exactly_what_the_switch_sent(sim, harness, mix, rate, channels):
    h = harness(RULE_9999 % (mix, rate))
    speech = signals.speech_like(1.5, 8000, seed=3)
    call = sim.place_call("9999", speech=speech, duration_s=1.5)
    assert call.hung_up.wait(10)
    assert h.wait_closed(call.uuid) == "client_close"
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    assert (recording.rate, recording.channels) == (rate, channels)
    assert len(stream.sent_pcm) > rate  # at least half a second of audio went over the wire
    if mix == "mono":
        assert recording.pcm == stream.sent_pcm  # the caller's audio, every frame, nothing else
    else:
        # Mixed and stereo carry frames only while the switch plays (from 0.5 s after answer): the time before is
        # silence in the WAV, listed as a gap, so the WAV keeps the call's timeline.
        assert recording.gap_causes() == ["no_audio"]
        assert recording.audio_outside_gaps() == stream.sent_pcm
    assert recording.sidecar["uuid"] == call.uuid and recording.sidecar["bytes"] == len(recording.pcm)
    assert recording.sidecar["captured_s"] == round(len(stream.sent_pcm) / (2 * channels * rate), 3)


def test_a_process_stalled_as_the_recording_opens_loses_no_audio_and_lists_no_gap(sim, harness, monkeypatch):
    """The switch's media clock runs on while this process (controller and in-process simulator alike) is stalled:
    the frames due meanwhile come in a burst, and the WAV holds them at their place, with no silence."""
    from gevent.monkey import get_original

    from controller.recorder import server

    opened = server.Recording.open

    def open_then_stall(*args, **kwargs):
        recording = opened(*args, **kwargs)
        get_original("time", "sleep")(0.3)  # the whole process stops, as on a starved CI machine
        return recording

    monkeypatch.setattr(server.Recording, "open", open_then_stall)
    h = harness()
    call = sim.place_call("9999", speech=signals.speech_like(1.5, 8000, seed=5), duration_s=1.5)
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    assert recording.sidecar["gaps"] == []
    assert recording.pcm == stream.sent_pcm
    assert len(stream.sent_pcm) >= 1.3 * 8000 * 2  # the stalled 0.3 s were sent, late, not dropped


def test_text_frames_never_enter_the_audio(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000) + "  metadata: {queue: support, priority: 1}\n")
    call = sim.place_call("9999", duration_s=1.0)
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    [stream] = sim.streams_for(call.uuid)
    assert stream.sent_text == ['{"queue":"support","priority":1}']
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm
    assert [t["text"] for t in recording.sidecar["text_frames"]] == ['{"queue":"support","priority":1}']


def test_no_stream_for_unmatched_number_outbound_leg_or_disabled_rule(sim, harness):
    h = harness("""\
        - name: disabled-7777
          match: {destination: "7777"}
          enabled: false
        - name: ext9999
          match: {destination: "9999"}
        """)
    unmatched = sim.place_call("1234", duration_s=0.5)
    disabled = sim.place_call("7777", duration_s=0.5)
    bridged = sim.place_call("9999", duration_s=1.0, bridge_to="user/1001")
    assert bridged.hung_up.wait(10)
    assert unmatched.hung_up.wait(5) and disabled.hung_up.wait(5)
    h.wait_closed(bridged.uuid)  # the A-leg was recorded: its answer was handled after the others'
    starts = [c for c in map(str, sim.received_commands) if " start " in c]
    assert len(starts) == 1 and bridged.uuid in starts[0]
    assert h.commands_for(unmatched.uuid) == h.commands_for(disabled.uuid) == []
    assert h.commands_for(bridged.b_leg.uuid) == []


def test_stream_stops_after_the_rules_max_duration(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000) + "  max_duration_s: 0.5\n")
    call = sim.place_call("9999", duration_s=3.0)
    stop = sim.wait_for_command(lambda c: c.startswith(f"bgapi uuid_audio_stream {call.uuid} stop"), timeout=5)
    assert stop
    assert h.wait_closed(call.uuid) == "rule_max_duration"  # why it ended, not how the module closed
    [stream] = sim.streams_for(call.uuid)
    assert stream.ended.wait(5)
    assert stream.end_reason.startswith("stop")
    assert not call.hung_up.is_set()  # the call goes on; only the stream stopped
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm
    assert (recording.sidecar["close_reason"], recording.sidecar["close_code"]) == ("rule_max_duration", 1000)
    assert 0.2 <= recording.duration_s <= 0.8  # 0.5 s after start was sent, less the connection set-up


def test_a_repeated_answer_never_starts_a_second_stream(sim, harness):
    h = harness(RULE_9999 % ("mono", 8000))
    call = sim.place_call("9999", duration_s=1.5)
    sim.wait_for_command(lambda c: f"{call.uuid} start" in c, timeout=5)
    sim.fire_channel_event(call, "CHANNEL_ANSWER", "answered")  # e.g. a re-INVITE, or a replayed event
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    assert len([c for c in h.commands_for(call.uuid) if " start " in c]) == 1
    assert len(sim.streams_for(call.uuid)) == 1
