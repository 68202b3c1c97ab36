"""The inbound Event Socket (mod_event_socket) of the simulated switch: a real TCP server.

Per connection, as FreeSWITCH does it: `auth/request` first; commands answered in order; events
only after auth and `event`, in the connection's format, through the connection's filters; while
an `api` command runs, events for that connection wait; TCP_NODELAY set, as mod_event_socket does.
The fault knobs live on `EslServer` and, per connection, on `EslConnection`.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.queue import Queue
from gevent.server import StreamServer

from ..esl import protocol

log = logging.getLogger("controller.simulator.esl")

GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
SHUTTING_DOWN = "The system is being shut down.\n"
MAX_QUEUED_EVENTS = 500  # FreeSWITCH drops a listener this far behind, without a notice
STOP_GRACE_S = 2.0

# switch_event.c EVENT_NAMES: what `event`/`nixevent` accept (case-insensitively).
EVENT_NAMES = frozenset(
    """CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE CHANNEL_ANSWER
    CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD
    CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA
    CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID
    API LOG INBOUND_CHAN OUTBOUND_CHAN STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH
    MODULE_LOAD MODULE_UNLOAD DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE
    MESSAGE_WAITING MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE
    PRIVATE_COMMAND HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML
    NOTIFY PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
    CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED SEND_INFO
    RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START RECORD_STOP
    PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START MEDIA_BUG_STOP
    CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT CALL_DETAIL DEVICE_STATE
    TEXT SHUTDOWN_REQUESTED ALL""".split()
)


def _event_name(token: str) -> str | None:
    name = token.upper()
    if name.startswith("SWITCH_EVENT_"):
        name = name[len("SWITCH_EVENT_"):]
    return name if name in EVENT_NAMES else None


def _event_words(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(event names, CUSTOM subclasses) as mod_event_socket reads them: words that name no event
    are skipped, and every word after CUSTOM is a subclass."""
    names: list[str] = []
    subclasses: list[str] = []
    for token in tokens:
        if "CUSTOM" in names:
            subclasses.append(token)
        elif (name := _event_name(token)) is not None:
            names.append(name)
    return names, subclasses


def _regex_matches(expression: str, value: str) -> bool:
    """switch_regex_perform on "/pattern/flags": the i flag ignores case."""
    body, slash, flags = expression[1:].rpartition("/")
    pattern = body if slash else expression[1:]
    try:
        return re.search(pattern, value, re.IGNORECASE if slash and "i" in flags else 0) is not None
    except re.error:
        return False


class SwitchEvent:
    """One fired event: its headers in FreeSWITCH's order, its body, and its wire form per format."""

    def __init__(self, headers: list[tuple[str, str]], body: str = ""):
        self.headers = headers
        self.body = body
        self.first = {}
        for name, value in headers:
            self.first.setdefault(name.lower(), value)
        self.name = self.first.get("event-name", "")
        self.subclass = self.first.get("event-subclass")
        self._wire: dict[str, bytes] = {}

    def wire(self, event_format: str) -> bytes:
        if event_format not in self._wire:
            self._wire[event_format] = protocol.event_message(event_format, self.headers, self.body)
        return self._wire[event_format]


@dataclass
class Subscription:
    event_format: str = "plain"
    enabled: bool = False  # FreeSWITCH's LFLAG_EVENTS: set by the first `event`
    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    filters: list[tuple[str, str]] = field(default_factory=list)

    def wants(self, event: SwitchEvent) -> bool:
        if not self.enabled:
            return False
        if "ALL" not in self.names:
            if event.name not in self.names:
                return False
            if event.name == "CUSTOM" and event.subclass and event.subclass not in self.subclasses:
                return False
        return self._passes_filters(event)

    def _passes_filters(self, event: SwitchEvent) -> bool:
        # mod_event_socket: any matching filter lets an event through; a "-" filter that matches
        # keeps it out; values starting with "/" are regular expressions.
        if not self.filters:
            return True
        send = False
        for header, wanted in self.filters:
            value = event.first.get(header.lower())
            if value is None:
                continue
            positive = True
            text = wanted.lstrip(" +-")
            for char in wanted[: len(wanted) - len(text)]:
                positive = {"+": True, "-": False}.get(char, positive)
            if send and positive:
                continue
            if wanted.startswith("/"):
                matched = _regex_matches(text, value)
            else:
                matched = value.lower() == text.lower()
            if matched:
                if not positive:
                    return False
                send = True
        return send


