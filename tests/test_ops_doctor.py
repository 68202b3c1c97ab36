"""`fs-stream-controller doctor`: the troubleshooting list against the simulated switch, through real sockets.

Each test writes a configuration to tmp_path, runs the doctor in this process (as the console script does, minus
argument parsing) and reads the lines a user reads. The recorder binds port 0 (listen_port: 0) unless a test
needs its port taken; "nothing listens" is a socket bound but never listening, so no other test can take it.
"""

import json
import re
import socket
import tempfile
from argparse import Namespace

import pytest
from gevent.pywsgi import WSGIServer

from controller.config import load_config
from controller.esl.client import EventSocketClient
from controller.ops import chain, doctor
from controller.recorder.recording import RecordingRegistry
from controller.recorder.server import RecorderServer
from controller.simulator import Simulator

PASSWORD = "pw-Zq8-never-shown"
STEP = re.compile(r"(ok   |FAIL |skip )([^:]+): (.+)")
RULES = """\
rules:
  - name: support
    match: {destination: "9999"}
  - name: sales
    match: {destination: /7\\d\\d/}
    mix: stereo
    rate: 16000
  - name: paused
    match: {destination: "1"}
    mix: mixed
    rate: 24000
    enabled: false
"""
NO_CHAIN = 'rules:\n  - name: paused\n    match: {destination: "1"}\n    enabled: false\n'


@pytest.fixture
def switch():
    simulator = Simulator(host="127.0.0.1", esl_port=0, password=PASSWORD).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def doctor_tmp(tmp_path, monkeypatch):
    """Where the doctor's own recorder keeps its test recordings (its temporary directory), to see it emptied."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.fixture
def dead_port():
    """A port nothing listens on and nobody else can take while the test runs."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield holder.getsockname()[1]
    holder.close()


def run_doctor(tmp_path, capsys, esl_port, *, esl=None, recorder=None, extra="", rules=RULES, password=PASSWORD):
    """Run the doctor on a configuration (esl and recorder settings over these defaults); (exit status, lines)."""
    esl = {"port": esl_port, "password": password, "connect_timeout_s": 1, "command_timeout_s": 5, **(esl or {})}
    recorder = {"listen_port": 0, "directory": str(tmp_path / "rec"), **(recorder or {})}
    path = tmp_path / "doctor.yaml"
    path.write_text(f"esl: {json.dumps(esl)}\nrecorder: {json.dumps(recorder)}\n{extra}{rules}")
    capsys.readouterr()
    code = doctor.main(load_config(path), Namespace(config=str(path)))
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and password not in out.out + out.err  # never printed
    lines = out.out.splitlines()
    for line in lines:
        assert STEP.fullmatch(line), f"not a step line: {line!r}"
    return code, lines


def by_name(lines):
    return {STEP.fullmatch(line).group(2): line for line in lines}


def status(lines, name):
    return by_name(lines)[name][:4].strip()


# ---- a healthy switch ----


def test_a_healthy_switch_passes_every_step_and_leaves_nothing_behind(switch, tmp_path, capsys, doctor_tmp):
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, extra="metrics: {enabled: false}\n")
    assert code == 0, "\n".join(lines)
    assert [STEP.fullmatch(line).group(2) for line in lines] == [
        "event socket", "freeswitch", "mod_audio_stream", "recorder address",
        "stream mono/8000", "audio mono/8000", "cleanup mono/8000",
        "stream stereo/16000", "audio stereo/16000", "cleanup stereo/16000",  # the disabled rule is not tested
        "recordings directory", "free space",
    ]
    assert all(line.startswith("ok   ") for line in lines)
    steps = by_name(lines)
    assert steps["freeswitch"] == "ok   freeswitch: FreeSWITCH 1.10.12-release~64bit ( 64bit)"
    assert steps["mod_audio_stream"] == "ok   mod_audio_stream: loaded: uuid_audio_stream from mod_audio_stream"
    assert re.search(r"audio mono/8000: 1[5-6],\d{3} B/s arrived, 16,000 B/s expected", steps["audio mono/8000"])
    assert re.search(r"6[0-9],\d{3} B/s arrived, 64,000 B/s expected \(16000 Hz x 2 B x 2 channels\)",
                     steps["audio stereo/16000"])
    # The calls the switch made for the test: the null endpoint, hung up; their streams and recordings gone.
    assert len(switch.all_calls) == 2 and switch.calls == {}
    assert all(call.endpoint == "null" and call.hangup_cause == "NORMAL_CLEARING" for call in switch.all_calls)
    assert all(stream.ended.is_set() for stream in switch.streams)
    assert list(doctor_tmp.iterdir()) == []
    assert [p.name for p in (tmp_path / "rec").iterdir()] == []  # created by the directory step, left empty
    # The stream was started as the controller starts one: its variables and the start, in one write.
    originates = [c for c in switch.received_commands if c.startswith("bgapi originate ")]
    assert len(originates) == 2 and all("null/any &playback(tone_stream://%(" in c for c in originates)
    assert any(c.startswith("bgapi uuid_audio_stream ") and c.split("\n")[0].endswith(" stereo 16000")
               for c in switch.received_commands)


