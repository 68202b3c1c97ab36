"""One call's recording without sockets: file names, limits, the sidecar, start-up recovery."""

import json
import os
import wave
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pytest

from controller.recorder.filenames import FilenameTemplate, choose_path
from controller.recorder.recording import MAX_BYTES, MAX_DURATION, Recording, RecordingRegistry, StreamSpec
from controller.recorder.recovery import recover_unfinished
from controller.recorder.sidecar import MAX_TEXT_FRAMES
from controller.recorder.wav import WavWriter, part_path_for

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"
MOMENT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def spec(**changes):
    values = dict(uuid=UUID, token="tok", rate=8000, channels=1, caller="+4930123", destination="9999",
                  rule_name="support", metadata='{"a":1}')
    values.update(changes)
    return StreamSpec(**values)


def open_recording(tmp_path, clock=None, template="{date}/{uuid}.wav", **limits):
    return Recording.open(spec(**limits.pop("spec", {})), tmp_path, FilenameTemplate(template),
                          clock=clock or FakeClock(), now=lambda: MOMENT, **limits)


def test_template_fields_are_filled_and_sanitised():
    template = FilenameTemplate("{rule}/{date}_{time}_{caller}_to_{destination}_{uuid}.wav")
    name = template.render(moment=MOMENT, uuid=UUID, caller="../../etc/passwd", destination="sip:99 99@x",
                           rule="")
    assert name == PurePosixPath(f"unknown/2026-03-04_050607__.._etc_passwd_to_sip_99_99_x_{UUID}.wav")
    assert ".." not in name.parts and "/" not in name.parts[-1]


@pytest.mark.parametrize("template, problem", [
    ("{uuid}.mp3", "does not end in .wav"),
    ("/abs/{uuid}.wav", "leaves the recordings directory"),
    ("../{uuid}.wav", "leaves the recordings directory"),
    ("{date}/../{uuid}.wav", "leaves the recordings directory"),
    ("{date}\\{uuid}.wav", "contains a backslash"),
    ("{uuid.__class__}.wav", r"uses \{uuid.__class__\}, which is not a plain allowed field"),
    ("{uuid!r}.wav", "not a plain allowed field"),
    ("{home}.wav", r"uses \{home\}, which is not"),
    ("{date}.wav", r"does not contain \{uuid\}"),
    ("{uuid.wav", "is not a valid template"),
    ("", "is empty"),
])
def test_bad_templates_are_refused_with_the_reason(template, problem):
    with pytest.raises(ValueError, match=problem):
        FilenameTemplate(template)


def test_paths_never_escape_and_never_overwrite(tmp_path):
    with pytest.raises(Exception, match="escapes the recordings directory"):
        choose_path(tmp_path, PurePosixPath("../x.wav"))
    first = choose_path(tmp_path, PurePosixPath("a.wav"))
    first.write_bytes(b"")
    second = choose_path(tmp_path, PurePosixPath("a.wav"))
    assert second.name == "a-2.wav"
    part_path_for(second).write_bytes(b"")  # an unfinished one counts as taken too
    assert choose_path(tmp_path, PurePosixPath("a.wav")).name == "a-3.wav"


def test_stream_spec_is_checked():
    assert spec(uuid=UUID.upper()).uuid == UUID
    with pytest.raises(ValueError, match="8-4-4-4-12 hex"):
        spec(uuid="../../etc")
    with pytest.raises(ValueError, match="multiple of 8000"):
        spec(rate=12000)
    with pytest.raises(ValueError, match="channels must be 1"):
        spec(channels=3)
    with pytest.raises(ValueError, match="non-empty"):
        spec(token="")
    with pytest.raises(ValueError, match="heartbeat_s must be whole seconds >= 0"):
        spec(heartbeat_s=-1)


def test_registry_expect_lookup_forget():
    registry = RecordingRegistry()
    registry.expect(spec())
    assert registry.lookup(UUID.upper()).token == "tok"
    assert registry.lookup("not-a-uuid") is None
    registry.forget(UUID)
    assert registry.lookup(UUID) is None and len(registry) == 0