class EslConnection:
    """One client of the event socket. `commands` lists every command it sent, in order; `command_reads`
    says for each which recv() it was completed in (1, 2, ...): commands that share a number arrived in one
    read, i.e. the client wrote the later ones without waiting for the earlier ones' replies.

    Faults: stop_reading() (the switch never calls recv on it again, so the kernel buffers fill and the
    client's sends block), freeze() (half-open: open at TCP level, but nothing is sent on it again and
    what arrives is ignored), vanish() (the process died: the socket closes with no notice).
    """

    def __init__(self, server: EslServer, sock, address, number: int):
        self.server = server
        self.sock = sock
        self.address = address
        self.number = number
        self.commands: list[str] = []
        self.command_reads: list[int] = []
        self.reads = 0
        self.authenticated = False
        self.subscription = Subscription()
        self.frozen = False
        self.closed = Event()
        self._reading = Event()  # cleared by stop_reading()
        self._reading.set()
        self._queue: Queue = Queue()
        self._idle = Event()  # cleared while a command runs: events wait for its reply
        self._idle.set()
        self._send_lock = Semaphore()
        self._closing = False
        self._writer: gevent.Greenlet | None = None

    def __repr__(self) -> str:
        return f"<EslConnection #{self.number} from {self.address[0]}:{self.address[1]}>"

    # ---- serving ----

    def serve(self) -> None:
        server = self.server
        try:
            if server.reject_acl:
                log.info("%r rejected by ACL", self)
                self._send_now(protocol.rude_rejection())
                return
            if server.silent_accept:
                log.info("%r accepted silently", self)
                while not self._closing and self.sock.recv(4096):
                    pass
                return
            self._writer = gevent.spawn(self._write_loop)
            self._send_now(protocol.auth_request())
            reader = protocol.CommandReader()
            while not self._closing:
                if not self._reading.is_set():
                    gevent.wait([self._reading, self.closed], count=1)
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                self.reads += 1
                if self.frozen:
                    continue  # half-open: what arrives never reaches the switch
                for command in reader.feed(data):
                    self._handle(command)
                    if self._closing:
                        break
        except (OSError, protocol.ProtocolError) as exc:
            if not self._closing:
                log.info("%r: %s", self, exc)
        finally:
            self._shut()

    def _handle(self, command: str) -> None:
        self.commands.append(command)
        self.command_reads.append(self.reads)
        self.server.switch.record_command(self, command)
        line, *header_lines = command.split("\n")
        headers = {}
        for header in header_lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        word = line.split(" ", 1)[0].lower()
        self._idle.clear()
        try:
            if line.lower().startswith("exit"):
                self._reply("+OK bye")
                self._close_with_notice(GOODBYE)
            elif not self.authenticated:
                self._handle_unauthenticated(line)
            elif word == "api":
                self._api(line[4:].strip())
            elif word == "bgapi":
                self._bgapi(line[6:].strip(), headers.get("job-uuid"))
            elif word == "event":
                self._handshake_delay()
                self._reply(self._event(line))
            elif word == "nixevent":
                self._reply(self._nixevent(line))
            elif word == "noevents":
                self._reply(self._noevents())
            elif word == "filter":
                self._reply(self._filter(line[len("filter"):].strip(" ")))
            elif word in ("linger", "nolinger"):
                self._reply("-ERR not controlling a session")
            else:
                self._reply("-ERR command not found")
        finally:
            self._idle.set()

    def _handle_unauthenticated(self, line: str) -> None:
        if not line.lower().startswith("auth "):
            self._reply("-ERR command not found")
            return
        self._handshake_delay()
        if line[5:] == self.server.password:
            self.authenticated = True
            self._reply("+OK accepted")
        else:
            log.info("%r: wrong password", self)
            self._reply("-ERR invalid")
            self._close_with_notice(GOODBYE)

    # ---- commands ----

    def _api(self, text: str) -> None:
        command, _, args = text.partition(" ")
        delay = self.server.reply_delay_s
        if delay:
            gevent.sleep(delay)  # the knob: this reply (and this connection's events) held back
            if self.server.crashed:
                return  # the process died while the command waited: it never ran
        result = self.server.switch.run_api(command, args or None)
        if result is None:
            result = f"-ERR {command} Command not found!\n"
        self._send_now(protocol.api_response(result or "-ERR no reply\n"))

    def _bgapi(self, text: str, job_uuid: str | None) -> None:
        command, _, args = text.partition(" ")
        job_uuid = job_uuid or self.server.switch.new_uuid()
        self._send_now(protocol.command_reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)]))
        gevent.spawn(self.server.run_background_job, job_uuid, command, args or None)

    def _handshake_delay(self) -> None:
        delay = self.server.handshake_delay_s
        if delay:
            gevent.sleep(delay)  # the knob: a switch slow to answer auth and event (see delay_handshake)

    def _event(self, line: str) -> str:
        tokens = [t for t in line.split(" ")[1:] if t]
        sub = self.subscription
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            event_format = tokens.pop(0).lower()
            if event_format == "xml":
                return "-ERR xml events are not supported by the simulator; use plain or json"
            sub.event_format = event_format
        names, subclasses = _event_words(tokens)
        if not names:
            return "-ERR no keywords supplied"
        sub.names.update(names)
        sub.subclasses.update(subclasses)
        sub.enabled = True
        return f"+OK event listener enabled {sub.event_format}"

    def _nixevent(self, line: str) -> str:
        sub = self.subscription
        names, subclasses = _event_words([t for t in line.split(" ")[1:] if t])
        if not names:
            return "-ERR no keywords supplied"
        for name in names:
            if name == "ALL":
                sub.names.clear()
            elif name != "CUSTOM":
                if "ALL" in sub.names:  # nixing one name out of ALL leaves all the others
                    sub.names = set(EVENT_NAMES) - {"ALL"}
                sub.names.discard(name)
        sub.subclasses.difference_update(subclasses)
        sub.enabled = True
        return "+OK events nixed"

    def _noevents(self) -> str:
        sub = self.subscription
        if not sub.enabled:
            return "-ERR not listening for events"
        sub.enabled = False
        sub.names.clear()
        sub.subclasses.clear()
        self._drop_queued_events()
        return "+OK no longer listening for events"

    def _filter(self, text: str) -> str:
        header, _, value = text.partition(" ")
        filters = self.subscription.filters
        if header.lower() == "delete" and value:
            header, _, value = value.partition(" ")
            if header.lower() == "all":
                filters.clear()
            else:
                filters[:] = [(h, v) for h, v in filters if not (h == header and (not value or v == value))]
            return f"+OK filter deleted. [{header}][{value}]"
        if not value:
            return "-ERR invalid syntax"
        if header.lower() == "add":
            header, _, value = value.partition(" ")
        filters.append((header, value))
        return f"+OK filter added. [{header}]=[{value}]"

    # ---- events ----

    def deliver(self, event: SwitchEvent) -> None:
        if self._closing or self.frozen or not self.authenticated or not self.subscription.wants(event):
            return
        if self._queue.qsize() >= MAX_QUEUED_EVENTS:
            log.warning("%r is %d events behind; dropping it as FreeSWITCH does", self, MAX_QUEUED_EVENTS)
            self.abort()
            return
        self._queue.put(event)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            self._idle.wait()
            if item is None or self._closing:
                return
            if isinstance(item, bytes):  # the shutdown notice: send it and hang up
                self._closing = True
                data, cut = item, None
            elif self.frozen:
                continue
            else:
                data = item.wire(self.subscription.event_format)
                cut = self.server.take_cut()
            try:
                self._send_now(data if cut is None else data[:cut])
            except OSError as exc:
                log.info("%r: not sent: %s", self, exc)
                self.abort()
                return
            if cut is not None:
                log.info("%r: cut an event after %d of %d bytes", self, cut, len(data))
            if cut is not None or isinstance(item, bytes):
                self.abort(reset=False)
                return

    def _drop_queued_events(self) -> None:
        kept = [item for item in list(self._queue.queue) if not isinstance(item, SwitchEvent)]
        while not self._queue.empty():
            self._queue.get_nowait()
        for item in kept:
            self._queue.put(item)

    # ---- sending and closing ----

    def _reply(self, text: str) -> None:
        self._send_now(protocol.command_reply(text))

    def _send_now(self, data: bytes) -> None:
        with self._send_lock:
            if self.frozen:
                return  # half-open: nothing the switch writes gets through
            self.sock.sendall(data)

    # ---- faults ----

    def stop_reading(self) -> None:
        """The switch stops reading this connection (a wedged listener thread): the kernel buffers fill, the
        client's sends block. A recv already under way still completes."""
        self._reading.clear()

    def freeze(self) -> None:
        """Half-open from here on: the TCP connection stays, nothing is sent on it again (no replies, no
        events, no notices) and what the client sends is ignored."""
        self.frozen = True
        self._drop_queued_events()

    def vanish(self) -> None:
        """The switch process died: its socket is closed as the kernel closes a dead process's sockets (FIN,
        or RST when data was unread). No notice, nothing more sent."""
        self._closing = True
        try:
            self.sock.close()
        except OSError:
            pass
        self._queue.put(None)
        self.closed.set()

    def _close_with_notice(self, text: str) -> None:
        self._closing = True
        try:
            self._send_now(protocol.disconnect_notice(text))
        except OSError:
            pass
        self.abort(reset=False)

    def notify_shutdown(self) -> None:
        """Queue the shutdown notice behind the events already queued; the writer then hangs up."""
        if self._writer is None or self._closing:
            self.abort(reset=False)
        else:
            self._queue.put(protocol.disconnect_notice(SHUTTING_DOWN))

    def abort(self, reset: bool = False) -> None:
        """Close the TCP connection at once (reset=True: with RST), with no notice."""
        self._closing = True
        sock = self.sock
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass
        self._queue.put(None)
        self.closed.set()

    def _shut(self) -> None:
        if not self.closed.is_set():
            self.abort(reset=False)
        self.server.forget(self)


