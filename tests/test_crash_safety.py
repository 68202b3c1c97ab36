"""A controller killed with SIGKILL mid-call leaves a WAV that plays: its header sizes match the data up to
the last second, and that audio is exactly what the switch sent."""

from __future__ import annotations

import os
import signal
import wave

from harness import controller_process, wait_until

BYTES_PER_SECOND = 8000 * 2


def test_sigkill_mid_call_leaves_a_playable_wav(sim, tmp_path):
    process = controller_process(sim, tmp_path)
    directory = tmp_path / "rec"
    try:
        sim.wait_for_command("event ", timeout=20)
        call = sim.place_call("9999", duration_s=6.0)
        wait_until(lambda: sim.streams_for(call.uuid), 10, "the stream to start")
        [stream] = sim.streams_for(call.uuid)
        wait_until(lambda: len(stream.sent_pcm) >= int(2.5 * BYTES_PER_SECOND), 10, "2.5 s of audio")
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(5) == -signal.SIGKILL
        sent = stream.sent_pcm
    finally:
        if process.poll() is None:
            process.kill()
    [part] = list(directory.rglob(f"*{call.uuid}*.part"))
    with wave.open(str(part), "rb") as wav:  # the stdlib reader accepts the header as it was left
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        declared = wav.readframes(wav.getnframes())
    on_disk = part.stat().st_size - 44
    assert len(declared) == wav.getnframes() * 2
    # The header is at most a second (plus a frame in flight) behind the bytes on disk...
    assert 0 <= on_disk - len(declared) <= BYTES_PER_SECOND + 640
    # ...covers at least 1.5 s of the 2.5 s sent, and is exactly what the switch sent.
    assert len(declared) >= int(1.5 * BYTES_PER_SECOND)
    assert declared == sent[: len(declared)]
