"""The controller's HTTP listener (metrics.listen_host:listen_port, 127.0.0.1 by default): what the operator's
tools ask. A small WSGI app on gevent.pywsgi, in the controller's process:

    GET  /healthz        200 while everything a call needs works, else 503; the reasons as JSON either way
    GET  /metrics        Prometheus text (prometheus_client)
    GET  /calls          the live calls as JSON                                        (the API token)
    POST /doctor/chain   the doctor's end-to-end test call, run here when the controller
                         holds the recorder's port; one at a time, counted against
                         limits.max_streams; body {"seconds": 2} (optional)          (the API token)
    GET  /api/recordings[/<uuid>[/audio]]   the catalog (catalog/api.py); audio with Range       (the API token)
    GET  /console/...    the web console (console/): its pages, a login that gives a session
                         cookie (an ambient credential: it reads, and changes only with the
                         session's CSRF token in X-CSRF-Token), live calls as Server-Sent Events

Every request goes through one check (``guard.Guard``: Host, Origin, then the credential) before its handler;
an endpoint is registered with ``route`` and needs the token unless registered ``open=True``, so whatever is
added later (the console) is guarded the same way without asking. ``/healthz`` and ``/metrics`` are open on a
loopback listener, and elsewhere only with ``metrics.public: true``.

The answers are computed by plain functions of the controller's state (``health``, ``live_calls``), so they
are tested without HTTP as well as through it.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid as uuid_module
from dataclasses import dataclass
from typing import Any, Callable

from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..catalog import api as recordings_api
from ..console import Console
from . import chain
from .addresses import is_loopback
from .disk import probe_directory
from .guard import Guard, Refusal
from .log_limit import LogLimiter

log = logging.getLogger("controller.http")

JSON = "application/json"
MAX_BODY_BYTES = 4096  # a request body beyond this is refused (413): nothing here takes more than a few bytes


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
    problem = probe_directory(rec.directory).problem(rec.min_free_mb)
    if problem:
        reasons.append(problem)
    archive = getattr(controller, "archive", None)  # the catalog and the bucket (issue #18)
    archive_reasons, archive_state = archive.health() if archive is not None else ([], {})
    reasons += archive_reasons
    return {"healthy": not reasons, "reasons": reasons,
            "esl": {"host": esl.host, "port": esl.port, "connected": esl.connected_event.is_set()},
            "recorder": {"listening": controller.recorder.port is not None, "port": controller.recorder.port,
                         "public_url": controller.public_url, "directory": str(rec.directory)},
            "calls": len(controller.calls.calls), **archive_state}


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
            "no_audio_warning": recording.get("no_audio_warning"),
        })
    return calls


def exposure_warning(config) -> str | None:
    """What the log says at start when /healthz and /metrics answer anyone who reaches the listener."""
    http = config.metrics
    if http is None or not http.enabled or is_loopback(http.listen_host) or not http.public:
        return None
    return (f"/metrics and /healthz answer anyone who can reach {http.listen_host}:{http.listen_port} "
            f"without the API token (metrics.public: true): they show rule names, call counts and the recordings "
            f"directory; firewall the port, or set metrics.public: false")


def machine_names() -> tuple[str, ...]:
    """This machine's own name, as Host may carry it (no lookup: no DNS is asked at start)."""
    name = socket.gethostname().lower().rstrip(".")
    return (name, name.split(".", 1)[0]) if name else ()


def guard_for(config, own_names: tuple[str, ...] = ()) -> Guard:
    http = config.metrics
    return Guard(token=config.http.token, listen_host=http.listen_host if http is not None else "127.0.0.1",
                 public=http is not None and http.public, allowed_hosts=config.http.allowed_hosts,
                 own_names=own_names)


