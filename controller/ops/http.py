"""The controller's HTTP listener (metrics.listen_host:listen_port, 127.0.0.1 by default): what the operator's
tools ask. A small WSGI app on gevent.pywsgi, in the controller's process:

    GET  /healthz        200 while everything a call needs works, else 503; the reasons as JSON either way
    GET  /metrics        Prometheus text (prometheus_client)
    GET  /calls          the live calls as JSON
    POST /doctor/chain   the doctor's end-to-end test call, run here when the controller holds the recorder's port

The answers are computed by plain functions of the controller's state (``health``, ``live_calls``), so they
are tested without HTTP as well as through it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid as uuid_module
from typing import Any, Callable

from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("controller.http")

JSON = "application/json"


def directory_problem(directory: os.PathLike | str, min_free_mb: int) -> str | None:
    """Why recordings cannot be written to ``directory`` now (not writable, or too little free space), or None."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fsctl-probe-"):
            pass
        st = os.statvfs(directory)
    except OSError as exc:
        return f"the recordings directory {directory} is not writable: {exc.strerror or exc}"
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    if free_mb < min_free_mb:
        return f"the recordings directory {directory} has {free_mb} MB free, below the floor of {min_free_mb} MB"
    return None


def health(controller) -> dict[str, Any]:
    """Healthy only while the Event Socket is connected and subscribed, the recorder listens, and recordings can
    be written with free space above the floor."""
    reasons = []
    esl = controller.esl
    if not esl.connected_event.is_set():
        reasons.append(f"the Event Socket to {esl.host}:{esl.port} is not connected and subscribed"
                       + (f" ({esl.last_error})" if esl.last_error else ""))
    reasons += controller.recorder.health()  # listening, and each of its loops alive
    rec = controller.config.recorder
    problem = directory_problem(rec.directory, rec.min_free_mb)
    if problem:
        reasons.append(problem)
    return {"healthy": not reasons, "reasons": reasons,
            "esl": {"host": esl.host, "port": esl.port, "connected": esl.connected_event.is_set()},
            "recorder": {"listening": controller.recorder.port is not None, "port": controller.recorder.port,
                         "public_url": controller.public_url, "directory": str(rec.directory)},
            "calls": len(controller.calls.calls)}


def live_calls(controller) -> list[dict[str, Any]]:
    """The calls the controller streams now, with what their recording holds so far."""
    stats = controller.recorder.live_stats()
    now = time.monotonic()
    calls = []
    for key, call in controller.calls.calls.items():
        recording = stats.get(key, {})
        calls.append({
            "uuid": key, "caller": call.info.caller_number, "destination": call.info.destination,
            "rule": call.rule.name, "mix": call.rule.mix, "rate": call.rule.rate, "phase": call.phase.value,
            "answered_s": round(now - call.answered_at, 3), "seconds": recording.get("seconds", 0.0),
            "bytes": recording.get("bytes", 0), "last_frame_age_s": recording.get("last_frame_age_s"),
            "connections": recording.get("connections", 0), "gaps": recording.get("gaps", 0),
            "gap_seconds": recording.get("gap_seconds", 0.0), "restarts": call.restarts,
        })
    return calls


class HttpListener:
    """Serves the endpoints above for one controller."""

    def __init__(self, controller, *, chain_test: Callable[[], dict] | None = None) -> None:
        self.controller = controller
        self.chain_test = chain_test
        self._server: WSGIServer | None = None

    def start(self, host: str, port: int) -> int:
        http_log = logging.getLogger("controller.http.access")
        self._server = WSGIServer((host, port), self._app, log=http_log, error_log=log)
        self._server.start()
        return self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    def _app(self, environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        try:
            if path == "/metrics" and method == "GET":
                return _reply(start_response, "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            if path == "/healthz" and method == "GET":
                state = health(self.controller)
                return _json(start_response, "200 OK" if state["healthy"] else "503 Service Unavailable", state)
            if path == "/calls" and method == "GET":
                return _json(start_response, "200 OK", {"calls": live_calls(self.controller)})
            if path == "/doctor/chain" and method == "POST" and self.chain_test is not None:
                return _json(start_response, "200 OK", self.chain_test())
            if path in ("/metrics", "/healthz", "/calls", "/doctor/chain"):
                return _json(start_response, "405 Method Not Allowed", {"error": f"{method} {path} is not served"})
            return _json(start_response, "404 Not Found",
                         {"error": f"no such endpoint {path}", "endpoints": ["/healthz", "/metrics", "/calls"]})
        except Exception as exc:  # a bug here must not look like an unhealthy controller, nor take it down
            incident = uuid_module.uuid4().hex[:8]
            log.exception("HTTP %s %s failed (incident %s)", method, path, incident)
            return _json(start_response, "500 Internal Server Error",
                         {"error": f"{type(exc).__name__}; see the log, incident {incident}"})


def _json(start_response, status: str, body: Any):
    return _reply(start_response, status, JSON, (json.dumps(body, indent=1) + "\n").encode("utf-8"))


def _reply(start_response, status: str, content_type: str, body: bytes):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]
