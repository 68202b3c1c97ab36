"""``fs-stream-controller doctor -c CONFIG``: the troubleshooting list, run for the user against the real switch.

Each step prints one line as soon as it is decided::

    ok   <step>: <what was found>
    FAIL <step>: <what is wrong>; <what to do>
    skip <step>: <why> (it needs a step that failed)

and the exit status is 0 only when every step passed. The steps, in order:

1. ``event socket``: connect to esl.host:port and authenticate (refused, ACL, password, not an Event Socket
   each have their own message; the password itself is never printed).
2. ``freeswitch`` (``api version``) and ``mod_audio_stream`` (``module_exists`` and ``show api
   uuid_audio_stream``).
3. ``recorder address``: recorder.listen_host:listen_port is free for the recorder, or the running controller
   holds it (asked through its HTTP listener's ``GET /healthz``, with the API token when http.token is set).
4. the chain, end to end, per stream format of the enabled rules (``controller/ops/chain.py``): a test call made
   by the switch, streamed to the recorder, measured, ended and removed. With the port free the doctor runs its
   own recorder there; with the controller holding it, the controller runs the test (``POST /doctor/chain`` with
   ``{"seconds": ...}`` and the API token from http.token: the same ``${...}`` as the controller's).
5. ``recordings directory`` (created if missing, a file written and removed) and ``free space`` (above
   recorder.min_free_mb).
6. ``catalog`` (when catalog.url is set: reached, its schema current) and ``bucket`` (with storage.upload: a test
   object written, read back and deleted): ``archive.doctor_steps``.

The doctor's own recorder writes its test recordings to a temporary directory, not recorder.directory: starting a
recorder on the real directory would repair and take over what a stopped controller left there for its next
start (``.part`` files, the list of recordings to continue), and the directory has its own step.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable

from ..esl.client import (AccessDenied, AuthenticationError, CommandError, CommandTimeout, ConnectError,
                          EventSocketClient)
from ..recorder.recording import RecordingRegistry
from ..recorder.door import tls_context
from ..recorder.server import RecorderServer
from ..archive import doctor_steps
from . import chain, status
from .chain import Step
from .disk import probe_directory

HTTP_TIMEOUT_S = 3.0
# The controller runs the chain test itself: per format the measuring window plus the waits around it.
CHAIN_HTTP_EXTRA_S = 30.0
DEFAULT_MIN_FREE_MB = 500

LOAD_FIX = (
    'at fs_cli: load mod_audio_stream, and add <load module="mod_audio_stream"/> to modules.conf.xml '
    "(config/freeswitch/autoload_configs/modules.conf.xml.snippet) so it loads at start; if the load fails, "
    "run ldd on mod_audio_stream.so (in the directory fs_cli -x 'global_getvar mod_dir' names) and install what "
    "it reports \"not found\": the module needs libfreeswitch, libspeexdsp, libevent with libevent_pthreads (its "
    "libwsc WebSocket client), zlib, and for wss:// libevent_openssl and OpenSSL (libssl, libcrypto)"
)


def main(config, args) -> int:
    # The report is the step lines: log records (a refused stream, a dropped connection) would only clutter it.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    steps = Doctor(config, lambda step: print(step.line, flush=True)).run()
    return 0 if steps and all(step.ok for step in steps) else 1


class Doctor:
    def __init__(self, config, emit: Callable[[Step], None], *, seconds: float = chain.DEFAULT_SECONDS) -> None:
        self.config = config
        self.emit = emit
        self.seconds = seconds
        self.steps: list[Step] = []
        self.esl: EventSocketClient | None = None

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        self.emit(step)
        return step

    def run(self) -> list[Step]:
        try:
            self.esl = self._event_socket()
            module_ok = self._switch()
            holder = self._recorder_address()
            self._chain(module_ok, holder)
            self._directory()
            for step in doctor_steps(self.config):  # catalog.url and storage.upload, when set (issue #18)
                self.add(step)
        finally:
            if self.esl is not None:
                self.esl.close(timeout=2.0)
        return self.steps

    # ---- 1. the Event Socket ----

    def _event_socket(self) -> EventSocketClient | None:
        esl = self.config.esl
        address = f"{esl.host}:{esl.port}"
        client = EventSocketClient(esl.host, esl.port, esl.password, connect_timeout=esl.connect_timeout_s,
                                   command_timeout=esl.command_timeout_s, liveness_timeout=None)
        name = "event socket"
        try:
            client.connect()
            client.subscribe()
            self.add(Step(name, True, f"connected to {address}, authenticated and subscribed"))
            return client
        except AccessDenied:
            me = _local_address(esl.host, esl.port)
            self.add(Step(name, False, f"{address} refused this host by ACL (text/rude-rejection)",
                          f"add {me} to the ACL named by apply-inbound-acl in event_socket.conf.xml "
                          f"(lists live in acl.conf.xml), then reloadacl at fs_cli"))
        except AuthenticationError as exc:
            said = re.search(r"reply '([^']*)'", str(exc))  # the reply to auth, never the password
            self.add(Step(name, False, f"{address} refused the password ({said.group(1) if said else 'auth refused'})",
                          "check esl.password against the password in event_socket.conf.xml"))
        except ConnectError as exc:
            text = str(exc)
            if "connection refused" in text:
                self.add(Step(name, False, f"connection refused by {address}: mod_event_socket is not listening there",
                              "check listen-ip and listen-port in event_socket.conf.xml against esl.host and "
                              "esl.port, and that FreeSWITCH runs"))
            elif "sent no auth/request" in text:
                self.add(Step(name, False, f"{address} accepted the connection but sent no auth/request within "
                                           f"{esl.connect_timeout_s:g} s",
                              "is it an Event Socket? check esl.port against listen-port in event_socket.conf.xml"))
            else:
                self.add(Step(name, False, text, "check esl.host and esl.port, and the network to the switch"))
        except (CommandError, CommandTimeout, OSError) as exc:
            self.add(Step(name, False, f"logged in to {address}, but the event subscription failed: {exc}",
                          "see the FreeSWITCH log"))
        client.close(timeout=1.0)  # whatever it got to: nothing stays open, nothing reconnects
        return None

    # ---- 2. the switch and the module ----

    def _switch(self) -> bool:
        if self.esl is None:
            self.add(Step("freeswitch", None, "needs the Event Socket"))
            self.add(Step("mod_audio_stream", None, "needs the Event Socket"))
            return False
        try:
            version = self.esl.api("version").strip()
        except Exception as exc:  # timeout or connection lost: the switch did not answer
            version = f"-ERR no answer: {exc}"
        if version.startswith("-"):
            self.add(Step("freeswitch", False, f"api version answered {version}", "see the FreeSWITCH log"))
        else:
            self.add(Step("freeswitch", True, version.replace("FreeSWITCH Version ", "FreeSWITCH ", 1)))
        try:
            exists = self.esl.api("module_exists mod_audio_stream").strip()
            listing = self.esl.api("show api uuid_audio_stream")
        except Exception as exc:
            self.add(Step("mod_audio_stream", False, f"the switch did not answer: {exc}", "see the FreeSWITCH log"))
            return False
        registered = [row for row in _show_rows(listing) if row[0] == "uuid_audio_stream"]
        if exists == "true" and registered:
            self.add(Step("mod_audio_stream", True, f"loaded: uuid_audio_stream from {registered[0][-1]}"))
            return True
        if exists == "true":
            self.add(Step("mod_audio_stream", False, "module_exists says true, but no uuid_audio_stream api is "
                                                     f"registered (show api: {_total(listing)})",
                          "reload it at fs_cli (unload mod_audio_stream, load mod_audio_stream) and read the log"))
            return False
        self.add(Step("mod_audio_stream", False, f"not loaded (module_exists: {exists or 'no answer'}; "
                                                 f"show api uuid_audio_stream: {_total(listing)})", LOAD_FIX))
        return False

    # ---- 3. the recorder's address ----

    def _recorder_address(self) -> str | None:
        """"free" (the doctor may listen there), "controller" (the running controller does), or None."""
        rec = self.config.recorder
        name = "recorder address"
        if rec.listen_port == 0:
            self.add(Step(name, True, f"listen_port 0: the recorder takes a free port on {rec.listen_host}"))
            return "free"
        address = f"{rec.listen_host}:{rec.listen_port}"
        problem = _bind_problem(rec.listen_host, rec.listen_port)
        if problem is None:
            self.add(Step(name, True, f"{address} is free for the recorder"))
            return "free"
        if problem.errno == errno.EADDRINUSE:
            health = self._controller_health()
            if health is not None:
                reasons = "; ".join(str(reason) for reason in health.get("reasons") or [])
                state = "healthy" if health.get("healthy") else f"unhealthy: {reasons}" if reasons else "unhealthy"
                self.add(Step(name, True, f"{address} is held by the running controller ({state})"))
                return "controller"
            base = status.base_url(self.config)
            self.add(Step(name, False, f"port {rec.listen_port} on {rec.listen_host} is in use by another program "
                                       f"(no controller answers {base + '/healthz' if base else 'on a metrics port'})",
                          f"stop that program (ss -ltnp 'sport = :{rec.listen_port}' names it), or give the "
                          f"recorder another recorder.listen_port (and public_url)"))
            return None
        if problem.errno == errno.EADDRNOTAVAIL:
            self.add(Step(name, False, f"{rec.listen_host} is not an address of this host",
                          "set recorder.listen_host to one of this host's addresses (or 0.0.0.0 with public_url)"))
        elif problem.errno in (errno.EACCES, errno.EPERM):
            self.add(Step(name, False, f"not allowed to listen on {address}",
                          "use a recorder.listen_port above 1023, or run with the privilege to bind it"))
        else:
            self.add(Step(name, False, f"cannot listen on {address}: {problem.strerror or problem}",
                          "check recorder.listen_host and listen_port"))
        return None

    def _controller_health(self) -> dict | None:
        """The running controller's /healthz answer (200 or 503, JSON with "healthy"), or None."""
        if status.base_url(self.config) is None:
            return None
        try:
            code, document = status.ask(self.config, "/healthz", timeout=HTTP_TIMEOUT_S)
        except (OSError, ValueError):
            return None
        if code in (401, 403) and isinstance(document, dict):  # a controller, which wants the token
            reason = f"it refused /healthz ({code}): {document.get('error')}"
            return {"healthy": False, "reasons": [reason]}
        return document if isinstance(document, dict) and "healthy" in document else None

    # ---- 4. the chain ----

    def _chain(self, module_ok: bool, holder: str | None) -> None:
        why = ("needs the Event Socket" if self.esl is None else "needs mod_audio_stream" if not module_ok
               else "needs the recorder address" if holder is None else None)
        if why:
            self.add(Step("chain", None, why))
            return
        formats = chain.formats_of(self.config.rules)
        if not formats:  # nothing to test, so no recorder is started (and the controller is not asked)
            self.add(Step("chain", None, "no enabled rule: nothing to stream"))
            return
        if holder == "controller":
            self._chain_in_controller(formats)
            return
        rec = self.config.recorder
        directory = tempfile.mkdtemp(prefix="fsctl-doctor-")
        registry = RecordingRegistry()
        # settle_s=0: audio that arrives late is written at once (with silence before it) rather than held back
        # while the recorder decides, so what arrived is counted as it arrives.
        try:
            context = tls_context(rec.tls.certfile, rec.tls.keyfile) if rec.tls else None
        except ValueError as exc:
            self.add(Step("chain", False, f"recorder.tls: {exc}", "point recorder.tls at a PEM certificate and its "
                                                                   "unencrypted key"))
            return
        recorder = RecorderServer(registry, directory, settle_s=0.0, ssl_context=context)
        try:
            try:
                port = recorder.start(rec.listen_host, rec.listen_port)
            except OSError as exc:
                self.add(Step("chain", False, f"the recorder cannot listen on {rec.listen_host}:{rec.listen_port}: "
                                              f"{exc.strerror or exc}", "check recorder.listen_host and listen_port"))
                return
            public_url = rec.public_url or f"{'wss' if rec.tls else 'ws'}://{rec.listen_host}:{port}"
            try:
                chain.run_for_rules(self.esl, recorder, registry, public_url, self.config.rules,
                                    seconds=self.seconds, token=rec.token, on_step=self.add)
            except Exception as exc:  # a bug, not the switch: say so, and still check the directory
                self.add(Step("chain", False, f"the test stopped unexpectedly: {type(exc).__name__}: {exc}",
                              "report it with the output of this run"))
        finally:
            recorder.stop(timeout=2.0)
            shutil.rmtree(directory, ignore_errors=True)

    def _chain_in_controller(self, formats: list[chain.Format]) -> None:
        url = status.base_url(self.config) + "/doctor/chain"
        timeout = sum(chain.measuring_window_s(f, self.seconds) + CHAIN_HTTP_EXTRA_S for f in formats)
        try:
            code, answer = status.ask(self.config, "/doctor/chain", body={"seconds": self.seconds}, timeout=timeout)
            steps = chain.from_json(answer) if code == 200 else []
        except (OSError, ValueError) as exc:
            self.add(Step("chain", False, f"asking the running controller ({url}) failed: {exc}",
                          "see the controller's log"))
            return
        said = answer.get("error") if isinstance(answer, dict) else None
        if code in (404, 405):
            self.add(Step("chain", None, "the running controller does not run the test call "
                                         f"(POST {url}: {code}): stop the controller, or update it, to test "
                                         "the chain"))
        elif code in (401, 403):
            fix = (f"give {self.config.source} the running controller's http.token (the same ${{...}} variable, "
                   "set in this shell too)" if self.config.http.token or code == 401 else
                   "set http.token in the controller's configuration (and here), then restart it")
            self.add(Step("chain", False, f"the running controller refused the test call (POST {url}: {code}: "
                                          f"{said})", fix))
        elif code in (409, 503):
            self.add(Step("chain", False, f"the running controller did not run the test call ({code}: {said})",
                          "try again when it says it may"))
        elif code != 200:
            self.add(Step("chain", False, f"the running controller answered POST {url} with {code}"
                                          + (f": {said}" if said else ""), "see the controller's log"))
        for step in steps:
            self.add(step)

    # ---- 5. the recordings directory ----

    def _directory(self) -> None:
        rec = self.config.recorder
        state = probe_directory(rec.directory)
        directory, exc = state.directory, state.error
        if exc is not None:
            self.add(Step("recordings directory", False, f"cannot write in {directory}: {exc.strerror or exc}",
                          _directory_fix(exc, directory)))
        else:
            self.add(Step("recordings directory", True,
                          f"{directory} is writable" + ("" if state.existed else " (created)")))
        floor = getattr(rec, "min_free_mb", DEFAULT_MIN_FREE_MB)
        free_mb = state.free_mb
        if free_mb is None:
            self.add(Step("free space", None, "needs the recordings directory"))
            return
        if free_mb < floor:
            self.add(Step("free space", False, f"{free_mb:,} MB free in {directory}, below recorder.min_free_mb "
                                               f"({floor:,} MB)",
                          "free space there (move old recordings elsewhere), or lower recorder.min_free_mb"))
        else:
            self.add(Step("free space", True, f"{free_mb:,} MB free in {directory} (recorder.min_free_mb: {floor:,})"))


