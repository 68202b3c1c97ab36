"""Who may ask the controller's HTTP listener what (issue #17), through its real socket: the API token on every
protected endpoint, requests a web page could make (cross-site, or under a re-pointed name) refused, a listener
on the network without a token refused at start, and the doctor's test calls one at a time, counted against
limits.max_streams, measuring for as long as asked, with the rule's own stream settings."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import textwrap

import gevent
import pytest
from harness import RULE_9999, first_line, wait_until
from httpraw import bearer, request

from controller import audio_stream
from controller.ops import guard
from controller.ops.guard import BearerToken, Guard
from controller.ops.http import HttpListener

TOKEN = "tok-9f8e7d6c5b4a39281706"
HTTP = f"metrics: {{listen_host: 127.0.0.1, listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"
JSON_TYPE = {"Content-Type": "application/json"}


def port_of(h) -> int:
    return h.controller.http_port


def post_chain(port: int, body=None, *, token: str | None = TOKEN, headers: dict | None = None, **options):
    data = b"" if body is None else json.dumps(body).encode()
    sent = {**(bearer(token) if token else {}), **(JSON_TYPE if data else {}), **(headers or {})}
    return request(port, "POST", "/doctor/chain", headers=sent, body=data, **options)


def originates(sim) -> list[str]:
    return [c for c in sim.received_commands if c.startswith("bgapi originate")]


def no_cors(*answers) -> bool:
    return not any(name.startswith("access-control-") for answer in answers for name in answer.headers)


# ---- the API token ----


def test_every_protected_endpoint_answers_401_without_the_token_or_with_a_wrong_one(sim, harness):
    h = harness(extra=HTTP)
    port = port_of(h)
    protected = sorted((method, path) for path, methods in h.controller.http.routes.items()
                       for method, route in methods.items() if not route.open)
    assert protected == [("GET", "/calls"), ("POST", "/doctor/chain")]
    answers = []
    for method, path in protected:
        missing = request(port, method, path)
        assert (missing.status, missing.error) == (
            401, f"{path} needs the API token: send Authorization: Bearer <http.token>")
        assert missing.headers["www-authenticate"] == 'Bearer realm="fs-stream-controller"'
        for headers in (bearer("x" + TOKEN[1:]), bearer(TOKEN[:-1]), bearer(TOKEN + "0"), {"Authorization": TOKEN},
                        {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("")):
            wrong = request(port, method, path, headers=headers)
            assert (wrong.status, wrong.error) == (401, "the API token was refused"), headers
            assert wrong.headers["www-authenticate"] == 'Bearer realm="fs-stream-controller", error="invalid_token"'
            answers.append(wrong)
        answers.append(missing)
    assert originates(sim) == []  # no test call was made for any of them
    right = request(port, "GET", "/calls", headers=bearer(TOKEN))
    assert (right.status, right.json()) == (200, {"calls": []})
    assert request(port, "GET", "/calls", headers={"Authorization": f"bearer  {TOKEN} "}).status == 200
    # On a loopback listener /healthz and /metrics stay open.
    assert request(port, "GET", "/healthz").status == 200 and request(port, "GET", "/metrics").status == 200
    assert no_cors(right, *answers)
    assert all(TOKEN not in answer.body.decode() for answer in answers)


def test_the_token_is_compared_in_constant_time(sim, harness, monkeypatch):
    compared = []
    real = guard.hmac.compare_digest

    def spy(a, b):
        compared.append((type(a), len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    h = harness(extra=HTTP)
    for wrong in ("x", TOKEN[:-1], TOKEN + "x" * 200):
        assert request(port_of(h), "GET", "/calls", headers=bearer(wrong)).status == 401
    assert request(port_of(h), "GET", "/calls", headers=bearer(TOKEN)).status == 200
    # SHA-256 digests of what was sent and of the token, compared by hmac.compare_digest: whatever was sent, the
    # comparison takes the same time, and not even the token's length shows.
    assert compared == [(bytes, 32, 32)] * 4


def test_without_a_token_configured_the_protected_endpoints_say_how_to_open_them(sim, harness):
    h = harness(extra="metrics: {listen_port: 0}\n")
    answer = request(port_of(h), "GET", "/calls")
    assert (answer.status, answer.error) == (
        403, "/calls needs the API token, and the controller has none: set http.token in its configuration and "
             "restart it")
    assert post_chain(port_of(h), token=None).status == 403
    assert request(port_of(h), "GET", "/healthz").status == 200
    assert originates(sim) == []


def test_an_endpoint_added_later_needs_the_token_without_asking(sim, harness):
    h = harness(extra=HTTP)
    listener = HttpListener(h.controller)
    listener.route("POST", "/console/rules")(lambda req: ("200 OK", {"saved": True}))
    port = listener.start("127.0.0.1", 0)
    try:
        assert request(port, "POST", "/console/rules").status == 401
        assert request(port, "POST", "/console/rules", headers=bearer(TOKEN)).json() == {"saved": True}
    finally:
        listener.stop()


def test_a_cookie_login_plugged_in_later_may_read_but_never_change_anything(sim, harness):
    class SessionCookie:
        """What the console's login will add: a credential a browser sends on its own."""

        ambient = True

        def check(self, environ):
            cookie = environ.get("HTTP_COOKIE")
            return None if cookie is None else cookie == "session=good"

    h = harness(extra=HTTP)
    listener = HttpListener(h.controller, guard=Guard(token=TOKEN, listen_host="127.0.0.1",
                                                      authenticators=[BearerToken(TOKEN), SessionCookie()]))
    listener.route("GET", "/console/rules")(lambda req: ("200 OK", {"rules": []}))
    listener.route("POST", "/console/rules")(lambda req: ("200 OK", {"saved": True}))
    port = listener.start("127.0.0.1", 0)
    try:
        assert request(port, "GET", "/console/rules", headers={"Cookie": "session=good"}).status == 200
        assert request(port, "GET", "/console/rules", headers={"Cookie": "session=stale"}).status == 401
        changed = request(port, "POST", "/console/rules", headers={"Cookie": "session=good"})
        assert (changed.status, changed.error) == (
            403, "a request that changes anything needs the API token in its Authorization header")
        assert request(port, "POST", "/console/rules", headers=bearer(TOKEN)).status == 200
    finally:
        listener.stop()


