"""The WebSocket client inside mod_audio_stream: one `SimStream` per connection it opens.

It connects, sends the module's exact upgrade request, then the metadata text frame, then masked
binary frames of PCM at real-time pace (one per STREAM_BUFFER_SIZE ms), and reports to the module
what the server does: `connect`, `disconnect` (the server closed), `error` (refused, timeout,
upgrade failed, TCP dropped), `json`/`play` (the server sent text). Everything it sends is
recorded, so tests can compare a recording with exactly the bytes that went out.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
import time
from typing import Callable

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.lock import Semaphore

from . import stream_audio_rules
from . import ws_frames as wsf
from .audio_stream_rules import WsUrl
from .media import PTIME_S, FrameChunker, StreamAudio

log = logging.getLogger("controller.simulator.ws")

HANDSHAKE_TIMEOUT_S = 1.0  # the module gives up on a silent server after about a second
CLOSE_WAIT_S = 1.0  # how long a closing client waits for the server's close reply
SEND_TIMEOUT_S = 5.0
NORMAL_CLOSURE_REASON = "Normal closure"
ABNORMAL_EOF = "Connection closed without WebSocket CLOSE (abnormal EOF)"
CRASHED = "switch crashed: TCP closed by the kernel, no WebSocket close frame, no event"

# notify(stream, kind, body): kind is connect | disconnect | error | json | play.
Notify = Callable[["SimStream", str, str], None]


class HandshakeFailed(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class SimStream:
    """One WebSocket connection opened by the emulated module, and a record of all it sent.

    Public record: url, mix, rate (asked for), sent_rate (the audio's), metadata, buffer_ms, leaked,
    request_bytes, response_bytes,
    frames [(t, opcode, payload_len)] (t = seconds since the TCP connect), binary_frames
    [(t, payload)], sent_pcm, sent_text, received [(t, opcode, payload)], events (module events it
    caused), connected / ended (gevent Events), end_reason, server_close (code, reason) or None,
    play_files (the files its streamAudio messages became, until the stream's cleanup deletes them).
    """

    def __init__(
        self,
        call,
        url: WsUrl,
        url_text: str,
        mix: str,
        rate: int,
        metadata: str | None,
        notify: Notify,
        *,
        buffer_ms: int = 20,
        heartbeat_s: int = 0,
        extra_headers: list[tuple[str, str]] | None = None,
        frame_sizes: list[int] | None = None,
        odd_frames: bool = False,
        tls_options: dict[str, str] | None = None,
        leaked: bool = False,
        sent_rate: int | None = None,
        temp_dir: str = "/tmp",
    ):
        """sent_rate: the rate the audio really goes out at, when a (faulty) module ignores `rate`.
        temp_dir: where streamAudio messages become files (SWITCH_GLOBAL_dirs.temp_dir)."""
        self.call = call
        self.uuid = call.uuid
        self.url = url_text
        self.parsed_url = url
        self.mix = mix
        self.rate = rate
        self.sent_rate = sent_rate or rate
        self.metadata = metadata
        self.buffer_ms = buffer_ms
        self.heartbeat_s = heartbeat_s
        self.extra_headers = list(extra_headers or [])
        self.frame_sizes = frame_sizes
        self.odd_frames = odd_frames
        self.tls_options = dict(tls_options or {})
        self.leaked = leaked
        self.temp_dir = temp_dir
        self._notify = notify

        self.request_bytes = b""
        self.response_bytes = b""
        self.frames: list[tuple[float, int, int]] = []
        self.binary_frames: list[tuple[float, bytes]] = []
        self.sent_text: list[str] = []
        self.received: list[tuple[float, int, bytes]] = []
        self.events: list[str] = []
        self.play_files: list[str] = []  # the files streamAudio messages became; deleted at the cleanup
        self._play_index = 0  # the module's m_playFile: counts from 0 per stream
        self.server_close: tuple[int, str] | None = None
        self.connected = Event()
        self.ended = Event()
        self.end_reason = ""
        self.paused = False
        self.started_at = time.time()

        self._state = "connecting"  # connecting -> open -> closing -> closed
        self._sock: socket.socket | None = None
        self.opened_at = time.monotonic()  # when the TCP connection opened; frame times count from here
        self._send_lock = Semaphore()
        self._wake = Event()  # cuts the pacing sleep short when the stream stops
        self._peer_closed = Event()
        self._chunker: FrameChunker | None = None
        self._reader = wsf.FrameReader()
        self._pending = b""  # bytes that followed the upgrade response in the same read
        self._greenlets: list[gevent.Greenlet] = []

    # ---- what the record says ----

    @property
    def sent_pcm(self) -> bytes:
        return b"".join(payload for _, payload in self.binary_frames)

    def __repr__(self) -> str:
        return f"<SimStream {self.uuid} {self.url} {self.mix}/{self.rate} {self._state} {self.end_reason!r}>"

    # ---- driven by the module ----

    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._run))

    def send_text(self, text: str) -> None:
        if self._state == "open":
            self._send(wsf.TEXT, text.encode("utf-8"))

    def close(self, reason: str, text: str | None = None) -> None:
        """stop (with optional final text) or hangup: text frame, close 1000 "Normal closure", no event."""
        if self._state == "connecting":
            self._finish(reason)
            return
        if self._state != "open":  # already closing, or ended by the server or an error
            return
        self._state = "closing"
        self._wake.set()
        try:
            if text:
                self._send(wsf.TEXT, text.encode("utf-8"), force=True)
            if self._chunker is not None:
                for payload in self._chunker.flush():
                    self._send(wsf.BINARY, payload, force=True)
            self._send(wsf.CLOSE, wsf.close_payload(wsf.NORMAL_CLOSURE, NORMAL_CLOSURE_REASON), force=True)
        except OSError as exc:
            log.info("%s: close frame not sent: %s", self.uuid, exc)
            self._finish(reason)
            return
        # The server's close reply is awaited elsewhere so `stop` answers at once, as the module does.
        gevent.spawn(self._await_close_reply, reason)

    def crash(self) -> None:
        """The switch process died (Simulator.crash): the kernel closes the TCP connection (FIN, or RST when
        data was unread). No close frame, no event: nobody is left to send them."""
        if self.ended.is_set():
            return
        self._state = "closed"  # first: nothing below may send a frame or report an event
        self._close_socket()
        self._finish(CRASHED)

    def abort_ws_tcp(self) -> None:
        """Fault: the TCP connection drops under the stream (RST, no close frame): ::error code 1."""
        if self._state != "open":
            return
        self._state = "closed"
        self._reset_socket()
        self._report("error", _error_body(1, ABNORMAL_EOF))
        self._finish("aborted: TCP reset")

    # ---- the connection ----

    def _run(self) -> None:
        try:
            self._handshake()
        except HandshakeFailed as failure:
            if self._state == "connecting":
                self._state = "closed"
                self._close_socket()
                log.info("%s: %s failed: %s", self.uuid, self.url, failure.message)
                self._report("error", _error_body(failure.code, failure.message))
                self._finish(f"error {failure.code}: {failure.message}")
            return
        if self._state != "connecting":  # stopped or hung up while connecting
            self._close_socket()
            return
        self._state = "open"
        self.connected.set()
        log.info("%s: connected to %s (%s %d Hz%s)", self.uuid, self.url, self.mix, self.rate,
                 ", leaked" if self.leaked else "")
        # As the module does on open: initial metadata first, then the connect event.
        if self.metadata and not self.leaked:
            self.send_text(self.metadata)
        self._report("connect", json.dumps({"status": "connected"}, separators=(",", ":")))
        self._greenlets.append(gevent.spawn(self._read_loop))
        if self.heartbeat_s:
            self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        if not self.leaked:
            self._stream_audio()

    def _handshake(self) -> None:
        url = self.parsed_url
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.request_bytes = wsf.upgrade_request(url.host_port, url.path, key, self.extra_headers)
        try:
            with gevent.Timeout(HANDSHAKE_TIMEOUT_S):
                sock = gsocket.create_connection((url.host, url.port))
                self.opened_at = time.monotonic()
                if url.scheme == "wss":
                    sock = self._wrap_tls(sock, url.host)
                self._sock = sock
                sock.sendall(self.request_bytes)
                head, rest = self._read_response_head(sock)
        except gevent.Timeout:
            raise HandshakeFailed(10, "Timeout") from None
        except OSError as exc:
            if exc.errno:  # e.g. "Connection refused (system error 111)", as the module words it
                reason = exc.strerror or os.strerror(exc.errno)
                raise HandshakeFailed(6, f"{reason} (system error {exc.errno})") from None
            raise HandshakeFailed(6, "WebSocket upgrade failed") from None
        self.response_bytes = head
        try:
            response = wsf.parse_upgrade_response(head)
        except wsf.WsProtocolError:
            raise HandshakeFailed(6, "WebSocket upgrade failed") from None
        if not response.accepts(key):
            raise HandshakeFailed(6, "WebSocket upgrade failed")
        self._pending = rest

    def _wrap_tls(self, sock, host: str):
        from gevent import ssl as gssl

        context = gssl.create_default_context(cafile=self.tls_options.get("STREAM_TLS_CA_FILE") or None)
        if self.tls_options.get("STREAM_TLS_CERT_FILE"):
            context.load_cert_chain(self.tls_options["STREAM_TLS_CERT_FILE"],
                                    self.tls_options.get("STREAM_TLS_KEY_FILE") or None)
        if self.tls_options.get("STREAM_TLS_DISABLE_HOSTNAME_VALIDATION", "").lower() in ("true", "1", "yes"):
            context.check_hostname = False
        return context.wrap_socket(sock, server_hostname=host)

    @staticmethod
    def _read_response_head(sock) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError(0, "connection closed during the WebSocket upgrade")
            data += chunk
            if len(data) > wsf.MAX_RESPONSE_HEAD:
                raise OSError(0, "upgrade response too long")
        end = data.index(b"\r\n\r\n") + 4
        return data[:end], data[end:]

    def _stream_audio(self) -> None:
        call = self.call
        audio = StreamAudio(call.media, self.mix, self.sent_rate, overlay=call.broadcasts.playback_at)
        buffer_bytes = audio.tick_bytes * audio.channels * self.buffer_ms // 20
        # odd_frames: the same bytes in frames one byte longer, then one shorter (samples split).
        sizes = [buffer_bytes + 1, buffer_bytes - 1] if self.odd_frames else self.frame_sizes
        self._chunker = FrameChunker(buffer_bytes, sizes)
        # A stream started before the answer (the module pre-answers) gets audio from the answer on.
        gevent.wait([call.answered, self._wake], count=1)
        if self._state != "open":
            return
        # The module's media thread runs apart from its connection: from the first tick after the connection
        # opened it sends every frame, late ones in a burst. Counting from when this greenlet got here instead
        # would drop audio whenever this process was slow, which a switch's media clock never does.
        tick = max(0, int((self.opened_at - call.answered_at) / PTIME_S) + 1)
        while self._state == "open":
            due = call.answered_at + (tick + 1) * PTIME_S
            delay = due - time.monotonic()
            if delay > 0 and self._wake.wait(delay):
                break
            if self._state != "open":
                break
            if not self.paused:
                chunk = audio.chunk(tick)
                if chunk:
                    for payload in self._chunker.push(chunk):
                        try:
                            self._send(wsf.BINARY, payload)
                        except OSError as exc:
                            self._lost(f"send failed: {exc}")
                            return
            tick += 1

    def _read_loop(self) -> None:
        pending, self._pending = self._pending, b""
        while True:
            try:
                frames = self._reader.feed(pending) if pending else []
            except wsf.WsProtocolError as exc:
                self._lost(f"bad frame from server: {exc}")
                return
            for frame in frames:
                if self._on_frame(frame):
                    return
            try:
                pending = self._sock.recv(65536) if self._sock else b""
            except OSError:
                pending = b""
            if not pending:
                if self._state in ("closing", "closed"):
                    self._peer_closed.set()
                    return
                self._lost("EOF")
                return

    def _on_frame(self, frame: wsf.Frame) -> bool:
        """Handle one server frame; True when the connection is over."""
        self.received.append((self._now(), frame.opcode, frame.payload))
        if frame.opcode == wsf.CLOSE:
            code, reason = wsf.parse_close(frame.payload)
            if self._state == "closing":  # the reply to our own close
                self._peer_closed.set()
                return True
            if self._state != "open":
                return True
            self.server_close = (code, reason)
            self._state = "closed"
            self._wake.set()
            try:
                self._send(wsf.CLOSE, frame.payload, force=True)  # echo the server's code and reason
            except OSError:
                pass
            self._close_socket()
            # The module stays attached after a server close: stop/pause/send_text still say +OK.
            self._report("disconnect", json.dumps(
                {"status": "disconnected", "message": {"code": code, "reason": reason}}, separators=(",", ":")))
            self._finish(f"server closed {code} {reason}".rstrip())
            return True
        if frame.opcode == wsf.PING:
            try:
                self._send(wsf.PONG, frame.payload, force=True)
            except OSError:
                pass
        elif frame.opcode == wsf.TEXT:
            self._on_text(frame.payload.decode("utf-8", "replace"))
        return False

    def _on_text(self, text: str) -> None:
        if self._state != "open":
            return  # after stop the module has cleared its callbacks (markCleanedUp)
        played = self._play_file_for(text)
        if played is None:
            self._report("json", text)
        else:
            self._report("play", played)

    def _play_file_for(self, text: str) -> str | None:
        """processMessage (see stream_audio_rules): a streamAudio message becomes a temp file and the ::play
        body; None for any other text, or a streamAudio message the module refuses (logged: then ::json)."""
        request = stream_audio_rules.read_message(text)
        if request is None:
            return None
        if isinstance(request, str):
            log.error("(%s) %s", self.uuid, request)
            return None
        index, self._play_index = self._play_index, self._play_index + 1
        path = f"{self.temp_dir}{os.sep}{self.uuid}_{index}.tmp{request.suffix}"
        try:
            with open(path, "wb") as handle:
                handle.write(request.audio)
        except OSError as exc:
            log.error("(%s) processMessage - failed to open file for write: %s (%s)", self.uuid, path, exc)
            return None
        self.play_files.append(path)
        return stream_audio_rules.play_body(request.details, path)

    def delete_files(self) -> None:
        """The module's deleteFiles, at the stream's cleanup (stop, hangup, or an error): not when the server
        closes (the stream stays attached), and never after a crash (nothing is left to do it)."""
        files, self.play_files = self.play_files, []
        for path in files:
            try:
                os.remove(path)
            except OSError:
                pass

    def _heartbeat_loop(self) -> None:
        while not self._wake.wait(self.heartbeat_s) and self._state == "open":
            try:
                self._send(wsf.PING, b"ping")
            except OSError:
                return

    # ---- plumbing ----

    def _now(self) -> float:
        return time.monotonic() - self.opened_at

    def _send(self, opcode: int, payload: bytes, force: bool = False) -> None:
        with self._send_lock:
            if self._sock is None or (self._state != "open" and not force):
                return
            data = wsf.encode_frame(opcode, payload, os.urandom(4))
            self._sock.settimeout(SEND_TIMEOUT_S)
            try:
                self._sock.sendall(data)
            finally:
                if self._sock is not None:
                    self._sock.settimeout(None)
            t = self._now()
            self.frames.append((t, opcode, len(payload)))
            if opcode == wsf.BINARY:
                self.binary_frames.append((t, payload))
            elif opcode == wsf.TEXT:
                self.sent_text.append(payload.decode("utf-8", "replace"))

    def _lost(self, why: str) -> None:
        """The TCP connection ended without a close frame: ::error code 1, and the module detaches."""
        if self._state != "open":
            return
        self._state = "closed"
        self._wake.set()
        self._close_socket()
        log.info("%s: connection to %s lost (%s)", self.uuid, self.url, why)
        self._report("error", _error_body(1, ABNORMAL_EOF))
        self._finish(f"error 1: {ABNORMAL_EOF}")

    def _await_close_reply(self, reason: str) -> None:
        self._peer_closed.wait(CLOSE_WAIT_S)
        self._state = "closed"
        self._close_socket()
        self._finish(reason)

    def _report(self, kind: str, body: str) -> None:
        self.events.append(kind)
        self._notify(self, kind, body)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _reset_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()

    def _finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self._state = "closed"
        self._wake.set()
        self._close_socket()
        self.end_reason = reason
        self.ended.set()
        current = gevent.getcurrent()
        for greenlet in self._greenlets:
            if greenlet is not current:
                greenlet.kill(block=False)


def _error_body(code: int, message: str) -> str:
    return json.dumps({"status": "error", "message": {"code": code, "error": message}}, separators=(",", ":"))