def test_the_test_call_is_the_one_the_controller_would_not_stream(switch, tmp_path, capsys):
    run_doctor(tmp_path, capsys, switch.esl_port, rules=RULES.split("  - name: sales")[0])
    [call] = switch.all_calls
    # Outbound to "any" and marked: no rule with the default direction matches it.
    assert (call.direction, call.destination, call.get_variable(chain.TEST_CALL_VARIABLE)) == \
        ("outbound", "any", "true")


# ---- the Event Socket ----


def test_a_wrong_password_is_named_and_the_password_never_printed(switch, tmp_path, capsys):
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, password="the-config-has-another")
    assert code == 1
    assert by_name(lines)["event socket"] == (
        f"FAIL event socket: 127.0.0.1:{switch.esl_port} refused the password (-ERR invalid); check esl.password "
        f"against the password in event_socket.conf.xml")
    assert by_name(lines)["freeswitch"] == "skip freeswitch: needs the Event Socket"
    assert by_name(lines)["chain"] == "skip chain: needs the Event Socket"
    assert status(lines, "recorder address") == "ok" and status(lines, "free space") == "ok"


def test_an_acl_rejection_says_which_address_to_add(switch, tmp_path, capsys):
    switch.reject_acl = True
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port)
    assert code == 1
    assert by_name(lines)["event socket"] == (
        f"FAIL event socket: 127.0.0.1:{switch.esl_port} refused this host by ACL (text/rude-rejection); add "
        f"127.0.0.1 to the ACL named by apply-inbound-acl in event_socket.conf.xml (lists live in acl.conf.xml), "
        f"then reloadacl at fs_cli")


def test_a_refused_connection_points_at_event_socket_conf(tmp_path, capsys, dead_port):
    code, lines = run_doctor(tmp_path, capsys, dead_port)
    assert code == 1
    assert by_name(lines)["event socket"] == (
        f"FAIL event socket: connection refused by 127.0.0.1:{dead_port}: mod_event_socket is not listening "
        f"there; check listen-ip and listen-port in event_socket.conf.xml against esl.host and esl.port, and that "
        f"FreeSWITCH runs")


def test_a_listener_that_never_asks_for_auth_is_probably_not_an_event_socket(switch, tmp_path, capsys):
    switch.silent_accept = True
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, esl={"connect_timeout_s": 0.5})
    assert code == 1
    assert by_name(lines)["event socket"] == (
        f"FAIL event socket: 127.0.0.1:{switch.esl_port} accepted the connection but sent no auth/request within "
        f"0.5 s; is it an Event Socket? check esl.port against listen-port in event_socket.conf.xml")


# ---- the module ----


def test_a_missing_module_gets_the_load_lines_and_the_library_check(switch, tmp_path, capsys):
    switch.audio_stream_loaded = False
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port)
    assert code == 1
    line = by_name(lines)["mod_audio_stream"]
    assert line.startswith("FAIL mod_audio_stream: not loaded (module_exists: false; show api uuid_audio_stream: "
                           "0 total); at fs_cli: load mod_audio_stream, and add <load module=\"mod_audio_stream\"/> "
                           "to modules.conf.xml (config/freeswitch/autoload_configs/modules.conf.xml.snippet)")
    assert "ldd" in line and "libevent" in line and "not found" in line
    assert by_name(lines)["chain"] == "skip chain: needs mod_audio_stream"
    assert switch.all_calls == []


# ---- the chain ----


