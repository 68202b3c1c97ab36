"""The fault suite: each fault injected during a call, through real sockets against the simulator.

For every call a rule matches: exactly one WAV with a valid header, its duration within 100 ms of the time the
call was streamed, the audio outside an outage byte-identical to what the switch sent, each gap listed in the
sidecar — and a call that did not suffer the fault is untouched by it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import wave

import gevent

from harness import RULE_9999, Harness, Recording, controller_process, first_line, wait_until

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


def test_a_call_that_died_with_the_switch_ends_where_its_audio_did(sim, harness):
    h = harness()
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    streamed_for(sim, call, 1.0)
    [stream] = sim.streams_for(call.uuid)
    sim.crash()  # FreeSWITCH killed: the call, its stream and the Event Socket end with no word
    gevent.sleep(1.5)  # the fault itself: the switch stays down this long while the controller retries
    sim.start()  # back, without the call: only the reconcile after the reconnect can tell it is gone
    assert h.wait_closed(call.uuid) == "eof"
    recording = h.recording(call.uuid)
    assert recording.pcm == stream.sent_pcm  # not padded with the time the switch was down
    assert recording.sidecar["gaps"] == []


def test_a_reconcile_that_times_out_is_tried_again_while_connected(sim, harness):
    h = harness()
    h.controller.reconcile_retry_s = 0.5
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    streamed_for(sim, call, 0.3)
    sim.reject_acl = True
    sim.restart(keep_calls=True)
    call.hangup()  # missed: only a reconcile can tell
    sim.delay_replies(4.0)  # past the 3 s command timeout: the first listing fails
    since = len(sim.received_commands)
    sim.reject_acl = False
    sim.wait_for_command("api show channels as json", timeout=10, start=since)
    sim.delay_replies(0)
    h.wait_closed(call.uuid)
    wait_until(lambda: call.uuid not in h.controller.calls.calls, 10, "the retried reconcile to forget the call")
    assert sim.received_commands[since:].count("api show channels as json") >= 2
    # The hangup's moment is unknown: the WAV runs to when the controller learnt of it, as a tail gap.
    recording = h.recording(call.uuid)
    assert recording.audio_outside_gaps() == sim.streams_for(call.uuid)[0].sent_pcm
    assert recording.gap_causes() in ([], ["tail"])


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
        # New rules, and a section that is read only at start: applied the one, told about the other.
        config.write_text(good.replace('destination: "9999"', 'destination: "8888"') + "logging: {level: DEBUG}\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in log.read_text(), 10, "the reload")
        assert "reload: logging changed in" in log.read_text() and "restart the controller to apply it" in log.read_text()
        after = sim.place_call("8888", duration_s=1.0)
        sim.wait_for_command(lambda c: f"{after.uuid} start" in c, timeout=5)  # new rules in force
        assert after.hung_up.wait(10)
        # (It failed once under heavy load, the live call streamed twice: the controller's lines about it say why.)
        about_live = "\n".join(line for line in log.read_text().splitlines() if live.uuid in line or "reconcil" in line)
        assert len(sim.streams_for(live.uuid)) == 1, about_live
        assert not sim.streams_for(live.uuid)[0].ended.is_set(), about_live
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


# ---- the stream itself fails ---------------------------------------------------------------------------


def streamed_span_s(streams) -> float:
    """From the first stream's connection to the last frame of the last stream: the time the call was streamed."""
    last = streams[-1]
    return last.opened_at + last.frames[-1][0] - streams[0].opened_at


