"""One call's WebSocket to its voice agent: the call's audio out as it arrives at the recorder, the agent's
replies in and played into the call. The gevent shell around the pure pieces (twilio/raw codecs, audio,
talkback), one per relayed call.

What it promises: nothing the agent does can harm this call, its recording, or any other call in the process.
- The recorder hands audio over with a cheap, non-blocking ``tap`` (into a queue bounded by ``max_queue_s``:
  toward a slow agent the oldest audio is dropped and counted, memory never grows).
- Only the pump greenlet sends to the agent (audio, marks, keys, stop: one queue), each send within
  SEND_TIMEOUT_S: an agent that stops reading has its connection aborted, never a greenlet stuck on it.
- The reader yields to the event loop after READ_BUDGET_MESSAGES messages or READ_BUDGET_S of work
  (websocket-client's ``recv`` never yields while data is buffered: a flood would otherwise hold every call).
- What an agent may send is metered (limits.py): a flood of messages, or audio far faster than real time,
  ends its connection as abusive (counted) and the next one waits; the agent's audio waiting to be played is
  bounded too (talkback.MAX_PENDING_S).
- ``stop`` never waits: the agent gets ``stop`` if it is reading, and STOP_GRACE_S later whatever is left is
  aborted. The recording and the hook never wait for the agent.
- An unreachable agent is tried again with a growing delay (0.5 s doubling to 30 s) for as long as the call
  lasts, each new connection a fresh stream; log lines are limited per agent (a few a minute per kind, then a
  count); the agent's audio only ever goes to this link's own call.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid as uuid_module
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import gevent
import websocket
from gevent.event import Event

from ..esl.backoff import capped_exponential
from ..ops.hook import shown
from ..ops.log_limit import LogLimiter
from . import audio, raw, twilio
from .limits import audio_bucket, message_bucket
from .talkback import Break, Broadcast, DroppedAudio, EchoMarks, SendAudio, TalkBack

log = logging.getLogger("controller.relay")

RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0
CONNECT_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0  # an agent that takes nothing for this long is not reading: its connection is aborted
STOP_GRACE_S = 1.0  # after stop, how long the agent has to take its `stop` before everything is aborted
READ_BUDGET_MESSAGES = 50  # the reader lets every other greenlet run after this many messages ...
READ_BUDGET_S = 0.005  # ... or this much time
MAX_CONTROL_MESSAGES = 1000  # marks, keys and stop waiting for the pump
MAX_TURNS = 200  # the agent's replies kept for the sidecar (the latest), and marks per reply
ERROR_TEXT_CHARS = 200


class AgentNotReading(Exception):
    """A send to the agent did not complete within SEND_TIMEOUT_S."""


def brief(exc: BaseException) -> str:
    """An error for the log and the sidecar: its first line, short. A failed upgrade's exception carries the
    agent's whole response (headers, cookies, whatever it echoes back), which is not ours to spread."""
    text = str(exc) or type(exc).__name__
    text = text.split(" -+-+- ")[0].splitlines()[0] if text.strip() else type(exc).__name__
    return text[:ERROR_TEXT_CHARS]
# This process's Twilio account: opaque to agents, but some check its form ("AC" and 32 hex digits).
ACCOUNT_SID = "AC" + uuid_module.uuid4().hex


@dataclass(frozen=True)
class CallDetails:
    uuid: str  # the call's key (lower case)
    channel_uuid: str  # as FreeSWITCH spells it: what uuid_broadcast / uuid_break name
    caller: str
    destination: str
    rule: str
    rate: int
    channels: int
    metadata: Any = None