class HttpError(Exception):
    """A request this listener answers with an error: ``status`` and what the client is told."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class Request:
    def __init__(self, environ: dict) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "/")

    def body(self) -> bytes:
        """The request's body, at most MAX_BODY_BYTES (413 beyond)."""
        try:
            declared = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError("400 Bad Request", "Content-Length is not a number") from None
        if declared > MAX_BODY_BYTES:
            raise HttpError("413 Payload Too Large", f"the body is {declared} bytes; at most {MAX_BODY_BYTES}")
        data = self.environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise HttpError("413 Payload Too Large", f"the body is over {MAX_BODY_BYTES} bytes")
        return data

    def json(self) -> Any:
        """The body as JSON (None when there is none); it must be sent as application/json."""
        data = self.body()
        if not data.strip():
            return None
        media_type = self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if media_type != JSON:
            raise HttpError("415 Unsupported Media Type", f"send the body as {JSON} (it came as "
                                                          f"{media_type[:60] or 'no type'})")
        try:
            return json.loads(data)
        except ValueError:
            raise HttpError("400 Bad Request", "the body is not JSON") from None


@dataclass(frozen=True)
class Raw:
    content_type: str
    body: bytes


# What a handler returns: the status and a JSON-able body (or Raw bytes).
Answer = tuple[str, Any]


@dataclass(frozen=True)
class Route:
    handler: Callable[[Request], Answer]
    open: bool  # True: no credential needed where the guard keeps open routes open (/healthz, /metrics)