def test_websocket_lost_mid_call_restarts_into_the_same_file(sim, harness):
    h = harness()
    faulted = sim.place_call("9999", duration_s=3.0)
    other = sim.place_call("9999", duration_s=3.0)
    streamed_for(sim, faulted, 1.0)
    sim.streams_for(faulted.uuid)[0].abort_ws_tcp()  # TCP gone without a close: the module fires ::error
    assert faulted.hung_up.wait(10) and other.hung_up.wait(10)
    h.wait_closed(faulted.uuid)
    h.wait_closed(other.uuid)
    streams = sim.streams_for(faulted.uuid)
    assert len(streams) == 2
    commands = h.commands_for(faulted.uuid)
    # Restarted: stop first (an api: done before the switch reads on), then the variables, then start.
    stop = commands.index(f"api uuid_audio_stream {faulted.uuid} stop")
    assert commands[stop + 1].startswith(f"api uuid_setvar_multi {faulted.uuid} ")
    assert " start " in commands[stop + 2]
    assert len(h.recordings_for(faulted.uuid)) == 1
    recording = h.recording(faulted.uuid)
    assert recording.audio_outside_gaps() == b"".join(s.sent_pcm for s in streams)
    assert recording.gap_causes() == ["stream_lost"]
    gap = recording.sidecar["gaps"][0]
    assert gap["start_frame"] * 2 == len(streams[0].sent_pcm)  # the silence sits exactly where audio stopped
    assert abs(recording.duration_s - streamed_span_s(streams)) <= TOLERANCE_S
    assert recording.sidecar["connections"] == 2
    assert 0 < recording.sidecar["captured_ratio"] < 1
    assert_untouched(h, sim, other)


def test_a_time_limit_passing_while_the_stream_restarts_ends_it_for_good(sim, harness):
    # The limit falls between the loss and the restart: no restart after the stop, no second WAV.
    h = harness(RULE_9999 + "  max_duration_s: 1.2\n")
    call = sim.place_call("9999", duration_s=3.0)
    streamed_for(sim, call, 0.9)
    sim.streams_for(call.uuid)[0].abort_ws_tcp()  # the restart would come 0.5 s later, past the limit
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    assert len(h.recordings_for(call.uuid)) == 1
    assert len(sim.streams_for(call.uuid)) == 1  # never started again
    assert [c.split()[3] for c in h.commands_for(call.uuid) if " uuid_audio_stream " in c] == ["start", "stop"]


def test_stream_that_never_comes_back_still_gives_a_wav_as_long_as_the_call(sim, harness):
    h = harness()
    call = sim.place_call("9999", duration_s=2.5)
    streamed_for(sim, call, 0.8)
    h.controller.public_url = "ws://127.0.0.1:9"  # restarts now go nowhere: ::error code 6 each time
    sim.streams_for(call.uuid)[0].abort_ws_tcp()
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    [stream] = [s for s in sim.streams_for(call.uuid) if s.frames]
    recording = h.recording(call.uuid)
    assert recording.audio_outside_gaps() == stream.sent_pcm
    assert recording.gap_causes() == ["tail"]
    call_s = 2.5 - (stream.opened_at - call.answered_at)  # from the stream's start to the hangup
    assert abs(recording.duration_s - call_s) <= TOLERANCE_S


