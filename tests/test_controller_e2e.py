"""The controller end to end through its real sockets: simulated FreeSWITCH -> ESL -> commands -> module
WebSocket -> recorder -> WAV. What a user sees: the commands sent, and the bytes in the WAV."""

from __future__ import annotations

import json

import pytest
from controller.simulator import signals


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
    token = json.loads(commands[3].split(" STREAM_EXTRA_HEADERS ", 1)[1])["Authorization"].split(" ")[1]
    assert commands == [
        f"bgapi uuid_setvar {uuid} STREAM_BUFFER_SIZE 20",
        f"bgapi uuid_setvar {uuid} STREAM_HEART_BEAT 0",
        f"bgapi uuid_setvar {uuid} STREAM_MESSAGE_DEFLATE false",
        f'bgapi uuid_setvar {uuid} STREAM_EXTRA_HEADERS {{"Authorization":"Bearer {token}"}}',
        f"bgapi uuid_audio_stream {uuid} start ws://127.0.0.1:{h.controller.recorder_port}/calls/{uuid} mono 8000",
    ]
    assert len(token) >= 16


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
