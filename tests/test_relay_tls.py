"""wss:// to a voice agent is verified (issue #17): an agent whose certificate no known CA signed is not relayed
to, and with relay.ca_file naming the CA that did, it is. Through real sockets: the simulated switch, the
controller, and an agent on TLS with a self-signed certificate for 127.0.0.1."""

from __future__ import annotations

import json
import ssl

import pytest
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler
from harness import Harness, self_signed_certificate, wait_until


@pytest.fixture
def certificate(tmp_path):
    return self_signed_certificate(tmp_path, "agent")


class TlsAgent:
    """A Twilio-style agent on wss://: counts the connections that got through the TLS handshake."""

    def __init__(self, cert, key) -> None:
        self.messages: list[dict] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server = WSGIServer(("127.0.0.1", 0), self._app, handler_class=WebSocketHandler, log=None,
                                 error_log=None, ssl_context=context)
        self.server.start()
        self.url = f"wss://127.0.0.1:{self.server.server_port}/media"

    def _app(self, environ, start_response):
        ws = environ["wsgi.websocket"]
        while (message := ws.receive()) is not None:
            if isinstance(message, str):
                self.messages.append(json.loads(message))
        return []

    def stop(self) -> None:
        self.server.stop(timeout=1)


def relayed_call(sim, tmp_path, url: str, relay_extra: str = ""):
    rule = f"- name: ext9999\n  match: {{destination: \"9999\"}}\n  relay: {{url: '{url}'{relay_extra}}}\n"
    return Harness(sim, tmp_path / "rec", rule).start()


def relay_of_a_refused_call(sim, tmp_path, agent: "TlsAgent", relay_extra: str = "") -> dict:
    """A call relayed to `agent` until the relay's first attempt fails, then hung up: its sidecar's relay figures."""
    h = relayed_call(sim, tmp_path, agent.url, relay_extra)
    try:
        call = sim.place_call("9999", duration_s=30.0, auto_hangup=False, plays=None)
        wait_until(lambda: call.uuid in h.controller.relays
                   and h.controller.relays[call.uuid].stats["last_error"], 10, "the first attempt to fail")
        call.hangup()
        h.wait_closed(call.uuid)
    finally:
        h.stop()
        agent.stop()
    return h.recording(call.uuid).sidecar["relay"]


def test_an_agent_whose_certificate_no_known_ca_signed_gets_nothing(sim, tmp_path, certificate):
    agent = TlsAgent(*certificate)
    relay = relay_of_a_refused_call(sim, tmp_path, agent)
    assert relay["connections"] == 0
    assert "CERTIFICATE_VERIFY_FAILED" in relay["last_error"], relay["last_error"]
    assert agent.messages == []  # not a byte of the call reached it


def test_with_ca_file_the_agent_is_verified_and_relayed_to(sim, tmp_path, certificate):
    agent = TlsAgent(*certificate)
    h = relayed_call(sim, tmp_path, agent.url, f", ca_file: '{certificate[0]}'")
    try:
        call = sim.place_call("9999", duration_s=30.0, auto_hangup=False, plays=None)
        wait_until(lambda: any(m.get("event") == "media" for m in agent.messages), 10, "the call's audio at the agent")
        call.hangup()
        h.wait_closed(call.uuid)
    finally:
        h.stop()
        agent.stop()
    assert [m["event"] for m in agent.messages[:2]] == ["connected", "start"]
    assert h.recording(call.uuid).sidecar["relay"]["connections"] == 1


def test_a_ca_that_did_not_sign_the_agents_certificate_is_refused_too(sim, tmp_path, certificate, tmp_path_factory):
    other_cert, _ = self_signed_certificate(tmp_path_factory.mktemp("other"), "other")
    agent = TlsAgent(*certificate)
    relay = relay_of_a_refused_call(sim, tmp_path, agent, f", ca_file: '{other_cert}'")
    assert relay["connections"] == 0 and "CERTIFICATE_VERIFY_FAILED" in relay["last_error"]
