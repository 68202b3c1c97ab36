"""Secrets stay secret (issue #17): the API token, and the agent's credentials, never appear in a log line, an
answer, an error, a sidecar or a hook payload, whatever a client sends or an agent answers. Every logger is
captured at DEBUG."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from gevent.event import Event
from gevent.pywsgi import WSGIServer
from harness import RULE_9999, Harness, wait_until
from httpraw import bearer, request

TOKEN = "tok-SECRET-api-5f4e3d2c1b"
NEAR_MISS = "tok-SECRET-api-5f4e3d2c1c"  # what someone might paste by mistake: not to be logged either
AGENT_KEY = "SECRET-agent-query-key-77"
AGENT_AUTH = "Bearer SECRET-agent-header-88"
SECRETS = (TOKEN, NEAR_MISS, "SECRET-api", AGENT_KEY, "SECRET-agent")


class HookEndpoint:
    """Where finished recordings are posted: keeps every payload."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.arrived = Event()
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/done"

    def _app(self, environ, start_response):
        self.payloads.append(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        self.arrived.set()
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class EchoingAgent:
    """An agent that refuses every WebSocket upgrade (401) and echoes the request back: its headers and query in
    the body, the Authorization header in a response header, as a misbehaving or curious server might."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)
        self.server.start()
        self.port = self.server.server_port

    def _app(self, environ, start_response):
        request_headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        echo = {"path": environ.get("PATH_INFO"), "query": environ.get("QUERY_STRING"), "headers": request_headers}
        self.seen.append(echo)
        body = json.dumps(echo).encode()
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                            ("X-Echo-Authorization", environ.get("HTTP_AUTHORIZATION", "")),
                                            ("X-Echo-Query", environ.get("QUERY_STRING", ""))])
        return [body]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def everything_written(directory) -> str:
    """Every file the controller wrote under the recordings directory (sidecars, the hook queue), as text."""
    texts = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(texts)


def assert_nothing_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked: ...{text[max(0, text.find(secret) - 200):][:400]}..."


def test_the_api_token_never_reaches_a_log_line_an_answer_a_sidecar_or_a_hook(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    hook = HookEndpoint()
    extra = (f"metrics: {{listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"
             f"hook: {{url: '{hook.url}', headers: {{X-Key: hook-key}}}}\n")
    h = Harness(sim, tmp_path / "rec", RULE_9999, extra).start()
    answers = []
    try:
        port = h.controller.http_port
        call = sim.place_call("9999", duration_s=1.0)
        for headers in ({}, bearer(NEAR_MISS), {"Authorization": NEAR_MISS}, {"Authorization": f"Basic {TOKEN}"},
                        bearer(TOKEN)):
            answers.append(request(port, "GET", "/calls", headers=headers))
            answers.append(request(port, "POST", "/doctor/chain", headers={**headers, "Origin": "http://evil.example",
                                                                          "Content-Type": "text/plain"}, body=b"x"))
        answers.append(request(port, "GET", "/healthz", headers=bearer(NEAR_MISS), host="evil.example"))
        answers.append(request(port, "POST", "/doctor/chain", headers={**bearer(TOKEN), "Content-Type":
                                                                      "application/json"}, body=b'{"seconds": 0.5}'))
        assert answers[-1].status == 200 and all(step["ok"] for step in answers[-1].json()["steps"])
        assert call.hung_up.wait(10)
        h.wait_closed(call.uuid)
        assert hook.arrived.wait(10)
        status = subprocess.run(
            [sys.executable, "-m", "controller", "status", "-c", str(write_status_config(tmp_path, port))],
            capture_output=True, text=True, timeout=30, env={**os.environ, "FSCTL_HTTP_TOKEN": TOKEN})
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        h.stop()
        hook.stop()
    assert [a.status for a in answers[:10]] == [401, 403] * 4 + [200, 403]
    assert_nothing_secret(caplog.text, *(a.body.decode() + json.dumps(a.headers) for a in answers),
                          everything_written(tmp_path / "rec"), *(p.decode() for p in hook.payloads),
                          status.stdout, status.stderr)
    assert any("refused (401): the API token was refused" in r.getMessage() for r in caplog.records)


def write_status_config(tmp_path, port: int):
    path = tmp_path / "status.yaml"
    path.write_text(f"esl: {{password: x}}\nmetrics: {{listen_port: {port}}}\nhttp:\n  token: ${{FSCTL_HTTP_TOKEN}}\n"
                    "rules:\n  - {name: r, match: {destination: '1'}}\n")
    return path


def test_an_agent_that_echoes_its_request_back_leaks_no_credential(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    agent, hook = EchoingAgent(), HookEndpoint()
    rule = (f"- name: ext9999\n  match: {{destination: \"9999\"}}\n"
            f"  relay: {{url: 'ws://127.0.0.1:{agent.port}/media?key={AGENT_KEY}', "
            f"headers: {{Authorization: '{AGENT_AUTH}'}}}}\n")
    h = Harness(sim, tmp_path / "rec", rule, f"hook: {{url: '{hook.url}'}}\n").start()
    try:
        call = sim.place_call("9999", duration_s=30.0, auto_hangup=False, plays=None)
        wait_until(lambda: len(agent.seen) >= 2, 10, "the agent to be tried twice")
        call.hangup()
        h.wait_closed(call.uuid)
        assert hook.arrived.wait(10)
    finally:
        h.stop()
        agent.stop()
        hook.stop()
    # The agent did get the credentials (so they were there to leak), and echoed them back.
    assert agent.seen[0]["query"] == f"key={AGENT_KEY}" and agent.seen[0]["headers"]["HTTP_AUTHORIZATION"] == AGENT_AUTH
    relay = h.recording(call.uuid).sidecar["relay"]
    assert relay["connections"] == 0 and "401" in relay["last_error"]
    assert_nothing_secret(caplog.text, everything_written(tmp_path / "rec"), *(p.decode() for p in hook.payloads))
    assert any("cannot connect" in r.getMessage() and "401" in r.getMessage() for r in caplog.records)
