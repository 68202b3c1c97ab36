"""The console's HTTP side (issue #19), through the listener's real socket and without a browser: the login gives
a session cookie (HttpOnly, SameSite=Strict, expiring) only for the API token; the cookie reads and never changes
anything without the session's CSRF token; a cross-site login or logout is refused; the pages carry a strict
Content-Security-Policy; the recordings page's search filters and pages in the database; peaks are computed
once. The same in a real Chromium: tests/test_console_browser.py."""

from __future__ import annotations

import json
import socket
import wave

import pytest

from harness import RULE_9999, wait_until
from httpraw import bearer, request

from controller.console import COOKIE, compute_peaks, page_filters, search_page

TOKEN = "tok-9f8e7d6c5b4a39281706"
HTTP = f"metrics: {{listen_host: 127.0.0.1, listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture
def request_fixture(request):
    """A fixture by name, only when a parametrised test needs it (PostgreSQL is started only for its case)."""
    return request.getfixturevalue


def login(port: int, token: str = TOKEN, headers: dict | None = None):
    return request(port, "POST", "/console/login", headers={**JSON_TYPE, **(headers or {})},
                   body=json.dumps({"token": token}).encode())


def cookie_of(answer) -> str:
    return answer.headers["set-cookie"].split(";", 1)[0]


def test_the_api_token_logs_in_a_wrong_one_does_not(sim, harness):
    h = harness(extra=HTTP)
    port = h.controller.http_port
    wrong = login(port, "tok-wrong-000000000000")
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    assert TOKEN not in wrong.body.decode() and "tok-wrong" not in wrong.body.decode()
    good = login(port)
    assert good.status == 200
    attributes = [part.strip() for part in good.headers["set-cookie"].split(";")]
    assert attributes[0].startswith(COOKIE + "=") and len(attributes[0]) > len(COOKIE) + 40
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert [a for a in attributes if a.startswith("Max-Age=")] == ["Max-Age=28800"]
    assert "Secure" not in attributes  # plain HTTP on loopback; over TLS it is added
    csrf = good.json()["csrf"]
    cookie = {"Cookie": cookie_of(good)}

    # The cookie reads: the console's API, and the listener's own.
    session = request(port, "GET", "/console/api/session", headers=cookie).json()
    assert session["csrf"] == csrf and 0 < session["expires_in_s"] <= 28800
    assert request(port, "GET", "/console/api/live", headers=cookie).json()["health"]["healthy"] is True
    assert request(port, "GET", "/calls", headers=cookie).status == 200
    assert request(port, "GET", "/console/api/live", headers={"Cookie": f"{COOKIE}=made-up"}).status == 401
    assert request(port, "GET", "/console/api/live").status == 401

    # A change needs the CSRF token besides the cookie.
    refused = request(port, "POST", "/console/logout", headers=cookie)
    assert (refused.status, refused.error) == (
        403, "a request that changes anything needs the API token in its Authorization header")
    assert request(port, "POST", "/console/logout", headers={**cookie, "X-CSRF-Token": "not-it"}).status == 401
    assert request(port, "POST", "/console/logout", headers={"X-CSRF-Token": csrf}).status == 401  # no session
    out = request(port, "POST", "/console/logout", headers={**cookie, "X-CSRF-Token": csrf})
    assert out.status == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert request(port, "GET", "/console/api/live", headers=cookie).status == 401  # forgotten server-side too