# ---- what a web page in a browser on this host could send ----


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b'{"seconds": 2}'),
    ("application/x-www-form-urlencoded", b"seconds=2"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n2\r\n--b--"),
])
def test_a_cross_site_post_from_a_web_page_is_refused_and_makes_no_call(sim, harness, content_type, body):
    h = harness(extra=HTTP)
    port = port_of(h)
    # What a browser sends for <form method=post action="http://127.0.0.1:9464/doctor/chain"> on evil.example, or
    # fetch(..., {method: "POST", mode: "no-cors", body}) there: simple requests, sent without a preflight.
    page = {"Origin": "http://evil.example", "Content-Type": content_type, "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate", "Referer": "http://evil.example/", "Cookie": "session=anything"}
    refused = request(port, "POST", "/doctor/chain", headers=page, body=body)
    assert (refused.status, refused.error) == (403, "a request from another origin ('http://evil.example') is refused")
    # An older browser sends neither Origin nor Sec-Fetch-Site: it cannot send the token either.
    old = request(port, "POST", "/doctor/chain", headers={"Content-Type": content_type}, body=body)
    assert (old.status, old.error) == (401, "/doctor/chain needs the API token: send Authorization: Bearer <http.token>")
    # Another page on this very host (same site, another port) is another origin too.
    local = request(port, "POST", "/doctor/chain", body=body,
                    headers={"Origin": "http://127.0.0.1:8080", "Content-Type": content_type})
    assert local.status == 403
    fetch_site = request(port, "POST", "/doctor/chain", body=body,
                         headers={"Sec-Fetch-Site": "same-site", "Content-Type": content_type, **bearer(TOKEN)})
    assert (fetch_site.status, fetch_site.error) == (403, "a same-site request (Sec-Fetch-Site) is refused")
    assert originates(sim) == []
    assert no_cors(refused, old, local, fetch_site)


