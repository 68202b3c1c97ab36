"""No agent can harm any call: a hostile agent (a flood of tiny messages and garbage, never reading) against
one relayed call, while another call is recorded in the same process. Through real sockets; the agent runs in
a process of its own."""

from __future__ import annotations

import logging
import pathlib
import subprocess
import sys
import time

import gevent
from harness import Harness, wait_until
from test_ops_hook import HookEndpoint, hook_yaml

from controller.relay import link as link_module
from controller.relay.link import AgentLink, CallDetails
from controller.settings import RelayConfig

HOSTILE = pathlib.Path(__file__).parent / "agents" / "hostile.py"

RULES = """\
- name: agent
  match: {destination: "9999"}
  relay: {url: "ws://127.0.0.1:%d/media"}
- name: plain
  match: {destination: "9998"}
"""


class LoopWatch:
    """How long the event loop was ever held: a greenlet asks for 10 ms sleeps and notes the overshoot."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            began = time.monotonic()
            gevent.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - began - 0.01)

    def stop(self) -> float:
        self._greenlet.kill()
        return self.worst


def test_a_flooding_agent_harms_neither_its_call_nor_another_and_is_cut_off(sim, tmp_path, caplog):
    agent = subprocess.Popen([sys.executable, str(HOSTILE), "3", "20"], stdout=subprocess.PIPE, text=True)
    endpoint = HookEndpoint()
    try:
        port = int(agent.stdout.readline())
        h = Harness(sim, tmp_path / "rec", RULES % port, hook_yaml(url=endpoint.url)).start()
        watch = LoopWatch()
        try:
            with caplog.at_level(logging.INFO):
                relayed = sim.place_call("9999", duration_s=4.0)
                other = sim.place_call("9998", duration_s=4.0)
                for call in (relayed, other):
                    assert call.hung_up.wait(15)
                hung_up = time.monotonic()
                for call in (relayed, other):
                    assert h.wait_closed(call.uuid) == "client_close"
                wait_until(lambda: len(endpoint.requests) == 2, 10, "both hooks")
                hooked_in = time.monotonic() - hung_up
        finally:
            worst = watch.stop()
            h.stop()
    finally:
        agent.kill()
        agent.wait(5)
        endpoint.stop()
    for call in (relayed, other):
        [stream] = sim.streams_for(call.uuid)
        recording = h.recording(call.uuid)
        assert recording.pcm == stream.sent_pcm and recording.sidecar["gaps"] == []  # exact, both calls
    relay = h.recording(relayed.uuid).sidecar["relay"]
    assert relay["abusive"] >= 1 and relay["last_error"].startswith("abusive: ")
    assert hooked_in < 10
    assert worst < 1.0, f"the event loop was held {worst:.3f} s"  # before: 5-6 s per flood
    relay_lines = [r for r in caplog.records if r.name == "controller.relay"]
    # Figures for the README (pytest -s shows them): how long the loop was held, the hook, the log.
    print(f"\nflooding agent: loop held at most {worst * 1000:.0f} ms, hook {hooked_in:.2f} s after the hangup, "
          f"{len(relay_lines)} relay log lines, abusive {relay['abusive']}x")
    assert len(relay_lines) <= 40, [r.getMessage() for r in relay_lines][:50]


class _StuckSocket:
    """An agent connection whose sends never complete (an agent that accepted and stopped reading)."""

    connected = True

    def __init__(self) -> None:
        self.shut = False

    def settimeout(self, timeout) -> None:
        pass

    def send(self, message) -> None:
        gevent.sleep(3600)

    send_binary = send

    def recv(self):
        while not self.shut:
            gevent.sleep(0.01)
        raise ConnectionError("closed")

    def send_close(self) -> None:
        gevent.sleep(3600)

    def shutdown(self) -> None:
        self.shut = True


def test_an_agent_that_stops_reading_is_aborted_and_stop_never_waits(monkeypatch):
    monkeypatch.setattr(link_module, "SEND_TIMEOUT_S", 0.2)
    sockets = []

    def connect(url, **options):
        sockets.append(_StuckSocket())
        return sockets[-1]

    call = CallDetails("166eb301-3ca5-4fc5-9751-d8ca093577dd", "166eb301-3ca5-4fc5-9751-d8ca093577dd", "1000",
                       "9999", "agent", 8000, 1)
    link = AgentLink(call, RelayConfig(url="ws://127.0.0.1:9/media"), send_to_module=lambda text: True,
                     command=lambda text: "+OK", parameters={}, connect=connect)
    link.start()
    try:
        wait_until(lambda: len(sockets) >= 1, 2, "the first connection")
        # its `connected` never goes out: aborted after the send timeout, and tried again
        wait_until(lambda: len(sockets) >= 2 and sockets[0].shut, 5, "the stuck connection to be aborted")
        assert "took nothing" in link.stats["last_error"] or "cannot connect" in link.stats["last_error"]
    finally:
        began = time.monotonic()
        link.stop()
        # The recording's finalisation never waits on the agent: a stop that did would wait out send_close's hour
        # (the bound leaves room for a busy machine, not for a wait).
        assert time.monotonic() - began < 1.0
    wait_until(lambda: all(s.shut for s in sockets), 3, "every connection closed after the stop's grace")
