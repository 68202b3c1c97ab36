"""Recordings at scale (issue #18), end to end: calls on the simulated switch, the controller in this process, the
catalog in a real SQLite file or PostgreSQL server, the bucket on an S3-compatible server over real HTTP (moto).
What a user sees: the rows (`fs-stream-controller recordings`, the API), the objects and their SHA-256, the
sidecar and the hook carrying the object's URL, /healthz naming what is down, and nothing lost when the
database or the bucket is down for a while."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controller.archive import doctor_steps
from controller.catalog import api
from controller.catalog.store import default_url, open_store
from controller.simulator import Simulator
from harness import RULE_9999, Harness, wait_until
from test_ops_hook import HookEndpoint

ROOT = Path(__file__).resolve().parents[1]


def storage_yaml(s3, bucket: str, **more) -> str:
    upload = {"url": f"s3://{bucket}/calls", "endpoint_url": s3.endpoint, "region": "us-east-1"}
    storage = {"upload": upload, **more}
    return "storage: " + json.dumps(storage) + "\n"


def catalog_yaml(**catalog) -> str:
    return "catalog: " + json.dumps(catalog) + "\n"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "recordings", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def config_file(tmp_path: Path, directory: Path, extra: str = "") -> Path:
    """The configuration a user would point the CLI at (what the CLI reads of it: the catalog, the bucket)."""
    path = tmp_path / f"cli-{abs(hash(extra)) % 10**8}.yaml"
    path.write_text(textwrap.dedent(f"""\
        esl: {{password: ClueCon}}
        recorder: {{directory: {directory}}}
        metrics: {{enabled: false}}
        rules:
          - {{name: ext9999, match: {{destination: "9999"}}}}
        """) + extra)
    return path


def finish_calls(h: Harness, sim, count: int, **call) -> list:
    calls = [sim.place_call("9999", duration_s=1.0, **call) for _ in range(count)]
    for c in calls:
        assert c.hung_up.wait(15)
        h.wait_closed(c.uuid)
    return calls


def rows_of(url: str) -> list[dict]:
    store = open_store(url)
    try:
        return store.search(limit=1000)
    finally:
        store.close()


def test_by_default_every_finished_recording_is_a_row_in_sqlite_beside_the_recordings(sim, tmp_path):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999).start()
    try:
        # One call after the other, so "newest first" has one answer (two answered at once may tie).
        first = sim.place_call("9999", duration_s=1.0, caller_id_number="4711")
        wait_until(lambda: sim.streams_for(first.uuid), 10, "the first call's stream")
        calls = [first, *finish_calls(h, sim, 1, caller_id_number="4711")]
        h.wait_closed(first.uuid)
        url = default_url(rec)
        assert url == f"sqlite://{rec.resolve()}/catalog.sqlite3"
        wait_until(lambda: len(rows_of(url)) == 2, 10, "two rows")
    finally:
        h.stop()
    config = config_file(tmp_path, rec)
    listed = cli(config, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["uuid"] for r in rows] == [c.uuid for c in reversed(calls)]  # newest first
    for row in rows:
        recording = h.recording(row["uuid"])
        assert {k: row[k] for k in ("switch", "controller_id", "caller", "destination", "rule", "upload_state",
                                    "object_url")} == {
            "switch": "freeswitch-sim", "controller_id": socket.gethostname(), "caller": "4711",
            "destination": "9999", "rule": "ext9999", "upload_state": "none", "object_url": None}
        assert row["duration_s"] == recording.sidecar["duration_s"] and row["gap_seconds"] == 0.0
        assert row["local_path"] == str(recording.path.resolve())
        assert row["start_time"] == recording.sidecar["start_time"]
    table = cli(config, "--caller", "4711")
    assert table.returncode == 0 and table.stdout.count("freeswitch-sim") == 2 and "2 recordings" in table.stdout
    assert cli(config, "--caller", "1234", "--json").stdout.strip() == "[]"
    shown = cli(config, "show", calls[0].uuid)
    assert json.loads(shown.stdout)["bytes"] == h.recording(calls[0].uuid).sidecar["bytes"]
    fetched = tmp_path / "copy.wav"
    got = cli(config, "fetch", calls[0].uuid, "-o", str(fetched))
    assert got.returncode == 0 and "from " + str(h.recording(calls[0].uuid).path.resolve()) in got.stdout
    assert fetched.read_bytes() == h.recording(calls[0].uuid).path.read_bytes()
    missing = cli(config, "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "no recording" in missing.stderr


def test_uploaded_recordings_are_verified_objects_and_the_sidecar_hook_and_row_carry_the_url(sim, tmp_path, s3,
                                                                                             bucket, pg_url):
    endpoint = HookEndpoint()
    rec = tmp_path / "rec"
    extra = storage_yaml(s3, bucket) + catalog_yaml(url=pg_url, controller_id="ctl-a") + \
        "hook: " + json.dumps({"url": endpoint.url}) + "\n"
    h = Harness(sim, rec, RULE_9999, extra).start()
    try:
        [call] = finish_calls(h, sim, 1)
        wait_until(lambda: endpoint.requests, 15, "the hook, once the upload is verified")
        wait_until(lambda: [r["upload_state"] for r in rows_of(pg_url)] == ["verified"], 10, "the verified row")
    finally:
        h.stop()
        endpoint.stop()
    recording = h.recording(call.uuid)
    wav_bytes = recording.path.read_bytes()
    digest = hashlib.sha256(wav_bytes).hexdigest()
    date = recording.sidecar["start_time"][:10]
    key = f"calls/{date}/freeswitch-sim/{call.uuid}.wav"
    objects = s3.objects(bucket)
    assert set(objects) == {key, key[:-4] + ".json"}
    assert hashlib.sha256(objects[key]).hexdigest() == digest
    sidecar = recording.sidecar
    assert (sidecar["object_url"], sidecar["sha256"], sidecar["upload_state"]) == \
        (f"s3://{bucket}/{key}", digest, "verified")
    assert json.loads(objects[key[:-4] + ".json"]) == sidecar  # the bucket's sidecar is the final one
    posted = json.loads(endpoint.requests[0][2])
    assert posted["object_url"] == f"s3://{bucket}/{key}" and posted["sha256"] == digest
    [row] = rows_of(pg_url)
    assert (row["object_url"], row["sha256"], row["switch"], row["controller_id"]) == \
        (f"s3://{bucket}/{key}", digest, "freeswitch-sim", "ctl-a")


def test_a_bucket_down_when_the_call_ends_holds_the_upload_on_disk_until_it_is_back(sim, tmp_path, s3, bucket):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999, storage_yaml(s3, bucket)).start()
    try:
        s3.stop()
        [call] = finish_calls(h, sim, 1)
        archive = h.controller.archive
        wait_until(lambda: [job["attempts"] for job in archive.queue.jobs("upload")] == [1], 10, "a failed attempt")
        reasons, body = archive.health()
        assert body["storage"]["uploads_waiting"] == 1 and not body["storage"]["refused"]
        assert any("cannot be reached" in r and "1 uploads wait on disk" in r for r in reasons)
        [job] = [json.loads(p.read_text()) for p in (rec / ".archive").glob("*.json")
                 if json.loads(p.read_text())["kind"] == "upload"]
        assert job["attempts"] >= 1 and job["wav"].endswith(f"{call.uuid}.wav")
        s3.start()  # its objects kept; the job goes on by itself
        wait_until(lambda: archive.queue.waiting("upload") == 0, 20, "the upload after the bucket is back")
        assert archive.health()[0] == []
    finally:
        h.stop()
        if s3.process is None:
            s3.start()
    recording = h.recording(call.uuid)
    [key] = [k for k in s3.objects(bucket) if k.endswith(".wav")]
    assert s3.objects(bucket)[key] == recording.path.read_bytes()  # nothing lost
    assert recording.pcm == sim.streams_for(call.uuid)[0].sent_pcm  # and the recording never noticed


def test_a_catalog_database_that_is_down_loses_no_row_and_holds_up_no_call(sim, tmp_path, postgres, pg_url):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999, catalog_yaml(url=pg_url)).start()
    try:
        postgres.stop()
        calls = finish_calls(h, sim, 3)
        archive = h.controller.archive
        wait_until(lambda: archive.catalog_error is not None, 10, "the failed write")
        reasons, body = archive.health()
        assert body["catalog"]["writes_waiting"] == 3 and "password" not in json.dumps(body)
        assert any("cannot be written" in r and "3 writes wait on disk" in r for r in reasons)
        for c in calls:  # the recordings are whole all the same
            assert h.recording(c.uuid).pcm == sim.streams_for(c.uuid)[0].sent_pcm
        postgres.start()
        wait_until(lambda: len(rows_of(pg_url)) == 3, 20, "the three rows after the database is back")
        assert archive.health()[0] == []
    finally:
        h.stop()
        postgres.ensure_running()
    assert sorted(r["uuid"] for r in rows_of(pg_url)) == sorted(c.uuid for c in calls)


def test_recordings_made_without_a_catalog_are_added_at_start_once(sim, tmp_path):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999, catalog_yaml(enabled=False)).start()
    try:
        calls = finish_calls(h, sim, 2)
    finally:
        h.stop()
    assert not (rec / "catalog.sqlite3").exists()
    for attempt in range(2):  # an upgrade, then a plain restart: the same rows, no duplicate
        h = Harness(sim, rec, RULE_9999).start()
        try:
            archive = h.controller.archive
            wait_until(lambda: archive.backfilled is not None and archive.queue.waiting("catalog") == 0, 10,
                       "the start-up check")
            assert archive.backfilled == (2 if attempt == 0 else 0)
        finally:
            h.stop()
        assert sorted(r["uuid"] for r in rows_of(default_url(rec))) == sorted(c.uuid for c in calls)


def test_delete_local_after_removes_the_local_copy_only_once_the_object_is_verified(sim, tmp_path, s3, bucket):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999, storage_yaml(s3, bucket, delete_local_after="1s")).start()
    try:
        [call] = finish_calls(h, sim, 1)
        wav = h.recording(call.uuid)
        original = wav.path.read_bytes()
        wait_until(lambda: not wav.path.exists(), 15, "the local copy to go")
        assert not wav.path.with_suffix(".json").exists()
        wait_until(lambda: rows_of(default_url(rec))[0]["local_path"] is None, 10, "the row to say so")
    finally:
        h.stop()
    [row] = rows_of(default_url(rec))
    assert row["upload_state"] == "verified" and row["sha256"] == hashlib.sha256(original).hexdigest()
    fetched = tmp_path / "back.wav"
    got = cli(config_file(tmp_path, rec, storage_yaml(s3, bucket)), "fetch", call.uuid, "-o", str(fetched))
    assert got.returncode == 0, got.stderr
    assert f"from s3://{bucket}/" in got.stdout and "SHA-256 verified" in got.stdout
    assert fetched.read_bytes() == original


def test_a_refusing_bucket_is_named_in_health_with_what_to_do_and_the_upload_waits(sim, tmp_path, s3):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999, storage_yaml(s3, "no-such-bucket-yet")).start()
    try:
        archive = h.controller.archive
        wait_until(lambda: archive.storage_error is not None, 10, "the start-up look at the bucket")
        reasons, body = archive.health()
        assert body["storage"]["refused"]
        assert any("refuses uploads" in r and "create it, or fix storage.upload.url" in r for r in reasons)
        [call] = finish_calls(h, sim, 1)
        wait_until(lambda: archive.queue.jobs("upload") and archive.queue.jobs("upload")[0]["attempts"] >= 1, 10,
                   "a refused attempt")
        s3.make_bucket("no-such-bucket-yet")  # the operator creates it: the probe notices, the job goes on
        wait_until(lambda: archive.queue.waiting("upload") == 0, 20, "the upload once the bucket exists")
    finally:
        h.stop()
    assert any(call.uuid in key for key in s3.objects("no-such-bucket-yet"))


def test_doctor_steps_write_read_and_delete_a_test_object_and_reach_the_catalog(tmp_path, s3, bucket, pg_url):
    from controller.config import parse_config

    def config(extra: str):
        return parse_config(config_file(tmp_path, tmp_path / "rec", extra).read_text())

    steps = doctor_steps(config(storage_yaml(s3, bucket) + catalog_yaml(url=pg_url)))
    assert [(s.name, s.ok) for s in steps] == [("catalog", True), ("bucket", True)]
    assert "schema version 1" in steps[0].detail and "deleted a test object" in steps[1].detail
    assert s3.objects(bucket) == {}
    [refused] = doctor_steps(config(storage_yaml(s3, "not-there-bucket")))  # the default SQLite: no step of its own
    assert not refused.ok and "FAIL bucket:" in refused.line and "create it" in refused.line


def test_the_api_lists_shows_and_serves_audio_with_ranges(sim, tmp_path):
    rec = tmp_path / "rec"
    h = Harness(sim, rec, RULE_9999).start()
    try:
        [call] = finish_calls(h, sim, 1, caller_id_number="555")
        archive = h.controller.archive
        wait_until(lambda: archive.queue.waiting("catalog") == 0 and rows_of(default_url(rec)), 10, "the row")
        status, _, body = api.handle(archive, "GET", "/api/recordings", "caller=555&limit=10", {})
        assert status == "200 OK" and [r["uuid"] for r in json.loads(body)["recordings"]] == [call.uuid]
        assert api.handle(archive, "GET", "/api/recordings", "colour=red", {})[0] == "400 Bad Request"
        assert api.handle(archive, "GET", "/api/recordings", "since=yesterday", {})[0] == "400 Bad Request"
        status, _, body = api.handle(archive, "GET", f"/api/recordings/{call.uuid}", "", {})
        assert json.loads(body)["recordings"][0]["caller"] == "555"
        wav = h.recording(call.uuid).path.read_bytes()
        status, headers, body = api.handle(archive, "GET", f"/api/recordings/{call.uuid}/audio", "", {})
        assert status == "200 OK" and api.body_bytes(body) == wav and ("Accept-Ranges", "bytes") in headers
        status, headers, body = api.handle(archive, "GET", f"/api/recordings/{call.uuid}/audio", "",
                                           {"Range": "bytes=44-1043"})
        assert status == "206 Partial Content" and api.body_bytes(body) == wav[44:1044]
        assert ("Content-Range", f"bytes 44-1043/{len(wav)}") in headers
        status, _, body = api.handle(archive, "GET", f"/api/recordings/{call.uuid}/audio", "", {"Range": "bytes=-10"})
        assert api.body_bytes(body) == wav[-10:]
        status, headers, _ = api.handle(archive, "GET", f"/api/recordings/{call.uuid}/audio", "",
                                        {"Range": f"bytes={len(wav)}-"})
        assert status == "416 Range Not Satisfiable" and ("Content-Range", f"bytes */{len(wav)}") in headers
        assert api.handle(archive, "GET", "/api/recordings/nope", "", {})[0] == "404 Not Found"
        assert api.handle(archive, "GET", "/calls", "", {}) is None
    finally:
        h.stop()


@pytest.fixture
def second_sim():
    simulator = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon", hostname="fs-west")
    simulator.start()
    yield simulator
    simulator.stop()


def test_a_fleet_of_two_controllers_shares_one_catalog_and_one_bucket(tmp_path, s3, bucket, pg_url, second_sim):
    east = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon", hostname="fs-east")
    east.start()
    controllers = []
    try:
        for name, sim in (("ctl-east", east), ("ctl-west", second_sim)):
            extra = storage_yaml(s3, bucket) + catalog_yaml(url=pg_url, controller_id=name)
            controllers.append(Harness(sim, tmp_path / name, RULE_9999, extra).start())
        a, b = controllers
        calls = finish_calls(a, east, 2) + finish_calls(b, second_sim, 1)
        wait_until(lambda: [r["upload_state"] for r in rows_of(pg_url)] == ["verified"] * 3, 20, "three rows")
        for h in controllers:  # listing from either controller shows the whole fleet
            status, _, body = api.handle(h.controller.archive, "GET", "/api/recordings", "", {})
            listed = json.loads(body)["recordings"]
            assert sorted((r["uuid"], r["switch"], r["controller_id"]) for r in listed) == sorted(
                [(c.uuid, "fs-east", "ctl-east") for c in calls[:2]] + [(calls[2].uuid, "fs-west", "ctl-west")])
        # West serves east's recording from the bucket (it is not on west's disk), ranges included.
        wav = a.recording(calls[0].uuid).path.read_bytes()
        status, headers, body = api.handle(b.controller.archive, "GET", f"/api/recordings/{calls[0].uuid}/audio",
                                           "", {"Range": "bytes=100-199"})
        assert status == "206 Partial Content" and ("X-Recording-Source", "bucket") in headers
        assert api.body_bytes(body) == wav[100:200]
    finally:
        for h in controllers:
            h.stop()
        east.stop()
    keys = sorted(k for k in s3.objects(bucket) if k.endswith(".wav"))
    assert [k.split("/")[2] for k in keys].count("fs-east") == 2 and [k.split("/")[2] for k in keys].count("fs-west") == 1
    listed = cli(config_file(tmp_path, tmp_path / "ctl-west", catalog_yaml(url=pg_url)), "--switch", "fs-east",
                 "--json")
    assert sorted(r["uuid"] for r in json.loads(listed.stdout)) == sorted(c.uuid for c in calls[:2])


TOKEN = "archive-test-token-0123456789"


def http_get(port: int, path: str, token: str | None = TOKEN, headers: dict | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_http_listener_serves_the_recordings_behind_its_token_and_healthz_names_a_refusing_bucket(
        sim, tmp_path, s3):
    rec = tmp_path / "rec"
    extra = (f"metrics: {{enabled: true, listen_host: 127.0.0.1, listen_port: 0}}\nhttp: {{token: {TOKEN}}}\n"
             + storage_yaml(s3, "missing-bucket-http"))
    h = Harness(sim, rec, RULE_9999, extra).start()
    try:
        port = h.controller.http_port
        [call] = finish_calls(h, sim, 1)
        wait_until(lambda: rows_of(default_url(rec)), 10, "the row")
        assert http_get(port, "/api/recordings", token=None)[0] == 401
        assert http_get(port, "/api/recordings", token="wrong-token-wrong-token")[0] in (401, 403)
        status, _, body = http_get(port, "/api/recordings?destination=9999")
        assert status == 200 and [r["uuid"] for r in json.loads(body)["recordings"]] == [call.uuid]
        wav = h.recording(call.uuid).path.read_bytes()
        status, headers, body = http_get(port, f"/api/recordings/{call.uuid}/audio", headers={"Range": "bytes=0-43"})
        assert status == 206 and body == wav[:44] and headers["Content-Range"] == f"bytes 0-43/{len(wav)}"
        assert body[:4] == b"RIFF" and headers["Content-Type"] == "audio/wav"
        status, _, body = http_get(port, f"/api/recordings/{call.uuid}/audio")
        assert status == 200 and body == wav
        status, _, body = http_get(port, "/healthz")
        state = json.loads(body)
        assert status == 503 and state["storage"]["refused"] and state["storage"]["uploads_waiting"] == 1
        assert any("missing-bucket-http" in r and "refuses uploads" in r for r in state["reasons"])
    finally:
        h.stop()


def test_a_row_naming_a_file_outside_the_recordings_is_never_served_nor_removed(sim, tmp_path):
    """A shared catalog is written by other hosts too: its local_path never names any other file to this one."""
    from controller.catalog.schema import row_from_sidecar

    rec = tmp_path / "rec"
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF not a recording")
    # A bucket at a closed port on loopback: nothing is uploaded here, and nothing leaves the machine.
    h = Harness(sim, rec, RULE_9999, "storage: {delete_local_after: 1s, upload: {url: s3://unused-bucket, "
                                     "endpoint_url: 'http://127.0.0.1:9', region: us-east-1}}\n")
    try:
        archive = h.controller.archive
        uuid = "0badf11e-0000-4000-8000-000000000001"
        row = row_from_sidecar({"uuid": uuid, "start_time": "2026-11-25T06:00:00.000Z", "close_reason": "eof"},
                               outside, switch="x", controller_id=archive.controller_id, upload_state="verified")
        row |= {"sha256": "00" * 32, "uploaded_at": "2026-11-25T06:00:00.000Z", "object_url": "s3://unused-bucket/k.wav"}
        archive.db(archive.store.upsert, row)
        assert api.local_file(archive, row) is None
        assert archive.remove_expired() == 0
        assert outside.read_bytes() == b"RIFF not a recording"
    finally:
        h.stop()
