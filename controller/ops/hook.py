"""The on-disk job queue, and the finished-recording hook that is its first user: each finished recording handed
on, by an HTTP POST of its sidecar JSON and/or a command run with the WAV's and the sidecar's paths.

A job is a small JSON file in its queue's directory (the hook's: ``<recordings>/.hooks/``) until it has worked,
so a restart (or a crash) loses none: the next process picks the files up. Jobs are kept in memory too, in a
heap per kind by when they are due, so a backlog of thousands costs nothing per wake-up. Each kind has its own
handler, its own few greenlets and its own retry policy: a hook delivery is tried up to the hook's
``max_attempts`` times, 1 s apart doubling to 300 s, then moved to ``failed/`` and logged; other kinds (the
catalog's writes, uploads: controller/archive.py) may retry for as long as it takes. A slow or failing job never
holds up a call or touches a recording.

A hook job names its rule, not the hook itself, so no header value (an API key, say) is ever written to disk:
the hook is looked up in the configuration in force when the delivery is attempted.
"""

from __future__ import annotations

import heapq
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


class Retry:
    """A handler's answer: not done; try again (after ``after_s``, or the kind's backoff)."""

    def __init__(self, error: str, after_s: float | None = None, *, counts: bool = True) -> None:
        self.error, self.after_s = error, after_s
        self.counts = counts  # False: a wait (e.g. for the file to be final), not a failed attempt