def test_a_public_url_nothing_listens_on_fails_the_stream_and_still_ends_the_call(switch, tmp_path, capsys,
                                                                                   dead_port):
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"public_url": f"ws://127.0.0.1:{dead_port}"},
                             rules=RULES.split("  - name: sales")[0])
    assert code == 1
    steps = by_name(lines)
    assert steps["stream mono/8000"].startswith(
        f"FAIL stream mono/8000: the switch cannot reach the recorder at ws://127.0.0.1:{dead_port}: connection "
        f"refused (mod_audio_stream::error 6 'Connection refused (system error 111)'); nothing listens there as "
        f"the switch sees it: check that recorder.public_url names this host and port")
    assert steps["audio mono/8000"] == "skip audio mono/8000: needs the stream"
    assert steps["cleanup mono/8000"].startswith("ok   cleanup mono/8000: stream stopped, test call hung up")
    assert switch.calls == {} and switch.all_calls[0].hung_up.is_set()


def test_a_module_streaming_another_rate_is_a_sample_rate_mismatch(switch, tmp_path, capsys):
    switch.module_stream_rate = 16000
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, rules=RULES.split("  - name: sales")[0])
    assert code == 1
    line = by_name(lines)["audio mono/8000"]
    assert re.fullmatch(
        r"FAIL audio mono/8000: 3[1-2],\d{3} B/s arrived, 16,000 B/s expected \(8000 Hz x 2 B x 1 channel\): a "
        r"sample-rate mismatch, the module sends about 16,000 Hz; the WAV header says 8000 Hz, so such a recording "
        r"plays at the wrong speed: make the module stream the rate it is asked for \(update mod_audio_stream\), or "
        r"set the rule's rate to what it sends", line), line
    assert status(lines, "stream mono/8000") == "ok" and status(lines, "cleanup mono/8000") == "ok"


def test_a_module_streaming_slower_than_asked_is_measured_too(switch, tmp_path, capsys):
    switch.module_stream_rate = 8000
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, rules="rules:\n  - name: wide\n"
                             "    match: {destination: \"9\"}\n    rate: 16000\n")
    assert code == 1
    assert re.search(r"FAIL audio mono/16000: 1[5-6],\d{3} B/s arrived, 32,000 B/s expected .* about 8,000 Hz",
                     by_name(lines)["audio mono/16000"])


def test_no_enabled_rule_means_no_chain_to_test(switch, tmp_path, capsys):
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, rules=NO_CHAIN)
    assert by_name(lines)["chain"] == "skip chain: no enabled rule: nothing to stream"
    assert code == 1


# ---- the recorder's address ----


def test_a_recorder_port_taken_by_another_program_names_the_port(switch, tmp_path, capsys, dead_port):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"listen_port": port},
                                 extra=f"metrics: {{listen_port: {dead_port}}}\n")
    finally:
        taken.close()
    assert code == 1
    assert by_name(lines)["recorder address"] == (
        f"FAIL recorder address: port {port} on 127.0.0.1 is in use by another program (no controller answers "
        f"http://127.0.0.1:{dead_port}/healthz); stop that program (ss -ltnp 'sport = :{port}' names it), or give "
        f"the recorder another recorder.listen_port (and public_url)")
    assert by_name(lines)["chain"] == "skip chain: needs the recorder address"


class FakeController:
    """The running controller as the doctor sees it: the recorder's port held, /healthz and /doctor/chain."""

    def __init__(self, chain_status="200 OK", chain_body=None, health_status="503 Service Unavailable"):
        self.holder = socket.socket()
        self.holder.bind(("127.0.0.1", 0))
        self.holder.listen(1)
        self.recorder_port = self.holder.getsockname()[1]
        self.chain_status, self.chain_body, self.health_status = chain_status, chain_body, health_status
        self.requests = []
        self.authorizations = []  # the Authorization header of each request (None: none sent)
        self.http = WSGIServer(("127.0.0.1", 0), self._app, log=None)
        self.http.start()

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read()
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], body))
        self.authorizations.append(environ.get("HTTP_AUTHORIZATION"))
        if environ["PATH_INFO"] == "/healthz" and self.health_status.startswith("401"):
            status, answer = self.health_status, {"error": "the API token was refused"}
        elif environ["PATH_INFO"] == "/healthz":
            status, answer = "503 Service Unavailable", {"healthy": False, "reasons": ["the disk is nearly full"]}
        else:
            status, answer = self.chain_status, self.chain_body or {"error": "no such endpoint"}
        data = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def stop(self):
        self.http.stop(timeout=1)
        self.holder.close()