def test_a_cross_site_login_or_change_is_refused(sim, harness):
    h = harness(extra=HTTP)
    port = h.controller.http_port
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site"}):
        answer = login(port, headers=headers)
        assert answer.status == 403 and "set-cookie" not in answer.headers
    rebound = request(port, "POST", "/console/login", headers=JSON_TYPE, host="rebound.example",
                      body=json.dumps({"token": TOKEN}).encode())
    assert rebound.status == 403 and "set-cookie" not in rebound.headers
    good = login(port, headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    csrf, cookie = good.json()["csrf"], {"Cookie": cookie_of(good)}
    evil = request(port, "POST", "/console/logout", headers={**cookie, "X-CSRF-Token": csrf,
                                                             "Origin": "http://evil.example"})
    assert evil.status == 403
    assert request(port, "GET", "/console/api/session", headers=cookie).status == 200  # still logged in
    assert not any(name.startswith("access-control-") for name in evil.headers)


def test_pages_are_served_with_a_strict_policy_and_nothing_else_is(sim, harness):
    h = harness(extra=HTTP)
    port = h.controller.http_port
    root = request(port, "GET", "/")
    assert root.status == 303 and root.headers["location"] == "/console/live"
    for path in ("/console/login", "/console/live", "/console/recordings", "/console/recording",
                 "/console/static/console.css", "/console/static/live.js"):
        page = request(port, "GET", path)
        assert page.status == 200, path
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    for path in ("/console/static/../__init__.py", "/console/static/__init__.py", "/console/static/nope.js"):
        assert request(port, "GET", path).status == 404, path
    assert b"http" not in request(port, "GET", "/console/static/live.js").body.replace(b"https", b"")  # no CDN


def test_the_event_stream_sends_the_live_calls_a_few_times_a_second(sim, harness):
    h = harness(extra=HTTP)
    port = h.controller.http_port
    cookie = cookie_of(login(port))
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /console/api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
                     .encode())
        received = b""
        events = []

        def more() -> bool:
            nonlocal received
            received += sock.recv(65536)
            events[:] = [json.loads(line[6:]) for line in received.decode("utf-8", "replace").splitlines()
                         if line.startswith("data: {\"calls\"")]
            return any(e["calls"] and e["calls"][0]["bytes"] > 0 for e in events) and len(events) >= 8

        wait_until(more, 10, "events with the call's audio")
    assert b"text/event-stream" in received.split(b"\r\n\r\n", 1)[0]
    [live] = events[-1]["calls"]
    assert (live["uuid"], live["rule"], live["agent"]) == (call.uuid, "ext9999", None)
    assert len(live["level_db"]) == 1  # mono: one channel
    loudest = max(e["calls"][0]["level_db"][0] for e in events if e["calls"] and e["calls"][0]["level_db"])
    assert -40 < loudest < 0  # the simulated voice, from the file being written
    assert "health" in events[0]
    call.hangup()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_recordings_are_filtered_and_paged_by_the_database(tmp_path, request_fixture, engine):
    from controller.catalog.schema import row_from_sidecar
    from controller.catalog.store import open_store

    store = open_store(f"sqlite://{tmp_path}/c.sqlite3" if engine == "sqlite" else request_fixture("pg_url"))
    store.migrate()
    for i in range(7):
        sidecar = {"uuid": f"00000000-0000-0000-0000-00000000000{i}", "caller": "555" if i % 2 else "777",
                   "destination": "9999", "rule": "r", "rate": 8000, "channels": 1,
                   "start_time": f"2026-12-0{i + 1}T10:00:00.000Z", "duration_s": 2.0,
                   "close_reason": "client_close" if i != 3 else "stream_lost",
                   "gaps": [{"start_frame": 0, "frames": 800, "cause": "no_audio"}] if i in (1, 2) else [],
                   **({"relay": {"agent": "ws://a"}} if i == 5 else {})}
        store.upsert(row_from_sidecar(sidecar, tmp_path / f"{sidecar['uuid']}.wav", switch="fs", controller_id="c",
                                      upload_state="none"))

    def ids(query: dict) -> tuple[int, list[int]]:
        total, rows = search_page(store, page_filters({k: [v] for k, v in query.items()}))
        return total, [int(r["uuid"][-1]) for r in rows]

    assert ids({}) == (7, [6, 5, 4, 3, 2, 1, 0])
    assert ids({"per_page": "3", "page": "2"}) == (7, [3, 2, 1])
    assert ids({"per_page": "3", "page": "3"}) == (7, [0])
    assert ids({"caller": "555"}) == (3, [5, 3, 1])
    assert ids({"gaps": "yes"}) == (2, [2, 1]) and ids({"gaps": "no"})[0] == 5
    assert ids({"relayed": "yes"}) == (1, [5])
    assert ids({"close_reason": "stream_lost"}) == (1, [3])
    assert ids({"since": "2026-12-03", "until": "2026-12-05", "caller": "", "rule": "r"}) == (2, [3, 2])
    for bad in ({"gaps": "maybe"}, {"page": "0"}, {"per_page": "100000"}, {"colour": "red"}, {"since": "soon"}):
        try:
            page_filters({k: [v] for k, v in bad.items()})
        except ValueError:
            continue
        raise AssertionError(f"{bad} was taken")


