"""The controller's HTTP listener through its real socket: /healthz follows the switch, /metrics moves by the
right amounts for a scripted call, /calls and `fs-stream-controller status` show a live call. Who may ask what
(the API token, Host and Origin, test calls one at a time) is tests/test_ops_http_guard.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

from harness import RULE_9999, wait_until
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "tok-9f8e7d6c5b4a39281706"
HTTP = f"metrics: {{enabled: true, listen_host: 127.0.0.1, listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"


def get(h, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{h.controller.http_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(h) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics, keyed by (name, sorted labels)."""
    status, body = get(h, "/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_healthz_follows_the_event_socket_and_says_why(sim, harness):
    h = harness(extra=HTTP)
    status, body = get(h, "/healthz")
    assert status == 200 and json.loads(body)["healthy"] is True
    sim.stop()  # FreeSWITCH goes away
    wait_until(lambda: get(h, "/healthz")[0] == 503, 10, "/healthz to turn 503")
    state = json.loads(get(h, "/healthz")[1])
    assert state["healthy"] is False
    assert any(reason.startswith(f"the Event Socket to 127.0.0.1:{sim.esl_port} is not connected")
               for reason in state["reasons"])
    sim.start()  # back on the same port
    wait_until(lambda: get(h, "/healthz")[0] == 200, 10, "/healthz to turn 200 again")
    assert json.loads(get(h, "/healthz")[1])["reasons"] == []


def test_healthz_is_503_when_the_disk_is_below_the_floor(sim, harness):
    h = harness(extra=HTTP, recorder="  min_free_mb: 10000000\n")  # 10 TB
    status, body = get(h, "/healthz")
    assert status == 503
    [reason] = json.loads(body)["reasons"]
    assert "MB free, below the floor of 10000000 MB" in reason


def test_healthz_names_a_dead_recorder_loop_and_metrics_count_upkeep_failures(sim, harness, monkeypatch):
    h = harness(extra=HTTP)
    assert get(h, "/healthz")[0] == 200
    recorder = h.controller.recorder

    def broken():
        raise RuntimeError("a bug in the upkeep")

    monkeypatch.setattr(recorder.book, "tick", lambda now: broken())
    wait_until(lambda: scrape(h).get(("fsctl_recorder_upkeep_errors", ()), 0) >= 1, 5, "the failure to be counted")
    assert get(h, "/healthz")[0] == 200  # a failing upkeep is counted and survived
    recorder._flusher.kill()  # a loop that dies is not
    status, body = get(h, "/healthz")
    assert status == 503
    assert "the recorder's flush to disk (flusher) is not running" in json.loads(body)["reasons"]


def test_metrics_move_by_the_right_amounts_for_one_call(sim, harness):
    h = harness(RULE_9999 + "  mix: mixed\n", extra=HTTP)
    before = scrape(h)
    call = sim.place_call("9999", duration_s=1.5)
    assert call.hung_up.wait(10)
    assert h.wait_closed(call.uuid) == "client_close"
    [stream] = sim.streams_for(call.uuid)
    recording = h.recording(call.uuid)
    after = scrape(h)
    assert moved(before, after, "fsctl_calls_answered_total") == 1
    assert moved(before, after, "fsctl_stream_starts_total", rule="ext9999") == 1
    assert moved(before, after, "fsctl_recordings_finished_total", reason="client_close") == 1
    assert moved(before, after, "fsctl_audio_frames_total") == len([f for f in stream.frames if f[1] == 2])
    assert moved(before, after, "fsctl_audio_bytes_total") == len(stream.sent_pcm)
    # Mixed audio: nothing until the switch plays (0.5 s after the answer): one no_audio gap.
    [gap] = recording.sidecar["gaps"]
    assert moved(before, after, "fsctl_gaps_total", cause="no_audio") == 1
    assert abs(moved(before, after, "fsctl_gap_seconds_total", cause="no_audio") - gap["frames"] / 8000) < 1e-9
    assert moved(before, after, "fsctl_answer_to_start_seconds_count") == 1
    assert moved(before, after, "fsctl_esl_command_round_trip_seconds_count") >= 2  # setvar_multi, start
    assert after[("fsctl_streams_live", ())] == 0
    assert after[("fsctl_recordings_free_bytes", (("directory", str(h.directory)),))] > 0


def test_calls_and_status_show_a_live_call(sim, harness, tmp_path):
    h = harness(extra=HTTP)
    call = sim.place_call("9999", duration_s=30.0, auto_hangup=False)
    wait_until(lambda: json.loads(get(h, "/calls")[1])["calls"]
               and json.loads(get(h, "/calls")[1])["calls"][0]["bytes"] >= 3200, 10, "audio on the live call")
    [live] = json.loads(get(h, "/calls")[1])["calls"]
    assert (live["uuid"], live["rule"], live["mix"], live["rate"], live["phase"]) == \
        (call.uuid, "ext9999", "mono", 8000, "streaming")
    assert live["connections"] == 1 and live["seconds"] > 0 and live["last_frame_age_s"] < 1.0

    config = tmp_path / "status.yaml"
    config.write_text(textwrap.dedent(f"""\
        esl: {{password: unused}}
        metrics: {{listen_host: 127.0.0.1, listen_port: {h.controller.http_port}}}
        http:
          token: ${{FSCTL_HTTP_TOKEN}}
        rules:
          - {{name: r, match: {{destination: "1"}}}}
        """))
    result = subprocess.run([sys.executable, "-m", "controller", "status", "-c", str(config)],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "FSCTL_HTTP_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    assert TOKEN not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"controller at http://127.0.0.1:{h.controller.http_port}: healthy"
    assert "1 live call" in lines
    [row] = [line for line in lines if line.startswith(call.uuid)]
    assert row.split()[1:5] == ["ext9999", "mono", "8000", "streaming"]
    call.hangup()


def test_status_says_when_no_controller_answers(tmp_path):
    config = tmp_path / "status.yaml"
    config.write_text("esl: {password: x}\nmetrics: {listen_port: 1}\nrules:\n  - {name: r, match: {destination: '1'}}\n")
    result = subprocess.run([sys.executable, "-m", "controller", "status", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stdout.startswith("status: no controller answers at http://127.0.0.1:1 (")


def test_unknown_paths_are_404_with_the_endpoints(sim, harness):
    h = harness(extra=HTTP)
    status, body = get(h, "/nope")
    assert status == 404 and json.loads(body)["endpoints"] == ["/healthz", "/metrics", "/calls"]


def run_status(tmp_path, port: int, http: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "status.yaml"
    config.write_text(f"esl: {{password: x}}\nmetrics: {{listen_port: {port}}}\n{http}"
                      "rules:\n  - {name: r, match: {destination: '1'}}\n")
    return subprocess.run([sys.executable, "-m", "controller", "status", "-c", str(config)], capture_output=True,
                          text=True, timeout=30)


def test_status_with_a_token_the_controller_refuses_says_so_and_exits_4(sim, harness, tmp_path):
    h = harness(extra=HTTP)
    wrong = "tok-not-the-controllers-0000"
    result = run_status(tmp_path, h.controller.http_port, f"http: {{token: {wrong}}}\n")
    assert result.returncode == 4
    assert result.stdout.splitlines()[-1] == (
        "status: the controller refused to list the calls (401: the API token was refused); http.token in "
        f"{tmp_path / 'status.yaml'} is not the running controller's: give both the same token (e.g. the same "
        "${FSCTL_HTTP_TOKEN}), and restart the controller after changing its own")
    assert wrong not in result.stdout + result.stderr


def test_status_without_any_token_shows_the_health_and_says_how_to_see_the_calls(sim, harness, tmp_path):
    h = harness(extra="metrics: {listen_port: 0}\n")
    result = run_status(tmp_path, h.controller.http_port)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == f"controller at http://127.0.0.1:{h.controller.http_port}: healthy"
    assert lines[-2:] == ["0 live calls", "(the calls are listed only with the API token: set http.token in the "
                          "controller's configuration, restart it, and run status with the same file)"]
