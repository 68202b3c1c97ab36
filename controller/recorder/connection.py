"""One admitted stream connection: its socket, its frame reader, and its frames to the module.

Frames to the module (pongs, closes, talk-back text) go through one bounded queue, in order, by sends that
never wait: any greenlet may queue, and none blocks on a module that does not read. What the socket does not
take at once, the connection's writer greenlet finishes within SEND_TIMEOUT_S; the connection is ``released``
(its handler may return and pywsgi close the socket) only once that writer is done, so nothing of ours ever
waits on a socket that is closed under it.
"""

from __future__ import annotations

import logging
from typing import Callable

import gevent
from gevent.event import Event as GeventEvent
from gevent.socket import wait_write

from ..ops.log_limit import LogLimiter
from .frames import OP_BINARY, OP_CLOSE, FrameReader, Reply, interpret, refusal
from .recording import CLIENT_CLOSE, PROTOCOL_ERROR, WRITE_ERROR, Ending, Recording, StreamSpec
from .wav import RecordingError

log = logging.getLogger("controller.recorder")

# Frames waiting to go to the module (talk-back text, pongs, a close): beyond this it is not reading.
MAX_OUTGOING_BYTES = 4 * 1024 * 1024
# A backlog the module does not take within this long is dropped, and the connection sends nothing more.
SEND_TIMEOUT_S = 5.0


class Connection:
    """One admitted connection, from admission until its handler returns."""

    def __init__(self, spec: StreamSpec, peer: str, sock, tls: bool, max_frame_bytes: int,
                 log_limit: LogLimiter) -> None:
        self.spec = spec
        self.peer = peer
        self.socket = sock
        self.tls = tls
        self.raw = sock if tls else getattr(sock, "_sock", sock)  # gevent's socket wraps a non-blocking one
        self.reader = FrameReader(max_frame_bytes)
        self.recording: Recording | None = None
        self.tap: Callable[[bytes], None] | None = None
        self.heard_at = 0.0  # any bytes, pings included: the client is alive
        self.upgraded = False  # the 101 is sent: frames may follow
        self.ended = False
        self.pending_close: tuple[int, str] | None = None  # ended before its 101: the close goes after it
        self.out = bytearray()  # frames to the client, in order
        self.closing = False  # a close frame is queued: nothing after it
        self.broken = False  # a send failed or timed out mid-frame: nothing more can be sent
        self.writer: gevent.Greenlet | None = None
        self.released = GeventEvent()  # the recorder is done with the socket: its handler may close it
        self._log_limit = log_limit

    def consume(self, data, arrival: float) -> tuple[Ending, dict] | None:
        """Every complete frame in `data` (read at `arrival`), in order, into the recording; (ending, details)
        when they ended the stream, else None."""
        self.heard_at = arrival
        reader, recording = self.reader, self.recording
        for opcode, payload in reader.feed(data):
            if opcode == OP_BINARY:  # the hot path: a frame every 20 ms per call
                if self.tap is not None:
                    self.tap(payload)
                try:
                    limit = recording.on_audio(payload, arrival)
                except RecordingError as exc:
                    log.error("call %s: %s", self.spec.uuid, exc)
                    return WRITE_ERROR, {"error": str(exc)}
                if limit is not None:
                    log.warning("call %s: %s reached, ending the recording", self.spec.uuid, limit)
                    return Ending(limit), {}
                continue
            meaning = interpret(opcode, payload)
            if isinstance(meaning, str):
                log.info("call %s: text frame: %s", self.spec.uuid, meaning[:200])
                recording.on_text(meaning)
            elif isinstance(meaning, Reply):
                self.send(meaning.frame)
                if meaning.closes and meaning.problem is None:
                    return CLIENT_CLOSE, {"at": arrival, "close_code": meaning.code, "close_text": meaning.text}
                if meaning.closes:
                    return self._refused(meaning)
        if reader.error is not None:  # what came before it is kept
            return self._refused(refusal(reader.error))
        return None

    def _refused(self, reply: Reply) -> tuple[Ending, dict]:
        if not self.closing:
            self.send(reply.frame)
        log.error("call %s: %s; closing with %d", self.spec.uuid, reply.problem, reply.code)
        return PROTOCOL_ERROR, {"close_code": reply.code, "error": reply.problem}

    def send(self, frame: bytes) -> bool:
        """Queue a frame; False when the connection takes nothing more (closed, broken, or a backlog over
        MAX_OUTGOING_BYTES: the module is not reading)."""
        if self.closing or self.broken or len(self.out) + len(frame) > MAX_OUTGOING_BYTES:
            return False
        if frame[0] & 0x0F == OP_CLOSE:
            self.closing = True
        self.out += frame
        if self.writer is None:
            if self.tls:  # a TLS send may need reads of its own: always the writer's
                self.writer = gevent.spawn(self._write_backlog)
            else:
                self._send_now()
        return True

    def release_when_sent(self) -> None:
        if self.ended and self.writer is None:
            self.released.set()

    def read_waiting(self, buffer: bytearray):
        """The bytes its socket holds now, read without waiting, chunk by chunk (plain sockets only)."""
        view = memoryview(buffer)
        while True:
            try:
                n = self.raw.recv_into(buffer)
            except OSError:  # nothing more now (BlockingIOError), or the connection is gone
                return
            if not n:
                return
            yield view[:n]

    def _send_now(self) -> None:
        try:
            sent = self.raw.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.broken = True
            self.out.clear()
            return
        del self.out[:sent]
        if self.out:
            self.writer = gevent.spawn(self._write_backlog)

    def _write_backlog(self) -> None:
        """What the socket did not take at once; the connection's only writer meanwhile."""
        try:
            with gevent.Timeout(SEND_TIMEOUT_S):
                while self.out:
                    if self.tls:
                        sent = self.socket.send(self.out)
                    else:
                        wait_write(self.raw.fileno())
                        try:
                            sent = self.raw.send(self.out)
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                    del self.out[:sent]
        except (gevent.Timeout, OSError) as exc:
            self.broken = True
            self._log_limit.log(log, logging.WARNING, self.spec.uuid, "call %s: %d byte(s) for %s not sent (%s); "
                                "nothing more is sent on this connection", self.spec.uuid, len(self.out), self.peer,
                                "not reading" if isinstance(exc, gevent.Timeout) else exc)
            self.out.clear()
        finally:
            self.writer = None
            self.release_when_sent()
