"""The finished-recording hook: an HTTP POST of each sidecar and/or a command with the WAV and sidecar paths,
kept on disk until it works — across a restart — and never harming the recording."""

from __future__ import annotations

import json
import sys

from gevent.pywsgi import WSGIServer
from harness import RULE_9999, Harness, wait_until


class HookEndpoint:
    """A local HTTP server standing in for the user's hook endpoint; answers with `status`."""

    def __init__(self, status: str = "200 OK") -> None:
        self.status = status
        self.requests: list[tuple[str, dict, bytes]] = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/recordings"

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        self.requests.append((environ["PATH_INFO"], headers, body))
        start_response(self.status, [("Content-Length", "0")])
        return [b""]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def hook_yaml(**hook) -> str:
    return "hook: " + json.dumps(hook) + "\n"


def test_each_finished_recording_is_posted_once_with_its_sidecar(sim, tmp_path):
    endpoint = HookEndpoint()
    h = Harness(sim, tmp_path / "rec", RULE_9999, hook_yaml(url=endpoint.url, headers={"X-Api-Key": "k3y"})).start()
    try:
        calls = [sim.place_call("9999", duration_s=1.0) for _ in range(2)]
        for call in calls:
            assert call.hung_up.wait(10)
            h.wait_closed(call.uuid)
        wait_until(lambda: len(endpoint.requests) == 2, 10, "two POSTs")
        wait_until(lambda: not list((tmp_path / "rec" / ".hooks").glob("*.json")), 5, "the queue to empty")
        assert len(endpoint.requests) == 2  # nothing more is owed: each recording once
        posted = {json.loads(body)["uuid"]: (path, headers, body) for path, headers, body in endpoint.requests}
        assert set(posted) == {call.uuid for call in calls}
        for call in calls:
            path, headers, body = posted[call.uuid]
            assert path == "/recordings" and headers["content-type"] == "application/json"
            assert headers["x-api-key"] == "k3y"
            assert json.loads(body) == h.recording(call.uuid).sidecar
    finally:
        h.stop()
        endpoint.stop()


def test_a_queued_post_survives_a_restart(sim, tmp_path, caplog):
    endpoint = HookEndpoint(status="503 Service Unavailable")  # the endpoint is down for now
    secret_url = endpoint.url + "?token=s3cr3t-t0ken"  # webhook URLs often carry their key
    hook = hook_yaml(url=secret_url, headers={"X-Api-Key": "k3y-value"}, max_attempts=50)
    first = Harness(sim, tmp_path / "rec", RULE_9999, hook).start()
    try:
        call = sim.place_call("9999", duration_s=1.0)
        assert call.hung_up.wait(10)
        first.wait_closed(call.uuid)
        wait_until(lambda: endpoint.requests, 10, "a first, refused POST")
    finally:
        first.stop()
    [queued] = (tmp_path / "rec" / ".hooks").glob("*.json")
    job = json.loads(queued.read_text())
    assert job["kind"] == "post" and job["attempts"] >= 1 and "503" in job["errors"][-1]
    for secret in ("s3cr3t-t0ken", "k3y-value"):  # neither on disk nor in the log
        assert secret not in queued.read_text() and secret not in caplog.text
    endpoint.status = "200 OK"
    refused = len(endpoint.requests)
    second = Harness(sim, tmp_path / "rec", RULE_9999, hook).start()
    try:
        wait_until(lambda: len(endpoint.requests) > refused, 15, "the queued POST after the restart")
        assert json.loads(endpoint.requests[-1][2])["uuid"] == call.uuid
        wait_until(lambda: not queued.exists(), 5, "the delivered job to leave the queue")
    finally:
        second.stop()
        endpoint.stop()


def test_a_failing_command_hook_leaves_the_recording_intact_and_is_given_up(sim, tmp_path):
    failing = [sys.executable, "-c", "import sys; sys.exit('the archive is full')"]
    h = Harness(sim, tmp_path / "rec", RULE_9999, hook_yaml(command=failing, max_attempts=2)).start()
    try:
        call = sim.place_call("9999", duration_s=1.0)
        assert call.hung_up.wait(10)
        assert h.wait_closed(call.uuid) == "client_close"
        failed = tmp_path / "rec" / ".hooks" / "failed"
        wait_until(lambda: list(failed.glob("*.json")), 15, "the hook to be given up after 2 attempts")
        [job] = [json.loads(p.read_text()) for p in failed.glob("*.json")]
        assert job["attempts"] == 2 and "exited with 1: the archive is full" in job["errors"][-1]
        [stream] = sim.streams_for(call.uuid)
        assert h.recording(call.uuid).pcm == stream.sent_pcm  # the recording never noticed
    finally:
        h.stop()


def test_a_rules_command_hook_gets_the_wav_and_sidecar_paths_and_replaces_the_global_hook(sim, tmp_path):
    endpoint = HookEndpoint()
    out = tmp_path / "args.txt"
    command = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(chr(10).join(sys.argv[1:]))"]
    rules = RULE_9999 + "  hook: " + json.dumps({"command": command}) + "\n"
    h = Harness(sim, tmp_path / "rec", rules, hook_yaml(url=endpoint.url)).start()
    try:
        call = sim.place_call("9999", duration_s=1.0)
        assert call.hung_up.wait(10)
        h.wait_closed(call.uuid)
        wait_until(out.exists, 10, "the command to run")
        recording = h.recording(call.uuid)
        assert out.read_text().split("\n") == [str(recording.path), str(recording.path.with_suffix(".json"))]
        assert endpoint.requests == []  # the rule's hook replaced the global one
    finally:
        h.stop()
        endpoint.stop()
