"""A controller and a simulated FreeSWITCH wired together on loopback, for end-to-end and fault tests."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap
import time
import wave
from dataclasses import dataclass

import gevent
from gevent.event import Event

from controller.app import Controller
from controller.config import parse_config


# The rule most tests use: extension 9999, mono 8000 (the defaults).
RULE_9999 = """\
- name: ext9999
  match: {destination: "9999"}
"""


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll a condition that has no event to wait on (e.g. audio sent so far), bounded in time."""
    with gevent.Timeout(timeout, TimeoutError(f"timed out waiting for {what}")):
        while not condition():
            gevent.sleep(0.02)


def self_signed_certificate(directory: pathlib.Path, name: str = "self-signed") -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI in `directory`: (cert path, key path)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


def first_line(command: str) -> str:
    """bgapi commands carry a Job-UUID header line; tests compare the command itself."""
    return command.split("\n", 1)[0]


@dataclass
class Recording:
    path: pathlib.Path
    rate: int
    channels: int
    pcm: bytes
    sidecar: dict

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.rate)

    def audio_outside_gaps(self) -> bytes:
        """The WAV's audio with every silence the recorder inserted (listed in the sidecar) cut out."""
        frame = 2 * self.channels
        kept, position = [], 0
        for gap in self.sidecar["gaps"]:
            kept.append(self.pcm[position:gap["start_frame"] * frame])
            position = (gap["start_frame"] + gap["frames"]) * frame
        kept.append(self.pcm[position:])
        return b"".join(kept)

    def gap_causes(self) -> list[str]:
        return [gap["cause"] for gap in self.sidecar["gaps"]]


class Harness:
    """Starts a Controller against a running Simulator; records which recordings were finalised."""

    def __init__(self, sim, directory: pathlib.Path, rules: str, extra: str = "", recorder: str = "") -> None:
        """`recorder`: more lines for the recorder section (indented by two spaces)."""
        # Metrics are on by default, and in-process controllers must not all bind 9464: off, unless the
        # test brings its own metrics section in `extra`.
        metrics = "" if re.search(r"(?m)^metrics:", textwrap.dedent(extra)) else "metrics: {enabled: false}\n"
        text = textwrap.dedent(f"""\
            esl:
              host: 127.0.0.1
              port: {sim.esl_port}
              password: ClueCon
              connect_timeout_s: 2
              command_timeout_s: 3
              reconnect: {{initial_s: 0.05, max_s: 0.5, jitter: 0}}
            recorder:
              listen_host: 127.0.0.1
              listen_port: 0
              directory: {directory}
            """) + recorder + metrics + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ") + textwrap.dedent(extra)
        self.sim = sim
        self.directory = directory
        self.config = parse_config(text, "test.yaml")
        self.controller = Controller(self.config)
        self.closed: dict[str, str] = {}  # uuid -> why its recording was finalised
        self._closed_changed = Event()
        self.controller.recording_listeners.append(self._on_closed)

    def _on_closed(self, uuid: str, reason: str) -> None:
        self.closed[uuid] = reason
        self._closed_changed.set()

    def start(self) -> "Harness":
        self.controller.start()
        if not self.controller.esl.connected_event.wait(5):
            raise TimeoutError(f"controller did not connect: {self.controller.esl.last_error}")
        return self

    def stop(self) -> None:
        self.controller.stop(timeout=5)

    def wait_closed(self, uuid: str, timeout: float = 10.0) -> str:
        """The reason the recording of `uuid` was finalised."""
        deadline = time.monotonic() + timeout
        while uuid not in self.closed:
            self._closed_changed.clear()
            if not self._closed_changed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"recording of {uuid} not finalised within {timeout} s")
        return self.closed[uuid]

    def catalog_row(self, uuid: str, timeout: float = 10.0) -> dict:
        """The call's catalog row, once the catalog has it (written off the recorder's path, by the archive's
        queue)."""
        archive = self.controller.archive
        wait_until(lambda: archive.queue.waiting("catalog") == 0 and archive.db(archive.store.get, uuid), timeout,
                   "the catalog row")
        [row] = archive.db(archive.store.get, uuid)
        return row

    def commands_for(self, uuid: str) -> list[str]:
        return [first_line(c) for c in self.sim.received_commands if uuid in c]

    def recordings_for(self, uuid: str) -> list[pathlib.Path]:
        return sorted(self.directory.rglob(f"*{uuid}*.wav"))

    def recording(self, uuid: str) -> Recording:
        [path] = self.recordings_for(uuid)
        with wave.open(str(path), "rb") as wav:
            rate, channels = wav.getframerate(), wav.getnchannels()
            pcm = wav.readframes(wav.getnframes())
        sidecar = json.loads(path.with_suffix(".json").read_text())
        return Recording(path, rate, channels, pcm, sidecar)


def controller_process(sim, tmp_path: pathlib.Path, rules: str = RULE_9999) -> subprocess.Popen:
    """The controller as a user runs it (`python -m controller -c FILE`), against `sim`.

    Its config is tmp_path/controller.yaml, its recordings go to tmp_path/rec, its log to
    tmp_path/controller.log (a file, not a pipe: a pipe nobody reads would block a chatty process).
    """
    config = tmp_path / "controller.yaml"
    config.write_text(textwrap.dedent(f"""\
        esl: {{host: 127.0.0.1, port: {sim.esl_port}, password: ClueCon}}
        recorder: {{listen_host: 127.0.0.1, listen_port: 0, directory: {tmp_path / 'rec'}}}
        metrics: {{enabled: false}}
        rules:
        """) + textwrap.indent(textwrap.dedent(rules), "  "))
    with open(tmp_path / "controller.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "controller", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log)
