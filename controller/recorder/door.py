"""The recorder's door: everything before the 101, where nobody is trusted yet.

A stream is admitted only for a call the controller announced, with that call's token; an unknown call and a
wrong token get the same answer, so the door tells nobody which calls are live. Nobody makes the recorder
read megabytes of headers first (MAX_REQUEST_BYTES), dribble a request for ever (the handshake deadline), or
hold more than MAX_PENDING_PER_ADDRESS handshakes open from one address. The book (book.py) then decides
whether the call may stream now (the stream limit, a restart replacing its old connection).
"""

from __future__ import annotations

import functools
import hmac
import http.client
import logging
import re
import ssl

import gevent
from geventwebsocket.handler import WebSocketHandler

from ..channel_uuid import normalise_uuid
from .book import Refuse
from .recording import RecordingRegistry, StreamSpec

log = logging.getLogger("controller.recorder")

# The request line and headers together: the module's are under 1 KB.
MAX_REQUEST_BYTES = 16 * 1024
# Connections from one address still in their handshake (TLS, request): a switch opens a few at a time.
MAX_PENDING_PER_ADDRESS = 64
READ_AHEAD_BYTES = 64 * 1024
NOT_YOURS = Refuse("403 Forbidden", "no stream is expected for this call with this token")
CONNECTION_KEY = "controller.recorder.connection"
HANDLER_KEY = "controller.recorder.handler"


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The recorder's TLS (wss://): its certificate chain and unencrypted key. ValueError, saying which files,
    when they cannot be loaded (missing, not PEM, a key that does not match the certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the certificate {certfile} with the key {keyfile}: {exc}") from exc
    return context


def refusal_response(refusal: Refuse) -> tuple[str, list[tuple[str, str]], bytes]:
    body = (refusal.reason + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
               ("Connection", "close")]
    if refusal.status.startswith("401"):
        headers.append(("WWW-Authenticate", 'Bearer realm="recorder"'))
    return refusal.status, headers, body


def check_path_prefix(path_prefix: str) -> str:
    """Where a public_url's path puts the streams (ws://host:8080/rec: <that path>/calls/<uuid>); ValueError
    saying what is expected when it is not a plain path."""
    if path_prefix and (not path_prefix.startswith("/") or path_prefix.endswith("/")
                        or not re.fullmatch(r"[A-Za-z0-9._~/-]*", path_prefix)):
        raise ValueError(f"path_prefix must be empty or like '/recorder' (a leading '/', no trailing '/', "
                         f"letters, digits, '.', '_', '~', '-'), got {path_prefix!r}")
    return path_prefix


@functools.lru_cache(maxsize=8)
def _call_path(path_prefix: str) -> re.Pattern:
    """Where streams go, compiled once per prefix (not per request)."""
    return re.compile(re.escape(path_prefix) + r"/calls/([^/]*)")


def check_request(environ: dict, registry: RecordingRegistry, path_prefix: str) -> StreamSpec | Refuse:
    """The call the request streams, if the request proves it may; else why not."""
    if environ.get("REQUEST_METHOD") != "GET":
        return Refuse("405 Method Not Allowed", f"streams are WebSocket upgrades (GET {path_prefix}/calls/<uuid>)")
    match = _call_path(path_prefix).fullmatch(environ.get("PATH_INFO", ""))
    if not match:
        return Refuse("404 Not Found", f"unknown path; streams go to {path_prefix}/calls/<uuid>")
    uuid = normalise_uuid(match.group(1))
    if uuid is None:
        return Refuse("404 Not Found", "not a call uuid; expected 8-4-4-4-12 hex digits")
    # Whether the call is expected is told only to a client with a token, and the same way either way.
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return Refuse("401 Unauthorized", "missing 'Authorization: Bearer <token>' header")
    spec = registry.lookup(uuid)
    expected = spec.token if spec is not None else "\0" * len(token)  # compared all the same
    if not hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")) or spec is None:
        return NOT_YOURS
    return spec


class HandshakeCount:
    """Connections in their handshake, by source address."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def began(self, address: str) -> bool:
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def ended(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


class _CappedReader:
    """The request's header lines, read within a byte budget (http.client alone reads 100 lines of 64 KB)."""

    def __init__(self, fp, budget: int) -> None:
        self.fp = fp
        self.budget = budget

    def readline(self, limit: int = -1) -> bytes:
        if self.budget <= 0:
            raise http.client.LineTooLong("request headers over the recorder's size limit")
        line = self.fp.readline(self.budget + 1 if limit < 0 else min(limit, self.budget + 1))
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong("request headers over the recorder's size limit")
        return line


class RecorderHandler(WebSocketHandler):
    """Admits or refuses a stream before the upgrade is answered; the library does the handshake itself.

    gevent.pywsgi parses mod_audio_stream's ``Name:value`` header lines (no space after the colon) with the
    stdlib email parser, which accepts them as they are (the raw-socket tests replay the captured request).
    The server it serves has ``recorder``: its ``handshakes``, ``door_log``, ``handshake_timeout_s``,
    ``max_request_bytes``, ``admit(environ, socket)`` and ``forget_connection(connection)``.
    """

    _counted: str | None = None

    def handle(self):
        recorder = self.server.recorder
        address = str(self.client_address[0]) if isinstance(self.client_address, tuple) else str(self.client_address)
        if not recorder.handshakes.began(address):
            recorder.door_log.log(log, logging.WARNING, address, "dropped a connection from %s: %d already in "
                                  "their handshake from that address (the limit)", address, recorder.handshakes.limit)
            self._drop()  # nothing is read from an address already at its limit
            return
        self._counted = address
        # A client that connects and never finishes its request must not hold a greenlet forever: the socket
        # timeout bounds each read, the deadline the whole request (one byte every second would pass the first).
        limit = recorder.handshake_timeout_s
        self.socket.settimeout(limit)
        self._handshake_deadline = gevent.Timeout(limit)
        self._handshake_deadline.start()
        try:
            if isinstance(self.socket, ssl.SSLSocket):
                self.socket.do_handshake()  # under the deadline, not on accept
            super().handle()
        except gevent.Timeout as exc:
            if exc is not self._handshake_deadline:
                raise
            recorder.door_log.log(log, logging.WARNING, address, "dropped the connection from %s: no complete "
                                  "request within %.1f s", address, limit)
            self._drop()
        except (ssl.SSLError, OSError) as exc:  # a failed TLS handshake (plain HTTP to a wss port, say)
            recorder.door_log.log(log, logging.WARNING, address, "dropped the connection from %s: %s", address, exc)
            self._drop()
        finally:
            self._handshake_deadline.close()
            self._handshake_done()

    def _drop(self) -> None:
        # Closed now, not when the handler is collected: a TLS socket's file outlives the one pywsgi closes, and
        # a socket closes only once its reader (rfile) is closed too.
        for closable in (getattr(self, "rfile", None), self.socket):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass

    def _handshake_done(self) -> None:
        if self._counted is not None:
            self.server.recorder.handshakes.ended(self._counted)
            self._counted = None

    def MessageClass(self, fp, *args):
        budget = self.server.recorder.max_request_bytes - len(getattr(self, "requestline", "") or "")
        try:
            return super().MessageClass(_CappedReader(fp, budget), *args)
        except http.client.HTTPException as exc:  # more than 100 header lines
            message = super().MessageClass(_CappedReader(fp, 0), *args)
            message.status = str(exc) or "invalid headers"
            return message

    def run_application(self):
        # The request is all here: what follows is our own work, and after the upgrade silence is legal.
        self._handshake_deadline.cancel()
        self._handshake_done()
        recorder = self.server.recorder
        admitted = recorder.admit(self.environ, self.socket)
        if isinstance(admitted, Refuse):
            status, headers, body = refusal_response(admitted)
            self.close_connection = True
            self.start_response(status, headers)
            self.result = [body]
            self.process_result()
            return
        self.socket.settimeout(None)  # admitted: silence is legal now (pause, mixed audio while nobody speaks)
        self.environ[CONNECTION_KEY] = admitted
        self.environ[HANDLER_KEY] = self
        try:
            super().run_application()
        finally:
            recorder.forget_connection(admitted)


def read_ahead(handler) -> bytes:
    """Bytes the client sent after its request that pywsgi's buffered reader already holds: the start of the
    frames. Read without blocking (a non-blocking peek returns only what is buffered)."""
    handler.socket.settimeout(0.0)
    try:
        early = handler.rfile.peek(READ_AHEAD_BYTES)
    except (OSError, ValueError):
        early = b""
    finally:
        handler.socket.settimeout(None)
    return handler.rfile.read(len(early)) if early else b""