class HttpListener:
    """Serves the endpoints above for one controller.

    chain_test(seconds) -> {"steps": [...]}: the test call (default: ``chain.ControllerChainTest``, which raises
    chain.Refused when busy or out of streams). guard: who may ask what (default: from the configuration).
    """

    def __init__(self, controller, *, chain_test: Callable[[float], dict] | None = None,
                 guard: Guard | None = None) -> None:
        self.controller = controller
        self.chain_test = chain_test if chain_test is not None else chain.ControllerChainTest(controller)
        self.guard = guard if guard is not None else guard_for(controller.config, machine_names())
        self.routes: dict[str, dict[str, Route]] = {}
        self.route("GET", "/healthz", open=True)(self._healthz)
        self.route("GET", "/metrics", open=True)(self._metrics)
        self.route("GET", "/calls")(self._calls)
        self.route("POST", "/doctor/chain")(self._doctor_chain)
        self._refusals = LogLimiter(per_key_per_minute=10)
        self._flushed_at = time.monotonic()
        self._server: WSGIServer | None = None
        # The console: its pages, and the session cookie and CSRF header it adds to the guard's authenticators.
        self.console = Console(self, controller.config.http.token, health=health, live_calls=live_calls,
                               read_json=_read_json, reply=_json)

    def route(self, method: str, path: str, *, open: bool = False) -> Callable:
        """Register handler(request) -> (status, body) for method and path. Every route needs the API token
        unless open=True (then only where the guard keeps open routes open)."""
        def register(handler: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
            self.routes.setdefault(path, {})[method] = Route(handler, open)
            return handler
        return register

    def start(self, host: str, port: int) -> int:
        config = self.controller.config
        if self.guard.exposed and not self.guard.authenticators:
            # The configuration refuses this too (metrics.listen_host); never serve the API to the network open.
            raise ValueError(f"the HTTP listener on {host} needs http.token")
        warning = exposure_warning(config)
        if warning:
            log.warning("%s", warning)
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

    # ---- the endpoints ----

    def _healthz(self, request: Request) -> Answer:
        state = health(self.controller)
        return ("200 OK" if state["healthy"] else "503 Service Unavailable"), state

    def _metrics(self, request: Request) -> Answer:
        return "200 OK", Raw(CONTENT_TYPE_LATEST, generate_latest(REGISTRY))

    def _calls(self, request: Request) -> Answer:
        return "200 OK", {"calls": live_calls(self.controller)}

    def _doctor_chain(self, request: Request) -> Answer:
        try:
            seconds = chain.seconds_of(request.json())
        except ValueError as exc:
            raise HttpError("400 Bad Request", str(exc)) from None
        try:
            return "200 OK", self.chain_test(seconds)
        except chain.Refused as refused:
            status = {409: "409 Conflict", 503: "503 Service Unavailable"}.get(refused.status, "409 Conflict")
            raise HttpError(status, refused.reason) from None

    # ---- the WSGI app: the guard, then the handler ----

    def _app(self, environ, start_response):
        request = Request(environ)
        method, path = request.method, request.path
        try:
            methods = self.routes.get(path)
            if methods is None and self.console.wants(path):
                return self.console.app(environ, start_response)
            if methods is None and path.startswith(recordings_api.PREFIX):
                return self._recordings(environ, start_response, request)
            route = methods.get(method) if methods else None
            refusal = self.guard.check(environ, open_route=route.open if route else False) if route else \
                self.guard.site(environ)
            if refusal is not None:
                return self._refuse(start_response, environ, refusal)
            if methods is None:
                return _json(start_response, "404 Not Found",
                             {"error": f"no such endpoint {path}", "endpoints": ["/healthz", "/metrics", "/calls"]})
            if route is None:
                return _json(start_response, "405 Method Not Allowed",
                             {"error": f"{method} {path} is not served"}, (("Allow", ", ".join(sorted(methods))),))
            try:
                status, body = route.handler(request)
            except HttpError as exc:
                return _json(start_response, exc.status, {"error": exc.error})
            if isinstance(body, Raw):
                return _reply(start_response, status, body.content_type, body.body)
            return _json(start_response, status, body)
        except Exception as exc:  # a bug here must not look like an unhealthy controller, nor take it down
            incident = uuid_module.uuid4().hex[:8]
            log.exception("HTTP %s %s failed (incident %s)", method, path, incident)
            return _json(start_response, "500 Internal Server Error",
                         {"error": f"{type(exc).__name__}; see the log, incident {incident}"})

    def _recordings(self, environ, start_response, request: Request):
        """GET /api/recordings[/<uuid>[/audio]] (catalog/api.py): behind the API token like every route; the
        audio streamed, with Range."""
        refusal = self.guard.check(environ, open_route=False)
        if refusal is not None:
            return self._refuse(start_response, environ, refusal)
        archive = getattr(self.controller, "archive", None)
        answer = recordings_api.handle(archive, request.method, request.path, environ.get("QUERY_STRING", ""),
                                       {"Range": environ.get("HTTP_RANGE", "")}) if archive is not None else None
        if answer is None:
            return _json(start_response, "404 Not Found", {"error": f"no such endpoint {request.path}"})
        status, headers, body = answer
        start_response(status, [*headers, ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        return [body] if isinstance(body, bytes) else body

    def _refuse(self, start_response, environ, refusal: Refusal):
        peer = environ.get("REMOTE_ADDR", "?")
        now = time.monotonic()
        if now - self._flushed_at >= 60:
            self._flushed_at = now
            self._refusals.flush()
        self._refusals.log(log, logging.WARNING, peer, "HTTP %s %s from %s refused (%s): %s",
                           environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "/")[:200], peer,
                           refusal.status.split(" ", 1)[0], refusal.error)
        return _json(start_response, refusal.status, {"error": refusal.error}, refusal.headers)


def _read_json(environ: dict) -> tuple[Any, tuple[str, str] | None]:
    """A request's JSON body, or why it cannot be had (status, error): for the console's login."""
    try:
        return Request(environ).json(), None
    except HttpError as exc:
        return None, (exc.status, exc.error)


def _json(start_response, status: str, body: Any, headers: tuple[tuple[str, str], ...] = ()):
    return _reply(start_response, status, JSON, (json.dumps(body, indent=1) + "\n").encode("utf-8"), headers)


def _reply(start_response, status: str, content_type: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()):
    # No Access-Control-* header, ever: no other origin may read an answer or send a credential header.
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *headers])
    return [body]