def test_sidecar_exists_from_the_start_and_tells_the_whole_story_at_the_end(tmp_path):
    clock = FakeClock()
    # A threshold above the half second without audio below: this test is about the sidecar, not gaps.
    recording = open_recording(tmp_path, clock, jitter_s=1.0)
    side = tmp_path / "2026-03-04" / f"{UUID}.json"
    early = json.loads(side.read_text())
    assert early["close_reason"] is None and early["end_time"] is None
    assert early["start_time"] == "2026-03-04T05:06:07.000Z"
    recording.on_text('{"meta":1}')
    clock.now += 0.5
    recording.on_audio(b"\x01\x00" * 160)
    recording.on_text("bye")
    path = recording.finish("client_close", close_code=1000, close_text="Normal closure")
    assert path == tmp_path / "2026-03-04" / f"{UUID}.wav"
    data = json.loads(side.read_text())
    assert {k: data[k] for k in ("uuid", "caller", "destination", "rule", "metadata", "rate", "channels", "bytes",
                                 "duration_s", "frames", "close_reason", "close_code", "error", "gaps", "wav")} == {
        "uuid": UUID, "caller": "+4930123", "destination": "9999", "rule": "support", "metadata": '{"a":1}',
        "rate": 8000, "channels": 1, "bytes": 320, "duration_s": 0.02, "frames": 1,
        "close_reason": "client_close", "close_code": 1000, "error": None, "gaps": [], "wav": f"{UUID}.wav"}
    assert data["text_frames"] == [{"t": 0.0, "text": '{"meta":1}'}, {"t": 0.5, "text": "bye"}]
    with wave.open(str(path)) as w:
        assert w.readframes(1000) == b"\x01\x00" * 160  # text never in the audio


def test_text_frames_are_bounded(tmp_path):
    recording = open_recording(tmp_path)
    for n in range(MAX_TEXT_FRAMES + 5):
        recording.on_text("x" * 5000 if n == 0 else "y")
    recording.finish("eof")
    data = json.loads(recording.sidecar_path.read_text())
    assert len(data["text_frames"]) == MAX_TEXT_FRAMES and data["text_frames_dropped"] == 5
    assert data["text_frames"][0]["truncated_from"] == 5000


def test_max_bytes_cuts_exactly_at_the_limit(tmp_path):
    recording = open_recording(tmp_path, max_bytes=1002, spec={"channels": 2})
    assert recording.on_audio(bytes(640)) is None
    assert recording.on_audio(bytes(640)) == MAX_BYTES  # 1002 rounds down to 1000 in whole stereo frames
    assert recording.on_audio(bytes(640)) == MAX_BYTES  # ignored from now on
    recording.finish(MAX_BYTES)
    with wave.open(str(recording.path)) as w:
        assert w.getnframes() * 4 == 1000


def test_max_duration_cuts_the_audio_and_ends_on_wall_time_too(tmp_path):
    recording = open_recording(tmp_path, max_duration_s=1.0)
    for _ in range(49):
        assert recording.on_audio(bytes(320)) is None
    assert recording.on_audio(bytes(640)) == MAX_DURATION
    recording.finish(MAX_DURATION)
    with wave.open(str(recording.path)) as w:
        assert w.getnframes() == 8000

    clock = FakeClock()
    quiet = open_recording(tmp_path / "b", clock, max_duration_s=2.0)
    quiet.on_audio(bytes(320))  # then silence: mixed audio while nobody speaks, or a leaked stream
    assert quiet.tick() is None
    clock.now += 2.0
    assert quiet.tick() == MAX_DURATION


def test_recover_unfinished_repairs_renames_and_marks_the_sidecar(tmp_path):
    recording = open_recording(tmp_path)
    recording.on_audio(bytes(range(256)) * 125)  # 32000 bytes: 2 s, so the header was updated
    recording.writer._flush()
    recording.writer.abandon()  # SIGKILL: .part and the opening sidecar stay behind
    done = recover_unfinished(tmp_path)
    assert len(done) == 1 and done[0].renamed
    final = tmp_path / "2026-03-04" / f"{UUID}.wav"
    assert done[0].final_path == final and not part_path_for(final).exists()
    with wave.open(str(final)) as w:
        assert w.getnframes() == 16000
    side = json.loads(final.with_suffix(".json").read_text())
    assert side["close_reason"] == "recovered" and side["bytes"] == 32000 and side["duration_s"] == 2.0
    assert recover_unfinished(tmp_path) == []