def test_peaks_span_the_recording_and_are_computed_once(sim, harness):
    h = harness(RULE_9999 + "  mix: stereo\n", extra=HTTP)
    port = h.controller.http_port
    call = sim.place_call("9999", duration_s=1.5)
    assert call.hung_up.wait(10)
    h.wait_closed(call.uuid)
    recording = h.recording(call.uuid)
    h.catalog_row(call.uuid)
    cookie = {"Cookie": cookie_of(login(port))}
    first = request(port, "GET", f"/console/api/recordings/{call.uuid}/peaks", headers=cookie).json()
    again = request(port, "GET", f"/console/api/recordings/{call.uuid}/peaks", headers=bearer(TOKEN)).json()
    assert first == again and h.controller.http.console.peaks.computed == 1
    assert first["channels"] == 2 and len(first["peaks"]) == 2
    assert abs(first["duration_s"] - recording.duration_s) < 1e-9
    assert first == json.loads(json.dumps(compute_peaks(str(recording.path))))
    with wave.open(str(recording.path)) as wav:
        assert len(first["peaks"][0]) == -(-wav.getnframes() // first["frames_per_bucket"])
    detail = request(port, "GET", f"/console/api/recordings/{call.uuid}", headers=cookie).json()
    assert detail["sidecar"]["gaps"] == recording.sidecar["gaps"]
    assert detail["audio_url"] == f"/api/recordings/{call.uuid}/audio" and "local_path" not in detail["recording"]


def test_a_relayed_call_shows_its_agent_live_and_is_found_as_relayed(sim, tmp_path):
    from harness import Harness
    from test_relay_e2e import ScriptedAgent, relay_rule

    agent = ScriptedAgent()
    h = Harness(sim, tmp_path / "rec", relay_rule(agent.url), HTTP).start()
    try:
        port = h.controller.http_port
        call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)

        def agent_figures():
            calls = request(port, "GET", "/console/api/live", headers=bearer(TOKEN)).json()["calls"]
            return calls and calls[0]["agent"] and calls[0]["agent"]["stats"]["sent_ms"] >= 200 and calls[0]["agent"]

        wait_until(agent_figures, 10, "the agent's figures")
        shown = agent_figures()
        assert shown["connected"] is True and shown["url"].startswith("ws://127.0.0.1:")
        assert "s3cr3t" not in json.dumps(shown)  # the agent's URL is shown without its query
        assert shown["stats"]["connections"] == 1 and shown["stats"]["protocol"] == "twilio"
        # The agent drops the connection and the relay connects again: connected, whatever the last error said.
        agent.sockets[0].close()
        wait_until(lambda: len(agent.connections) == 2, 10, "the relay's second connection")
        wait_until(lambda: (agent_figures() or {}).get("stats", {}).get("connections") == 2, 5, "the second, live")
        again = agent_figures()
        assert again["connected"] is True and again["stats"]["last_error"]  # the drop is still the last error
        call.hangup()
        h.wait_closed(call.uuid)
        h.catalog_row(call.uuid)
        found = request(port, "GET", "/console/api/recordings?relayed=yes", headers=bearer(TOKEN)).json()
        assert [r["uuid"] for r in found["recordings"]] == [call.uuid] and found["recordings"][0]["relay"]
        assert request(port, "GET", "/console/api/recordings?relayed=no", headers=bearer(TOKEN)).json()["total"] == 0
    finally:
        h.stop()
        agent.stop()