def test_a_preflight_gets_no_cors_headers_so_no_page_may_send_the_token(sim, harness):
    h = harness(extra=HTTP)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    cross = request(port_of(h), "OPTIONS", "/doctor/chain", headers={"Origin": "http://evil.example", **preflight})
    plain = request(port_of(h), "OPTIONS", "/doctor/chain", headers=preflight)
    assert cross.status == 403
    assert (plain.status, plain.headers["allow"]) == (405, "POST")
    assert no_cors(cross, plain)


def test_a_page_whose_name_was_pointed_at_the_listener_is_refused(sim, harness):
    h = harness(extra=HTTP)
    port = port_of(h)
    # DNS rebinding: evil.example first served the page, then resolves to 127.0.0.1. The browser takes the page's
    # requests for same-origin ones and sends evil.example as Host (and Origin); a stolen token does not help.
    evil = f"evil.example:{port}"
    cases = [("GET", "/healthz", {}), ("GET", "/metrics", {}), ("GET", "/calls", bearer(TOKEN)),
             ("POST", "/doctor/chain", {**bearer(TOKEN), "Origin": f"http://{evil}", **JSON_TYPE})]
    for method, path, headers in cases:
        answer = request(port, method, path, headers=headers, host=evil)
        assert (answer.status, answer.error) == (
            403, f"Host '{evil}' does not name this listener (an IP address, localhost, 127.0.0.1, this machine's "
                 "name or http.allowed_hosts)"), path
    assert originates(sim) == []
    # The names that do: what this host's own tools and a browser typing the address use.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST.:{port}",
                 socket.gethostname(), "10.1.2.3"):
        assert request(port, "GET", "/healthz", host=host).status == 200, host


def test_allowed_hosts_lets_a_name_of_this_listener_in(sim, harness):
    h = harness(extra=f"metrics: {{listen_port: 0}}\nhttp:\n  token: {TOKEN}\n  allowed_hosts: [Fsctl.Example.net]\n")
    port = port_of(h)
    assert request(port, "GET", "/metrics", host=f"fsctl.example.net:{port}").status == 200
    same = request(port, "GET", "/calls", host=f"fsctl.example.net:{port}",
                   headers={"Origin": f"http://fsctl.example.net:{port}", **bearer(TOKEN)})
    assert same.status == 200
    assert request(port, "GET", "/metrics", host=f"other.example.net:{port}").status == 403


def test_the_same_origin_and_the_users_own_typing_are_let_through(sim, harness):
    h = harness(extra=HTTP)
    port = port_of(h)
    same = request(port, "GET", "/calls", headers={"Origin": f"http://127.0.0.1:{port}", **bearer(TOKEN)})
    typed = request(port, "GET", "/healthz", headers={"Sec-Fetch-Site": "none"})
    null = request(port, "GET", "/healthz", headers={"Origin": "null"})
    assert (same.status, typed.status) == (200, 200)
    assert (null.status, null.error) == (403, "a request from another origin ('null') is refused")


# ---- a listener other hosts reach ----


def exposed_listener(h, *, public: bool):
    """The harness's controller served as if metrics.listen_host were 0.0.0.0 (the socket stays on loopback)."""
    c = h.controller
    c.config = dataclasses.replace(c.config, metrics=dataclasses.replace(
        c.config.metrics, listen_host="0.0.0.0", listen_port=9464, public=public))
    listener = HttpListener(c)
    return listener, listener.start("127.0.0.1", 0)


def test_on_the_network_healthz_and_metrics_need_the_token_unless_made_public(sim, harness, caplog):
    h = harness(extra=HTTP)
    listener, port = exposed_listener(h, public=False)
    try:
        for path in ("/healthz", "/metrics"):
            answer = request(port, "GET", path)
            assert (answer.status, answer.error) == (
                401, f"{path} needs the API token (the listener is on 0.0.0.0 and metrics.public is false): send "
                     "Authorization: Bearer <http.token>")
            assert request(port, "GET", path, headers=bearer(TOKEN)).status == 200
    finally:
        listener.stop()
    assert "answer anyone" not in caplog.text

    listener, port = exposed_listener(h, public=True)
    try:
        assert request(port, "GET", "/healthz").status == 200 and request(port, "GET", "/metrics").status == 200
        assert request(port, "GET", "/calls").status == 401
    finally:
        listener.stop()
    warnings = [r.getMessage() for r in caplog.records if r.name == "controller.http" and r.levelname == "WARNING"
                and "answer anyone" in r.getMessage()]
    assert warnings == [
        "/metrics and /healthz answer anyone who can reach 0.0.0.0:9464 without the API token (metrics.public: "
        "true): they show rule names, call counts and the recordings directory; firewall the port, or set "
        "metrics.public: false"]