def test_recover_keeps_a_part_whose_final_name_is_taken(tmp_path):
    final = tmp_path / "x.wav"
    WavWriter.create(final, 8000, 1).close()
    WavWriter.create(final.with_name("y.wav"), 8000, 1).abandon()
    Path(part_path_for(final.with_name("y.wav"))).rename(part_path_for(final))
    (done,) = recover_unfinished(tmp_path)
    assert not done.renamed and part_path_for(final).exists()


# ---- the call's timeline across connections (fake clock: every gap is exact) -----------------------------

def pcm(value, frames=160):
    return bytes([value, 0]) * frames


def test_gaps_follow_arrival_times_with_the_cause_of_each_silence(tmp_path):
    clock = FakeClock()  # 50.0: the first connection's upgrade, sample frame 0
    recording = open_recording(tmp_path, clock)
    clock.now = 50.02
    recording.on_audio(pcm(1))  # on time
    clock.now = 52.04
    recording.on_audio(pcm(2))  # 2 s late: mixed audio while nothing played
    clock.now = 53.04
    recording.detach("eof")  # 1 s more with nothing, then the connection dropped
    clock.now = 56.04
    recording.attach()
    recording.on_audio(pcm(3))  # 3 s after the drop
    path = recording.finish("client_close", end_at=57.06)  # hung up 1 s after the last audio
    data = json.loads(recording.sidecar_path.read_text())
    assert [(g["start_frame"], g["frames"], g["cause"]) for g in data["gaps"]] == [
        (160, 16000, "no_audio"), (16320, 8000, "no_audio"), (24320, 23840, "stream_lost"), (48320, 8160, "tail")]
    with wave.open(str(path)) as w:
        audio = w.readframes(w.getnframes())
    assert audio == (pcm(1) + pcm(0, 16000) + pcm(2) + pcm(0, 8000 + 23840) + pcm(3) + pcm(0, 8160))
    assert (data["duration_s"], data["captured_s"], data["connections"]) == (7.06, 0.06, 2)
    assert data["captured_ratio"] == round(0.06 / 7.06, 4)


def test_jitter_below_the_threshold_and_bursts_insert_nothing(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock)
    sent = []
    for n in range(100):
        # Up to 290 ms late, then a burst of 20 frames at once: nothing is inserted, nothing dropped.
        clock.now = 50.0 + (n + 1) * 0.02 + (0.29 if n % 9 == 4 else 0.0) - (0.2 if 60 <= n < 80 else 0.0)
        sent.append(pcm(n % 200 + 1))
        recording.on_audio(sent[-1])
    recording.finish("client_close", end_at=clock.now)
    data = json.loads(recording.sidecar_path.read_text())
    assert data["gaps"] == [] and data["captured_ratio"] == 1.0
    with wave.open(str(recording.path)) as w:
        assert w.readframes(w.getnframes()) == b"".join(sent)


def test_a_killed_recording_keeps_its_gaps_and_captured_share(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock)
    clock.now = 51.0
    recording.on_audio(pcm(1, 8000))  # 1 s of audio
    clock.now = 53.02
    recording.on_audio(pcm(2, 160))  # after 1 s with nothing
    clock.now = 55.02
    recording.tick()  # 2 s on, no frame has made up for it: 1 s of silence, then the frame
    recording.writer._flush()
    recording.writer.abandon()  # SIGKILL ...
    with open(recording.writer.part_path, "r+b") as f:
        f.truncate(44 + 2 * (8000 + 4000))  # ... before the second half of the silence reached the disk
    (found,) = recover_unfinished(tmp_path)
    data = json.loads(found.final_path.with_suffix(".json").read_text())
    assert [(g["start_frame"], g["frames"], g["cause"]) for g in data["gaps"]] == [(8000, 4000, "no_audio")]
    assert (data["close_reason"], data["duration_s"], data["captured_s"]) == ("recovered", 1.5, 1.0)
    assert data["captured_ratio"] == round(1.0 / 1.5, 4)