def test_the_running_controller_runs_the_chain_and_the_doctor_prints_its_steps(switch, tmp_path, capsys):
    steps = [chain.Step("stream mono/8000", True, "the switch reached the recorder at ws://h:1 (test call x)"),
             chain.Step("audio mono/8000", False, "8,000 B/s arrived, 16,000 B/s expected", "update the module"),
             chain.Step("cleanup mono/8000", True, "stream stopped, test call hung up, its recording removed")]
    fake = FakeController(chain_body=chain.to_json(steps))
    try:
        code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"listen_port": fake.recorder_port},
                                 extra=f"metrics: {{listen_port: {fake.http.server_port}}}\n")
    finally:
        fake.stop()
    assert code == 1
    assert by_name(lines)["recorder address"] == (
        f"ok   recorder address: 127.0.0.1:{fake.recorder_port} is held by the running controller (unhealthy: the "
        f"disk is nearly full)")
    assert lines[4:7] == [step.line for step in steps]
    assert [(m, p) for m, p, _ in fake.requests] == [("GET", "/healthz"), ("POST", "/doctor/chain")]
    assert json.loads(fake.requests[1][2]) == {"seconds": 2.0}
    assert switch.all_calls == []  # the controller makes the test call, not the doctor


def test_a_controller_without_the_chain_endpoint_is_a_skip_that_says_what_to_do(switch, tmp_path, capsys):
    fake = FakeController(chain_status="404 Not Found")
    try:
        code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"listen_port": fake.recorder_port},
                                 extra=f"metrics: {{listen_port: {fake.http.server_port}}}\n")
    finally:
        fake.stop()
    assert code == 1
    assert by_name(lines)["chain"] == (
        f"skip chain: the running controller does not run the test call (POST http://127.0.0.1:"
        f"{fake.http.server_port}/doctor/chain: 404): stop the controller, or update it, to test the chain")


API_TOKEN = "doctor-api-T0ken-5a4b3c2d1e"


def test_with_the_controller_running_the_doctor_has_it_make_the_test_call(sim, harness, tmp_path, capsys,
                                                                          monkeypatch):
    from harness import RULE_9999

    controller = harness(RULE_9999, f"metrics: {{listen_port: 0}}\nhttp: {{token: {API_TOKEN}}}\n").controller
    monkeypatch.setenv("FSCTL_HTTP_TOKEN", API_TOKEN)  # the doctor's file names the variable, as documented
    code, lines = run_doctor(tmp_path, capsys, sim.esl_port, password=API_TOKEN, esl={"password": "ClueCon"},
                             recorder={"listen_port": controller.recorder_port},
                             extra=f"metrics: {{listen_port: {controller.http_port}}}\n"
                                   "http:\n  token: ${FSCTL_HTTP_TOKEN}\n",
                             rules=RULES.split("  - name: sales")[0])
    assert code == 0, "\n".join(lines)
    assert by_name(lines)["recorder address"] == (
        f"ok   recorder address: 127.0.0.1:{controller.recorder_port} is held by the running controller (healthy)")
    assert [STEP.fullmatch(line).group(2) for line in lines[4:7]] == [
        "stream mono/8000", "audio mono/8000", "cleanup mono/8000"]
    [call] = sim.all_calls
    assert call.endpoint == "null" and call.hung_up.is_set()
    assert controller.calls.calls == {}  # its own rules never took the test call for a call to stream
    assert [p for p in (tmp_path / "rec").rglob("*.wav*")] == []


def fake_with_token(tmp_path, capsys, switch, fake, token=API_TOKEN):
    try:
        return run_doctor(tmp_path, capsys, switch.esl_port, recorder={"listen_port": fake.recorder_port},
                          extra=f"metrics: {{listen_port: {fake.http.server_port}}}\n"
                                + (f"http: {{token: {token}}}\n" if token else ""),
                          rules=RULES.split("  - name: sales")[0])
    finally:
        fake.stop()