def restart_mid_call(sim, tmp_path, end_process) -> tuple:
    """Stream a 5 s call and a 1 s one through a controller process, end that process 1.5 s into the long
    call with `end_process(process)`, start a new one on the same config and directory, and let the call
    finish. Returns (call, other, the commands the new process sent, the long call's Recording)."""
    process = controller_process(sim, tmp_path)
    try:
        sim.wait_for_command("event ", timeout=20)
        call = sim.place_call("9999", duration_s=5.0)
        other = sim.place_call("9999", duration_s=1.0)
        streamed_for(sim, call, 1.5)
        end_process(process)
        since = len(sim.received_commands)
        process = controller_process(sim, tmp_path)  # same config, same directory
        assert call.hung_up.wait(15)
        wait_until(lambda: len(sim.streams_for(call.uuid)) == 2 and sim.streams_for(call.uuid)[1].ended.is_set(),
                   10, "the second stream to end")
        wait_until(lambda: not list((tmp_path / "rec").rglob(f"*{call.uuid}*.part")), 10, "the WAV to be final")
    finally:
        process.terminate()
        process.wait(10)
    [path] = (tmp_path / "rec").rglob(f"*{call.uuid}*.wav")
    with wave.open(str(path), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    recording = Recording(path, 8000, 1, pcm, json.loads(path.with_suffix(".json").read_text()))
    return call, other, sim.received_commands[since:], recording


def assert_continued(sim, call, recording, most_missing_s: float) -> None:
    """One WAV: the first stream's audio up to what the first process wrote out (at most `most_missing_s`
    short), a controller_restart gap, then all of the second stream; as long as the call was streamed."""
    first, second = sim.streams_for(call.uuid)
    audio = recording.audio_outside_gaps()
    assert recording.gap_causes() == ["controller_restart"]
    assert audio.endswith(second.sent_pcm)
    before = audio[: len(audio) - len(second.sent_pcm)]
    assert first.sent_pcm.startswith(before) and len(first.sent_pcm) - len(before) <= most_missing_s * 16000
    assert abs(recording.duration_s - streamed_span_s([first, second])) <= TOLERANCE_S


def test_controller_killed_mid_call_continues_the_same_file_after_restart(sim, tmp_path):
    def kill(process):
        process.kill()  # SIGKILL: no chance to finalise anything
        process.wait(5)

    call, other, _, recording = restart_mid_call(sim, tmp_path, kill)
    # Audio reaches the file within 50 ms of arriving, so only that and the frames still in flight (sent by
    # the switch, not yet read by the recorder) fell into the outage, which the gap covers.
    assert_continued(sim, call, recording, most_missing_s=0.3)
    assert len(list((tmp_path / "rec").rglob(f"*{other.uuid}*.wav"))) == 1


def test_controller_stopped_with_sigterm_mid_call_continues_the_same_file_after_restart(sim, tmp_path):
    def terminate(process):
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0

    call, other, sent, recording = restart_mid_call(sim, tmp_path, terminate)
    # The recorder closed the WebSocket from its side: the module kept the dead stream attached (it refuses a
    # new start until stop), and its ::disconnect went to nobody. The new process knows nothing of the call:
    # it stops whatever the module holds, then starts, once.
    assert [first_line(c).split()[3] for c in sent
            if " uuid_audio_stream " in c and call.uuid in c] == ["stop", "start"]
    # A clean stop writes out everything it read: only frames in flight when it closed can be missing.
    assert_continued(sim, call, recording, most_missing_s=0.1)
    assert len(list((tmp_path / "rec").rglob(f"*{other.uuid}*.wav"))) == 1


def test_disk_full_on_one_call_stops_only_that_recording(sim, harness, monkeypatch):
    import errno
    import os

    from controller.recorder import wav as wav_module

    h = harness()
    faulted = sim.place_call("9999", duration_s=4.0)
    other = sim.place_call("9999", duration_s=4.0)
    streamed_for(sim, faulted, 1.2)
    # The disk fills up under one call's file only (fault injection reaches into the recorder on purpose).
    full_fd = h.controller.recorder.book[faulted.uuid].recording.writer._fd
    real_write = os.write

    def write(fd, data):
        if fd == full_fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(wav_module.os, "write", write)
    assert h.wait_closed(faulted.uuid) == "write_error"
    assert other.hung_up.wait(10) and faulted.hung_up.wait(10)
    h.wait_closed(other.uuid)
    recording = h.recording(faulted.uuid)
    assert recording.sidecar["close_reason"] == "write_error"
    assert "No space left on device" in recording.sidecar["error"]
    sent = sim.streams_for(faulted.uuid)[0].sent_pcm
    assert len(recording.pcm) >= 8000 and sent.startswith(recording.pcm)  # what reached the disk plays
    assert len(sim.streams_for(faulted.uuid)) == 1  # not restarted into a full disk
    assert_untouched(h, sim, other)
