#!/usr/bin/env python3
"""Soak of the catalog and the bucket (issue #18): many calls on the simulated switch, a few at a time, while the
S3 server is stopped and started again (twice) and the PostgreSQL server crashes and comes back (once); then every
recording is looked for in the catalog and in the bucket.

    scripts/soak_catalog --calls 200 --concurrency 10 --seed 1 [--json FILE]

Passes (exit 0) when the catalog holds exactly one row per call (no duplicate), the bucket one WAV per call, and
every object's SHA-256 equals the WAV on disk and the row's. Prints the faults, the upload throughput and the
catalog's write latency. Everything runs on 127.0.0.1 and stops by itself (bounded in time).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from controller.app import Controller  # noqa: E402
from controller.catalog.store import open_store  # noqa: E402
from controller.config import parse_config  # noqa: E402
from controller.simulator import Simulator  # noqa: E402
from services import PostgresServer, S3Server  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def big_upload(s3, bucket: str, work: pathlib.Path, mib: int) -> dict:
    """One long recording's worth of bytes (mib MiB) uploaded as the controller uploads it: digests, multipart in
    8 MiB parts, verified."""
    from controller.settings import UploadConfig
    from controller.storage.s3 import Bucket, file_digests

    path = work / "big.wav"
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(2**20))
    b = Bucket(UploadConfig(url=f"s3://{bucket}/big", endpoint_url=s3.endpoint, region="us-east-1"))
    t0 = time.perf_counter()
    digests = file_digests(path, b.part_size)
    t1 = time.perf_counter()
    b.upload(path, "big/big.wav", digests, {}, save=lambda: None)
    via = b.verify("big/big.wav", digests)
    t2 = time.perf_counter()
    path.unlink()
    return {"mib": mib, "parts": len(digests.part_md5s), "digest_s": round(t1 - t0, 2),
            "upload_and_verify_s": round(t2 - t1, 2), "mib_per_s": round(mib / (t2 - t1), 1), "verified_by": via}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-s", type=float, default=2.0, help="shortest call (seconds)")
    parser.add_argument("--max-s", type=float, default=5.0, help="longest call (seconds)")
    parser.add_argument("--outage-s", type=float, default=8.0, help="how long each server stays down")
    parser.add_argument("--big-mib", type=int, default=64, help="then one WAV this large is uploaded (multipart) "
                                                                 "to measure throughput (0: not)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rng = random.Random(args.seed)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "soak")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "soak")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # only the S3 server on 127.0.0.1 is asked
    work = pathlib.Path(tempfile.mkdtemp(prefix="fsctl-soak-catalog-"))
    postgres = PostgresServer()
    s3 = S3Server(work / "s3")
    started = time.monotonic()
    postgres.start()
    s3.start()
    sim = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon", hostname="fs-soak")
    sim.start()
    controller = None
    faults: list[str] = []
    try:
        url = postgres.create_database("soak")
        bucket = s3.make_bucket("soak-recordings")
        directory = work / "rec"
        config = parse_config(f"""
esl: {{host: 127.0.0.1, port: {sim.esl_port}, password: ClueCon, command_timeout_s: 3,
      reconnect: {{initial_s: 0.1, max_s: 1}}}}
recorder: {{listen_host: 127.0.0.1, listen_port: 0, directory: "{directory}"}}
limits: {{max_streams: {args.concurrency * 2}}}
metrics: {{enabled: false}}
catalog: {{url: "{url}", controller_id: soak-controller}}
storage: {{upload: {{url: "s3://{bucket}/calls", endpoint_url: "{s3.endpoint}", region: us-east-1}}}}
rules:
  - name: soak
    match: {{destination: "9999"}}
