"""The fault suite: each fault injected during a call, through real sockets against the simulator.

For every call a rule matches: exactly one WAV with a valid header, its duration within 100 ms of the time the
call was streamed, the audio outside an outage byte-identical to what the switch sent, each gap listed in the
sidecar — and a call that did not suffer the fault is untouched by it.
"""

from __future__ import annotations

import signal
import subprocess
import time
import wave

from harness import Harness, controller_process, first_line, wait_until

TOLERANCE_S = 0.1


def streamed_for(sim, call, seconds: float) -> None:
    """Wait until the call's current stream has carried `seconds` of audio."""
    wait_until(lambda: sim.streams_for(call.uuid) and sim.streams_for(call.uuid)[-1].sent_pcm
               and len(sim.streams_for(call.uuid)[-1].sent_pcm) >= seconds * 16000, 10,
               f"{seconds} s of audio on {call.uuid}")


def assert_untouched(h: Harness, sim, call) -> None:
    """A call no fault touched: one stream, one WAV, exactly the bytes sent, no gaps."""
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm
    assert recording.sidecar["gaps"] == []


def test_event_socket_drop_mid_call_loses_nothing_and_never_starts_twice(sim, harness):
    h = harness()
    faulted = sim.place_call("9999", duration_s=2.0)
    streamed_for(sim, faulted, 0.5)
    connects = sim.received_commands.count(first_line(sim.received_commands[1]))
    sim.drop_esl_connections()
    wait_until(lambda: sim.received_commands.count(first_line(sim.received_commands[1])) > connects, 10,
               "the controller to subscribe again")
    sim.wait_for_command("api show channels as json", timeout=5, start=len(sim.received_commands) - 1)
    assert faulted.hung_up.wait(10)
    h.wait_closed(faulted.uuid)
    assert_untouched(h, sim, faulted)
    assert len([c for c in h.commands_for(faulted.uuid) if " start " in c]) == 1


def test_hangup_missed_while_disconnected_is_finalised_by_reconcile(sim, harness):
    h = harness()
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    streamed_for(sim, call, 0.3)
    sim.reject_acl = True  # reconnects are refused until we say so
    sim.restart(keep_calls=True)  # only the event socket goes; the call goes on...
    call.hangup()  # ...and ends while nobody listens
    sim.reject_acl = False
    h.wait_closed(call.uuid)
    wait_until(lambda: call.uuid not in h.controller.calls.calls, 10, "reconcile to forget the call")
    assert len(h.recordings_for(call.uuid)) == 1
    assert h.recording(call.uuid).pcm == sim.streams_for(call.uuid)[0].sent_pcm


def test_freeswitch_restart_finalises_every_call_once(sim, harness):
    h = harness()
    calls = [sim.place_call("9999", duration_s=30.0) for _ in range(2)]
    for call in calls:
        streamed_for(sim, call, 0.3)
    sim.restart()
    for call in calls:
        h.wait_closed(call.uuid)
        assert len(h.recordings_for(call.uuid)) == 1
        assert h.recording(call.uuid).pcm == sim.streams_for(call.uuid)[0].sent_pcm
    assert h.controller.calls.calls == {}


def test_frames_of_odd_sizes_keep_sample_alignment(sim, harness):
    h = harness()
    odd = sim.place_call("9999", duration_s=1.5, odd_frames=True)
    other = sim.place_call("9999", duration_s=1.5)
    assert odd.hung_up.wait(10) and other.hung_up.wait(10)
    h.wait_closed(odd.uuid)
    h.wait_closed(other.uuid)
    [stream] = sim.streams_for(odd.uuid)
    assert {size for _, opcode, size in stream.frames if opcode == 2} - {320}  # really odd sizes
    assert h.recording(odd.uuid).pcm == stream.sent_pcm
    assert_untouched(h, sim, other)


def test_calls_beyond_the_stream_cap_are_not_streamed_and_counted(sim, harness):
    from controller import metrics

    refused_before = metrics.CALLS_NOT_STREAMED.labels("limit")._value.get()
    h = harness(extra="limits: {max_streams: 1}\n")
    first = sim.place_call("9999", duration_s=1.5)
    sim.wait_for_command(lambda c: f"{first.uuid} start" in c, timeout=5)
    second = sim.place_call("9999", duration_s=0.5)
    assert second.hung_up.wait(10) and first.hung_up.wait(10)
    h.wait_closed(first.uuid)
    assert h.commands_for(second.uuid) == []
    assert h.recordings_for(second.uuid) == []
    assert metrics.CALLS_NOT_STREAMED.labels("limit")._value.get() == refused_before + 1
    assert_untouched(h, sim, first)


# ---- signals, on the real process --------------------------------------------------------------------


def test_sigterm_finalises_every_open_recording_and_exits_0(sim, tmp_path):
    process = controller_process(sim, tmp_path)
    try:
        sim.wait_for_command("event ", timeout=20)
        calls = [sim.place_call("9999", duration_s=30.0) for _ in range(2)]
        for call in calls:
            streamed_for(sim, call, 0.5)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - began < 5
    finally:
        if process.poll() is None:
            process.kill()
    for call in calls:
        [path] = (tmp_path / "rec").rglob(f"*{call.uuid}*.wav")  # renamed from .part: finalised
        assert not list((tmp_path / "rec").rglob(f"*{call.uuid}*.part"))
        with wave.open(str(path), "rb") as wav:
            pcm = wav.readframes(wav.getnframes())
        sent = sim.streams_for(call.uuid)[0].sent_pcm
        assert len(pcm) >= 0.5 * 16000 and pcm == sent[: len(pcm)]


def test_sighup_reloads_rules_and_refuses_a_broken_file(sim, tmp_path):
    process = controller_process(sim, tmp_path)
    config, log = tmp_path / "controller.yaml", tmp_path / "controller.log"
    try:
        sim.wait_for_command("event ", timeout=20)
        live = sim.place_call("9999", duration_s=30.0)
        streamed_for(sim, live, 0.3)
        good = config.read_text()
        config.write_text(good.replace('destination: "9999"', 'destination: "9999"\n    mix: quad'))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(), 10, "the reload to be refused")
        still = sim.place_call("9999", duration_s=1.0)
        sim.wait_for_command(lambda c: f"{still.uuid} start" in c, timeout=5)  # old rules in force
        config.write_text(good.replace('destination: "9999"', 'destination: "8888"'))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in log.read_text(), 10, "the reload")
        after = sim.place_call("8888", duration_s=1.0)
        sim.wait_for_command(lambda c: f"{after.uuid} start" in c, timeout=5)  # new rules in force
        assert after.hung_up.wait(10)
        assert len(sim.streams_for(live.uuid)) == 1 and not sim.streams_for(live.uuid)[0].ended.is_set()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
