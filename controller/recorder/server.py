"""The WebSocket endpoint mod_audio_stream connects to: one WAV per call, however many connections it takes.

A thin gevent shell around the book (``book.py``, pure), which holds every call's state and makes every
decision. The path of one stream: the module's upgrade request for ``/calls/<uuid>`` is checked (known call,
right token: unknown calls and wrong tokens get the same answer) and admitted by the book BEFORE the 101, so a
refused client gets a plain HTTP status and nothing is written; a connection that replaces the call's old one
ends the old one first, with whatever its socket still held. After the 101 the book says which file the
connection writes (new, the call's open one, or one an earlier process left); the poller reads the frames
(``frames.FrameReader``, sans-I/O) and hands the audio to the recording until the connection ends; the book
then says whether the recording is finalised or only detached (the next connection continues the file), and
``files.py`` does that to the file and tells the controller.

One owner per recording: every change to a recording is one action that runs to its end without yielding
(gevent switches greenlets only where one waits, and the recorder's file work never does: writes are plain
system calls, and long silence is one ``ftruncate``), so whichever greenlet runs it — the poller for frames and
the endings it reads, the ticker for time, the controller for a hangup — no other can see it half done.
Frames to the module (pongs, closes, talk-back text) go through the connection's bounded outgoing queue in
order, by sends that never wait; what the socket does not take at once, the connection's writer finishes,
and the connection's handler returns (and pywsgi closes the socket) only after that writer is done.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path
from typing import Callable

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from ..channel_uuid import normalise_uuid
from ..ops.log_limit import LogLimiter
from .book import (AlreadyFinished, Detach, EndConnection, Finalise, RecordingBook, Refuse, RetrySidecar,
                   Upkeep)
from .connection import Connection
from .door import (CONNECTION_KEY, HANDLER_KEY, MAX_PENDING_PER_ADDRESS, MAX_REQUEST_BYTES, READ_AHEAD_BYTES,
                   HandshakeCount, RecorderHandler, check_path_prefix, check_request, read_ahead)
from .filenames import FilenameTemplate
from .files import RecordingFiles
from .frames import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, OP_TEXT, close_frame, encode_frame
from .poller import StreamPoller
from .recording import (CLIENT_CLOSE, EOF, INTERNAL_ERROR, JITTER_S, REPLACED, SERVER_STOP, SETTLE_S, WRITE_ERROR,
                        Ending, Recording, RecordingRegistry, StreamSpec)

__all__ = ["RecorderServer", "RecordingRegistry", "StreamSpec"]

log = logging.getLogger("controller.recorder")

# How long the poller lets frames gather between its wake-ups: what a frame may wait, for far less CPU.
POLL_INTERVAL_S = 0.01
# mod_audio_stream sends one frame per STREAM_BUFFER_SIZE ms: kilobytes. Anything near this is not audio.
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
# Audio that reached the process reaches the file (the page cache, which outlives the process) within this
# long: a kill loses nothing the recorder had. Writes are batched per stream in between, off the frame path.
FLUSH_INTERVAL_S = 0.05
# A final sidecar that could not be written (a full disk) is tried again this often until it is.
SIDECAR_RETRY_S = 5.0
_DRAIN = bytearray(READ_AHEAD_BYTES)


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
                 ssl_context: ssl.SSLContext | None = None,
                 max_pending_per_address: int = MAX_PENDING_PER_ADDRESS,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.path_prefix = check_path_prefix(path_prefix)
        self.registry = registry
        self.directory = Path(directory)
        self.max_frame_bytes = max_frame_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.tick_interval_s = tick_interval_s
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.max_request_bytes = max_request_bytes
        # Arrivals, gaps, limits and end_call's `at` use `clock`; only the time across a restart is wall time.
        self.clock = clock
        self.wall_clock = wall_clock
        self.poll_interval_s = poll_interval_s
        # Streams at once; beyond it a new one is refused with 503 (the pool still has room to say so).
        self.book = RecordingBook(max_streams=min(max_streams, max(1, max_connections - 1)), linger_s=linger_s,
                                  end_grace_s=end_grace_s, idle_timeout_s=idle_timeout_s,
                                  sidecar_retry_s=SIDECAR_RETRY_S)
        self.files = RecordingFiles(self.book, self.directory, FilenameTemplate(filename_template),
                                    max_duration_s=max_duration_s, max_bytes=max_bytes, jitter_s=jitter_s,
                                    settle_s=settle_s, clock=clock, wall_clock=wall_clock, on_open=on_open,
                                    on_close=on_close, on_detach=on_detach, on_finished=on_finished)
        self.upkeep_errors = 0  # unexpected failures in the periodic upkeep (logged, counted, survived)
        # Refused and dropped connections, by source address: a client retrying in a loop gets a few lines a
        # minute, and a count of the rest.
        self.door_log = LogLimiter(clock=clock)
        self.handshakes = HandshakeCount(max_pending_per_address)
        self._connections: set[Connection] = set()
        self._server: WSGIServer | None = None
        self._poller: StreamPoller | None = None
        self._ticker: gevent.Greenlet | None = None
        self._flusher: gevent.Greenlet | None = None

    @property
    def max_streams(self) -> int:
        return self.book.max_streams

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0: any free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("the recorder is already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files.recover()
        http_log = logging.getLogger("controller.recorder.http")
        tls = {"ssl_context": self.ssl_context, "do_handshake_on_connect": False} if self.ssl_context else {}
        server = WSGIServer((host, port), self._application, handler_class=RecorderHandler,
                            spawn=Pool(self.max_connections), log=http_log, error_log=http_log,
                            environ={"SERVER_NAME": host}, **tls)
        server.recorder = self  # how RecorderHandler finds us
        server.logger = http_log  # geventwebsocket would otherwise install its own stderr handler
        server.start()
        self._server = server
        self.book.stopping = False
        self._poller = StreamPoller(self._consume_read, self._stream_closed, interval_s=self.poll_interval_s,
                                    clock=self.clock)
        self._poller.start()
        self._ticker = gevent.spawn(self._every, self.tick_interval_s, self._tick)
        self._flusher = gevent.spawn(self._every, FLUSH_INTERVAL_S, self._flush)
        return server.server_port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every open recording (close 1001) and finalise it, then close the port."""
        if self._server is None:
            return
        deadline = time.monotonic() + timeout
        self._act(self.book.stop(self.clock()))
        for conn in list(self._connections):
            conn.released.wait(max(0.0, deadline - time.monotonic()))
        self.files.save_stopped()
        self._retry_sidecars()  # a last try, whenever each was due; start-up recovery repairs what still fails
        self._server.stop(timeout=max(0.0, deadline - time.monotonic()))
        for greenlet in (self._ticker, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        if self._poller is not None:
            self._poller.stop()
        self.files.join(timeout=max(0.0, deadline - time.monotonic()))
        self._server = None
        self._ticker = self._flusher = self._poller = None

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    def health(self) -> list[str]:
        """What keeps the recorder from recording now (empty: nothing)."""
        if self._server is None:
            return ["the recorder is not listening"]
        problems = []
        parts = (("reader of every stream (poller)", self._poller.greenlet if self._poller else None),
                 ("periodic upkeep (ticker)", self._ticker), ("flush to disk (flusher)", self._flusher))
        for name, greenlet in parts:
            if greenlet is None or greenlet.dead:
                problems.append(f"the recorder's {name} is not running")
        return problems

    # ---- the controller's side -----------------------------------------------------------------------------

    def open_recordings(self) -> list[str]:
        """The uuids of the calls whose audio is arriving on a connection right now."""
        return [uuid for uuid, state in self.book.calls.items()
                if state.conn is not None and state.recording is not None and not state.recording.finished]

    def end_call(self, uuid: str, at: float | None = None, reason: str | None = None) -> None:
        """The call is over (hangup, gone, or its stream stopped on purpose): finalise its recording now if no
        connection is attached, else as soon as that connection ends. `at` (on ``clock``, time.monotonic()
        unless injected): when the call ended, so a stream that was down at the end still gives a WAV as long
        as the call; None when that is unknown: the recording ends where its audio did. `reason`: why the
        controller ended it (e.g. RULE_MAX_DURATION), written as the close reason instead of how the
        connection happened to end."""
        self._act(self.book.call_ended(normalise_uuid(uuid) or uuid, at, reason, self.clock()))

    def set_tap(self, uuid: str, tap: Callable[[bytes], None] | None, stats: dict | None = None) -> None:
        """Every audio frame of this call also goes to `tap` (from the poller: it must not block), and `stats`
        (a dict its owner keeps current) is saved in the call's sidecar as "relay"; None removes both."""
        state = self.book.set_tap(normalise_uuid(uuid) or uuid, tap, stats)
        if state is None:
            return
        if state.conn is not None:
            state.conn.tap = tap
        if state.recording is not None and stats is not None:
            state.recording.sidecar.relay = stats

    def send_text(self, uuid: str, text: str) -> bool:
        """A text frame to the module on the call's live stream (a streamAudio message, say). Never waits;
        False when the call has no live stream to send it on, or the module is not taking what was sent."""
        state = self.book[normalise_uuid(uuid) or uuid]
        conn = state.conn if state is not None else None
        if conn is None or conn.recording is None or conn.ended or not conn.upgraded:
            return False
        return conn.send(encode_frame(OP_TEXT, text.encode("utf-8")))

    def position(self, uuid: str) -> float | None:
        """Seconds into the call's open recording now (where what happens now lands in its WAV), or None."""
        state = self.book[normalise_uuid(uuid) or uuid]
        return state.recording.elapsed_s() if state is not None and state.recording is not None else None

    def live_stats(self) -> dict[str, dict]:
        """What each open recording holds so far (for /calls and the doctor), by call uuid."""
        now = self.clock()
        return {uuid: state.recording.live_stats(now, state.conn) for uuid, state in self.book.calls.items()
                if state.recording is not None}

    # ---- the door (before the 101) -------------------------------------------------------------------------

    def admit(self, environ: dict, sock) -> Connection | Refuse:
        """The request proved which call it streams (or not); the book says whether it may stream now."""
        address = environ.get("REMOTE_ADDR", "?")
        peer = f"{address}:{environ.get('REMOTE_PORT', '?')}"
        spec = check_request(environ, self.registry, self.path_prefix)
        verdict = spec if isinstance(spec, Refuse) else self.book.admit(spec.uuid)
        if isinstance(verdict, Refuse):
            self.door_log.log(log, logging.WARNING, address, "refused stream from %s for %r: %s %s", peer,
                              environ.get("PATH_INFO", "")[:200], verdict.status, verdict.reason)
            return verdict
        conn = Connection(spec, peer, sock, self.ssl_context is not None, self.max_frame_bytes, self.door_log)
        if verdict.replaces is not None:
            # The module holds one stream per channel: a new one with the call's token means the old one is
            # gone or going (a restart: stop, then start in one write), whether or not its close was read.
            log.info("call %s: a new connection from %s replaces the one from %s", spec.uuid, peer,
                     verdict.replaces.peer)
            self._end_connection(verdict.replaces, REPLACED)
        self.book.reserve(spec.uuid, conn)
        self._connections.add(conn)
        return conn

    def forget_connection(self, conn: Connection) -> None:
        """Its handler returns: make sure nothing of ours still touches the socket pywsgi is about to close."""
        if not conn.ended:  # the handler was killed (a stop past its timeout)
            self._end_connection(conn, SERVER_STOP)
        if conn.writer is not None:
            conn.writer.kill()
        self._connections.discard(conn)

    # ---- the stream (after the 101) ------------------------------------------------------------------------

    def _application(self, environ, start_response):
        conn: Connection | None = environ.get(CONNECTION_KEY)
        ws = environ.get("wsgi.websocket")
        if conn is None or ws is None:
            # Admitted but not a WebSocket upgrade (no Upgrade/Connection headers).
            if conn is not None:
                self._end_connection(conn, CLIENT_CLOSE)
            body = b"this endpoint only speaks WebSocket\n"
            start_response("426 Upgrade Required", [("Upgrade", "websocket"), ("Connection", "close"),
                                                    ("Content-Type", "text/plain"),
                                                    ("Content-Length", str(len(body)))])
            return [body]
        ws.closed = True  # the library's object never reads or writes: the frames are ours (and so is the close)
        reader = None
        try:
            conn.upgraded = True
            if self._open(conn):
                early = read_ahead(environ[HANDLER_KEY])
                if early:
                    self._consume_read(conn, early, self.clock())
                if not conn.ended:
                    if conn.tls:
                        reader = gevent.spawn(self._poller.read_tls, conn)
                    else:
                        self._poller.add(conn)
            elif conn.pending_close is not None:
                conn.send(close_frame(*conn.pending_close))
                conn.release_when_sent()
            conn.released.wait()
        except Exception:  # one bad connection never takes the server (or another call) with it
            log.exception("call %s: recording connection from %s failed", conn.spec.uuid, conn.peer)
            self._end_connection(conn, INTERNAL_ERROR)
        finally:
            if reader is not None:
                reader.kill()
        return []

    def _open(self, conn: Connection) -> bool:
        """The file this connection writes: True when it streams into one now."""
        choice = self.book.opening(conn.spec.uuid, conn)
        if choice is None or conn.ended:
            if conn.pending_close is None:
                conn.pending_close = (CLOSE_GOING_AWAY, "recorder stopping" if self.book.stopping else "replaced")
            conn.ended = True
            return False
        if isinstance(choice, AlreadyFinished):  # a limit or a failed file ended it: no second file
            conn.send(close_frame(CLOSE_NORMAL, "the call's recording is finished"))
            self._end_connection(conn, CLIENT_CLOSE)
            return False
        recording = self.files.open_for(conn, choice)
        if recording is None:
            conn.ended = True
            conn.pending_close = (CLOSE_INTERNAL_ERROR, "recorder cannot write")
            return False
        conn.recording, conn.tap, conn.heard_at = recording, self.book[conn.spec.uuid].tap, self.clock()
        if recording.write_error is not None:  # continuing the file failed: it ends now, as one file
            self._end_connection(conn, WRITE_ERROR, error=recording.write_error)
        return not conn.ended

    def _consume_read(self, conn: Connection, data, arrival: float) -> None:
        """Bytes read from this stream (by the poller): handle them, end the stream if they ended it."""
        try:
            ending = conn.consume(data, arrival)
        except Exception as exc:  # one stream's bug must not stop the poller, which serves them all
            log.exception("call %s: unexpected failure while recording", conn.spec.uuid)
            ending = INTERNAL_ERROR, {"error": f"{type(exc).__name__}: {exc}"}
        if ending is not None:
            self._end_connection(conn, ending[0], **ending[1])

    def _stream_closed(self, conn: Connection) -> None:
        """The connection ended (EOF or a reset) without a close frame."""
        self._end_connection(conn, EOF, at=self.clock())

    def _end_connection(self, conn: Connection, ending: Ending, *, at: float | None = None,
                        close_code: int | None = None, close_text: str | None = None, error: str | None = None) -> None:
        """The connection is over for the recording (safe from any greenlet, at any stage): the book says what
        that means for the file, which is settled first; then the module is told why, if it should be."""
        if conn.ended:
            return
        if ending in (REPLACED, SERVER_STOP) and conn.recording is not None and not conn.tls:
            self._drain(conn)  # what its socket already holds belongs to the call
            if conn.ended:
                return
        conn.ended = True
        if self._poller is not None:
            self._poller.remove(conn)
        now = self.clock()
        self._act(self.book.connection_ended(conn.spec.uuid, conn, ending, at=now if at is None else at,
                                             close_code=close_code, close_text=close_text, error=error))
        if ending.close is not None:
            if conn.upgraded:
                conn.send(close_frame(*ending.close))
            else:
                conn.pending_close = ending.close
        conn.release_when_sent()

    def _drain(self, conn: Connection) -> None:
        """Read what the connection's socket holds now, without waiting (a replaced or stopped stream's last
        frames, which the poller has not got round to)."""
        for chunk in conn.read_waiting(_DRAIN):
            self._consume_read(conn, chunk, self.clock())
            if conn.ended:
                return

    # ---- carrying out the book's decisions ---------------------------------------------------------------------

    def _act(self, actions, guarded: bool = False) -> None:
        for action in actions:
            if guarded:
                self._guarded(self._do, action)
            else:
                self._do(action)

    def _do(self, action) -> None:
        if isinstance(action, Finalise):
            self.files.finalise(action)
        elif isinstance(action, Detach):
            self._act(self.files.detach(action))
        elif isinstance(action, EndConnection):
            log.log(logging.INFO if action.ending is SERVER_STOP else logging.WARNING, "call %s: %s; ending the "
                    "connection from %s", action.conn.spec.uuid, action.detail, action.conn.peer)
            self._end_connection(action.conn, action.ending)
        elif isinstance(action, Upkeep):
            ending = self.files.upkeep(action)
            if ending is not None:
                self._end_connection(action.conn, ending[0], error=ending[1])
        elif isinstance(action, RetrySidecar):
            self.files.retry_sidecar(action)

    # ---- periodic upkeep ------------------------------------------------------------------------------------

    def _every(self, interval_s: float, upkeep: Callable[[], None]) -> None:
        while True:
            gevent.sleep(interval_s)
            self._guarded(upkeep)

    def _guarded(self, upkeep, *args) -> None:
        # One unexpected failure must not end the upkeep of every other call for the life of the process.
        try:
            upkeep(*args)
        except Exception:
            self.upkeep_errors += 1
            log.exception("recorder upkeep %s failed for %s; carrying on", getattr(upkeep, "__name__", upkeep),
                          args[0] if args else "every call")

    def _tick(self) -> None:
        """Settle held-back audio, keep headers current while frames pause, end recordings past their wall-clock
        limit, finalise recordings whose stream never came back, retry final sidecars."""
        self._act(self.book.tick(self.clock()), guarded=True)
        self.door_log.flush()  # what a client that went quiet had left unsaid

    def _flush(self) -> None:
        for conn, error in self.files.flush():
            self._end_connection(conn, WRITE_ERROR, error=error)

    def _retry_sidecars(self) -> None:
        for action in self.book.unsaved():
            self._do(action)
