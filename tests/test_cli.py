"""The console script as a user runs it: a broken configuration is one clear line and exit status 2,
before the controller connects anywhere."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

INVALID = pathlib.Path(__file__).resolve().parent / "data" / "config" / "invalid"
# One case per class of mistake a user makes; each .error file holds the exact expected line.
CASES = ["bad_yaml_syntax", "unknown_key", "wrong_type", "bad_rate", "bad_mix", "buffer_not_multiple",
         "missing_env"]


def run_controller(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.parametrize("case", CASES)
def test_config_mistake_exits_2_with_file_line_field_message(case: str, tmp_path: pathlib.Path):
    config = tmp_path / f"{case}.yaml"
    config.write_text((INVALID / f"{case}.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "RECORDINGS_DIR"}
    env["ESL_PASSWORD"] = "s3cret-Pa55"
    result = run_controller("-c", str(config), env=env)
    expected = (INVALID / f"{case}.error").read_text().rstrip("\n").replace(f"{case}.yaml", str(config), 1)
    assert result.returncode == 2
    assert result.stderr.strip() == f"configuration error: {expected}"
    assert "s3cret-Pa55" not in result.stderr + result.stdout


def test_broken_config_never_connects(tmp_path: pathlib.Path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    config = tmp_path / "c.yaml"
    config.write_text(f"esl: {{port: {port}, password: x}}\nrules:\n  - name: r\n    match: {{destination: '1'}}\n"
                      f"    mix: quad\n")
    result = run_controller("-c", str(config))
    assert result.returncode == 2
    assert "rules[0].mix" in result.stderr
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()


def test_check_flag_validates_and_exits_0():
    root = pathlib.Path(__file__).resolve().parents[1]
    result = run_controller("--check", "-c", str(root / "config" / "demo.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK (1 rules)" in result.stdout


def test_an_unknown_log_level_is_refused_with_the_allowed_ones():
    demo = pathlib.Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
    result = run_controller("--log-level", "chatty", "--check", "-c", str(demo))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--log-level: invalid choice: 'CHATTY' (choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')" \
        in result.stderr


def test_importing_the_controller_patches_nothing():
    # Only the entry point monkey-patches: a program that imports the controller keeps its own choice.
    probe = "import controller.app, gevent.monkey as m; print(m.is_module_patched('socket'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
