"""The WAV writer: what ends up on disk, byte for byte, including after a crash or a full disk."""

import errno
import os
import random
import resource
import signal
import struct
import wave

import pytest

from controller.recorder.wav import (HEADER_SIZE, RecordingError, WavWriter, build_header, parse_header,
                                     part_path_for, repair)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes(), w.readframes(w.getnframes())


def header_sizes(path):
    raw = path.read_bytes()[:HEADER_SIZE]
    return struct.unpack_from("<I", raw, 4)[0], struct.unpack_from("<I", raw, 40)[0]


def pcm(n_bytes, seed=1):
    return random.Random(seed).randbytes(n_bytes)


def chunks(data, sizes):
    """Split data into pieces of the given sizes, cycling through them."""
    out, i, k = [], 0, 0
    while i < len(data):
        out.append(data[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def test_new_file_is_a_valid_empty_wav_under_the_part_name(tmp_path):
    final = tmp_path / "call.wav"
    writer = WavWriter.create(final, 8000, 1)
    part = part_path_for(final)
    assert part.name == "call.wav.part" and part.exists() and not final.exists()
    assert read_wav(part) == (8000, 1, 2, 0, b"")
    writer.close()


def test_close_renames_atomically_and_keeps_every_byte(tmp_path, captures):
    audio = (captures / "ws/mono_8000/conn1.audio.raw").read_bytes()
    final = tmp_path / "call.wav"
    writer = WavWriter.create(final, 8000, 1)
    for piece in chunks(audio, [320]):
        writer.write(piece)
    assert writer.close() == final
    assert final.exists() and not part_path_for(final).exists()
    assert read_wav(final) == (8000, 1, 2, len(audio) // 2, audio)
    assert header_sizes(final) == (36 + len(audio), len(audio))
    assert final.stat().st_size == HEADER_SIZE + len(audio)


@pytest.mark.parametrize("sizes", [[1], [3], [7, 1, 320], [319, 1, 2, 5], [4095]])
def test_any_frame_size_is_joined_back_into_whole_samples(tmp_path, sizes):
    audio = pcm(16001)  # odd: the last byte is half a sample
    writer = WavWriter.create(tmp_path / "odd.wav", 8000, 1)
    for piece in chunks(audio, sizes):
        writer.write(piece)
    writer.close()
    assert read_wav(tmp_path / "odd.wav")[4] == audio[:16000]
    assert writer.dropped_bytes == 1


@pytest.mark.parametrize("sizes", [[1], [3], [5, 2], [641, 639], [6]])
def test_stereo_stays_frame_aligned_across_frames(tmp_path, sizes):
    audio = pcm(6403)  # 1600 stereo frames and 3 stray bytes
    writer = WavWriter.create(tmp_path / "st.wav", 8000, 2)
    for piece in chunks(audio, sizes):
        writer.write(piece)
        assert writer.data_bytes % 4 == 0
    writer.close()
    rate, channels, _, frames, data = read_wav(tmp_path / "st.wav")
    assert (rate, channels, frames, data) == (8000, 2, 1600, audio[:6400])
    assert writer.dropped_bytes == 3


def test_header_is_current_after_each_second_of_audio(tmp_path):
    clock = FakeClock()  # wall time stands still: only the amount of audio triggers updates
    final = tmp_path / "call.wav"
    writer = WavWriter.create(final, 8000, 1, clock=clock)
    part = part_path_for(final)
    second = 16000
    for n in range(1, 3 * 50 + 1):  # three seconds in 20 ms frames
        writer.write(pcm(320, seed=n))
        written = n * 320
        _, data_size = header_sizes(part)
        assert data_size == written - written % second
        # What the header claims is really in the file: a SIGKILL now leaves a playable file.
        assert part.stat().st_size >= HEADER_SIZE + data_size
    assert read_wav(part)[3] == 3 * 8000
    writer.close()


def test_header_follows_wall_time_when_audio_trickles(tmp_path):
    clock = FakeClock()
    writer = WavWriter.create(tmp_path / "call.wav", 8000, 1, clock=clock)
    part = part_path_for(tmp_path / "call.wav")
    writer.write(pcm(320))
    assert header_sizes(part)[1] == 0
    clock.now += 1.0
    writer.write(pcm(320))  # the frame path never reads the clock: the owner's timer refreshes the header
    assert header_sizes(part)[1] == 0
    assert writer.refresh_header() is True
    assert header_sizes(part)[1] == 640
    # No frame at all (pause): the periodic refresh brings the header up to date on its own.
    writer.write(pcm(100))
    assert writer.refresh_header() is False  # not due yet
    clock.now += 1.0
    assert writer.refresh_header() is True
    assert header_sizes(part)[1] == 740
    writer.close()


def test_killed_writer_leaves_a_playable_part_and_repair_makes_all_of_it_count(tmp_path):
    clock = FakeClock()
    final = tmp_path / "call.wav"
    writer = WavWriter.create(final, 16000, 2, clock=clock)
    audio = pcm(128000 + 1000)  # 2 s of 16 kHz stereo and a bit more
    for piece in chunks(audio, [1280]):
        writer.write(piece)
    writer._flush()  # the buffered tail reached the kernel before the process died
    part = part_path_for(final)
    with open(part, "ab") as f:
        f.write(b"\x01\x02\x03")  # a partial frame, as a write() cut short by the kill could leave
    writer.abandon()  # the process is gone: nothing finalised
    assert read_wav(part)[3] == 2 * 16000  # header as of the last update: plays, 2 s
    result = repair(part)
    assert (result.rate, result.channels) == (16000, 2)
    assert result.header_data_bytes == 128000
    assert result.data_bytes == 129000 and result.truncated_bytes == 3 and result.changed
    assert read_wav(part)[4] == audio
    assert repair(part).changed is False  # idempotent


def test_repair_truncated_file_cuts_to_whole_frames(tmp_path):
    final = tmp_path / "t.wav"
    writer = WavWriter.create(final, 8000, 2)
    writer.write(pcm(4000))
    writer.close()
    os.rename(final, part_path_for(final))
    part = part_path_for(final)
    os.truncate(part, HEADER_SIZE + 2001)  # the tail lost: header says 4000, file holds 2001
    result = repair(part)
    assert (result.header_data_bytes, result.data_bytes, result.truncated_bytes) == (4000, 2000, 1)
    assert header_sizes(part) == (36 + 2000, 2000)
    assert read_wav(part)[4] == pcm(4000)[:2000]


def test_repair_refuses_what_it_did_not_write(tmp_path):
    bogus = tmp_path / "x.wav.part"
    bogus.write_bytes(b"ID3\x03" + bytes(100))
    with pytest.raises(RecordingError, match=r"x\.wav\.part: not a canonical 44-byte PCM WAV header"):
        repair(bogus)
    short = tmp_path / "y.wav.part"
    short.write_bytes(b"RIFF")
    with pytest.raises(RecordingError, match="too short for a WAV header"):
        repair(short)
    with pytest.raises(RecordingError, match="cannot repair"):
        repair(tmp_path / "missing.wav.part")


def test_append_silence_inserts_zero_frames(tmp_path):
    writer = WavWriter.create(tmp_path / "s.wav", 8000, 2)
    writer.write(b"\x01\x02\x03\x04\x05")  # one frame and one stray byte that the gap orphans
    writer.append_silence(100_000)  # bigger than the write buffer
    writer.write(b"\x06\x07\x08\x09")
    writer.close()
    data = read_wav(tmp_path / "s.wav")[4]
    assert data == b"\x01\x02\x03\x04" + bytes(400_000) + b"\x06\x07\x08\x09"
    assert writer.dropped_bytes == 1
    with pytest.raises(ValueError, match="whole number of frames"):
        WavWriter.create(tmp_path / "t.wav", 8000, 1).append_silence(-1)


def test_resume_appends_to_a_finished_recording(tmp_path):
    final = tmp_path / "r.wav"
    first = WavWriter.create(final, 8000, 1)
    first.write(pcm(3200, seed=1))
    first.close()
    again = WavWriter.resume(final, 8000, 1)
    assert not final.exists() and part_path_for(final).exists()  # a crash now cannot leave a stale final
    assert again.data_bytes == 3200
    again.write(pcm(3200, seed=2))
    again.close()
    assert read_wav(final)[4] == pcm(3200, seed=1) + pcm(3200, seed=2)


def test_resume_repairs_an_unfinished_part_first(tmp_path):
    final = tmp_path / "r.wav"
    writer = WavWriter.create(final, 8000, 1)
    writer.write(pcm(1001))
    writer._flush()
    writer.abandon()  # killed: header still says 0, one stray byte on disk
    resumed = WavWriter.resume(final, 8000, 1)
    resumed.write(pcm(10, seed=9))
    resumed.close()
    assert read_wav(final)[4] == pcm(1001)[:1000] + pcm(10, seed=9)


def test_resume_refuses_another_format(tmp_path):
    final = tmp_path / "r.wav"
    WavWriter.create(final, 8000, 1).close()
    with pytest.raises(RecordingError, match="cannot append 16000 Hz 2-channel audio to a 8000 Hz 1-channel"):
        WavWriter.resume(final, 16000, 2)


def test_create_refuses_existing_names_and_bad_formats(tmp_path):
    WavWriter.create(tmp_path / "a.wav", 8000, 1).close()
    with pytest.raises(RecordingError, match="already exists"):
        WavWriter.create(tmp_path / "a.wav", 8000, 1)
    WavWriter.create(tmp_path / "b.wav", 8000, 1)  # left unfinished
    with pytest.raises(RecordingError, match="unfinished recording with this name already exists"):
        WavWriter.create(tmp_path / "b.wav", 8000, 1)
    with pytest.raises(ValueError, match="channels must be 1 .* or 2"):
        WavWriter.create(tmp_path / "c.wav", 8000, 3)
    with pytest.raises(ValueError, match="rate must be a positive whole number"):
        WavWriter.create(tmp_path / "c.wav", "8k", 1)
    with pytest.raises(RecordingError, match="cannot create the recording"):
        WavWriter.create(tmp_path / "no" / "such" / "dir.wav", 8000, 1)


def test_write_after_close_is_a_clear_error(tmp_path):
    writer = WavWriter.create(tmp_path / "a.wav", 8000, 1)
    writer.close()
    with pytest.raises(RecordingError, match="already closed"):
        writer.write(b"\x00\x00")


def test_disk_full_is_a_recording_error_and_what_reached_disk_still_plays(tmp_path):
    # A real write failure from the kernel: a file size limit makes write() fail with EFBIG.
    limit = HEADER_SIZE + 100_001
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    final = tmp_path / "full.wav"
    writer = WavWriter.create(final, 8000, 1)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        with pytest.raises(RecordingError) as failed:
            for _ in range(100):
                writer.write(pcm(3200))
        assert failed.value.path == part_path_for(final)
        assert isinstance(failed.value.cause, OSError) and failed.value.cause.errno == errno.EFBIG
        assert "cannot write audio" in str(failed.value)
        with pytest.raises(RecordingError, match="cannot write audio"):
            writer.write(pcm(320))  # stays failed: no silent holes in the audio
        with pytest.raises(RecordingError):
            writer.close()  # finalises, then reports the failure again
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    rate, channels, _, frames, data = read_wav(final)
    assert frames * 2 == len(data) == final.stat().st_size - HEADER_SIZE == 100_000  # the odd byte cut
    assert data == (pcm(3200) * 32)[:100_000]
    assert writer.dropped_bytes > 0


def test_header_layout_round_trips(tmp_path):
    fmt = parse_header(build_header(48000, 2, 1234 * 4))
    assert (fmt.rate, fmt.channels, fmt.data_bytes, fmt.frame_size) == (48000, 2, 4936, 4)


def test_a_refused_resume_leaves_the_finished_recording_under_its_name(tmp_path):
    final = tmp_path / "r.wav"
    first = WavWriter.create(final, 8000, 1)
    first.write(pcm(320))
    first.close()
    with pytest.raises(RecordingError, match="cannot append 16000 Hz 1-channel audio to a 8000 Hz 1-channel"):
        WavWriter.resume(final, 16000, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.wav"]  # not hidden as r.wav.part
    assert read_wav(final)[4] == pcm(320)
