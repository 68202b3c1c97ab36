"""What becomes of each finished recording beyond its WAV and sidecar: a row in the catalog, an object in the
bucket, the hook, and (optionally) the local copy removed once the bucket's is verified. Issue #18.

Everything goes through an on-disk job queue (ops/hook.py's JobQueue, in ``<recordings>/.archive/``), so a
database or a bucket that is down loses nothing and the recorder never waits for either:

    finished recording ──> catalog job (the row, pending upload) ──> the catalog (SQLite or PostgreSQL)
                      └──> upload job ──> the bucket: WAV (verified) ──> sidecar gains object_url, sha256
                                          ──> sidecar object ──> catalog job (verified) ──> the hook
    (no storage: the hook is queued at once, as before)

At start-up, finished recordings on disk that the catalog lacks are added, and (with storage) those not yet
verified in the bucket are uploaded; both idempotent. Catalog writes carry a revision, so they may land in any
order and a restart or an upgrade adds no duplicate. While the catalog or the bucket fails, a probe every few
seconds notices it back and wakes the waiting jobs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import gevent
from gevent.threadpool import ThreadPool
from prometheus_client import Counter, Gauge, Histogram

from .catalog.schema import (UPLOAD_NONE, UPLOAD_PENDING, UPLOAD_VERIFIED, iso_now, new_revision, recording_id,
                             row_from_sidecar)
from .catalog.store import CatalogError, Store, default_url, iso, open_store, shown_url
from .ops.hook import Drop, JobQueue, Retry
from .recorder.sidecar import SIDECAR_SUFFIX, write_json_atomically
from .recorder.wav import RecordingError, part_path_for
from .storage.keys import sidecar_key
from .storage.s3 import Bucket, Digests, StorageError, file_digests

log = logging.getLogger("controller.archive")

QUEUE_DIR = ".archive"
CATALOG, UPLOAD = "catalog", "upload"
PROBE_INTERVAL_S = 5.0  # while the catalog or the bucket fails: how often to look whether it is back
CATALOG_RETRY_MAX_S = 60.0
UPLOAD_RETRY_MAX_S = 300.0
RETENTION_INTERVAL_S = 600.0

CATALOG_QUEUE = Gauge("fsctl_catalog_queue", "Catalog writes waiting (on disk)")
CATALOG_WRITES = Counter("fsctl_catalog_writes_total", "Catalog write attempts, by outcome", ["outcome"])
CATALOG_WRITE_SECONDS = Histogram("fsctl_catalog_write_seconds", "One catalog write (upsert), in the database",
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
UPLOAD_QUEUE = Gauge("fsctl_upload_queue", "Uploads waiting (on disk)")
UPLOADS = Counter("fsctl_uploads_total", "Upload attempts, by outcome", ["outcome"])
UPLOAD_BYTES = Counter("fsctl_upload_bytes_total", "Bytes of WAV uploaded and verified")
UPLOAD_SECONDS = Histogram("fsctl_upload_seconds", "One recording's upload, from the first byte to verified",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
LOCAL_REMOVED = Counter("fsctl_local_recordings_removed_total",
                        "Local recordings removed after their upload was verified (storage.delete_local_after)")


def catalog_url(config) -> str:
    return config.catalog.url or default_url(config.recorder.directory)


def controller_id(config) -> str:
    return config.catalog.controller_id or socket.gethostname()


def own_recording(directory: Path, path: os.PathLike | str | None) -> Path | None:
    """``path`` when it is a .wav inside the recordings directory, else None: a row's local_path comes from a
    database other controllers write too, and is never trusted to name any other file (to serve or remove)."""
    if not path or not str(path).endswith(".wav"):
        return None
    resolved = Path(path).resolve()
    return resolved if resolved.is_relative_to(Path(directory).resolve()) else None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Archive:
    """The catalog, the bucket and the local retention for one controller's recordings directory."""

    def __init__(self, config, *, submit_hook: Callable[[str, Path, Path], None] | None = None,
                 wall_clock: Callable[[], float] = time.time, store: Store | None = None,
                 bucket: Bucket | None = None) -> None:
        self.directory = Path(config.recorder.directory)
        self.controller_id = controller_id(config)
        self.submit_hook = submit_hook
        self.wall_clock = wall_clock
        self.store = store if store is not None else (open_store(catalog_url(config))
                                                      if config.catalog.enabled else None)
        upload = config.storage.upload
        self.bucket = bucket if bucket is not None else (Bucket(upload) if upload is not None else None)
        self.delete_local_after = config.storage.delete_local_after
        self.switch_hostname = ""  # the switch last heard from: for recordings whose own is not known
        self.queue = JobQueue(self.directory / QUEUE_DIR, wall_clock=wall_clock, name="archive")
        self._threads: ThreadPool | None = None
        self._greenlets: list[gevent.Greenlet] = []
        # Health: the last failure of each, until the next success.
        self.catalog_error: str | None = None
        self.storage_error: StorageError | None = None
        self.backfilled: int | None = None  # recordings the start-up scan queued (None: not done yet)
        self.write_latencies: deque[float] = deque(maxlen=10000)  # seconds per upsert (the soak reads them)
        self.row_latencies: deque[float] = deque(maxlen=10000)  # from a write's queueing to its row written
        self.upload_figures: deque[tuple[int, float]] = deque(maxlen=10000)  # (bytes, seconds) per verified WAV
        if self.store is not None:
            # SQLite serialises its writers: one at a time. PostgreSQL takes a few at once.
            self.queue.register(CATALOG, self._write_row, concurrency=1 if self.store.blocking else 4,
                                max_s=CATALOG_RETRY_MAX_S, quiet=True,
                                describe=lambda job: f"the catalog row of {job['row']['recording_id']}")
        if self.bucket is not None:
            self.queue.register(UPLOAD, self._upload, concurrency=upload.concurrency, max_s=UPLOAD_RETRY_MAX_S,
                                quiet=True, describe=lambda job: f"the upload of {job['wav']}")

    @property
    def catalog_shown(self) -> str | None:
        return shown_url(self.store.url) if self.store is not None else None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.store is not None and self.store.blocking:
            self._threads = ThreadPool(1)  # SQLite's calls block: one thread of its own, off the event loop
        self.queue.start()
        self._counts()
        self._greenlets = [gevent.spawn(self._backfill), gevent.spawn(self._probe_loop)]
        if self.delete_local_after is not None and self.bucket is not None and self.store is not None:
            self._greenlets.append(gevent.spawn(self._retention_loop))

    def stop(self) -> None:
        self.queue.stop()
        gevent.killall(self._greenlets, block=False)
        self._greenlets = []
        if self.store is not None:
            try:
                self.db(self.store.close)
            except Exception:
                pass
        if self._threads is not None:
            self._threads.kill()
            self._threads = None

    def db(self, fn: Callable, *args, **kwargs):
        """Run one catalog call off the event loop when its engine blocks (SQLite), else in this greenlet."""
        if self._threads is not None:
            return self._threads.apply(fn, args, kwargs)
        return fn(*args, **kwargs)

    # ---- a finished recording --------------------------------------------------------------------------

    def finished(self, rule: str, wav: Path, sidecar_path: Path, sidecar: dict[str, Any], switch: str | None) -> None:
        """Queue what becomes of one finished recording. Never raises; the recorder does not wait."""
        switch = switch or self.switch_hostname
        if self.store is not None:
            row = row_from_sidecar(sidecar, wav, switch=switch, controller_id=self.controller_id,
                                   upload_state=UPLOAD_PENDING if self.bucket is not None else UPLOAD_NONE)
            self._submit_row(row)
        if self.bucket is not None:
            self.queue.submit_job(UPLOAD, {"rule": rule, "wav": str(wav), "sidecar": str(sidecar_path),
                                           "switch": switch, "hook": True, "queued_at": self.wall_clock()})
        elif self.submit_hook is not None:
            self.submit_hook(rule, wav, sidecar_path)
        self._counts()

    def _submit_row(self, row: dict[str, Any]) -> None:
        self.queue.submit_job(CATALOG, {"row": row, "queued_at": self.wall_clock()})
        self._counts()

    def _counts(self) -> None:
        CATALOG_QUEUE.set(self.queue.waiting(CATALOG))
        UPLOAD_QUEUE.set(self.queue.waiting(UPLOAD))

    # ---- the catalog ------------------------------------------------------------------------------------

    def _write_row(self, job: dict) -> object:
        started = time.perf_counter()
        try:
            self.db(self.store.upsert, job["row"])
        except CatalogError as exc:
            CATALOG_WRITES.labels("retry").inc()
            if self.catalog_error is None:
                log.error("catalog: cannot write to %s: %s; the rows wait in %s", self.catalog_shown, exc,
                          self.queue.directory)
            self.catalog_error = str(exc)
            return Retry(str(exc))
        elapsed = time.perf_counter() - started
        CATALOG_WRITE_SECONDS.observe(elapsed)
        CATALOG_WRITES.labels("written").inc()
        self.write_latencies.append(elapsed)
        self.row_latencies.append(self.wall_clock() - job.get("queued_at", self.wall_clock()))
        if self.catalog_error is not None:
            log.info("catalog: %s can be written again", self.catalog_shown)
            self.catalog_error = None
            self.queue.wake(CATALOG)
        gevent.spawn(self._counts)
        return None

    # ---- the bucket --------------------------------------------------------------------------------------

    def _upload(self, job: dict) -> object:
        wav, sidecar_path = Path(job["wav"]), Path(job["sidecar"])
        if part_path_for(wav).exists():
            return Drop(f"{wav} is being continued by its call; it is uploaded when it ends")
        sidecar = read_json(sidecar_path)
        if not wav.exists():
            return Drop(f"{wav} is no longer there")
        if sidecar is None or not sidecar.get("close_reason"):
            return Retry("its final sidecar is not written yet", after_s=5.0, counts=False)
        started = time.perf_counter()
        try:
            digests = self._digests(job, wav)
            key = job.get("key")
            if key is None:
                key = job["key"] = self._key(sidecar, wav, job.get("switch") or "")
                self.queue.save(job)
            if not job.get("wav_verified"):
                state = job.setdefault("multipart", {})
                self.bucket.upload(wav, key, digests, state, save=lambda: self.queue.save(job))
                via = self.bucket.verify(key, digests)
                job["wav_verified"] = {"via": via, "at": iso_now(), "seconds": time.perf_counter() - started}
                self.queue.save(job)
                log.info("storage: %s uploaded to %s (%d bytes, verified by %s)", wav, self.bucket.url_for(key),
                         digests.size, via)
            sidecar.update({"switch": job.get("switch") or sidecar.get("switch") or "",
                            "controller_id": self.controller_id, "object_url": self.bucket.url_for(key),
                            "object_size": digests.size, "sha256": digests.sha256, "upload_state": UPLOAD_VERIFIED,
                            "uploaded_at": sidecar.get("uploaded_at") if sidecar.get("sha256") == digests.sha256
                            and sidecar.get("uploaded_at") else job["wav_verified"]["at"]})
            try:
                write_json_atomically(sidecar_path, sidecar)
            except RecordingError as exc:  # a full disk: the bucket's copy still gets its sidecar
                log.error("storage: cannot add the object's URL to %s: %s", sidecar_path, exc)
            self.bucket.put_bytes(sidecar_key(key), (json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n").encode(),
                                  "application/json")
        except StorageError as exc:
            UPLOADS.labels("retry").inc()
            self._storage_failed(exc)
            return Retry(str(exc))
        except OSError as exc:  # the file went away or cannot be read
            UPLOADS.labels("retry").inc()
            return Retry(f"cannot read {wav}: {exc.strerror or exc}")
        self._storage_ok()
        UPLOADS.labels("verified").inc()
        UPLOAD_BYTES.inc(digests.size)
        seconds = float(job["wav_verified"].get("seconds", 0.0))
        UPLOAD_SECONDS.observe(seconds)
        self.upload_figures.append((digests.size, seconds))
        if self.store is not None:
            self._submit_row(row_from_sidecar(sidecar, wav, switch=sidecar.get("switch"),
                                              controller_id=self.controller_id, upload_state=UPLOAD_VERIFIED))
        if job.get("hook", True) and self.submit_hook is not None:
            self.submit_hook(job["rule"], wav, sidecar_path)
        gevent.spawn(self._counts)
        return None

    def _digests(self, job: dict, wav: Path) -> Digests:
        st = wav.stat()
        known = job.get("digests")
        if known is not None:
            digests = Digests.from_dict(known)
            if digests.size == st.st_size and digests.mtime_ns == st.st_mtime_ns \
                    and digests.part_size == self.bucket.part_size:
                return digests
        digests = gevent.get_hub().threadpool.apply(file_digests, (wav, self.bucket.part_size))
        job["digests"] = digests.to_dict()
        job.pop("wav_verified", None)  # a different file than the one verified (if any)
        self.queue.save(job)
        return digests

    def _key(self, sidecar: dict[str, Any], wav: Path, switch: str) -> str:
        started = sidecar.get("start_time")
        moment = datetime.fromisoformat(started.replace("Z", "+00:00")) if started else datetime.now(timezone.utc)
        return self.bucket.key_for(moment=moment, recording_id=recording_id(str(sidecar.get("uuid", "")), wav),
                                   switch=switch, controller=self.controller_id, caller=sidecar.get("caller") or "",
                                   destination=sidecar.get("destination") or "", rule=sidecar.get("rule") or "")

    def _storage_failed(self, exc: StorageError) -> None:
        before = self.storage_error
        if before is None or (before.code, before.refused) != (exc.code, exc.refused):  # once per outage and kind
            log.error("storage: %s; uploads wait in %s", exc, self.queue.directory)
        self.storage_error = exc

    def _storage_ok(self) -> None:
        if self.storage_error is not None:
            log.info("storage: %s takes uploads again", self.bucket.shown)
            self.storage_error = None
            self.queue.wake(UPLOAD)

    # ---- watching what failed -----------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        """At start, and while either fails: is it (back) up? Wakes the jobs waiting for it."""
        first = True
        while True:
            if self.bucket is not None and (first or self.storage_error is not None):
                try:
                    self.bucket.check_bucket()
                except StorageError as exc:
                    self._storage_failed(exc)
                else:
                    self._storage_ok()
            if self.store is not None and (first or self.catalog_error is not None):
                try:
                    self.db(self.store.ping)
                except CatalogError as exc:
                    if self.catalog_error is None:
                        log.error("catalog: %s cannot be reached: %s", self.catalog_shown, exc)
                    self.catalog_error = str(exc)
                else:
                    if self.catalog_error is not None:
                        log.info("catalog: %s can be reached again", self.catalog_shown)
                    self.catalog_error = None
                    self.queue.wake(CATALOG)
            first = False
            gevent.sleep(PROBE_INTERVAL_S)

    # ---- start-up: what the catalog and the bucket lack ----------------------------------------------------

    def _backfill(self) -> None:
        found = gevent.get_hub().threadpool.apply(finished_on_disk, (self.directory,))
        queued_rows = {job["row"]["recording_id"] for job in self.queue.jobs(CATALOG)}
        queued_uploads = {job["wav"] for job in self.queue.jobs(UPLOAD)}
        added = 0
        if self.store is not None:
            ids = {recording_id(str(sidecar.get("uuid", "")), wav): (wav, sidecar) for wav, sidecar in found}
            delay = 1.0
            while True:
                try:
                    present = self.db(self.store.existing, list(ids))
                    break
                except CatalogError as exc:
                    self.catalog_error = str(exc)
                    log.warning("catalog: the start-up check of %d recordings waits for %s: %s", len(ids),
                                self.catalog_shown, exc)
                    gevent.sleep(delay)
                    delay = min(delay * 2, CATALOG_RETRY_MAX_S)
            for rid, (wav, sidecar) in ids.items():
                if rid in present or rid in queued_rows:
                    continue
                state = UPLOAD_PENDING if self.bucket is not None else UPLOAD_NONE
                self._submit_row(row_from_sidecar(sidecar, wav, switch=None, controller_id=self.controller_id,
                                                  upload_state=state) | ({"switch": sidecar.get("switch")
                                                                          or self.switch_hostname}))
                added += 1
        if self.bucket is not None:
            for wav, sidecar in found:
                if sidecar.get("upload_state") == UPLOAD_VERIFIED or str(wav) in queued_uploads:
                    continue
                self.queue.submit_job(UPLOAD, {"rule": sidecar.get("rule") or "", "wav": str(wav),
                                               "sidecar": str(wav.with_suffix(SIDECAR_SUFFIX)),
                                               "switch": sidecar.get("switch") or "", "hook": False,
                                               "queued_at": self.wall_clock()})
                added += 1
        self.backfilled = added
        if added:
            log.info("archive: %d finished recordings on disk queued for the catalog or the bucket", added)
        self._counts()

    # ---- retention -----------------------------------------------------------------------------------------

    def _retention_loop(self) -> None:
        interval = min(RETENTION_INTERVAL_S, max(1.0, self.delete_local_after / 4))
        while True:
            try:
                self.remove_expired()
            except CatalogError as exc:
                log.warning("retention: cannot ask the catalog which recordings may go: %s", exc)
            except Exception:
                log.exception("retention: failed; trying again later")
            gevent.sleep(interval)

    def remove_expired(self) -> int:
        """Remove the local WAV and sidecar of this controller's recordings verified in the bucket more than
        delete_local_after ago. Only when the sidecar beside the file still says the same object was verified."""
        before = iso(datetime.fromtimestamp(self.wall_clock() - self.delete_local_after, timezone.utc))
        removed = 0
        for row in self.db(self.store.local_expired, self.controller_id, before):
            wav = own_recording(self.directory, row["local_path"])
            if wav is None:
                log.warning("retention: %s is not a recording in %s; not removed", row["local_path"], self.directory)
                continue
            sidecar_path = wav.with_suffix(SIDECAR_SUFFIX)
            sidecar = read_json(sidecar_path)
            if wav.exists() and (sidecar is None or sidecar.get("upload_state") != UPLOAD_VERIFIED
                                 or sidecar.get("sha256") != row["sha256"] or part_path_for(wav).exists()
                                 or wav.stat().st_size != sidecar.get("object_size")):
                continue  # changed since (a call continued it): its own upload comes first
            if any(job["wav"] == str(wav) for job in self.queue.jobs(UPLOAD)):
                continue
            for path in (wav, sidecar_path):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            log.info("retention: removed %s (verified at %s as %s)", wav, row["uploaded_at"], row["object_url"])
            LOCAL_REMOVED.inc()
            self._submit_row(row | {"local_path": None, "revision": new_revision(), "updated_at": iso_now()})
            removed += 1
        return removed

    # ---- what /healthz and doctor say ------------------------------------------------------------------------

    def health(self) -> tuple[list[str], dict[str, Any]]:
        """(reasons the controller is unhealthy, the catalog's and the bucket's state for the body)."""
        reasons = []
        body: dict[str, Any] = {}
        if self.store is not None:
            waiting = self.queue.waiting(CATALOG)
            body["catalog"] = {"url": self.catalog_shown, "ok": self.catalog_error is None, "error": self.catalog_error,
                               "writes_waiting": waiting}
            if self.catalog_error is not None:
                reasons.append(f"the catalog {self.catalog_shown} cannot be written ({self.catalog_error}); "
                               f"{waiting} writes wait on disk")
        if self.bucket is not None:
            waiting = self.queue.waiting(UPLOAD)
            error = self.storage_error
            body["storage"] = {"bucket": self.bucket.shown, "ok": error is None,
                               "refused": bool(error and error.refused), "error": str(error) if error else None,
                               "uploads_waiting": waiting}
            if error is not None:
                what = "refuses uploads" if error.refused else "cannot be reached"
                reasons.append(f"the bucket {self.bucket.shown} {what}: {error}; {waiting} uploads wait on disk")
        return reasons, body


def finished_on_disk(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished recording under the directory: a .wav whose sidecar says how it ended (blocking)."""
    found = []
    for folder, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the queues
        present = set(names)
        for name in sorted(names):
            if not name.endswith(".wav") or name[:-4] + SIDECAR_SUFFIX not in present:
                continue
            wav = Path(folder, name)
            if part_path_for(wav).exists():
                continue
            sidecar = read_json(wav.with_suffix(SIDECAR_SUFFIX))
            if sidecar is not None and sidecar.get("close_reason") and sidecar.get("uuid"):
                found.append((wav, sidecar))
    return found


# ---- the doctor's steps (ops/doctor.py calls them; each returns ops.chain.Step) ----------------------------------

def doctor_steps(config) -> list:
    """``catalog`` (when catalog.url is set): the database can be reached and its schema is current; ``bucket`` (with
    storage.upload): a test object written, read back and deleted. Nothing is queued or changed besides the test
    object (and a schema created where there was none)."""
    from .ops.chain import Step

    steps = []
    if config.catalog.enabled and config.catalog.url is not None:  # the default SQLite file: the directory's steps
        url = catalog_url(config)
        store = open_store(url)
        try:
            version = store.migrate()
            count = store.count()
            steps.append(Step("catalog", True, f"{shown_url(url)}: schema version {version}, {count} recordings"))
        except CatalogError as exc:
            steps.append(Step("catalog", False, f"{shown_url(url)}: {exc}",
                              "check catalog.url (host, port, database, user and password) and that the database "
                              "server runs and lets this host in"))
        finally:
            store.close()
    if config.storage.upload is not None:
        bucket = Bucket(config.storage.upload)
        try:
            steps.append(Step("bucket", True, bucket.probe()))
        except StorageError as exc:
            what, _, fix = str(exc).partition("; ")
            steps.append(Step("bucket", False, what, fix or "check storage.upload.url, endpoint_url and that the "
                              "server runs"))
    return steps