class _TwilioCodec:
    """The call's PCM as Twilio media (8 kHz µ-law mono, 20 ms chunks); the agent's media as 8 kHz PCM."""

    talk_rate = twilio.SAMPLE_RATE

    def __init__(self, call: CallDetails, parameters: dict[str, str]) -> None:
        self.call = call
        # A fresh streamSid per connection; the callSid in Twilio's form, and the uuid itself as a parameter.
        self.stream = twilio.TwilioStream("MZ" + uuid_module.uuid4().hex, twilio.call_sid_for(call.uuid),
                                          ACCOUNT_SID, {"uuid": call.uuid, **parameters})
        self._to_ulaw = audio.CallerToUlaw(call.rate, call.channels)

    def opening(self) -> list:
        return [self.stream.connected(), self.stream.start()]

    def audio(self, pcm: bytes) -> list:
        return [self.stream.media(chunk) for chunk in self._to_ulaw.push(pcm)]

    def skipped(self, pcm_bytes: int) -> None:
        """The call's audio dropped on the way (a slow agent): Twilio's timestamps run on over it."""
        self.stream.skip(pcm_bytes // (2 * self.call.channels) * twilio.SAMPLE_RATE // self.call.rate)

    def dtmf(self, digit: str) -> list:
        return [self.stream.dtmf(digit)]

    def marks(self, names) -> list:
        return [self.stream.mark(name) for name in names]

    def closing(self) -> list:
        return [self.stream.stop()]

    def parse(self, message):
        """(kind, value): ("audio", pcm at talk_rate), ("mark", name) or ("clear", None)."""
        got = self.stream.parse(message)
        if isinstance(got, twilio.Media):
            return "audio", audio.pcm_from_ulaw(got.ulaw)
        if isinstance(got, twilio.Mark):
            return "mark", got.name
        return "clear", None


# FreeSWITCH plays the module's raw files right at 8 and 16 kHz only (mod_sndfile reads .r24/.r32 as 24- and
# 32-bit samples, and nothing opens .r48): an agent's audio at a higher rate goes to the module at this one.
TALK_MAX_RATE = 16000


class _RawCodec:
    """The module's PCM as it comes; the agent's binary frames are mono PCM at the call's rate."""

    def __init__(self, call: CallDetails, parameters: dict[str, str]) -> None:
        self.talk_rate = min(call.rate, TALK_MAX_RATE)
        self._resampler = audio.Resampler(call.rate, self.talk_rate) if call.rate != self.talk_rate else None
        self.stream = raw.RawStream(call.uuid, call.caller, call.destination, call.rule, call.rate, call.channels,
                                    call.metadata)

    def opening(self) -> list:
        return [self.stream.start()]

    def audio(self, pcm: bytes) -> list:
        return [self.stream.audio(pcm)]

    def skipped(self, pcm_bytes: int) -> None:
        pass  # raw frames carry no position

    def dtmf(self, digit: str) -> list:
        return []

    def marks(self, names) -> list:
        return []

    def closing(self) -> list:
        return []

    def parse(self, message):
        pcm = self.stream.parse(message).pcm
        return "audio", self._resampler.convert(pcm) if self._resampler is not None else pcm


CODECS = {"twilio": _TwilioCodec, "raw": _RawCodec}


class AgentLink:
    """The WebSocket to one call's agent, for as long as the call is relayed (``start`` .. ``stop``).

    ``send_to_module(text) -> bool`` sends a text frame to the module on the call's stream (talk-back);
    ``command(text) -> str`` runs an api command on the switch (uuid_broadcast, uuid_break).
    """

    def __init__(self, call: CallDetails, relay, *, send_to_module: Callable[[str], bool],
                 command: Callable[[str], str], parameters: dict[str, str],
                 connect: Callable[..., Any] = websocket.create_connection,
                 clock: Callable[[], float] = time.monotonic,
                 position: Callable[[], float | None] = lambda: None) -> None:
        self.call = call
        self.relay = relay
        self.parameters = parameters
        self.send_to_module = send_to_module
        self.command = command
        self._connect = connect
        self.clock = clock
        self.position = position  # seconds into the call's recording now, for the turns in the sidecar
        self._turn: dict | None = None  # the agent's reply being played
        self._clearing = False
        self.shown_url = shown(relay.url)
        frame_bytes = 2 * call.channels * call.rate  # per second of the module's audio
        self.max_queue_bytes = max(frame_bytes // 50, int(relay.max_queue_s * frame_bytes))
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._partial = b""  # half a sample frame the module's last frame left (odd frame sizes)
        self._dropped_bytes = 0  # the call's audio dropped since the pump last sent
        self._control: deque = deque()  # marks, keys, stop: sent by the pump before more audio
        self._wake = Event()
        self._talk_wake = Event()
        self._ws = None
        self._codec = None
        self.talk: TalkBack | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = False
        self._abuses = 0  # connections ended as abusive: each makes the next one wait longer
        self._agent_bytes = 0
        self._log = LogLimiter(per_key_per_minute=6, clock=clock)
        # For the sidecar (live: the recorder saves it with the recording).
        self.stats: dict[str, Any] = {"agent": self.shown_url, "protocol": relay.protocol, "connections": 0,
                                      "sent_ms": 0, "dropped_ms": 0, "bad_messages": 0, "agent_ms": 0,
                                      "agent_dropped_ms": 0, "abusive": 0, "talk_back_chunks": 0,
                                      "talk_back_broadcasts": 0, "turns": [],
                                      "last_error": None}

    # ---- from the recorder and the switch (never block) ------------------------------------------------

    def tap(self, pcm: bytes) -> None:
        """One frame of the call's audio, from the recorder's poller: queue it, drop the oldest beyond the bound."""
        self._queue.append(pcm)
        self._queued_bytes += len(pcm)
        while self._queued_bytes > self.max_queue_bytes and len(self._queue) > 1:
            dropped = self._queue.popleft()
            self._queued_bytes -= len(dropped)
            self._dropped_bytes += len(dropped)
            self.stats["dropped_ms"] += len(dropped) * 1000 // (2 * self.call.channels * self.call.rate)
        self._wake.set()

    def dtmf(self, digit: str) -> None:
        if self._codec is not None:
            self._send_later(self._codec.dtmf(digit))

    def file_ready(self, file: str) -> None:
        self._talk(lambda talk, now: talk.file_ready(file, now))

    def file_opened(self, file: str) -> None:
        self._talk(lambda talk, now: talk.file_opened(file, now))

    def file_closed(self, file: str) -> None:
        self._talk(lambda talk, now: talk.file_closed(file, now))

    def playback_stopped(self, target: str) -> None:
        self._talk(lambda talk, now: talk.playback_stopped(target, now))

    # ---- life -----------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection to the agent is open now (its opening messages sent)."""
        return self._ws is not None and not self._stopping

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._talk_timer)]

    def stop(self) -> None:
        """The call's relay is over. Never waits: the agent is sent `stop` by the pump if it is reading, and
        whatever is left after STOP_GRACE_S is aborted."""
        if self._stopping:
            return
        self._stopping = True
        if self._ws is not None and self._codec is not None:
            self._send_later(self._codec.closing())
        self._wake.set()
        gevent.spawn_later(STOP_GRACE_S, self._abort_all)
        self._log.flush()

    def _abort_all(self) -> None:
        ws, self._ws = self._ws, None
        _abort(ws)
        gevent.killall(self._greenlets, block=False)

    def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                self._open()
            except Exception as exc:  # refused, timed out, a failed upgrade, an invalid URL...
                attempt += 1
                delay = capped_exponential(RECONNECT_INITIAL_S, 2.0, RECONNECT_MAX_S, attempt)
                self.stats["last_error"] = f"cannot connect: {brief(exc)}"
                self._warn("connect", "call %s: agent %s: cannot connect (%s); again in %.1f s", self.call.uuid,
                           self.shown_url, brief(exc), delay)
                gevent.sleep(delay)
                continue
            attempt = 0
            ws, abuses = self._ws, self._abuses
            reader = gevent.spawn(self._read, ws, self._codec)
            try:
                self._pump(ws, self._codec)  # returns when the connection fails or the link stops
            finally:
                reader.kill(block=False)
                if self._ws is ws:
                    self._ws = None
                _close(ws)
            if self._stopping:
                return
            if self._abuses > abuses:  # it flooded us: the next connection waits, longer each time
                gevent.sleep(capped_exponential(1.0, 2.0, RECONNECT_MAX_S, self._abuses))
            else:
                self._warn("lost", "call %s: agent %s: connection lost (%s); connecting again", self.call.uuid,
                           self.shown_url, self.stats["last_error"])

    def _open(self) -> None:
        headers = [f"{name}: {value}" for name, value in self.relay.headers.items()]
        ws = self._connect(self.relay.url, header=headers, timeout=CONNECT_TIMEOUT_S,
                           sslopt={"ca_certs": self.relay.ca_file} if self.relay.ca_file else {})  # wss: verified
        ws.settimeout(None)
        codec = CODECS[self.relay.protocol](self.call, self.parameters)
        try:
            for message in codec.opening():
                _send(ws, message)
        except BaseException:
            _abort(ws)
            raise
        self._control.clear()  # marks and keys meant for the last connection's stream
        self._ws, self._codec = ws, codec
        # A new connection is a new stream: what the last agent asked to play and mark is void.
        if self.talk is not None:
            self._apply(self.talk.clear(self.clock()), echo=False)
        self.talk = TalkBack(codec.talk_rate) if self.relay.talk_back else None
        self.stats["connections"] += 1
        log.info("call %s: relaying to agent %s (%s)", self.call.uuid, self.shown_url, self.relay.protocol)

    def _pump(self, ws, codec) -> None:
        """Everything to the agent, from this greenlet only: marks, keys and stop first, then the call's audio
        as it comes, until the connection fails or the link stops."""
        try:
            while self._ws is ws:
                if self._control:
                    _send(ws, self._control.popleft())
                    continue
                if self._stopping:
                    return
                if not self._queue:
                    self._wake.clear()
                    self._wake.wait()
                    continue
                pcm = self._queue.popleft()
                self._queued_bytes -= len(pcm)
                if self._dropped_bytes:
                    codec.skipped(self._dropped_bytes)
                    self._dropped_bytes = 0
                data = self._partial + pcm
                whole = len(data) - len(data) % (2 * self.call.channels)
                self._partial = data[whole:]
                for message in codec.audio(data[:whole]):
                    _send(ws, message)
                self.stats["sent_ms"] += whole * 1000 // (2 * self.call.channels * self.call.rate)
        except AgentNotReading:
            self.stats["last_error"] = f"the agent took nothing for {SEND_TIMEOUT_S:g} s"
        except Exception as exc:
            self.stats["last_error"] = brief(exc)

    def _read(self, ws, codec) -> None:
        messages, audio_s = message_bucket(), audio_bucket()
        handled, since = 0, self.clock()
        while self._ws is ws:
            try:
                message = ws.recv()
            except Exception as exc:  # closed, reset
                self.stats["last_error"] = brief(exc)
                break
            if message is None or message == "":
                if not ws.connected:
                    self.stats["last_error"] = "the agent closed the connection"
                    break
                continue
            now = self.clock()
            handled += 1
            if handled >= READ_BUDGET_MESSAGES or now - since >= READ_BUDGET_S:
                gevent.sleep(0)  # one agent's burst never holds the other calls
                handled, since = 0, self.clock()
            if not messages.take(1, now):
                self._abusive(f"more than {messages.rate:g} messages a second")
                break
            try:
                kind, value = codec.parse(message)
            except ValueError as exc:
                self.stats["bad_messages"] += 1
                self._warn("message", "call %s: agent %s: ignored a message: %s", self.call.uuid, self.shown_url,
                           brief(exc))
                continue
            if kind == "audio":
                self._agent_bytes += len(value)
                self.stats["agent_ms"] = self._agent_bytes * 1000 // (2 * codec.talk_rate)
                if not audio_s.take(len(value) / (2 * codec.talk_rate), now):
                    self._abusive("audio far faster than real time")
                    break
            if self.talk is None:
                continue  # talk_back: false
            if kind == "audio":
                self._talk(lambda talk, now, pcm=value: talk.audio(pcm, now))
            elif kind == "mark":
                self._talk(lambda talk, now, name=value: talk.mark(name, now))
            else:
                self._clearing = True
                self._talk(lambda talk, now: talk.clear(now))
                self._clearing = False
        if self._ws is ws:
            self._ws = None  # the pump sees the connection is gone
        _abort(ws)
        self._wake.set()

    def _abusive(self, why: str) -> None:
        self._abuses += 1
        self.stats["abusive"] += 1
        self.stats["last_error"] = f"abusive: {why}"
        self._warn("abuse", "call %s: agent %s: %s; its connection is ended", self.call.uuid, self.shown_url, why)

    def _warn(self, kind: str, msg: str, *args) -> None:
        self._log.log(log, logging.WARNING, kind, msg, *args)

    # ---- talking back ---------------------------------------------------------------------------------

    def _talk(self, event) -> None:
        talk = self.talk
        if talk is None:
            return
        self._apply(event(talk, self.clock()))
        self._talk_wake.set()

    def _talk_timer(self) -> None:
        while True:
            talk = self.talk
            deadline = talk.next_deadline() if talk is not None else None
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            self._talk_wake.clear()
            if not self._talk_wake.wait(timeout) and talk is not None and talk is self.talk:
                self._apply(talk.due(self.clock()))

    def _apply(self, actions, echo: bool = True) -> None:
        for action in actions:
            if isinstance(action, SendAudio):
                self.stats["talk_back_chunks"] += 1
                rate = self.talk.rate if self.talk else 8000
                message = json.dumps({"type": "streamAudio", "data": {
                    "audioDataType": "raw", "sampleRate": rate,
                    "audioData": base64.b64encode(action.piece.pcm).decode("ascii")}}, separators=(",", ":"))
                if not self.send_to_module(message):
                    self._warn("module", "call %s: the module's stream is not taking talk-back; %.2f s of the "
                               "agent's audio not played", self.call.uuid, len(action.piece.pcm) / (2 * rate))
                    if self.talk is not None:  # never played: nothing of it is in flight, its marks are done
                        self._apply(self.talk.unsent(action.piece), echo)
            elif isinstance(action, Broadcast):  # over the Event Socket: a chain's names run to kilobytes
                self.stats["talk_back_broadcasts"] += 1
                self._turn_began()
                self._command(f"uuid_broadcast {self.call.channel_uuid} {action.target} aleg")
            elif isinstance(action, Break):
                self._command(f"uuid_break {self.call.channel_uuid} all")
                self._turn_ended()
            elif isinstance(action, EchoMarks) and echo and self._codec is not None:
                self._send_later(self._codec.marks(action.names))
                self._turn_marked(action.names)
            elif isinstance(action, DroppedAudio):
                self.stats["agent_dropped_ms"] += int(action.seconds * 1000)
                self._warn("dropped", "call %s: agent %s: more than %.0f s of its audio waiting to be played; "
                           "%.2f s dropped", self.call.uuid, self.shown_url, action.limit_s, action.seconds)

    # ---- the agent's turns, for the sidecar (the console draws them on the call's timeline) ---------------

    def _turn_began(self) -> None:
        """A reply's chain was broadcast: heard from its estimated start, in the recording's seconds."""
        at = self.position()
        if at is None:
            return
        chain = self.talk.chain if self.talk is not None else None
        ahead = max(0.0, chain.heard_at - self.clock()) if chain is not None and chain.heard_at is not None else 0.0
        self._turn = {"start_s": round(at + ahead, 3), "end_s": None, "marks": []}
        turns = self.stats["turns"]
        turns.append(self._turn)
        if len(turns) > MAX_TURNS:  # a long call keeps its latest turns: the sidecar stays small
            del turns[0]

    def _turn_ended(self) -> None:
        at, turn = self.position(), self._turn
        if at is None or turn is None:
            return
        turn["end_s"] = round(max(at, turn["start_s"]), 3)  # cleared before it was heard: nothing of it played
        if self._clearing:
            turn["cleared_s"] = round(at, 3)
        self._turn = None

    def _turn_marked(self, names) -> None:
        at, turn = self.position(), self._turn
        if at is not None and turn is not None and len(turn["marks"]) < MAX_TURNS:
            turn["marks"] += [{"t": round(at, 3), "name": name} for name in names]

    def _command(self, text: str) -> None:
        try:
            reply = self.command(text)
        except Exception as exc:
            self._warn("command", "call %s: %s failed: %s", self.call.uuid, text.split(" ", 1)[0], exc)
            return
        if not reply.startswith("+OK"):
            self._warn("command", "call %s: %s answered %r", self.call.uuid, text.split(" ", 1)[0], reply.strip())

    def _send_later(self, messages) -> None:
        """To the agent by the pump (the only sender), in order, before more audio."""
        for message in messages:
            if len(self._control) >= MAX_CONTROL_MESSAGES:
                self._control.popleft()
            self._control.append(message)
        self._wake.set()


# ---- the socket ---------------------------------------------------------------------------------------

def _send(ws, message) -> None:
    with gevent.Timeout(SEND_TIMEOUT_S, AgentNotReading):
        if isinstance(message, bytes):
            ws.send_binary(message)
        else:
            ws.send(message)


def _close(ws) -> None:
    """A close frame if the agent takes it at once, then the socket closed."""
    if ws is None:
        return
    try:
        with gevent.Timeout(0.5, False):
            ws.send_close()
    except Exception:
        pass
    _abort(ws)


def _abort(ws) -> None:
    """Close the socket now: every greenlet waiting on it wakes with an error, none is left holding it."""
    if ws is None:
        return
    try:
        ws.shutdown()
    except Exception:
        pass