def test_a_partial_sample_at_a_drop_is_dropped_so_a_quick_reconnect_stays_aligned(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock)
    clock.now += 0.02
    recording.on_audio(pcm(1)[:161])  # the connection ends one byte into a sample
    recording.detach("eof")
    clock.now += 0.05  # back within the jitter: no silence clears the half sample
    recording.attach()
    clock.now += 0.02
    recording.on_audio(pcm(2))
    recording.finish("client_close")
    with wave.open(str(recording.path)) as w:
        assert w.readframes(w.getnframes()) == pcm(1, 80) + pcm(2)
    data = json.loads(recording.sidecar_path.read_text())
    assert data["dropped_bytes"] == 1 and data["gaps"] == []


def test_recovery_leaves_a_file_it_cannot_repair_and_goes_on(tmp_path, caplog):
    (tmp_path / "empty.wav.part").write_bytes(b"")  # killed between creating the file and its header
    (tmp_path / "alien.wav.part").write_bytes(b"not a wav file at all, but long enough for a header" * 2)
    recording = open_recording(tmp_path, template="{uuid}.wav")
    recording.on_audio(pcm(1))
    recording.writer._flush()
    recording.writer.abandon()
    with caplog.at_level("ERROR", logger="controller.recorder"):
        (done,) = recover_unfinished(tmp_path)
    assert done.final_path == tmp_path / f"{UUID}.wav" and done.uuid == UUID
    assert (tmp_path / "empty.wav.part").read_bytes() == b""
    assert (tmp_path / "alien.wav.part").exists()
    problems = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(problems) == 2
    assert any(str(tmp_path / "empty.wav.part") in m and "too short for a WAV header" in m for m in problems)
    assert any(str(tmp_path / "alien.wav.part") in m and "not a canonical" in m for m in problems)


def test_silence_to_the_end_of_the_call_stops_at_the_limit(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock, max_duration_s=10.0)
    clock.now += 0.02
    recording.on_audio(pcm(1))
    recording.detach("eof")
    clock.now += 100.0
    recording.finish("eof", end_at=clock.now)  # the stream never came back; the call lasted 100 s more
    with wave.open(str(recording.path)) as w:
        assert w.getnframes() == 80000
    data = json.loads(recording.sidecar_path.read_text())
    assert [(g["start_frame"], g["frames"], g["cause"]) for g in data["gaps"]] == [(160, 79840, "tail")]
    assert data["close_reason"] == MAX_DURATION


def test_after_a_restart_time_counts_from_the_start_of_the_wav(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock, template="{uuid}.wav")
    clock.now += 5.0
    recording.on_audio(pcm(1, 40000))  # 5 s
    path = recording.finish("server_stop")
    later = FakeClock()
    later.now = 1000.0  # another process: its clock means nothing to the first one's
    resumed = Recording.resume(spec(), path, away_s=2.0, cause="controller_restart", clock=later, now=lambda: MOMENT,
                               max_duration_s=10.0)
    later.now += 0.5
    resumed.on_text("hello")
    assert resumed.sidecar.text_frames[-1] == {"t": 7.5, "text": "hello"}  # 5 s of audio, 2 s away, 0.5 s
    assert resumed.tick() is None
    later.now += 2.5
    assert resumed.tick() == MAX_DURATION  # 10 s into the WAV, though only 3 s into this process


def stutter(recording, clock, n, value=1):
    """n frames, each 0.5 s late: a gap before every one (for recordings that decide each deficit at once,
    settle_s=0: these tests are about the gap list, not about telling holes from stalls)."""
    for _ in range(n):
        clock.now += 0.52
        recording.on_audio(pcm(value))