class Drop:
    """A handler's answer: the job is no longer wanted (logged, removed)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Kind:
    def __init__(self, handler: Callable[[dict], object], concurrency: int, initial_s: float, max_s: float,
                 max_attempts: Callable[[dict], int | None] | None, describe: Callable[[dict], str]) -> None:
        self.handler, self.initial_s, self.max_s = handler, initial_s, max_s
        self.max_attempts, self.describe = max_attempts, describe
        self.concurrency = concurrency
        self.quiet = False
        self.pool = Pool(concurrency)
        self.heap: list[tuple[float, int, str]] = []
        self.busy: set[str] = set()


class JobQueue:
    """Jobs waiting on disk in one directory, and the greenlets that run them, per kind."""

    def __init__(self, directory: os.PathLike | str, *, wall_clock: Callable[[], float] = time.time,
                 name: str = "jobs") -> None:
        self.directory = Path(directory)
        self.wall_clock = wall_clock
        self.name = name  # in log lines
        self._jobs: dict[str, dict] = {}
        self._kinds: dict[str, _Kind] = {}
        self._seq = 0
        self._wakeup = Event()
        self._worker: gevent.Greenlet | None = None
        self._loaded = False

    def register(self, kind: str, handler: Callable[[dict], object], *, concurrency: int = 1,
                 initial_s: float = RETRY_INITIAL_S, max_s: float = RETRY_MAX_S,
                 max_attempts: Callable[[dict], int | None] | None = None,
                 describe: Callable[[dict], str] | None = None, quiet: bool = False) -> None:
        """handler(job) -> None (done), Retry, Drop, or an error text (retried). It may change the job and
        ``save`` it to keep its progress. ``max_attempts(job)``: None retries for as long as it takes. quiet: each
        failed attempt is logged at DEBUG only (the handler says once when what it needs is down, and when back)."""
        self._kinds[kind] = _Kind(handler, concurrency, initial_s, max_s, max_attempts,
                                  describe or (lambda job: f"{job['kind']} {job['id']}"))
        self._kinds[kind].quiet = quiet
        for job in self._jobs.values():
            if job["kind"] == kind:
                self._push(job)

    # ---- in -------------------------------------------------------------------------------------------

    def submit_job(self, kind: str, fields: dict, job_id: str | None = None) -> dict | None:
        """Queue one job (written to disk first); None when it cannot be written (logged). Never raises. A job_id
        already waiting is replaced (its attempts start again)."""
        if job_id is not None and any(job_id in k.busy for k in self._kinds.values()):
            job_id = None  # the running one removes its file when done: this one needs a file of its own
        job = {"id": job_id or uuid_module.uuid4().hex, "kind": kind, "attempts": 0, "next_at": 0.0, "errors": [],
               **fields}
        try:
            self._save(job)
        except RecordingError as exc:  # a full disk: the recording matters more; say so and go on
            log.error("%s: cannot queue the %s: %s", self.name, kind, exc)
            return None
        self._jobs[job["id"]] = job
        self._push(job)
        self._changed()
        self._wakeup.set()
        return job

    def save(self, job: dict) -> None:
        """Keep a running job's progress on disk (a handler calls it)."""
        self._save(job)

    def jobs(self, kind: str | None = None) -> list[dict]:
        """The jobs waiting (in memory, as on disk), oldest first."""
        return [job for job in self._jobs.values() if kind is None or job["kind"] == kind]

    def waiting(self, kind: str | None = None) -> int:
        return sum(1 for job in self._jobs.values() if kind is None or job["kind"] == kind)

    def wake(self, kind: str | None = None) -> None:
        """Run every waiting job (of this kind) now, e.g. the database is back: their waits are cut short."""
        now = self.wall_clock()
        for job in self._jobs.values():
            if (kind is None or job["kind"] == kind) and job["next_at"] > now:
                job["next_at"] = now
                self._push(job)
        self._wakeup.set()

    # ---- running --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load()
        self._changed()
        self._worker = gevent.spawn(self._run)
        self._wakeup.set()  # jobs an earlier process left

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.kill(block=False)
            self._worker = None
        for kind in self._kinds.values():
            kind.pool.kill(block=False)  # interrupted jobs stay on disk for the next start
            kind.busy.clear()

    def pending(self) -> list[dict]:
        """The jobs on disk (read from the files)."""
        jobs = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                jobs.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("%s: ignoring unreadable queue file %s: %s", self.name, path, exc)
        return jobs

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for job in self.pending():
            if not isinstance(job, dict) or not {"id", "kind", "next_at"} <= job.keys():
                continue
            job.setdefault("attempts", 0)
            job.setdefault("errors", [])
            if job["id"] not in self._jobs:
                self._jobs[job["id"]] = job
                self._push(job)

    def _kind_of(self, job: dict) -> _Kind | None:
        return self._kinds.get(job["kind"])

    def _push(self, job: dict) -> None:
        kind = self._kind_of(job)
        if kind is None:
            return  # no handler (yet): it waits on disk
        self._seq += 1
        heapq.heappush(kind.heap, (float(job["next_at"]), self._seq, job["id"]))

    def _run(self) -> None:
        while True:
            now = self.wall_clock()
            wait: float | None = None
            for kind in self._kinds.values():
                while kind.heap and len(kind.busy) < kind.concurrency:
                    due, _seq, job_id = kind.heap[0]
                    job = self._jobs.get(job_id)
                    if job is None or job_id in kind.busy or float(job["next_at"]) != due:
                        heapq.heappop(kind.heap)  # done, running, or rescheduled since: a stale entry
                        continue
                    if due > now:
                        wait = due - now if wait is None else min(wait, due - now)
                        break
                    heapq.heappop(kind.heap)
                    kind.busy.add(job_id)
                    kind.pool.spawn(self._attempt, kind, job)
            self._wakeup.clear()
            self._wakeup.wait(wait)

    def _attempt(self, kind: _Kind, job: dict) -> None:
        what = kind.describe(job)
        try:
            try:
                result = kind.handler(job)
            except Exception as exc:  # a bug or an unforeseen error: the job stays, tried again later
                log.exception("%s: %s failed unexpectedly; it stays queued", self.name, what)
                result = f"unexpected {type(exc).__name__}: {exc}"
            if result is None:
                self._remove(job)
                self._done(job, "delivered")
                return
            if isinstance(result, Drop):
                log.warning("%s: dropping %s: %s", self.name, what, result.reason)
                self._remove(job)
                self._done(job, "dropped")
                return
            retry = result if isinstance(result, Retry) else Retry(str(result))
            if retry.counts:
                job["attempts"] += 1
                job["errors"] = (job["errors"] + [retry.error])[-5:]
            limit = kind.max_attempts(job) if kind.max_attempts is not None else None
            if retry.counts and limit is not None and job["attempts"] >= limit:
                log.error("%s: gave up %s after %d attempts: %s; kept in %s", self.name, what, job["attempts"],
                          retry.error, self.directory / FAILED_DIR)
                self._give_up(job)
                self._done(job, "gave_up")
                return
            delay = retry.after_s
            if delay is None:
                delay = capped_exponential(kind.initial_s, 2.0, kind.max_s, max(1, job["attempts"]))
            job["next_at"] = self.wall_clock() + delay
            if retry.counts:
                log.log(logging.DEBUG if kind.quiet else logging.WARNING,
                        "%s: %s failed (attempt %d%s): %s; again in %.0f s", self.name, what, job["attempts"],
                        f" of {limit}" if limit is not None else "", retry.error, delay)
            self._save(job)
            self._push(job)
            self._done(job, "retry" if retry.counts else "waiting")
        except Exception:  # the queue itself must go on (a file that cannot be saved, say)
            log.exception("%s: %s: cannot update its queue file", self.name, what)
        finally:
            kind.busy.discard(job["id"])
            self._changed()
            self._wakeup.set()

    def _done(self, job: dict, outcome: str) -> None:
        """Told each attempt's outcome; subclasses count them."""

    def _changed(self) -> None:
        """Told when the number of jobs waiting may have changed."""

    # ---- the files ------------------------------------------------------------------------------------

    def _path(self, job: dict) -> Path:
        return self.directory / f"{job['id']}.json"

    def _save(self, job: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self._path(job), job)

    def _remove(self, job: dict) -> None:
        self._jobs.pop(job["id"], None)
        try:
            self._path(job).unlink()
        except FileNotFoundError:
            pass

    def _give_up(self, job: dict) -> None:
        failed = self.directory / FAILED_DIR
        failed.mkdir(exist_ok=True)
        write_json_atomically(failed / f"{job['id']}.json", job)
        self._remove(job)