""", "soak.yaml")
        controller = Controller(config)
        controller.start()
        if not controller.esl.connected_event.wait(10):
            raise SystemExit("the controller did not connect to the simulator")
        controller.public_url = f"ws://127.0.0.1:{controller.recorder_port}"
        archive = controller.archive
        placed: list = []
        finished_count = [0]

        def caller() -> None:
            while len(placed) < args.calls:
                call = sim.place_call("9999", caller_id_number=str(1000 + len(placed)),
                                      duration_s=rng.uniform(args.min_s, args.max_s))
                placed.append(call)
                call.hung_up.wait(60)
                finished_count[0] += 1

        def outage(name: str, stop, start, at_fraction: float) -> None:
            while finished_count[0] < at_fraction * args.calls:
                gevent.sleep(0.1)
            stop()
            down_at = time.monotonic()
            faults.append(f"{name} down at call {finished_count[0]}")
            index = len(faults) - 1
            gevent.sleep(args.outage_s)
            start()
            faults[index] += f", back after {time.monotonic() - down_at:.1f} s"

        schedule = [
            gevent.spawn(outage, "the S3 server (stopped)", s3.stop, s3.start, 0.2),
            gevent.spawn(outage, "PostgreSQL (crashed: pg_ctl stop -m immediate)",
                         lambda: postgres.stop("immediate"), postgres.start, 0.45),
            gevent.spawn(outage, "the S3 server (stopped)", s3.stop, s3.start, 0.7),
        ]
        callers = [gevent.spawn(caller) for _ in range(args.concurrency)]
        gevent.joinall(callers, timeout=args.calls * args.max_s + 300)
        gevent.joinall(schedule, timeout=120)
        calls_done = time.monotonic()
        # Every recording finalised, then the queues drained (bounded).
        with gevent.Timeout(300, TimeoutError("the queues did not drain within 300 s")):
            while (archive.queue.waiting() or len(list(directory.rglob("*.wav.part")))
                   or sum(1 for _ in directory.rglob("*.wav")) < args.calls):
                gevent.sleep(0.2)
        drained = time.monotonic()
    finally:
        if controller is not None:
            controller.stop()
        sim.stop()
    # ---- the checks ----
    try:
        store = open_store(url)
        rows = store.search(limit=10000)
        store.close()
        objects = s3.objects(bucket)
        big = big_upload(s3, bucket, work, args.big_mib) if args.big_mib else None
    finally:
        s3.stop()
        postgres.remove()
    uuids = [call.uuid for call in placed]
    wavs = {p.stem: p for p in directory.rglob("*.wav")}
    row_ids = [r["recording_id"] for r in rows]
    wav_objects = {k.rsplit("/", 1)[1][:-4]: v for k, v in objects.items() if k.endswith(".wav")}
    json_objects = [k for k in objects if k.endswith(".json")]
    duplicates = len(row_ids) - len(set(row_ids)) + sum(1 for r in rows if r["recording_id"] != r["uuid"])
    mismatched = []
    for uuid in uuids:
        wav = wavs.get(uuid)
        local = hashlib.sha256(wav.read_bytes()).hexdigest() if wav else None
        remote = hashlib.sha256(wav_objects[uuid]).hexdigest() if uuid in wav_objects else None
        row = next((r for r in rows if r["uuid"] == uuid), None)
        if local is None or local != remote or row is None or row["sha256"] != local or row["upload_state"] != "verified":
            mismatched.append(uuid)
    uploads = list(archive.upload_figures)
    upload_bytes = sum(b for b, _ in uploads)
    upload_seconds = sum(s for _, s in uploads)
    writes = list(archive.write_latencies)
    queued = list(archive.row_latencies)
    figures = {
        "calls": len(uuids), "concurrency": args.concurrency, "faults": faults,
        "rows": len(rows), "distinct_rows": len(set(row_ids)), "duplicates": duplicates,
        "wav_objects": len(wav_objects), "sidecar_objects": len(json_objects), "sha256_mismatches": len(mismatched),
        "uploads_verified": len(uploads), "upload_mib": round(upload_bytes / 2**20, 2),
        "upload_mib_per_s_each": round(upload_bytes / 2**20 / upload_seconds, 2) if upload_seconds else None,
        "upload_ms_p50": round(percentile([s for _, s in uploads], 50) * 1000, 1),
        "upload_ms_p99": round(percentile([s for _, s in uploads], 99) * 1000, 1),
        "catalog_writes": len(writes),
        "catalog_write_ms_p50": round(percentile(writes, 50) * 1000, 2),
        "catalog_write_ms_p99": round(percentile(writes, 99) * 1000, 2),
        "catalog_queue_to_row_ms_p50": round(percentile(queued, 50) * 1000, 1),
        "catalog_queue_to_row_s_max": round(max(queued, default=0.0), 1),
        "big_upload": big,
        "calls_s": round(calls_done - started, 1), "drained_s_after_last_call": round(drained - calls_done, 1),
        "wall_s": round(time.monotonic() - started, 1),
    }
    ok = (len(rows) == args.calls and duplicates == 0 and len(wav_objects) == args.calls and not mismatched
          and len(json_objects) == args.calls)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value}")
    print("PASS" if ok else f"FAIL: {mismatched[:5]}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
