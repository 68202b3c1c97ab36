"""A controller killed with SIGKILL mid-call leaves a WAV that plays: its header sizes match the data up to
the last second, and that audio is exactly what the switch sent."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import wave

import gevent
import pytest

from controller.simulator import Simulator

BYTES_PER_SECOND = 8000 * 2


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def wait_until(condition, timeout: float, what: str) -> None:
    with gevent.Timeout(timeout, TimeoutError(f"timed out waiting for {what}")):
        while not condition():
            gevent.sleep(0.02)


@pytest.fixture
def sim():
    simulator = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon")
    simulator.start()
    yield simulator
    simulator.stop()


def start_controller(sim, tmp_path) -> tuple[subprocess.Popen, pathlib.Path]:
    port = free_port()
    directory = tmp_path / "rec"
    config = tmp_path / "controller.yaml"
    config.write_text(textwrap.dedent(f"""\
        esl: {{host: 127.0.0.1, port: {sim.esl_port}, password: ClueCon}}
        recorder: {{listen_host: 127.0.0.1, listen_port: {port}, directory: {directory}}}
        rules:
          - name: ext9999
            match: {{destination: "9999"}}
        """))
    process = subprocess.Popen([sys.executable, "-m", "controller", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, directory



def test_sigkill_mid_call_leaves_a_playable_wav(sim, tmp_path):
    process, directory = start_controller(sim, tmp_path)
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
