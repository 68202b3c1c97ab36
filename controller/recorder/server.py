"""The WebSocket endpoint mod_audio_stream connects to: one WAV per call, however many connections it takes.

The path of one stream: the module's upgrade request for ``/calls/<uuid>`` is admitted (``_admit``: known
call, right token, not already recording) BEFORE the 101 answer, so a refused client gets a plain HTTP
status and nothing is written; then ``_record`` opens the WAV and sidecar (or continues the call's open
one) and pumps frames into them until the module closes, the TCP connection ends, the client goes idle, a
limit is reached or the server stops. Endings in ``recording.FINAL_REASONS`` (a limit, a write or internal
error, the server stopping) finalise the recording; the others (``DETACH_REASONS``) only detach it, and it is
finalised when the controller says the call is over (``end_call``) or, as a safety net, after ``linger_s``
without a connection.

Recordings outlive the process too: at start the server repairs what a killed process left, and continues
those files (and the ones its own last ``stop`` finalised) for calls the controller announces again.

Built on gevent.pywsgi + geventwebsocket for the HTTP upgrade (``_RecorderHandler``: admission before the
101, one deadline for the whole request). After the 101 the connection's bytes are read here, not through the
library: one ``recv`` per wake-up into a buffer shared by all connections, every complete frame in it parsed
at once (``frames.FrameReader``, sans-I/O), audio handed to the recording, whose writes the flush timer batches.
mod_audio_stream's ``Name:value`` headers need no override: the tests replay the captured bytes.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gevent
from gevent.event import AsyncResult, Event as GeventEvent
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from ..channel_uuid import normalise_uuid
from .filenames import FilenameTemplate
from .frames import (CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_INVALID_DATA, CLOSE_NO_STATUS, CLOSE_NORMAL,
                     CLOSE_TOO_BIG, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, FrameReader,
                     close_frame, encode_frame, parse_close)
from .recording import (CALL_END, CLIENT_CLOSE, CONTROLLER_RESTART, DETACH_REASONS, EOF, FINAL_REASONS, IDLE_TIMEOUT,
                        INTERNAL_ERROR, JITTER_S, LINGER, MAX_BYTES, MAX_DURATION, PROTOCOL_ERROR, REPLACED,
                        SERVER_STOP,
                        SETTLE_S, WRITE_ERROR,
                        Recording, RecordingRegistry, StreamSpec)
from .poller import StreamPoller
from .recovery import recover_unfinished
from .sidecar import write_json_atomically
from .wav import RecordingError

__all__ = ["RecorderServer", "RecordingRegistry", "StreamSpec"]

log = logging.getLogger("controller.recorder")

_SESSION_KEY = "controller.recorder.session"
_HANDLER_KEY = "controller.recorder.handler"
READ_AHEAD_BYTES = 64 * 1024
# How long the poller lets frames gather between its wake-ups: what a frame may wait, for far less CPU.
POLL_INTERVAL_S = 0.01

# mod_audio_stream sends one frame per STREAM_BUFFER_SIZE ms: kilobytes. Anything near this is not audio.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
# The close frame that tells the module why the recorder ended its connection. Endings not listed need none:
# the module closed (client_close), the connection is gone (eof), or the close was sent already (protocol_error).
CLOSE_FOR_REASON = {
    SERVER_STOP: (CLOSE_GOING_AWAY, "recorder stopping"),
    IDLE_TIMEOUT: (CLOSE_GOING_AWAY, "idle timeout"),
    WRITE_ERROR: (CLOSE_INTERNAL_ERROR, "recording failed"),
    INTERNAL_ERROR: (CLOSE_INTERNAL_ERROR, "recording failed"),
    MAX_DURATION: (CLOSE_NORMAL, MAX_DURATION),
    MAX_BYTES: (CLOSE_NORMAL, MAX_BYTES),
    CALL_END: (CLOSE_NORMAL, CALL_END),
    REPLACED: (CLOSE_NORMAL, "replaced by a newer connection"),
}
# How long a new connection for a call waits for the one it replaces to finish with the recording.
REPLACE_WAIT_S = 2.0

# Beside the recordings: what the last stop() finalised while the calls were still live, so the next start
# can continue those files instead of beginning second ones.
STOPPED_STATE = ".recorder-stopped.json"
# Audio that reached the process reaches the file (the page cache, which outlives the process) within this
# long: a kill loses nothing the recorder had. Writes are batched per stream in between, off the frame path.
FLUSH_INTERVAL_S = 0.05
# A final sidecar that could not be written (a full disk) is tried again this often until it is.
SIDECAR_RETRY_S = 5.0


@dataclass
class _Refusal:
    status: str
    reason: str  # for the log and the response body

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        body = (self.reason + "\n").encode("utf-8")
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                   ("Connection", "close")]
        if self.status.startswith("401"):
            headers.append(("WWW-Authenticate", 'Bearer realm="recorder"'))
        return self.status, headers, body


@dataclass
class _Session:
    """One admitted connection, from admission to the end of its handler."""

    spec: StreamSpec
    peer: str
    socket: socket.socket
    recording: Recording | None = None
    last_frame_at: float = 0.0  # any bytes, pings included: the client is alive
    closed: bool = False  # a close frame was sent on this connection
    stop_reason: str | None = None  # set from outside (a limit on wall time, the server stopping)
    ending: bool = False  # finalising: nothing left to interrupt
    done: GeventEvent = field(default_factory=GeventEvent)
    reader: FrameReader | None = None
    ended_at: float | None = None  # when the connection's end arrived (a close frame, an EOF), on `clock`
    tap: Callable[[bytes], None] | None = None  # also gets every audio frame (a voice agent's relay)
    # How the stream ended, (reason, close code, close text, error): set by the poller or by _end.
    outcome: AsyncResult = field(default_factory=AsyncResult)


def _read_ahead(handler) -> bytes:
    """Bytes the client sent after its request that pywsgi's buffered reader already holds: the start of the
    frames. Read without blocking (a non-blocking peek returns only what is buffered)."""
    handler.socket.settimeout(0.0)
    try:
        early = handler.rfile.peek(READ_AHEAD_BYTES)
    except OSError:
        early = b""
    finally:
        handler.socket.settimeout(None)
    return handler.rfile.read(len(early)) if early else b""


class _RecorderHandler(WebSocketHandler):
    """Admits or refuses a stream before the upgrade is answered; the library does the handshake itself.

    gevent.pywsgi parses mod_audio_stream's ``Name:value`` header lines (no space after the colon) with
    the stdlib email parser, which accepts them as they are: no override is needed for that (the
    raw-socket tests replay the captured request to keep it so).
    """

    def handle(self):
        # A client that connects and never finishes its request must not hold a greenlet forever: the socket
        # timeout bounds each read, the deadline the whole request (one byte every second would pass the first).
        limit = self.server.recorder.handshake_timeout_s
        self.socket.settimeout(limit)
        self._handshake_deadline = gevent.Timeout(limit)
        self._handshake_deadline.start()
        try:
            super().handle()
        except gevent.Timeout as exc:
            if exc is not self._handshake_deadline:
                raise
            log.warning("dropped the connection from %s:%s: no complete request within %.1f s",
                        *self.client_address[:2], limit)
        finally:
            self._handshake_deadline.close()

    def run_application(self):
        # The request is all here: what follows is our own work, and after the upgrade silence is legal.
        self._handshake_deadline.cancel()
        recorder: RecorderServer = self.server.recorder
        admitted = recorder._admit(self.environ, self.socket)
        if isinstance(admitted, _Refusal):
            status, headers, body = admitted.response()
            self.close_connection = True
            self.start_response(status, headers)
            self.result = [body]
            self.process_result()
            return
        self.socket.settimeout(None)  # admitted: silence is legal now (pause, mixed audio while nobody speaks)
        self.environ[_SESSION_KEY] = admitted
        self.environ[_HANDLER_KEY] = self
        try:
            super().run_application()
        finally:
            recorder._release(admitted)


class RecorderServer:
    """Receives mod_audio_stream's audio for announced calls and writes one WAV (+ JSON sidecar) per call."""

    def __init__(self, registry: RecordingRegistry, directory: os.PathLike | str, *,
                 filename_template: str = "{date}/{uuid}.wav",
                 max_duration_s: float | None = None, max_bytes: int | None = None,
                 on_open: Callable[[str], None] | None = None,
                 on_close: Callable[[str, str], None] | None = None,
                 on_detach: Callable[[str, str], None] | None = None,
                 on_finished: Callable[[Recording], None] | None = None,
                 jitter_s: float = JITTER_S,
                 settle_s: float = SETTLE_S,
                 linger_s: float = 30.0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 handshake_timeout_s: float = 10.0,
                 path_prefix: str = "",
                 tick_interval_s: float = 0.25,
                 max_connections: int = 1000,
                 max_streams: int = 500,
                 idle_timeout_s: float = 60.0,
                 end_grace_s: float = 5.0,
                 poll_interval_s: float = POLL_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if max_duration_s is not None and max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0 seconds or None (no limit), got {max_duration_s!r}")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0 or None (no limit), got {max_bytes!r}")
        if path_prefix and (not path_prefix.startswith("/") or path_prefix.endswith("/")
                            or not re.fullmatch(r"[A-Za-z0-9._~/-]*", path_prefix)):
            raise ValueError(f"path_prefix must be empty or like '/recorder' (a leading '/', no trailing '/', "
                             f"letters, digits, '.', '_', '~', '-'), got {path_prefix!r}")
        # public_url may carry a path (ws://host:8080/rec); streams then arrive at <that path>/calls/<uuid>.
        self.path_prefix = path_prefix
        self._call_path = re.compile(re.escape(path_prefix) + r"/calls/([^/]*)")
        self.registry = registry
        self.directory = Path(directory)
        self.template = FilenameTemplate(filename_template)
        self.max_duration_s = max_duration_s
        self.max_bytes = max_bytes
        self.on_open = on_open
        self.on_close = on_close  # once per recording, when it is finalised
        self.on_finished = on_finished  # the same moment, with the finished Recording (its files, its sidecar)
        self.on_detach = on_detach  # a connection ended but the call's recording stays open
        self.jitter_s = jitter_s
        self.settle_s = settle_s
        self.linger_s = linger_s
        self.max_frame_bytes = max_frame_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.tick_interval_s = tick_interval_s
        self.max_connections = max_connections
        # The least silence that counts as dead, for streams that ping (idle_limit_s); streams without pings
        # are never closed for silence: mixed/stereo send nothing while nothing plays, pause sends nothing.
        self.idle_timeout_s = idle_timeout_s
        # After end_call, how long an attached connection may stay open: the module closes at hangup, so one
        # still open is half-open TCP (its host died) and would otherwise hold the file open for ever.
        self.end_grace_s = end_grace_s
        # Arrivals, gaps, limits and end_call's `at` use `clock`; only the time across a restart is wall time.
        self.clock = clock
        self.wall_clock = wall_clock
        # Streams at once; beyond it a new one is refused with 503 (the pool still has room to say so).
        self.max_streams = min(max_streams, max(1, max_connections - 1))
        self._sessions: dict[str, _Session] = {}  # calls with a connection attached
        self._recordings: dict[str, Recording] = {}  # calls whose recording is open, attached or not
        # Calls over while still attached: finalise at close.
        # uuid -> (when the call ended, when we were told, why the controller ended it or None)
        self._call_ended: dict[str, tuple[float | None, float, str | None]] = {}
        self._unsaved_sidecars: dict[str, tuple[Recording, float]] = {}  # finished; final sidecar, next try
        self._flusher: gevent.Greenlet | None = None
        self.poll_interval_s = poll_interval_s
        self._poller: StreamPoller | None = None
        self._taps: dict[str, Callable[[bytes], None]] = {}  # calls whose audio also goes elsewhere
        self.tick_errors = 0  # unexpected failures in the periodic upkeep (logged, counted, survived)
        self._resumable: dict[str, tuple[Path, float, float]] = {}  # left by a process: path, last write, when
        self._stopped: dict[str, str] = {}  # finalised by this stop() with the call still live: uuid -> path
        self._server: WSGIServer | None = None
        self._ticker: gevent.Greenlet | None = None
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0: any free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("the recorder is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        # An earlier process may have died mid-call: make its files playable, and let a call that is still
        # live continue in the same file once the controller announces it again.
        for found in recover_unfinished(self.directory):
            if found.uuid and found.renamed:
                self._resumable[found.uuid] = (found.final_path, found.last_write, self.clock())
        self._load_stopped_state()
        http_log = logging.getLogger("controller.recorder.http")
        server = WSGIServer((host, port), self._application, handler_class=_RecorderHandler,
                            spawn=Pool(self.max_connections), log=http_log, error_log=http_log,
                            environ={"SERVER_NAME": host})
        server.recorder = self  # how _RecorderHandler finds us
        server.logger = http_log  # geventwebsocket would otherwise install its own stderr handler
        server.start()
        self._server = server
        self._stopping = False
        self._ticker = gevent.spawn(self._tick_forever)
        self._flusher = gevent.spawn(self._flush_forever)
        self._poller = StreamPoller(self._consume_read, self._stream_closed, interval_s=self.poll_interval_s,
                                    clock=self.clock)
        self._poller.start()
        return server.server_port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every open recording (close 1001) and finalise it, then close the port."""
        if self._server is None:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        sessions = list(self._sessions.values())
        for session in sessions:
            self._end(session, SERVER_STOP)
        for session in sessions:
            session.done.wait(max(0.0, deadline - time.monotonic()))
        for uuid in list(self._recordings):
            # Detached ones too get silence up to now: the file notes the stop time for the next process.
            self._finalise(uuid, SERVER_STOP, end_at=self.clock())
        self._save_stopped_state()
        self._retry_sidecars(force=True)  # a last try; start-up recovery repairs what still fails
        self._server.stop(timeout=max(0.0, deadline - time.monotonic()))
        for greenlet in (self._ticker, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        if self._poller is not None:
            self._poller.stop()
        self._server = None
        self._ticker = self._flusher = self._poller = None

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    def open_recordings(self) -> list[str]:
        """The uuids of the calls whose audio is arriving on a connection right now."""
        return [uuid for uuid, s in self._sessions.items() if s.recording is not None and not s.recording.finished]

    def set_tap(self, uuid: str, tap: Callable[[bytes], None] | None, stats: dict | None = None) -> None:
        """Every audio frame of this call also goes to `tap` (from the poller: it must not block), and `stats`
        (a dict its owner keeps current) is saved in the call's sidecar as "relay"; None removes both."""
        uuid = normalise_uuid(uuid) or uuid
        if tap is None:
            self._taps.pop(uuid, None)
        else:
            self._taps[uuid] = tap
        session = self._sessions.get(uuid)
        if session is not None:
            session.tap = tap
        recording = self._recordings.get(uuid)
        if recording is not None and stats is not None:
            recording.sidecar.relay = stats

    def send_text(self, uuid: str, text: str) -> bool:
        """A text frame to the module on the call's live stream (a streamAudio message, say); False when the
        call has no live stream to send it on."""
        session = self._sessions.get(normalise_uuid(uuid) or uuid)
        if session is None or session.recording is None or session.ending or session.closed:
            return False
        self._send(session, encode_frame(OP_TEXT, text.encode("utf-8")))
        return True

    def live_stats(self) -> dict[str, dict]:
        """What each open recording holds so far (for /calls and the doctor), by call uuid."""
        now = self.clock()
        stats = {}
        for uuid, recording in self._recordings.items():
            session = self._sessions.get(uuid)
            attached = session is not None and session.recording is recording and not session.ending
            writer, sidecar = recording.writer, recording.sidecar
            stats[uuid] = {
                "rule": recording.spec.rule_name, "rate": recording.spec.rate, "channels": recording.spec.channels,
                "path": str(recording.path), "seconds": round(writer.duration_s, 3), "bytes": writer.data_bytes,
                "frames": sidecar.frames, "received_bytes": recording.received_bytes,
                "arrived_bytes": recording.arrived_bytes, "connected": attached,
                "last_frame_age_s": round(now - session.last_frame_at, 3) if attached else None,
                "connections": sidecar.connections, "gaps": len(sidecar.gaps) + sidecar.gaps_unlisted,
                "gap_seconds": round(recording.silent_frames / recording.spec.rate, 3),
            }
        return stats

    def end_call(self, uuid: str, at: float | None = None, reason: str | None = None) -> None:
        """The call is over (hangup, gone, or its stream stopped on purpose): finalise its recording now if no
        connection is attached, else as soon as that connection ends. `at` (on ``clock``, time.monotonic()
        unless injected): when the call ended, so a stream that was down at the end still gives a WAV as long
        as the call; None when that is unknown: the recording ends where its audio did. `reason`: why the
        controller ended it (e.g. RULE_MAX_DURATION), written as the close reason instead of how the
        connection happened to end."""
        uuid = normalise_uuid(uuid) or uuid
        self._resumable.pop(uuid, None)  # an earlier process's file for it stays as that process left it
        recording = self._recordings.get(uuid)
        if recording is None:
            if uuid in self._sessions:  # admitted, recording not open yet: end it with that connection
                self._call_ended[uuid] = (at, self.clock(), reason)
            return
        if recording.detached_at is None:
            self._call_ended[uuid] = (at, self.clock(), reason)
        else:
            # The recording ended with its last connection (plus silence to `at`): keep that connection's reason.
            self._finalise(uuid, reason or recording.detach_reason or CALL_END, end_at=at)

    def _finalise(self, uuid: str, reason: str, *, end_at: float | None = None, **close) -> None:
        recording = self._recordings.pop(uuid, None)
        self._call_ended.pop(uuid, None)
        if recording is None or recording.finished:
            return
        try:
            recording.finish(reason, end_at=end_at, **close)
        except RecordingError as exc:
            log.error("call %s: cannot finalise %s: %s", uuid, recording.path, exc)
        if recording.spec.discard:  # a test stream (doctor): counted, then removed
            recording.remove_files()
        elif not recording.sidecar_saved:
            self._unsaved_sidecars[uuid] = (recording, self.clock() + SIDECAR_RETRY_S)
        reason = recording.sidecar.close_reason or reason  # a limit may have cut the silence up to the end
        # An earlier connection's error (protocol, EOF) does not stop the call continuing here; a file error does.
        if reason == SERVER_STOP and not recording.file_failed and not recording.spec.discard:
            self._stopped[uuid] = str(recording.path)
        self._log_finished(recording, reason, close.get("close_code"))
        self._notify(self.on_finished, recording)
        self._notify(self.on_close, uuid, reason)

    # ---- admission (before the 101) ----------------------------------------------------------------------

    def _admit(self, environ: dict, sock: socket.socket) -> _Session | _Refusal:
        peer = f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"
        path = environ.get("PATH_INFO", "")
        refusal = self._check(environ, path)
        if isinstance(refusal, _Refusal):
            log.warning("refused stream from %s for %r: %s %s", peer, path[:200], refusal.status, refusal.reason)
            return refusal
        spec = refusal
        old = self._sessions.get(spec.uuid)
        if old is not None:
            # The module holds one stream per channel: a new one with the call's token means the old one is
            # gone or going (a restart: stop, then start in one write), whether or not its close was read.
            log.info("call %s: a new connection from %s replaces the one from %s", spec.uuid, peer, old.peer)
            self._end(old, REPLACED)
            old.done.wait(REPLACE_WAIT_S)
            if spec.uuid in self._sessions:
                refusal = _Refusal("409 Conflict", f"call {spec.uuid} is still being recorded on another connection")
                log.warning("refused stream from %s for %r: %s %s", peer, path[:200], refusal.status, refusal.reason)
                return refusal
        session = _Session(spec=spec, peer=peer, socket=sock)
        self._sessions[spec.uuid] = session
        return session

    def _check(self, environ: dict, path: str) -> StreamSpec | _Refusal:
        if self._stopping:
            return _Refusal("503 Service Unavailable", "the recorder is shutting down")
        if len(self._sessions) >= self.max_streams:
            return _Refusal("503 Service Unavailable",
                            f"{len(self._sessions)} streams already, the recorder's limit is {self.max_streams}")
        if environ.get("REQUEST_METHOD") != "GET":
            return _Refusal("405 Method Not Allowed",
                            f"streams are WebSocket upgrades (GET {self.path_prefix}/calls/<uuid>)")
        match = self._call_path.fullmatch(path)
        if not match:
            return _Refusal("404 Not Found", f"unknown path; streams go to {self.path_prefix}/calls/<uuid>")
        uuid = normalise_uuid(match.group(1))
        if uuid is None:
            return _Refusal("404 Not Found", "not a call uuid; expected 8-4-4-4-12 hex digits")
        spec = self.registry.lookup(uuid)
        if spec is None:
            return _Refusal("404 Not Found", f"no stream is expected for call {uuid}")
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _Refusal("401 Unauthorized", "missing 'Authorization: Bearer <token>' header")
        if not hmac.compare_digest(token.strip().encode("utf-8"), spec.token.encode("utf-8")):
            return _Refusal("403 Forbidden", f"wrong token for call {uuid}")
        return spec

    def _release(self, session: _Session) -> None:
        if self._sessions.get(session.spec.uuid) is session:
            del self._sessions[session.spec.uuid]
        session.done.set()

    def _end(self, session: _Session, reason: str) -> None:
        """Ask a connection to end its recording; safe from any greenlet, at any stage.

        A stream the poller is not handling right now ends at once (its connection's greenlet wakes, finalises
        the file, then sends its close frame); one it is handling ends as soon as that is done; one not handed
        to the poller yet never will be. Nothing is interrupted halfway through.
        """
        if session.ending or session.stop_reason is not None:
            return
        session.stop_reason = reason
        poller = self._poller
        if poller is not None and session in poller and poller.busy is not session:
            poller.remove(session)
            session.outcome.set((reason, None, None, None))

    # ---- the stream (after the 101) -----------------------------------------------------------------------

    def _application(self, environ, start_response):
        session: _Session | None = environ.get(_SESSION_KEY)
        ws = environ.get("wsgi.websocket")
        if session is None or ws is None:
            # Admitted but not a WebSocket upgrade (no Upgrade/Connection headers).
            body = b"this endpoint only speaks WebSocket\n"
            start_response("426 Upgrade Required", [("Upgrade", "websocket"), ("Connection", "close"),
                                                    ("Content-Type", "text/plain"),
                                                    ("Content-Length", str(len(body)))])
            return [body]
        ws.closed = True  # the library's object never reads or writes: the frames are ours (and so is the close)
        try:
            self._record(session, _read_ahead(environ[_HANDLER_KEY]))
        except Exception:  # one bad connection never takes the server (or another call) with it
            log.exception("call %s: recording connection from %s failed", session.spec.uuid, session.peer)
        return []

    def _record(self, session: _Session, early: bytes) -> None:
        spec = session.spec
        if session.stop_reason is not None:  # the server began stopping during the handshake
            self._send_close(session, CLOSE_GOING_AWAY, "recorder stopping")
            return
        try:
            recording = self._recording_for(spec)
        except (RecordingError, ValueError) as exc:
            log.error("call %s: cannot start the recording: %s", spec.uuid, exc)
            self._call_ended.pop(spec.uuid, None)
            self._send_close(session, CLOSE_INTERNAL_ERROR, "recorder cannot write")
            return
        session.recording = recording
        session.last_frame_at = self.clock()
        log.info("call %s: recording %s from %s (%d Hz, %d ch)", spec.uuid, recording.path, session.peer,
                 spec.rate, spec.channels)
        # Killed by the server's pool (stop() past its timeout): still finalise, as a server stop.
        reason, close_code, close_text, error = SERVER_STOP, None, None, None
        try:
            self._notify(self.on_open, spec.uuid)
            reason, close_code, close_text, error = self._stream(session, recording, early)
        except Exception as exc:
            log.exception("call %s: unexpected failure while recording", spec.uuid)
            reason, error = INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            # Every way out settles the file first, then tells the module why (if it is still there).
            session.ending = True
            reply = CLOSE_FOR_REASON.get(reason)
            if reply is not None:
                close_code, close_text = reply
            close = {"close_code": close_code, "close_text": close_text, "error": error}
            if spec.uuid in self._call_ended:
                self._finalise_ended_call(session, reason, **close)
            elif reason in FINAL_REASONS:
                self._finalise(spec.uuid, reason, **close)
            else:
                # The connection went, the call may not have: the next connection continues this file.
                recording.sidecar.close_code, recording.sidecar.close_text = close_code, close_text
                recording.detach(reason, error, at=session.ended_at)
                if spec.uuid in self._call_ended:  # the call ended while the detach wrote held-back audio
                    self._finalise_ended_call(session, reason, **close)
                else:
                    log.info("call %s: stream detached (%s%s); the recording stays open", spec.uuid, reason,
                             f" {close_code}" if close_code is not None else "")
                    self._notify(self.on_detach, spec.uuid, reason)
            if reply is not None:
                self._send_close(session, *reply)

    def _finalise_ended_call(self, session: _Session, reason: str, **close) -> None:
        """Finalise the recording of a call the controller said is over, now that its connection has ended."""
        at, asked, why = self._call_ended[session.spec.uuid]
        if at is None:
            # To the end of the stream, not to the end of the grace (nothing came after the call was over)
            # nor to whenever this greenlet got round to it.
            at = asked if reason == CALL_END else session.ended_at
        # The controller's reason, unless the recorder itself ended the file first (a limit, an error).
        if why is not None and reason in DETACH_REASONS + (CALL_END,):
            reason = why
        self._finalise(session.spec.uuid, reason, end_at=at, **close)

    def _recording_for(self, spec: StreamSpec) -> Recording:
        """The call's open recording (a reconnect), one an earlier process left (a restart), or a new one."""
        recording = self._recordings.get(spec.uuid)
        if recording is not None:
            recording.attach()
            return recording
        limits = {"max_duration_s": self.max_duration_s, "max_bytes": self.max_bytes,
                  "jitter_s": self.jitter_s, "settle_s": self.settle_s, "clock": self.clock,
                  "pause": gevent.sleep}
        resumable = self._resumable.pop(spec.uuid, None)
        if resumable is not None:
            path, last_write, _ = resumable
            # Another process's monotonic clock means nothing here: the outage is measured in wall time.
            away_s = max(0.0, self.wall_clock() - last_write)
            log.info("call %s: continuing %s after %.1f s without a recorder", spec.uuid, path, away_s)
            recording = Recording.resume(spec, path, away_s=away_s, cause=CONTROLLER_RESTART, **limits)
        else:
            recording = Recording.open(spec, self.directory, self.template, **limits)
        self._recordings[spec.uuid] = recording
        return recording

    def _stream(self, session: _Session, recording: Recording, early: bytes):
        """Frames -> recording until the stream ends; returns (reason, close code, close text, error).

        What the client sent along with its request is handled here; the rest by the poller as it comes.
        """
        session.reader = FrameReader(self.max_frame_bytes)
        session.tap = self._taps.get(session.spec.uuid)
        if early:
            ending = self._consume(session, early, self.clock())
            if ending is not None:
                return ending
        if session.stop_reason is not None:
            return session.stop_reason, None, None, None
        self._poller.add(session)
        try:
            return session.outcome.get()
        finally:
            self._poller.remove(session)  # when this greenlet is killed (a stop past its timeout) too

    def _consume_read(self, session: _Session, data, arrival: float) -> None:
        """The poller read `data` from this stream (in the poller's greenlet): handle it, end it if it ended."""
        try:
            ending = self._consume(session, data, arrival)
        except Exception as exc:  # one stream's bug must not stop the poller, which serves them all
            log.exception("call %s: unexpected failure while recording", session.spec.uuid)
            ending = INTERNAL_ERROR, None, None, f"{type(exc).__name__}: {exc}"
        if ending is None and session.stop_reason is not None:
            ending = session.stop_reason, None, None, None
        if ending is not None:
            self._poller.remove(session)
            session.outcome.set(ending)

    def _stream_closed(self, session: _Session) -> None:
        """The connection ended (EOF or a reset) without a close frame."""
        session.ended_at = self.clock()
        session.outcome.set((session.stop_reason, None, None, None) if session.stop_reason is not None
                            else (EOF, None, None, None))

    def _consume(self, session: _Session, data, arrival: float):
        """Every complete frame in `data`, in order; an ending tuple when the stream is over, else None."""
        session.last_frame_at = arrival
        reader = session.reader
        recording = session.recording
        for opcode, payload in reader.feed(data):
            if opcode == OP_BINARY:
                if session.tap is not None:
                    session.tap(payload)
                try:
                    limit = recording.on_audio(payload, arrival)
                except RecordingError as exc:
                    log.error("call %s: %s", session.spec.uuid, exc)
                    return WRITE_ERROR, None, None, str(exc)
                if limit is not None:
                    log.warning("call %s: %s reached, ending the recording", session.spec.uuid, limit)
                    return limit, None, None, None
            elif opcode == OP_TEXT:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    return self._refuse_frames(session, FrameError(CLOSE_INVALID_DATA,
                                                                   "invalid UTF-8 in a text frame"))
                log.info("call %s: text frame: %s", session.spec.uuid, text[:200])
                recording.on_text(text)
            elif opcode == OP_PING:
                self._send_now(session, encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                session.ended_at = arrival  # not when this greenlet got round to it: that may be later
                code, text = parse_close(payload)
                self._send_now(session, close_frame(code if code != CLOSE_NO_STATUS else CLOSE_NORMAL))
                return CLIENT_CLOSE, code, text, None
            # OP_PONG: an answer to nothing we asked; alive, nothing more.
        if reader.error is not None:  # what came before it is kept
            return self._refuse_frames(session, reader.error)
        return None

    def _refuse_frames(self, session: _Session, exc: FrameError):
        log.error("call %s: %s; closing with %d", session.spec.uuid, exc.problem, exc.code)
        self._send_now(session, close_frame(exc.code, "frame too large" if exc.code == CLOSE_TOO_BIG else
                                        "protocol error" if exc.code != CLOSE_INVALID_DATA else exc.problem))
        return PROTOCOL_ERROR, exc.code, None, exc.problem

    def _log_finished(self, recording: Recording, reason: str, close_code: int | None) -> None:
        sidecar = recording.sidecar
        log.info("call %s: recording finished (%s%s): %s, %d bytes, %.2f s, %d frames, %d text frames%s",
                 recording.spec.uuid, reason, f" {close_code}" if close_code is not None else "", recording.path,
                 sidecar.bytes, sidecar.duration_s, sidecar.frames, len(sidecar.text_frames),
                 f", error: {sidecar.error}" if sidecar.error else "")

    def _send_close(self, session: _Session, code: int, text: str) -> None:
        if not session.closed:
            self._send(session, close_frame(code, text))

    @staticmethod
    def _send_now(session: _Session, frame: bytes) -> None:
        """Send without ever waiting (from the poller, which serves every stream): a client whose socket is
        full is not reading, and a pong or a close it misses changes nothing for its recording."""
        if frame[0] & 0x0F == OP_CLOSE:
            if session.closed:
                return
            session.closed = True
        raw = getattr(session.socket, "_sock", session.socket)
        try:
            raw.send(frame)
        except OSError:
            log.debug("call %s: could not send a frame to %s now", session.spec.uuid, session.peer)

    @staticmethod
    def _send(session: _Session, frame: bytes) -> None:
        if frame[0] & 0x0F == OP_CLOSE:
            if session.closed:
                return
            session.closed = True  # one close frame per connection, whoever sends it
        try:
            session.socket.sendall(frame)
        except OSError:  # the peer may be gone already; the file is safe by now
            log.debug("call %s: could not send a frame to %s; the peer is gone", session.spec.uuid, session.peer)

    @staticmethod
    def _notify(callback, *args) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("recorder callback %r failed for %s", callback, args)

    # ---- across a restart -----------------------------------------------------------------------------------

    def _save_stopped_state(self) -> None:
        if not self._stopped:
            return
        state = {"stopped_at": self.wall_clock(), "recordings": self._stopped}
        try:
            write_json_atomically(self.directory / STOPPED_STATE, state)
        except RecordingError as exc:
            log.error("cannot note the recordings to continue after a restart: %s", exc)
        self._stopped = {}

    def _load_stopped_state(self) -> None:
        """Recordings the last stop() finalised become resumable, like the ones a killed process left."""
        path = self.directory / STOPPED_STATE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()
            stopped_at = float(state["stopped_at"])
            recordings = dict(state["recordings"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return
        root = self.directory.resolve()
        for uuid, name in recordings.items():
            final = Path(str(name)).resolve()
            uuid = normalise_uuid(str(uuid))
            if uuid and final.is_relative_to(root) and final.exists() and uuid not in self._resumable:
                self._resumable[uuid] = (final, stopped_at, self.clock())

    # ---- periodic upkeep ------------------------------------------------------------------------------------

    def idle_limit_s(self, spec: StreamSpec) -> float | None:
        """How long a connection may send nothing at all before it counts as dead: three missed pings, and
        never less than ``idle_timeout_s``; None for a stream without pings, whose silence may be legal."""
        if spec.heartbeat_s <= 0:
            return None
        return max(self.idle_timeout_s, 3.0 * spec.heartbeat_s)

    def _tick_forever(self) -> None:
        while True:
            gevent.sleep(self.tick_interval_s)
            self._tick()

    def _flush_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            for session in list(self._sessions.values()):
                recording = session.recording
                if recording is not None and not recording.finished and recording.writer.buffered_bytes:
                    self._guarded(self._flush_one, session, recording)

    def _flush_one(self, session: _Session, recording: Recording) -> None:
        try:
            recording.writer.flush()
        except RecordingError as exc:
            log.error("call %s: %s", session.spec.uuid, exc)
            self._end(session, WRITE_ERROR)

    def _guarded(self, upkeep, *args) -> None:
        # One unexpected failure must not end the upkeep of every other call for the life of the process.
        try:
            upkeep(*args)
        except Exception:
            self.tick_errors += 1
            log.exception("recorder upkeep %s failed for %s; carrying on", upkeep.__name__, args[0])

    def _tick(self) -> None:
        """Keep headers current while frames pause, end recordings past their wall-clock limit, finalise
        recordings whose stream never came back (the controller normally ends them first), and write final
        sidecars that could not be written before."""
        now = self.clock()
        for uuid, recording in list(self._recordings.items()):
            if recording.detached_at is not None and now - recording.detached_at > self.linger_s:
                log.warning("call %s: no stream for %.0f s, finalising its recording", uuid, self.linger_s)
                self._guarded(self._finalise, uuid, LINGER)
        for uuid, (_, _, since) in list(self._resumable.items()):
            if now - since > self.linger_s:
                del self._resumable[uuid]
        for session in list(self._sessions.values()):
            self._guarded(self._tick_session, session, now)
        self._retry_sidecars()

    def _tick_session(self, session: _Session, now: float) -> None:
        recording = session.recording
        if recording is None or recording.finished or session.ending:
            return
        ended = self._call_ended.get(session.spec.uuid)
        if ended is not None and now - ended[1] > self.end_grace_s:
            log.warning("call %s: over for %.0f s but the connection from %s is still open (half-open TCP?); "
                        "ending its recording", session.spec.uuid, now - ended[1], session.peer)
            self._end(session, CALL_END)
            return
        idle_limit = self.idle_limit_s(session.spec)
        if idle_limit is not None and now - session.last_frame_at > idle_limit:
            log.warning("call %s: nothing from %s for %.0f s (not even a ping), closing the connection",
                        session.spec.uuid, session.peer, idle_limit)
            self._end(session, IDLE_TIMEOUT)
            return
        try:
            limit = recording.tick()
        except RecordingError as exc:
            log.error("call %s: %s", session.spec.uuid, exc)
            self._end(session, WRITE_ERROR)
            return
        if limit is not None:
            log.warning("call %s: %s reached, ending the recording", session.spec.uuid, limit)
            self._end(session, limit)

    def _retry_sidecars(self, force: bool = False) -> None:
        now = self.clock()
        for uuid, (recording, next_try) in list(self._unsaved_sidecars.items()):
            if not force and now < next_try:
                continue
            if recording.save_final_sidecar():
                del self._unsaved_sidecars[uuid]
                log.info("call %s: the final sidecar %s is written now", uuid, recording.sidecar_path)
            else:
                self._unsaved_sidecars[uuid] = (recording, now + SIDECAR_RETRY_S)
