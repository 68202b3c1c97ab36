"""The finished-recording hook: each finished recording handed on, by an HTTP POST of its sidecar JSON and/or a
command run with the WAV's and the sidecar's paths.

A delivery is a small JSON file in ``<recordings>/.hooks/`` until it has worked, so a restart (or a crash)
loses none: the next process picks the files up. Each is tried up to the hook's ``max_attempts`` times, 1 s
apart doubling to 300 s; one that never works is moved to ``.hooks/failed/`` and logged. Deliveries run in
greenlets of their own, a few at a time: a slow or failing hook never holds up a call or touches a recording.

A job names its rule, not the hook itself, so no header value (an API key, say) is ever written to disk: the
hook is looked up in the configuration in force when the delivery is attempted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuid_module
from pathlib import Path
from typing import Callable

import gevent
from gevent.event import Event
from gevent.pool import Pool

from ..esl.backoff import capped_exponential
from ..recorder.sidecar import write_json_atomically
from ..recorder.wav import RecordingError

log = logging.getLogger("controller.hook")

QUEUE_DIR = ".hooks"
FAILED_DIR = "failed"
POST, COMMAND = "post", "command"
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 300.0
CONCURRENCY = 4
OUTPUT_SHOWN = 500  # characters of a failed command's output kept for the log


class HookQueue:
    """Deliveries waiting on disk, and the greenlets that make them."""

    def __init__(self, directory: os.PathLike | str, hook_for: Callable[[str], object | None], *,
                 wall_clock: Callable[[], float] = time.time,
                 on_change: Callable[[int], None] | None = None,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        """hook_for(rule_name) -> the HookConfig in force for that rule's recordings, or None."""
        self.directory = Path(directory) / QUEUE_DIR
        self.hook_for = hook_for
        self.wall_clock = wall_clock
        self.on_change = on_change  # told the number of deliveries waiting
        self.on_outcome = on_outcome  # told (kind, "delivered" | "retry" | "gave_up") for each attempt
        self._wakeup = Event()
        self._pool = Pool(CONCURRENCY)
        self._busy: set[str] = set()
        self._worker: gevent.Greenlet | None = None

    # ---- in -------------------------------------------------------------------------------------------

    def submit(self, rule: str, wav: Path, sidecar: Path) -> None:
        """Queue the deliveries the rule's hook asks for (none if it has no hook). Never raises."""
        hook = self.hook_for(rule)
        if hook is None:
            return
        kinds = [kind for kind, wanted in ((POST, hook.url), (COMMAND, hook.command)) if wanted]
        for kind in kinds:
            job = {"id": uuid_module.uuid4().hex, "kind": kind, "rule": rule, "wav": str(wav),
                   "sidecar": str(sidecar), "attempts": 0, "next_at": 0.0, "errors": []}
            try:
                self._save(job)
            except RecordingError as exc:  # a full disk: the recording matters more; say so and go on
                log.error("hook: cannot queue the %s for %s: %s", kind, wav, exc)
                continue
        self._changed()
        self._wakeup.set()

    # ---- running --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._changed()
        self._worker = gevent.spawn(self._run)
        self._wakeup.set()  # deliveries an earlier process left

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.kill(block=False)
            self._worker = None
        self._pool.kill(block=False)  # interrupted deliveries stay on disk for the next start

    def pending(self) -> list[dict]:
        jobs = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                jobs.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("hook: ignoring unreadable queue file %s: %s", path, exc)
        return jobs

    def _run(self) -> None:
        while True:
            now = self.wall_clock()
            waits = []
            for job in self.pending():
                if job["id"] in self._busy:
                    continue
                if job["next_at"] <= now:
                    self._busy.add(job["id"])
                    self._pool.spawn(self._attempt, job)
                else:
                    waits.append(job["next_at"] - now)
            self._wakeup.clear()
            self._wakeup.wait(min(waits, default=None))

    def _attempt(self, job: dict) -> None:
        try:
            hook = self.hook_for(job["rule"])
            if hook is None:
                log.warning("hook: rule %r has no hook any more; dropping the %s for %s", job["rule"], job["kind"],
                            job["wav"])
                self._remove(job)
                return
            error = self._deliver(job, hook)
            job["attempts"] += 1
            if error is None:
                log.info("hook: %s for %s delivered (attempt %d)", job["kind"], job["wav"], job["attempts"])
                self._remove(job)
                self._outcome(job["kind"], "delivered")
                return
            job["errors"] = (job["errors"] + [error])[-5:]
            if job["attempts"] >= hook.max_attempts:
                log.error("hook: gave up the %s for %s after %d attempts: %s; kept in %s", job["kind"], job["wav"],
                          job["attempts"], error, self.directory / FAILED_DIR)
                self._give_up(job)
                self._outcome(job["kind"], "gave_up")
                return
            delay = capped_exponential(RETRY_INITIAL_S, 2.0, RETRY_MAX_S, job["attempts"])
            job["next_at"] = self.wall_clock() + delay
            log.warning("hook: %s for %s failed (attempt %d of %d): %s; again in %.0f s", job["kind"], job["wav"],
                        job["attempts"], hook.max_attempts, error, delay)
            self._save(job)
            self._outcome(job["kind"], "retry")
        except Exception:  # a bug here must not end deliveries for good
            log.exception("hook: the %s for %s failed unexpectedly; it stays queued", job["kind"], job["wav"])
        finally:
            self._busy.discard(job["id"])
            self._changed()
            self._wakeup.set()

    # ---- one delivery ---------------------------------------------------------------------------------

    def _deliver(self, job: dict, hook) -> str | None:
        """None when it worked, else why not."""
        if job["kind"] == POST:
            return post_sidecar(hook.url, dict(hook.headers), Path(job["sidecar"]), hook.timeout_s)
        return run_command(list(hook.command), Path(job["wav"]), Path(job["sidecar"]), hook.timeout_s)

    # ---- the files ------------------------------------------------------------------------------------

    def _path(self, job: dict) -> Path:
        return self.directory / f"{job['id']}.json"

    def _save(self, job: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self._path(job), job)

    def _remove(self, job: dict) -> None:
        try:
            self._path(job).unlink()
        except FileNotFoundError:
            pass

    def _give_up(self, job: dict) -> None:
        failed = self.directory / FAILED_DIR
        failed.mkdir(exist_ok=True)
        write_json_atomically(failed / f"{job['id']}.json", job)
        self._remove(job)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(list(self.directory.glob("*.json"))) if self.directory.is_dir() else 0)

    def _outcome(self, kind: str, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(kind, outcome)


def shown(url: str) -> str:
    """A URL as logs and the queue may show it: no user, password or query (where webhooks keep their keys)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def post_sidecar(url: str, headers: dict[str, str], sidecar: Path, timeout_s: float) -> str | None:
    """POST the sidecar's JSON; None on a 2xx answer, else what went wrong (never a header's value, nor the
    URL's credentials or query)."""
    try:
        body = sidecar.read_bytes()
    except OSError as exc:
        return f"cannot read {sidecar}: {exc.strerror or exc}"
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(65536)
            return None
    except urllib.error.HTTPError as exc:
        return f"{shown(url)} answered {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:  # refused, timed out, unreachable, a bad answer
        return f"POST to {shown(url)} failed: {getattr(exc, 'reason', None) or exc}"


def run_command(argv: list[str], wav: Path, sidecar: Path, timeout_s: float) -> str | None:
    """Run the command with the WAV's and the sidecar's paths appended; None when it exits 0."""
    try:
        done = subprocess.run(argv + [str(wav), str(sidecar)], capture_output=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not finish within {timeout_s:g} s"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"
    if done.returncode == 0:
        return None
    output = (done.stderr or done.stdout or b"").decode("utf-8", "replace").strip()[-OUTPUT_SHOWN:]
    return f"{argv[0]} exited with {done.returncode}" + (f": {output}" if output else "")
