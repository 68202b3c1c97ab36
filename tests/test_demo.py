"""The demo as a user runs it, on a machine where a real FreeSWITCH (8021) and something on 8080 already listen."""

from __future__ import annotations

import errno
import pathlib
import socket
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def hold(port: int) -> socket.socket | None:
    """Listen on a loopback port the way a running FreeSWITCH would; None if something already does."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None  # taken already: the demo must cope with that just the same
        raise
    sock.listen(1)
    return sock


def test_the_demo_records_its_call_beside_a_running_freeswitch(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["recorder"]["directory"] = str(tmp_path / "recordings")
    demo_config = tmp_path / "demo.yaml"
    demo_config.write_text(yaml.safe_dump(config))
    held = [hold(8021), hold(8080)]
    try:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_demo.py"), "-c", str(demo_config),
                                 "--duration", "2"], capture_output=True, text=True, timeout=60)
    finally:
        for sock in held:
            if sock is not None:
                sock.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a real FreeSWITCH on 8021 is left alone" in result.stdout
    assert "equal what the simulated switch sent, byte for byte" in result.stdout
    [wav] = (tmp_path / "recordings").rglob("*.wav")
    assert wav.with_suffix(".json").exists()


def test_the_agent_demo_plays_the_callers_words_back_to_the_caller(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["recorder"]["directory"] = str(tmp_path / "recordings")
    demo_config = tmp_path / "demo.yaml"
    demo_config.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_demo.py"), "-c", str(demo_config),
                             "--agent"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check:     the caller heard their own 5.67 s sentence back from the agent" in result.stdout
    assert "piece(s) and 1 broadcast(s)" in result.stdout  # one reply, one file_string chain: no hole