def network_config(tmp_path, esl_port: int, http: str = "") -> str:
    path = tmp_path / "exposed.yaml"
    path.write_text(textwrap.dedent(f"""\
        esl: {{port: {esl_port}, password: x}}
        recorder: {{listen_port: 0, directory: {tmp_path / 'rec'}}}
        metrics:
          listen_host: 0.0.0.0
        """) + http + "rules:\n  - {name: r, match: {destination: '1'}}\n")
    return str(path)


def test_a_listener_on_the_network_without_a_token_refuses_to_start(tmp_path):
    switch = socket.socket()  # where the Event Socket would be: nothing may connect
    switch.bind(("127.0.0.1", 0))
    switch.listen(1)
    switch.settimeout(0.2)
    config = network_config(tmp_path, switch.getsockname()[1])
    try:
        result = subprocess.run([sys.executable, "-m", "controller", "-c", config], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"configuration error: {config}:4: metrics.listen_host: 0.0.0.0 is not a loopback address and http.token "
            "is not set: anyone who can reach port 9464 could list the live calls and make the switch place test "
            "calls; set http.token (e.g. token: ${FSCTL_HTTP_TOKEN} in an http: section), or listen on 127.0.0.1"]
        assert result.stdout == ""
        with pytest.raises(socket.timeout):
            switch.accept()
    finally:
        switch.close()
    checked = subprocess.run([sys.executable, "-m", "controller", "check", config], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 2 and "metrics.listen_host: 0.0.0.0 is not a loopback address" in checked.stderr


def test_with_a_token_from_the_environment_the_same_listener_is_accepted(tmp_path):
    config = network_config(tmp_path, 8021, "http:\n  token: ${FSCTL_HTTP_TOKEN}\n")
    env = {"PATH": "/usr/bin:/bin", "FSCTL_HTTP_TOKEN": TOKEN}
    result = subprocess.run([sys.executable, "-m", "controller", "check", config], capture_output=True, text=True,
                            timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr


# ---- the doctor's test calls ----


def test_test_calls_run_one_at_a_time(sim, harness):
    h = harness(extra=HTTP)
    port = port_of(h)
    first = gevent.spawn(post_chain, port, {"seconds": 0.5})
    sim.wait_for_command("bgapi originate")  # the first test call is under way
    second = post_chain(port, {"seconds": 0.5})
    assert second.status == 409
    assert re.fullmatch(r"a test call is already running \(for \d+ s\); one runs at a time: try again when it has "
                        r"ended", second.error), second.error
    done = first.get(timeout=30)
    assert done.status == 200
    assert [(step["name"], step["ok"]) for step in done.json()["steps"]] == [
        ("stream mono/8000", True), ("audio mono/8000", True), ("cleanup mono/8000", True)]
    assert len(originates(sim)) == 1
    assert post_chain(port, {"seconds": 0.5}).status == 200  # once it has ended, the next may run
    assert len(originates(sim)) == 2


def test_a_test_call_holds_a_stream_against_limits_max_streams(sim, harness, caplog):
    h = harness(extra=HTTP + "limits: {max_streams: 1}\n")
    port = port_of(h)
    test = gevent.spawn(post_chain, port, {"seconds": 1})
    sim.wait_for_command("bgapi originate")
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)

    def refused():
        return [r.getMessage() for r in caplog.records if "not streamed (limit)" in r.getMessage()]

    wait_until(refused, 10, "the real call to be refused for the limit")
    assert refused() == [f"call {call.uuid} not streamed (limit): 1 streams already (1 of them a test call), the "
                         "limit is 1"]
    assert test.get(timeout=30).status == 200
    call.hangup()

    # The test call's stream is given back: a real call streams again, and while it does, no test call runs.
    streaming = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    wait_until(lambda: [c["phase"] for c in request(port, "GET", "/calls", headers=bearer(TOKEN)).json()["calls"]]
               == ["streaming"], 10, "the call to stream")
    full = post_chain(port, {"seconds": 0.5})
    assert (full.status, full.error) == (
        503, "no stream is free for a test call: 1 streams already, the limit is 1 (limits.max_streams); a test call "
             "would take a real call's stream: try again when fewer calls stream")
    assert len(originates(sim)) == 1
    streaming.hangup()


def test_the_test_call_measures_for_the_seconds_asked(sim, harness):
    h = harness(extra=HTTP)
    port = port_of(h)
    for seconds, tone_ms in ((0.5, 30500), (1, 31000), (None, 32000)):  # measured, plus the tone's 30 s margin
        before = len(sim.received_commands)
        answer = post_chain(port, None if seconds is None else {"seconds": seconds})
        assert answer.status == 200, answer.body
        originate = sim.wait_for_command("bgapi originate", start=before)
        assert f"&playback(tone_stream://%({tone_ms},0,440))" in originate


@pytest.mark.parametrize("body, headers, status, error", [
    (b'{"seconds": 100}', JSON_TYPE, 400, "seconds: 100 is outside 0.5..10"),
    (b'{"seconds": 0.1}', JSON_TYPE, 400, "seconds: 0.1 is outside 0.5..10"),
    (b'{"seconds": "2"}', JSON_TYPE, 400, 'seconds must be a number, got "2"'),
    (b'{"seconds": true}', JSON_TYPE, 400, "seconds must be a number, got true"),
    (b'{"secs": 2}', JSON_TYPE, 400, "unknown key 'secs' in the body; the only key is seconds"),
    (b"[2]", JSON_TYPE, 400, 'the body is not a JSON object such as {"seconds": 2}'),
    (b"{seconds", JSON_TYPE, 400, "the body is not JSON"),
    (b'{"seconds": 2}', {"Content-Type": "text/plain"}, 415, "send the body as application/json (it came as "
                                                              "text/plain)"),
    (b" " * 5000, JSON_TYPE, 413, "the body is 5000 bytes; at most 4096"),
])
def test_a_test_call_request_that_cannot_be_read_is_refused_with_why(sim, harness, body, headers, status, error):
    h = harness(extra=HTTP)
    answer = request(port_of(h), "POST", "/doctor/chain", headers={**bearer(TOKEN), **headers}, body=body)
    assert (answer.status, answer.error) == (status, error)
    assert originates(sim) == []


def test_the_controllers_test_call_streams_with_the_rules_own_settings(sim, harness):
    rule = RULE_9999 + "  buffer_ms: 40\n  heartbeat_s: 5\n  deflate: true\n  metadata: {queue: support, tier: 2}\n"
    h = harness(rule, extra=HTTP, recorder="  token: a-fixed-recorder-token-0123\n")
    answer = post_chain(port_of(h), {"seconds": 1})
    assert answer.status == 200 and all(step["ok"] for step in answer.json()["steps"]), answer.body
    uuid = originates(sim)[0].split("origination_uuid=", 1)[1].split(",", 1)[0]
    sent = [first_line(c) for c in sim.received_commands
            if uuid in c and not c.startswith(("bgapi originate", "api uuid_kill", "api uuid_audio_stream " + uuid + " stop"))]
    # The very commands a real call of the rule gets: buffer, heartbeat, deflate and metadata included.
    _, expected = audio_stream.start_commands(uuid, uuid, h.config.rules[0], "a-fixed-recorder-token-0123",
                                              h.controller.public_url)
    assert sent == [first_line(f"{kind} {text}") for kind, text in expected]
    assert "STREAM_BUFFER_SIZE=40" in sent[0] and "STREAM_HEART_BEAT=5" in sent[0]
    assert "STREAM_MESSAGE_DEFLATE=true" in sent[0] and '"queue":"support"' in sent[1]
