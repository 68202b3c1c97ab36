"""`fs-stream-controller check`: the rules as understood, and for one call the exact commands the controller
then really sends for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from harness import first_line

from controller.app import Controller
from controller.config import parse_config

UUID = "6f0c2a52-1d3e-4b8f-9a71-2c4d5e6f7a8b"
TOKEN = "fixed-token-for-the-check"


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "check", *args], capture_output=True, text=True,
                          timeout=30)


def config_text(esl_port: int) -> str:
    return textwrap.dedent(f"""\
        esl: {{port: {esl_port}, password: ClueCon}}
        recorder: {{public_url: "ws://127.0.0.1:1", listen_port: 0, token: {TOKEN}}}
        metrics: {{enabled: false}}
        rules:
          - name: sales
            match: {{destination: /7\\d\\d/}}
            mix: stereo
            rate: 16000
            max_duration_s: 60
          - name: ext9999
            match: {{destination: "9999", context: default}}
            metadata: {{queue: support}}
        """)


def test_check_prints_the_rules_as_understood(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text(8021))
    result = check(str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: OK (2 rules)"
    assert "  1. sales [line 5]: when destination=/7\\d\\d/ direction=inbound -> stereo 16000 Hz, 20 ms frames, " \
           "stop after 60 s" in lines
    assert '  2. ext9999 [line 10]: when destination=9999 context=default direction=inbound -> mono 8000 Hz, ' \
           '20 ms frames, metadata {"queue":"support"}' in lines


def test_check_warns_about_a_stereo_relay_rule_and_not_about_a_stereo_recording(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text(8021) + textwrap.indent(textwrap.dedent("""\
        - name: agent
          match: {destination: "9998"}
          mix: stereo
          relay: {url: "ws://127.0.0.1:8765/media"}
        """), "  "))
    result = check(str(config))
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert warning.startswith("warning: rule agent [line 13] relays a stereo stream") and "endless_playback" in warning


def test_a_call_no_rule_matches_says_so_and_exits_1(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text(8021))
    result = check(str(config), "--call", "1234")
    assert result.returncode == 1 and "matches no rule: not streamed" in result.stdout


def test_check_call_prints_the_commands_the_controller_then_sends(sim, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(config_text(sim.esl_port))
    result = check(str(config), "--call", "9999", "--uuid", UUID)
    assert result.returncode == 0, result.stderr
    printed = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]

    controller = Controller(parse_config(config.read_text(), str(config)))
    controller.start()
    try:
        assert controller.esl.connected_event.wait(5)
        call = sim.place_call("9999", uuid=UUID, duration_s=1.0)
        start = sim.wait_for_command(lambda c: f"{UUID} start" in c, timeout=5)
    finally:
        controller.stop(timeout=2)
    sent = [first_line(c) for c in sim.received_commands if UUID in c]
    assert sent[:2] == printed[:2] and first_line(start) == printed[1]
    assert printed[0].startswith(f"api uuid_setvar_multi {UUID} STREAM_BUFFER_SIZE=20;")
    assert call.uuid == UUID