def test_gaps_beyond_the_cap_are_counted_and_the_totals_stay_exact(tmp_path, monkeypatch):
    from controller.recorder import sidecar as sidecar_module

    monkeypatch.setattr(sidecar_module, "MAX_GAPS", 3)
    clock = FakeClock()
    recording = open_recording(tmp_path, clock, template="{uuid}.wav", settle_s=0)
    stutter(recording, clock, 5)
    path = recording.finish("server_stop")
    data = json.loads(recording.sidecar_path.read_text())
    assert [g["start_frame"] for g in data["gaps"]] == [0, 4160, 8320]
    assert (data["gaps_unlisted"], data["gaps_unlisted_frames"]) == (2, 8000)
    assert (data["duration_s"], data["captured_s"]) == (2.6, 0.1)

    later = FakeClock()
    resumed = Recording.resume(spec(), path, away_s=0.0, cause="controller_restart", clock=later,
                               now=lambda: MOMENT, settle_s=0)
    stutter(resumed, later, 1, value=2)
    resumed.finish("client_close")
    data = json.loads(resumed.sidecar_path.read_text())
    assert (len(data["gaps"]), data["gaps_unlisted"], data["gaps_unlisted_frames"]) == (3, 3, 12000)
    assert (data["duration_s"], data["captured_s"]) == (3.12, 0.12)


def test_a_killed_recording_with_unlisted_gaps_keeps_its_captured_share(tmp_path, monkeypatch):
    from controller.recorder import sidecar as sidecar_module

    monkeypatch.setattr(sidecar_module, "MAX_GAPS", 2)
    clock = FakeClock()
    recording = open_recording(tmp_path, clock, settle_s=0)
    stutter(recording, clock, 4)
    clock.now += 1.0
    recording.tick()  # the last gap's save was due
    recording.writer._flush()
    recording.writer.abandon()  # SIGKILL
    (found,) = recover_unfinished(tmp_path)
    data = json.loads(found.final_path.with_suffix(".json").read_text())
    assert (len(data["gaps"]), data["gaps_unlisted_frames"]) == (2, 8000)
    assert (data["duration_s"], data["captured_s"]) == (2.08, 0.08)


def test_the_sidecar_is_saved_at_most_once_a_second_and_nothing_is_lost(tmp_path):
    clock = FakeClock()
    recording = open_recording(tmp_path, clock, settle_s=0)

    def listed():
        return len(json.loads(recording.sidecar_path.read_text())["gaps"])

    stutter(recording, clock, 1)
    assert listed() == 1  # the first gap in a while: saved at once
    stutter(recording, clock, 1)
    assert listed() == 1  # 0.52 s later: due, not saved yet
    recording.tick()
    assert listed() == 1
    clock.now += 0.5
    recording.tick()
    assert listed() == 2  # a second after the last save
    stutter(recording, clock, 1)
    recording.detach("eof")
    assert listed() == 3  # a drop saves what is due: the file may wait a long time for the next connection


def test_a_finished_wav_whose_final_sidecar_was_never_written_gets_it_repaired_at_start(tmp_path, monkeypatch):
    import errno

    from controller.recorder import sidecar as sidecar_module

    recording = open_recording(tmp_path)  # the sidecar as the call began: open, nothing recorded yet
    recording.on_audio(pcm(1) * 10)

    real_replace = os.replace

    def no_space(src, dst):  # the sidecar's atomic rename fails; the WAV's rename needs no space
        if str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    with monkeypatch.context() as disk_full:
        disk_full.setattr(sidecar_module.os, "replace", no_space)
        recording.finish("client_close")  # the WAV is finalised; its final sidecar cannot be written
    assert not recording.sidecar_saved
    side_path = recording.sidecar_path
    assert json.loads(side_path.read_text())["close_reason"] is None
    began = recording.path.stat().st_mtime - 10  # it was written when the call began, the WAV at its end
    os.utime(side_path, (began, began))
    assert recover_unfinished(tmp_path) == []
    side = json.loads(side_path.read_text())
    assert (side["close_reason"], side["bytes"], side["duration_s"]) == ("recovered", 3200, 0.2)
    assert side["captured_s"] == 0.2 and "could not write this sidecar" in side["error"]
