"""The controller's Event Socket client: greenswitch's InboundESL, hardened for a process that runs for months.

greenswitch 0.0.19 stays the base (handler registry, connection settings, the inbound flow), but these parts
of it cannot live in a long-running controller and are replaced here, each override saying why:

- reading: it URL-decodes the whole header block (an encoded %0A becomes a fake header), drops or splits
  event bodies, and spins at 100% CPU when the peer closes in the middle of a body;
- commands: `send()` waits forever, so a command in flight when the socket drops never returns;
- connecting: `connect()` waits forever for `auth/request`, and a used object cannot connect again;
- dispatch: all handlers run one after another in one greenlet, so one slow handler delays every event.

Commands and the connection's life:

- An ordinary command goes out only on a connection that is authenticated and subscribed
  (`connected_event`); the handshake's own `auth` and `event` are the only commands sent before that.
  While a connection is being established (socket up, handshake running) a command waits for it, within
  its own timeout; with no connection at all (never connected, lost, waiting to reconnect) it fails at once
  with NotConnectedError, and commands in flight fail at once when the connection is lost.
- Every command is bounded by its timeout end to end: waiting for the handshake, for the send lock, for
  the socket to take the bytes (a switch that stops reading), and for the reply. A send that times out
  drops the connection, since a half-written command would corrupt the stream.
- FreeSWITCH sends a HEARTBEAT event every 20 s by default and we subscribe to it: a connection on which
  nothing at all arrives for `liveness_timeout` seconds is taken for half-open, dropped and re-established.
- Error messages and logs name a command, never its arguments (`auth`'s argument is the password).
- Pipelining: `send_in_order` / `run_in_order` write several commands in ONE send and collect their results in
  order. FreeSWITCH reads one connection's commands in order; an `api` runs inline (the next command is read
  only once it has answered), a `bgapi` answers `+OK Job-UUID` at once and runs its job in a thread of its
  own. So work that must be done before a later command starts goes as `api`; two `bgapi` jobs have no
  order between them.

The wire format lives in `protocol.py`; this module only moves bytes and greenlets.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import dataclasses
import time
import uuid as uuid_module
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import gevent
import gevent.socket as socket
from gevent.event import AsyncResult, Event as GeventEvent
from gevent.lock import Semaphore
from gevent.queue import Queue
from greenswitch.esl import InboundESL, NotConnectedError

from . import protocol
from .backoff import Backoff

log = logging.getLogger(__name__)

# What the controller needs and nothing more: a narrow subscription keeps FreeSWITCH from dropping us for
# falling behind (it drops a listener 500+ events behind) and keeps our CPU for the calls we care about.
# HEARTBEAT (every 20 s by default) keeps a healthy connection from ever being silent for long.
# Playback and DTMF events are for relayed calls: talking back into the call, and the caller's keys.
SUBSCRIBED_EVENTS = ("CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "HEARTBEAT", "DTMF",
                     "PLAYBACK_START", "PLAYBACK_STOP")
SUBSCRIBED_CUSTOM = (
    "mod_audio_stream::connect",
    "mod_audio_stream::disconnect",
    "mod_audio_stream::error",
    "mod_audio_stream::json",
    "mod_audio_stream::play",
    # A file_string broadcast's files as the switch opens and closes them (talk-back: what has been heard).
    "filestring::open",
    "filestring::close",
)

# Three missed heartbeats at FreeSWITCH's default interval (20 s).
DEFAULT_LIVENESS_TIMEOUT_S = 60.0
# Probe a silent peer after 10 s, every 5 s, give up after 3 unanswered probes (where the platform allows).
TCP_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


class ConnectError(NotConnectedError):
    """Could not get an authenticated Event Socket connection; the message says why."""


class AuthenticationError(ConnectError):
    pass


class AccessDenied(ConnectError):
    pass


class ConnectionLost(NotConnectedError):
    """The connection ended while a command waited for its reply."""


class CommandTimeout(Exception):
    pass


class CommandError(Exception):
    """FreeSWITCH answered a command with an error reply (-ERR / -USAGE)."""


@dataclass(frozen=True)
class Command:
    """One command for `send_in_order`: `kind` "api" (runs inline) or "bgapi" (a background job)."""

    kind: str
    text: str  # the api's name and arguments, e.g. "uuid_exists <uuid>"
    timeout: float | None = None  # None: the client's command_timeout

    def __post_init__(self) -> None:
        if self.kind not in ("api", "bgapi"):
            raise ValueError(f"command kind must be api or bgapi, not {self.kind!r}")


def api(text: str, timeout: float | None = None) -> Command:
    return Command("api", text, timeout)


def bgapi(text: str, timeout: float | None = None) -> Command:
    return Command("bgapi", text, timeout)


class _Reply(AsyncResult):
    """A reply waiter that notes when its reply came: a bgapi's job gets its full timeout from that moment,
    even when the caller reads the results of earlier commands first."""

    arrived_at: float | None = None
    sent_at: float | None = None
    observer: Callable[[float], None] | None = None  # told each round trip, write to reply, in seconds

    def set(self, value=None) -> None:
        self.arrived_at = time.monotonic()
        if self.observer is not None and self.sent_at is not None:
            self.observer(self.arrived_at - self.sent_at)
        super().set(value)


@dataclass
class _Entry:
    name: str  # protocol.command_name: never the arguments
    wait: float
    deadline: float  # for the reply (the command/reply of a bgapi, the api/response of an api)
    job_uuid: str | None = None
    job: AsyncResult | None = None
    reply: AsyncResult | None = None
    error: Exception | None = None  # set when the write itself failed


class InOrder:
    """Commands written in one send (`EventSocketClient.send_in_order`); `results()` collects what they gave."""

    def __init__(self, client: "EventSocketClient", entries: list[_Entry]) -> None:
        self._client = client
        self._entries = entries

    def results(self) -> list[str | Exception]:
        """Each command's text (an api's answer, a bgapi's job result), or the exception that command alone
        (`api()`/`bgapi()`) would have raised. Each waits within its own timeout; call this once."""
        try:
            return [self._result(entry) for entry in self._entries]
        finally:
            for entry in self._entries:
                if entry.job_uuid is not None:
                    self._client._jobs.pop(entry.job_uuid, None)

    @staticmethod
    def _result(entry: _Entry) -> str | Exception:
        if entry.error is not None:
            return entry.error
        try:
            # A timed-out waiter stays queued so its late reply is absorbed, not handed to the next command.
            message = entry.reply.get(timeout=max(0.0, entry.deadline - time.monotonic()))
        except gevent.Timeout:
            return CommandTimeout(f"no reply to {entry.name} within {entry.wait:g}s")
        except NotConnectedError as exc:
            return exc
        if entry.job is None:
            return message.text
        if not message.reply_text.startswith("+OK"):
            return CommandError(f"bgapi refused: {message.reply_text!r}")
        job_deadline = (entry.reply.arrived_at or time.monotonic()) + entry.wait
        try:
            return entry.job.get(timeout=max(0.0, job_deadline - time.monotonic()))
        except gevent.Timeout:
            return CommandTimeout(f"no result for background job {entry.name} within {entry.wait:g}s")
        except NotConnectedError as exc:
            return exc


class EventSocketClient(InboundESL):
    """One Event Socket connection at a time, re-established with backoff until `close()`."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        backoff: Backoff | None = None,
        on_connect: Callable[["EventSocketClient"], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT_S,
    ) -> None:
        """liveness_timeout: drop and re-establish a connection on which nothing at all (no reply, no event,
        no HEARTBEAT) has arrived for this many seconds; None disables the check."""
        super().__init__(host, port, password, timeout=connect_timeout)
        # Told the time from each command's write to its reply (the metrics' round-trip histogram).
        self.round_trip_observer: Callable[[float], None] | None = None
        if liveness_timeout is not None and liveness_timeout <= 0:
            raise ValueError(f"liveness_timeout must be positive or None; got {liveness_timeout}")
        self.command_timeout = command_timeout
        self.liveness_timeout = liveness_timeout
        self.backoff = backoff or Backoff()
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.sock = None
        # Per-session state exists from the start, so close() on a client that never connected is clean.
        self._new_session()
        self._session_over.set()
        self._send_lock = Semaphore()
        self._jobs: dict[str, AsyncResult] = {}
        self._channel_queues: dict[str, Queue] = {}
        self._keeper: gevent.Greenlet | None = None
        self._closing = False
        # Set once authenticated and subscribed; cleared the moment the session drops.
        self.connected_event = GeventEvent()
        self.last_error = ""

    # ---- connecting -------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and authenticate once. Override: bounded in time, reusable after a disconnect."""
        if self.sock is not None:
            self._drop("reconnecting")
        self._new_session()
        address = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise ConnectError(f"connection refused by {address}: is FreeSWITCH running with "
                               f"mod_event_socket listening there?") from None
        except (OSError, socket.timeout) as exc:
            raise ConnectError(f"cannot connect to {address}: {exc or 'timed out'}") from None
        sock.settimeout(None)
        _tune_socket(sock)
        self.sock = sock
        self.connected = True
        self._run = True
        self._last_received = time.monotonic()
        self._receive_events_greenlet = gevent.spawn(self.receive_events)
        if self.liveness_timeout is not None:
            gevent.spawn(self._watch_liveness, sock, self._session_over)
        try:
            greeting = self._greeting.get(timeout=self.timeout)
        except gevent.Timeout:
            self._drop(f"no auth/request from {address} within {self.timeout:g}s")
            raise ConnectError(f"{address} accepted the connection but sent no auth/request within "
                               f"{self.timeout:g}s: is it an Event Socket?") from None
        except NotConnectedError as exc:
            raise ConnectError(f"{address} closed the connection before authentication ({exc})") from None
        if greeting.content_type == "text/rude-rejection":
            self._drop("rude rejection")
            raise AccessDenied(f"{address} refused us by ACL: {greeting.text.strip()!r}; add this host to "
                               f"the event socket's apply-inbound-acl list")
        self.authenticate()

    def authenticate(self) -> None:
        """Override: greenswitch raises a bare ValueError; say what happened and drop the socket."""
        try:
            reply = self._send(f"auth {self.password}", gated=False)
        except (CommandTimeout, NotConnectedError) as exc:
            self._drop("authentication failed")
            raise ConnectError(f"no answer to auth from {self.host}:{self.port}: {exc}") from None
        if reply.reply_text != "+OK accepted":
            self._drop("authentication refused")
            raise AuthenticationError(f"{self.host}:{self.port} refused the Event Socket password "
                                      f"(reply {reply.reply_text!r}); check esl.password")

    def subscribe(self) -> None:
        """Subscribe; from then on the connection is ready and ordinary commands go out (connected_event)."""
        names = " ".join(SUBSCRIBED_EVENTS + ("CUSTOM",) + SUBSCRIBED_CUSTOM)
        session_over = self._session_over
        reply = self._send(f"event plain {names}", gated=False)
        if not reply.reply_text.startswith("+OK"):
            raise CommandError(f"subscription refused: {reply.reply_text!r}")
        # The reply and the end of the session can arrive in one read: never mark a dead session ready.
        if session_over.is_set():
            raise ConnectionLost(self.last_error or "connection lost during the subscription")
        self.connected_event.set()

    def _new_session(self) -> None:
        # greenswitch keeps per-connection state on the object; start each connection from a clean slate.
        self._commands_sent = deque()
        self._reader = protocol.MessageReader()
        self._greeting = AsyncResult()
        self._session_over = GeventEvent()
        self._notice = ""
        self._last_received = time.monotonic()

    # ---- keeping a connection ---------------------------------------------------------------------------

    def start(self) -> None:
        """Keep a subscribed connection in the background, reconnecting with backoff, until close()."""
        self._closing = False
        self._keeper = gevent.spawn(self._keep_connected)

    def _keep_connected(self) -> None:
        while not self._closing:
            try:
                self.connect()
                self.subscribe()
            except (ConnectError, CommandError, CommandTimeout, NotConnectedError) as exc:
                self.last_error = str(exc)
                self._drop(str(exc))
                delay = self.backoff.next_delay()
                log.error("Event Socket: %s; retrying in %.1fs", exc, delay)
                gevent.sleep(delay)
                continue
            self.backoff.reset()
            log.info("Event Socket connected to %s:%s and subscribed", self.host, self.port)
            if self.on_connect:
                gevent.spawn(self._safe_call, self.on_connect, self)
            self._session_over.wait()
            if self.on_disconnect:
                gevent.spawn(self._safe_call, self.on_disconnect, self.last_error)
            if not self._closing:
                delay = self.backoff.next_delay()
                log.warning("Event Socket lost (%s); reconnecting in %.1fs", self.last_error, delay)
                gevent.sleep(delay)

    def close(self, timeout: float = 5.0) -> None:
        """Stop reconnecting, say `exit` if connected, and release everything. Replaces greenswitch's stop()."""
        self._closing = True
        if self.connected:
            try:
                self._send("exit", timeout=min(timeout, 1.0), gated=False)
            except (NotConnectedError, CommandTimeout, OSError):
                pass
        self._drop("closed by the controller")
        if self._keeper is not None:
            # Not join(): a keeper asleep in its backoff would hold a shutdown for the whole timeout.
            self._keeper.kill(timeout=timeout)

    stop = close

    # ---- commands ---------------------------------------------------------------------------------------

    def send(self, data: str, timeout: float | None = None, headers=None) -> protocol.Message:
        """Override: every command has a deadline, waits for a connection being established, and fails at
        once if there is none or it goes (see the module docstring)."""
        return self._send(data, timeout, headers, gated=True)

    def _send(self, data: str, timeout: float | None = None, headers=None, *, gated: bool) -> protocol.Message:
        """gated=False only for the handshake's own commands (auth, event) and exit."""
        name = protocol.command_name(data)
        wait = self.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        raw = protocol.encode_command(data, headers)
        [result] = self._write(raw, 1, name, wait, deadline, gated=gated)
        try:
            # A timed-out waiter stays queued so its late reply is absorbed, not handed to the next command.
            return result.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            raise CommandTimeout(f"no reply to {name} within {wait:g}s") from None

    def _write(self, raw: bytes, count: int, label: str, wait: float, deadline: float, *,
               gated: bool) -> list[AsyncResult]:
        """Write `count` commands (already framed, back to back in `raw`) in one send, bounded by `deadline`;
        returns one reply waiter per command, queued in wire order. Raises if nothing could be sent."""
        if not self.connected:
            raise NotConnectedError(f"not connected to {self.host}:{self.port}")
        if gated and not self.connected_event.is_set():
            self._wait_until_ready(label, max(0.0, deadline - time.monotonic()), wait)
        # Replies come back in the order commands went out; the lock keeps queue order == wire order.
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise CommandTimeout(f"{label} not sent within {wait:g}s: an earlier command is still being sent")
        try:
            # The session may have dropped while this command waited for the lock (another send blocked).
            sock = self.sock
            if sock is None or not self.connected or (gated and not self.connected_event.is_set()):
                raise NotConnectedError(f"not connected to {self.host}:{self.port}")
            results = [_Reply() for _ in range(count)]
            self._commands_sent.extend(results)
            # A switch that stops reading fills the socket buffers; sendall would then block for ever.
            timer = gevent.Timeout(max(0.001, deadline - time.monotonic()))
            try:
                with timer:
                    sock.sendall(raw)
                sent_at = time.monotonic()
                for result in results:
                    result.sent_at, result.observer = sent_at, self.round_trip_observer
            except gevent.Timeout as fired:
                if fired is not timer:
                    raise
                # Part of the command may be on the wire: the stream is corrupt, so the connection goes.
                reason = f"{label} could not be sent within {wait:g}s (is the switch reading?)"
                self._drop(reason, sock)
                raise CommandTimeout(f"{reason}; connection dropped") from None
            except OSError as exc:
                self._drop(f"send failed: {exc}", sock)  # fails the waiters just queued
        finally:
            self._send_lock.release()
        return results

    def _wait_until_ready(self, name: str, remaining: float, wait: float) -> None:
        """Socket up, handshake running: wait for it rather than fail a command that would work a moment later."""
        session_over = self._session_over
        gevent.wait([self.connected_event, session_over], timeout=remaining, count=1)
        if self.connected_event.is_set():
            return
        if session_over.is_set():
            raise ConnectionLost(self.last_error or f"not connected to {self.host}:{self.port}")
        raise CommandTimeout(f"{name} not sent: the Event Socket handshake with {self.host}:{self.port} did not "
                             f"finish within {wait:g}s")

    def send_in_order(self, commands: Sequence[Command]) -> InOrder:
        """Write `commands` in ONE send and return at once; `.results()` then waits for them, in order.

        On one connection FreeSWITCH reads and runs commands in order, but only an `api` holds back the
        commands behind it until it has answered; a `bgapi` job runs in a thread of its own, unordered with
        any other job. So what must be done before a later command starts is sent as `api`.

        Every command is framed before anything is sent (a bad one raises ValueError and nothing goes out).
        The write is bounded by the shortest timeout among them; if it cannot be made, every command's result
        is that error. Each bgapi's Job-UUID is registered before the write: a fast BACKGROUND_JOB is never
        missed. A dropped connection fails every command still waiting at once.
        """
        if not commands:
            raise ValueError("send_in_order needs at least one command")
        started = time.monotonic()
        entries: list[_Entry] = []
        framed: list[bytes] = []
        for command in commands:
            text = f"{command.kind} {command.text}"
            wait = self.command_timeout if command.timeout is None else command.timeout
            entry = _Entry(protocol.command_name(text), wait, started + wait)
            headers = None
            if command.kind == "bgapi":
                entry.job_uuid = str(uuid_module.uuid4())
                headers = [("Job-UUID", entry.job_uuid)]
            framed.append(protocol.encode_command(text, headers))
            entries.append(entry)
        first = min(entries, key=lambda entry: entry.deadline)
        label = ", ".join(entry.name for entry in entries)
        for entry in entries:
            if entry.job_uuid is not None:
                entry.job = self._jobs[entry.job_uuid] = AsyncResult()
        try:
            replies = self._write(b"".join(framed), len(entries), label, first.wait, first.deadline, gated=True)
        except (NotConnectedError, CommandTimeout) as exc:
            for entry in entries:
                entry.error = exc
        except BaseException:  # e.g. the caller's greenlet killed: no results() will unregister the jobs
            for entry in entries:
                if entry.job_uuid is not None:
                    self._jobs.pop(entry.job_uuid, None)
            raise
        else:
            for entry, reply in zip(entries, replies):
                entry.reply = reply
        return InOrder(self, entries)

    def run_in_order(self, commands: Sequence[Command]) -> list[str | Exception]:
        """`send_in_order(commands).results()`: one send, each command's text or exception, in order."""
        return self.send_in_order(commands).results()

    def _one(self, command: Command) -> str:
        result = self.run_in_order([command])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def api(self, command: str, timeout: float | None = None) -> str:
        """Run an api command inline and return its text (FreeSWITCH holds our events while it runs)."""
        return self._one(api(command, timeout))

    def bgapi(self, command: str, timeout: float | None = None) -> str:
        """Run an api command as a background job and return its result text.

        Background jobs keep the connection free: FreeSWITCH does not hold event delivery for them, so a slow
        command for one call never delays events for the others.
        """
        return self._one(bgapi(command, timeout))

    # ---- reading ----------------------------------------------------------------------------------------

    def receive_events(self) -> None:
        """Override: read with recv() into the byte-level parser; EOF anywhere ends the session at once."""
        sock = self.sock
        reason = "connection closed by FreeSWITCH"
        try:
            while self._run:
                data = sock.recv(65536)
                self._last_received = time.monotonic()
                if not data:
                    if self._reader.mid_message:
                        reason = "connection closed in the middle of a message"
                    elif self._notice:
                        reason = f"FreeSWITCH said goodbye: {self._notice}"
                    break
                for message in self._reader.feed(data):
                    self.handle_event(message)
        except protocol.ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = f"read failed: {exc}"
        self._drop(reason, sock)

    def _watch_liveness(self, sock, session_over: GeventEvent) -> None:
        """Drop a session on which nothing has arrived for liveness_timeout: wakes once per timeout, no polling."""
        timeout = self.liveness_timeout
        while True:
            remaining = self._last_received + timeout - time.monotonic()
            if remaining <= 0:
                self._drop(f"nothing received from {self.host}:{self.port} for {timeout:g} s "
                           f"(no reply, no event, no HEARTBEAT): taken for half-open", sock)
                return
            if session_over.wait(remaining):
                return

    def handle_event(self, message: protocol.Message) -> None:
        """Override: route one framed message; events are decoded per value, bodies kept whole."""
        kind = message.content_type
        if kind in ("auth/request", "text/rude-rejection"):
            self._greeting.set(message)
        elif kind in ("command/reply", "api/response"):
            if self._commands_sent:
                self._commands_sent.popleft().set(message)
            else:
                log.warning("Event Socket: reply with no command waiting: %r", message.reply_text)
        elif kind == "text/disconnect-notice":
            self._notice = message.text.strip()
        elif kind in ("text/event-plain", "text/event-json"):
            try:
                event = protocol.parse_event(message)
            except protocol.ProtocolError as exc:
                log.error("Event Socket: dropping malformed event: %s", exc)
                return
            self._deliver(dataclasses.replace(event, received_at=time.monotonic()))
        else:
            log.debug("Event Socket: ignoring %s message", kind or "untyped")

    def _deliver(self, event: protocol.Event) -> None:
        if event.name == "BACKGROUND_JOB":
            job = self._jobs.get(event.get("Job-UUID"))
            if job is not None:
                job.set(event.body)
        if not (self.event_handlers.get(event.key) or self.event_handlers.get("*")):
            return  # nobody listens (a job's result went to its command above): no queue, no greenlet
        # Events of one channel stay in order; different channels never wait for each other.
        key = event.uuid or f"job:{event.get('Job-UUID')}"
        queue = self._channel_queues.get(key)
        if queue is None:
            queue = self._channel_queues[key] = Queue()
            gevent.spawn(self._drain_channel, key, queue)
        queue.put(event)

    def _drain_channel(self, key: str, queue: Queue) -> None:
        while True:
            try:
                event = queue.get_nowait()
            except gevent.queue.Empty:
                # No yield between the check and the removal, so no event can slip in between.
                del self._channel_queues[key]
                return
            for handler in self.event_handlers.get(event.key, []) + self.event_handlers.get("*", []):
                self._safe_call(handler, event)

    @staticmethod
    def _safe_call(handler, *args) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("handler %s failed", getattr(handler, "__name__", handler))

    # ---- ending a session -------------------------------------------------------------------------------

    def _drop(self, reason: str, sock=None) -> None:
        """End the current session: close the socket and fail everything still waiting on it.

        `sock` names the session a reader greenlet belonged to: a reader that wakes late must not end the
        session that replaced it.
        """
        if sock is not None and sock is not self.sock:
            return
        if self.connected:
            self.last_error = reason
        self.connected = False
        self.connected_event.clear()  # at once: nothing may be sent on a session that is over
        self._run = False
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        lost = ConnectionLost(reason)
        while self._commands_sent:
            self._commands_sent.popleft().set_exception(lost)
        if not self._greeting.ready():
            self._greeting.set_exception(lost)
        for job in list(self._jobs.values()):
            if not job.ready():
                job.set_exception(lost)
        self._session_over.set()


def _tune_socket(sock) -> None:
    # Commands are small and each waits for its reply: Nagle would only add delay (FreeSWITCH sets it too).
    sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
    # A dead peer behind a silent network is otherwise noticed only after about two hours.
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE, 1)
    for option, value in TCP_KEEPALIVE:
        if hasattr(stdlib_socket, option):  # Linux has all three; some platforms lack them
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, getattr(stdlib_socket, option), value)