class EslServer:
    """The listening socket and the fault knobs that shape what clients see.

    reject_acl: new connections get text/rude-rejection and are closed (no auth/request).
    silent_accept: new connections are accepted and never spoken to.
    reply_delay_s: every api reply waits this long (see Simulator.delay_replies).
    handshake_delay_s: every auth and event reply waits this long (see Simulator.delay_handshake).
    crashed: set by crash(); nothing this server started may act afterwards.
    """

    def __init__(self, switch, host: str, port: int, password: str):
        self.switch = switch
        self.host = host
        self.port = port
        self.password = password
        self.reject_acl = False
        self.silent_accept = False
        self.reply_delay_s = 0.0
        self.handshake_delay_s = 0.0
        self.crashed = False
        self.connections: list[EslConnection] = []  # live ones
        self._cut_after: int | None = None
        self._count = 0
        self._server: StreamServer | None = None

    def start(self) -> None:
        self._server = StreamServer((self.host, self.port), self._handle)
        self._server.start()
        self.port = self._server.server_port

    def _handle(self, sock, address) -> None:
        # mod_event_socket sets it: without it small replies stall ~40 ms behind Nagle and delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._count += 1
        connection = EslConnection(self, sock, address, self._count)
        self.connections.append(connection)
        self.switch.all_connections.append(connection)
        log.info("%r opened", connection)
        connection.serve()

    def forget(self, connection: EslConnection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            log.info("%r closed", connection)

    def deliver(self, event: SwitchEvent) -> None:
        for connection in list(self.connections):
            connection.deliver(event)

    def take_cut(self) -> int | None:
        cut, self._cut_after = self._cut_after, None
        return cut

    def cut_next_event(self, after_bytes: int) -> None:
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be 0 or more; got {after_bytes}")
        self._cut_after = after_bytes

    def run_background_job(self, job_uuid: str, command: str, args: str | None) -> None:
        if not self.crashed:  # a job queued when the process died never runs
            self.switch.run_background_job(job_uuid, command, args)

    def drop_all(self, reset: bool = False) -> None:
        for connection in list(self.connections):
            connection.abort(reset=reset)

    def stop_reading(self) -> None:
        for connection in list(self.connections):
            connection.stop_reading()

    def freeze_all(self) -> None:
        for connection in list(self.connections):
            connection.freeze()

    def crash(self) -> None:
        """The process is gone: nothing listens, every connection closes at once with no notice."""
        self.crashed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.vanish()
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None

    def stop(self) -> None:
        """Stop listening; every client gets the shutdown notice after its queued events."""
        if self._server is not None:
            self._server.close()
        connections = list(self.connections)
        for connection in connections:
            connection.notify_shutdown()
        gevent.wait([c.closed for c in connections], timeout=STOP_GRACE_S)
        for connection in connections:
            connection.abort(reset=False)
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