def _local_address(host: str, port: int) -> str:
    """This host's address towards the switch (what its ACL sees); no packet is sent."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return probe.getsockname()[0]
    except OSError:
        return "this host's address"


def _bind_problem(host: str, port: int) -> OSError | None:
    """Why a listener cannot bind host:port (as the recorder binds it), or None."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        return exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gevent's servers do
        try:
            probe.bind(address)
        except OSError as exc:
            return exc
    return None


def _show_rows(listing: str) -> list[list[str]]:
    """The rows of a `show` listing in its text form (title line, rows, blank line, "N total.")."""
    lines = listing.split("\n")
    rows = []
    for line in lines[1:]:
        if not line:
            break
        rows.append([line.split(",", 1)[0], line.rsplit(",", 1)[-1]])  # name ... ikey (syntax may hold commas)
    return rows if lines and lines[0].startswith("name,") else []


def _total(listing: str) -> str:
    found = re.search(r"(\d+) total\.", listing)
    return f"{found.group(1)} total" if found else listing.strip()[:80] or "no answer"


def _directory_fix(exc: OSError, directory: Path) -> str:
    if exc.errno == errno.ENOTDIR:
        return f"part of {directory} is a file, not a directory: set recorder.directory to a directory's path"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"the user running this (uid {os.getuid()}) may not write there: give the user the controller "
                f"runs as write access (chown/chmod), or choose another recorder.directory")
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only: remount it read-write, or choose another recorder.directory"
    if exc.errno == errno.ENOSPC:
        return "the disk is full: free space there"
    return "check recorder.directory"