def test_the_doctor_sends_the_api_token_to_the_running_controller(switch, tmp_path, capsys):
    steps = [chain.Step("stream mono/8000", True, "fine")]
    fake = FakeController(chain_body=chain.to_json(steps))
    code, lines = fake_with_token(tmp_path, capsys, switch, fake)
    assert fake.authorizations == [f"Bearer {API_TOKEN}"] * 2  # /healthz and /doctor/chain
    assert all(API_TOKEN not in line for line in lines)


def test_a_refused_token_says_to_give_the_doctor_the_controllers(switch, tmp_path, capsys):
    fake = FakeController(chain_status="401 Unauthorized", chain_body={"error": "the API token was refused"})
    code, lines = fake_with_token(tmp_path, capsys, switch, fake)
    assert code == 1
    url = f"http://127.0.0.1:{fake.http.server_port}/doctor/chain"
    assert by_name(lines)["chain"] == (
        f"FAIL chain: the running controller refused the test call (POST {url}: 401: the API token was refused); give "
        f"{tmp_path / 'doctor.yaml'} the running controller's http.token (the same ${{...}} variable, set in this "
        "shell too)")


def test_a_controller_without_a_token_says_to_set_one(switch, tmp_path, capsys):
    fake = FakeController(chain_status="403 Forbidden", chain_body={"error": "/doctor/chain needs the API token, "
                                                                    "and the controller has none: ..."})
    code, lines = fake_with_token(tmp_path, capsys, switch, fake, token=None)
    assert fake.authorizations == [None, None]
    assert by_name(lines)["chain"].endswith(
        "; set http.token in the controller's configuration (and here), then restart it")


def test_a_busy_controller_says_why_it_made_no_test_call(switch, tmp_path, capsys):
    fake = FakeController(chain_status="409 Conflict", chain_body={
        "error": "a test call is already running (for 3 s); one runs at a time: try again when it has ended"})
    code, lines = fake_with_token(tmp_path, capsys, switch, fake)
    assert by_name(lines)["chain"] == (
        "FAIL chain: the running controller did not run the test call (409: a test call is already running (for 3 "
        "s); one runs at a time: try again when it has ended); try again when it says it may")


def test_a_controller_that_wants_the_token_for_healthz_is_still_known_for_the_controller(switch, tmp_path, capsys):
    fake = FakeController(health_status="401 Unauthorized", chain_body=chain.to_json([]))
    code, lines = fake_with_token(tmp_path, capsys, switch, fake)
    assert by_name(lines)["recorder address"] == (
        f"ok   recorder address: 127.0.0.1:{fake.recorder_port} is held by the running controller (unhealthy: it "
        "refused /healthz (401): the API token was refused)")


# ---- the recordings directory ----


def test_too_little_free_space_fails_with_the_numbers(switch, tmp_path, capsys):
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"min_free_mb": 10000000},
                             rules=NO_CHAIN)
    assert code == 1
    assert re.fullmatch(
        rf"FAIL free space: [\d,]+ MB free in {tmp_path / 'rec'}, below recorder.min_free_mb \(10,000,000 MB\); "
        r"free space there \(move old recordings elsewhere\), or lower recorder.min_free_mb",
        by_name(lines)["free space"])
    assert by_name(lines)["recordings directory"] == \
        f"ok   recordings directory: {tmp_path / 'rec'} is writable (created)"