def test_a_recording_only_in_the_bucket_has_its_sidecar_and_waveform_from_there(sim, tmp_path, s3, bucket):
    from harness import Harness
    from test_archive import storage_yaml

    h = Harness(sim, tmp_path / "rec", RULE_9999 + "  mix: stereo\n", HTTP + storage_yaml(s3, bucket)).start()
    try:
        port = h.controller.http_port
        call = sim.place_call("9999", duration_s=1.5)
        assert call.hung_up.wait(10)
        h.wait_closed(call.uuid)
        archive = h.controller.archive

        def verified():
            rows = archive.db(archive.store.get, call.uuid)
            return rows and rows[0]["upload_state"] == "verified"

        wait_until(lambda: archive.queue.waiting("upload") == 0 and archive.queue.waiting("catalog") == 0
                   and verified(), 20, "the verified upload in the catalog")
        recording = h.recording(call.uuid)
        on_disk = compute_peaks(str(recording.path))
        sidecar = json.loads(recording.path.with_suffix(".json").read_text())
        recording.path.unlink()  # as storage.delete_local_after does, later
        recording.path.with_suffix(".json").unlink()
        detail = request(port, "GET", f"/console/api/recordings/{call.uuid}", headers=bearer(TOKEN)).json()
        assert (detail["sidecar_source"], detail["sidecar"]["gaps"]) == ("bucket", sidecar["gaps"])
        for _ in range(2):
            peaks = request(port, "GET", f"/console/api/recordings/{call.uuid}/peaks", headers=bearer(TOKEN)).json()
            assert peaks == json.loads(json.dumps(on_disk))
        assert h.controller.http.console.peaks.computed == 1  # read from the bucket once
        audio = request(port, "GET", f"/api/recordings/{call.uuid}/audio", headers={**bearer(TOKEN),
                                                                                    "Range": "bytes=0-99"})
        assert audio.status == 206 and audio.headers["x-recording-source"] == "bucket"
    finally:
        h.stop()


def test_a_session_expires_and_wrong_logins_are_throttled(sim, harness):
    from controller.console import LoginThrottle, Session, Sessions

    now = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    value, session = sessions.create()
    environ = {"HTTP_COOKIE": f"{COOKIE}={value}"}
    assert sessions.find(environ) is session and sessions.find({}) is None
    assert sessions.find({"HTTP_COOKIE": f"{COOKIE}=other"}) is False
    now[0] += 60
    assert sessions.find(environ) is False  # expired: forgotten
    assert isinstance(session, Session)

    throttle = LoginThrottle(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait_s("10.0.0.1") == 0
        throttle.wrong("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 60 and throttle.wait_s("10.0.0.2") == 0
    now[0] += 59.5
    assert throttle.wait_s("10.0.0.1") == 0.5
    now[0] += 0.5
    assert throttle.wait_s("10.0.0.1") == 0

    h = harness(extra=HTTP)
    port = h.controller.http_port
    for _ in range(10):
        assert login(port, "tok-guess-0000000000000").status == 401
    held = login(port)  # even the right token waits: a guesser learns nothing from the answer
    assert held.status == 429 and "set-cookie" not in held.headers and int(held.headers["retry-after"]) > 0


def test_logging_out_ends_the_event_stream_of_that_session(sim, harness):
    h = harness(extra=HTTP)
    port = h.controller.http_port
    good = login(port)
    cookie, csrf = cookie_of(good), good.json()["csrf"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /console/api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
                     .encode())
        received = b""

        def has(text: bytes) -> bool:
            nonlocal received
            if text not in received:
                received += sock.recv(65536)
            return text in received

        wait_until(lambda: has(b"event: live"), 5, "the first event")
        assert request(port, "POST", "/console/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf}).status == 200
        wait_until(lambda: has(b"event: logout"), 5, "the stream to say the session ended")
        wait_until(lambda: has(b"0\r\n\r\n"), 5, "the stream to end")  # the chunked body's last chunk