class HookQueue(JobQueue):
    """The finished-recording hook's deliveries (kinds post and command), in ``<recordings>/.hooks/``."""

    def __init__(self, directory: os.PathLike | str, hook_for: Callable[[str], object | None], *,
                 wall_clock: Callable[[], float] = time.time,
                 on_change: Callable[[int], None] | None = None,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        """hook_for(rule_name) -> the HookConfig in force for that rule's recordings, or None."""
        super().__init__(Path(directory) / QUEUE_DIR, wall_clock=wall_clock, name="hook")
        self.hook_for = hook_for
        self.on_change = on_change  # told the number of deliveries waiting
        self.on_outcome = on_outcome  # told (kind, "delivered" | "retry" | "gave_up") for each attempt
        for kind in (POST, COMMAND):
            self.register(kind, self._attempt_delivery, concurrency=CONCURRENCY, max_attempts=self._max_attempts,
                          describe=lambda job: f"the {job['kind']} for {job['wav']}")

    def submit(self, rule: str, wav: Path, sidecar: Path) -> None:
        """Queue the deliveries the rule's hook asks for (none if it has no hook). Never raises."""
        hook = self.hook_for(rule)
        if hook is None:
            return
        for kind, wanted in ((POST, hook.url), (COMMAND, hook.command)):
            if wanted:
                self.submit_job(kind, {"rule": rule, "wav": str(wav), "sidecar": str(sidecar)})

    def _max_attempts(self, job: dict) -> int | None:
        hook = self.hook_for(job["rule"])
        return hook.max_attempts if hook is not None else 1

    def _attempt_delivery(self, job: dict) -> object:
        hook = self.hook_for(job["rule"])
        if hook is None:
            return Drop(f"rule {job['rule']!r} has no hook any more")
        error = self._deliver(job, hook)
        if error is None:
            log.info("hook: %s for %s delivered (attempt %d)", job["kind"], job["wav"], job["attempts"] + 1)
        return error

    def _deliver(self, job: dict, hook) -> str | None:
        """None when it worked, else why not."""
        if job["kind"] == POST:
            return post_sidecar(hook.url, dict(hook.headers), Path(job["sidecar"]), hook.timeout_s)
        return run_command(list(hook.command), Path(job["wav"]), Path(job["sidecar"]), hook.timeout_s)

    def _done(self, job: dict, outcome: str) -> None:
        if self.on_outcome is not None and outcome in ("delivered", "retry", "gave_up"):
            self.on_outcome(job["kind"], outcome)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(sum(1 for job in self._jobs.values() if job["kind"] in (POST, COMMAND)))


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