def test_a_directory_that_cannot_be_written_is_named_with_why(switch, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a directory")
    target = tmp_path / "file.txt" / "rec"
    code, lines = run_doctor(tmp_path, capsys, switch.esl_port, recorder={"directory": str(target)},
                             rules=NO_CHAIN)
    assert code == 1
    assert by_name(lines)["recordings directory"] == (
        f"FAIL recordings directory: cannot write in {target}: Not a directory; part of {target} is a file, not a "
        f"directory: set recorder.directory to a directory's path")
    assert by_name(lines)["free space"] == "skip free space: needs the recordings directory"


# ---- the chain test as the controller calls it ----


def test_run_chain_test_takes_mix_rate_pairs_and_announces_a_discarded_stream(chain_rig, tmp_path):
    esl, recorder, registry, port = chain_rig
    announced = []
    real_expect = registry.expect
    registry.expect = lambda spec: (announced.append(spec), real_expect(spec))
    steps = chain.run_chain_test(esl, recorder, registry, f"ws://127.0.0.1:{port}", [("mixed", 16000)],
                                 seconds=1.0, token="a-fixed-token-of-16-chars")
    assert [(step.name, step.ok) for step in steps] == [
        ("stream mixed/16000", True), ("audio mixed/16000", True), ("cleanup mixed/16000", True)]
    [spec] = announced
    assert (spec.discard, spec.rate, spec.channels, spec.token) == (True, 16000, 1, "a-fixed-token-of-16-chars")
    assert registry.lookup(spec.uuid) is None  # forgotten after the test
    assert [p for p in (tmp_path / "rec").rglob("*") if p.is_file()] == []


@pytest.fixture
def chain_rig(switch, tmp_path):
    """An Event Socket client and a recorder, as the controller has them, for run_chain_test itself."""
    registry = RecordingRegistry()
    recorder = RecorderServer(registry, tmp_path / "rec")
    port = recorder.start("127.0.0.1", 0)
    esl = EventSocketClient("127.0.0.1", switch.esl_port, PASSWORD, liveness_timeout=None)
    esl.connect()
    esl.subscribe()
    yield esl, recorder, registry, port
    esl.close()
    recorder.stop()


@pytest.mark.parametrize("mode, detail, fix", [
    ("refuse503", "something at {url} answered but refused the WebSocket upgrade (mod_audio_stream::error 6 "
                  "'WebSocket upgrade failed')", "public_url reaches a different server"),
    ("hang", "something at {url} accepted the connection but never answered the upgrade (mod_audio_stream::error "
             "10 'Timeout')", "a TLS/ws mismatch"),
    ("accept", "the switch connected to {url}/calls/{uuid} but this recorder saw no connection",
     "public_url reaches a different server"),
])
def test_what_the_switch_met_at_public_url_names_the_fault(switch, chain_rig, mode, detail, fix):
    from test_simulator import WsServer

    esl, recorder, registry, _ = chain_rig
    other = WsServer(mode)  # a server at public_url that is not this recorder
    try:
        steps = chain.run_chain_test(esl, recorder, registry, other.url("").rstrip("/"), [("mono", 8000)])
    finally:
        other.stop()
    [call] = switch.all_calls
    assert steps[0].detail == detail.format(url=other.url("").rstrip("/"), uuid=call.uuid)
    assert steps[0].fix.startswith(fix)
    assert [(step.name, step.ok) for step in steps] == [
        ("stream mono/8000", False), ("audio mono/8000", None), ("cleanup mono/8000", True)]
    assert call.hung_up.is_set()


def test_an_originate_without_an_answer_fails_the_stream_and_still_kills_the_call_it_may_have_made(
        switch, chain_rig, monkeypatch):
    esl, recorder, registry, port = chain_rig
    monkeypatch.setattr(chain, "ORIGINATE_TIMEOUT_S", 0.0)  # the job still runs on the switch
    steps = chain.run_chain_test(esl, recorder, registry, f"ws://127.0.0.1:{port}", [("mono", 8000)])
    assert steps[0].name == "stream mono/8000" and steps[0].detail.startswith("no answer to originate: ")
    assert [(step.name, step.ok) for step in steps[1:]] == [("audio mono/8000", None), ("cleanup mono/8000", None)]
    originate = switch.wait_for_command("bgapi originate")
    uuid = originate.split("origination_uuid=", 1)[1].split(",", 1)[0]
    switch.wait_for_command(f"api uuid_kill {uuid}")


def test_the_byte_count_is_what_arrived_not_the_silence_the_recorder_wrote():
    assert chain._arrived({"bytes": 9000, "received_bytes": 7000}) == 7000
    assert chain._arrived({"bytes": 9000, "received_bytes": 7000, "arrived_bytes": 8000}) == 8000
    assert chain._arrived(None) == 0


def test_steps_travel_as_json_and_read_back():
    steps = [chain.Step("a", True, "fine"), chain.Step("b", False, "broken", "mend it"), chain.Step("c", None, "why")]
    assert chain.from_json(json.loads(json.dumps(chain.to_json(steps)))) == steps
    assert [s.line for s in steps] == ["ok   a: fine", "FAIL b: broken; mend it", "skip c: why"]
    with pytest.raises(ValueError):
        chain.from_json({"steps": [{"name": "a", "ok": "yes", "detail": ""}]})
