"""Per-call state: which calls stream, and which commands each event calls for. Pure: no sockets, no clock.

The controller feeds events in (answer, command results, module events, hangup, the passing of time) and
carries out the actions that come back. Keeping the decisions here means every rule about starting and
stopping (never twice, not for unmatched calls, stop after the rule's limit) is tested without a socket.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .esl.backoff import capped_exponential
from .recorder.recording import RULE_MAX_DURATION

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    WAITING = "waiting"  # answered and matched; the rule's start delay has not passed yet
    STARTING = "starting"  # start command sent or accepted; no ::connect yet
    STREAMING = "streaming"  # the module confirmed the WebSocket
    RETRYING = "retrying"  # the stream was lost mid-call; a restart (stop, then start) is scheduled
    STOPPING = "stopping"  # stop sent after the rule's time limit
    FINISHED = "finished"  # the recorder ended the recording on purpose (its limits, a write error)
    FAILED = "failed"  # gave up: nothing more is tried for this call


# Phases in which a call holds (or is about to hold) one of the module's streams.
HOLDS_STREAM = (Phase.WAITING, Phase.STARTING, Phase.STREAMING, Phase.RETRYING)
# Phases the rule's time limit ends.
STOPPABLE = (Phase.STARTING, Phase.STREAMING, Phase.RETRYING)
# How long a hangup is remembered, against channel listings older than it.
ENDED_KEPT_S = 60.0
# A call's errors kept for /calls: the last few say what is wrong now.
MAX_ERRORS_KEPT = 20


@dataclass(frozen=True)
class StartStream:
    call: "Call"
    restart: bool = False  # send `stop` first: after a server-side close the module refuses a new start
    attempt: int = 1  # which of the call's starts this is: an older one still sending gives way


@dataclass(frozen=True)
class StopStream:
    call: "Call"
    reason: str
    close_reason: str | None = None  # what the recording's sidecar says ended it (the rule's limit), if anything


@dataclass(frozen=True)
class ForgetCall:
    """The call is over for the controller: the recorder stops accepting connections for it."""

    uuid: str
    reason: str
    # When the call ended, on the book's clock; None when nobody knows (it vanished while the Event Socket
    # was down): its recording then ends where its audio did, not when we learned of it.
    at: float | None = None


@dataclass(frozen=True)
class NotStreamed:
    """An answered call the controller chose not to stream, and why (for the log and the counters)."""

    uuid: str
    reason: str  # "no_rule" or "limit"
    detail: str


Action = StartStream | StopStream | ForgetCall | NotStreamed


@dataclass(frozen=True)
class RetryPolicy:
    """Restarts after a lost stream wait longer each time, up to a cap, for a bounded number of tries in a row.

    A stream that then stays up for `stable_s` has shown that restarting works: its next loss starts a
    fresh count, so a long call is never given up for drops spread over hours.
    """

    initial_s: float = 0.5
    max_s: float = 8.0
    max_attempts: int = 8
    stable_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return capped_exponential(self.initial_s, 2.0, self.max_s, attempt)


@dataclass
class Call:
    info: Any  # rules.CallInfo
    rule: Any  # config rule: name, start_delay_s, max_duration_s, max_streams, ...
    token: str
    answered_at: float
    phase: Phase = Phase.WAITING
    start_at: float = 0.0
    stop_at: float | None = None
    retry_at: float = 0.0
    restarts: int = 0  # losses in a row (see RetryPolicy.stable_s)
    connected_at: float | None = None  # when the current stream was confirmed (::connect)
    # What went wrong, most recent last: only the last few (a call that fails all day must not grow without end).
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS_KEPT))
    # Found by reconcile, never seen answered: an earlier controller process may have left the module holding
    # a stream for it (after a server-side close it stays attached and refuses a new start), so stop first.
    stop_first: bool = False
    start_accepted: bool = False  # the module answered +OK to the latest start: it is connecting, or failed
    starts: int = 0  # start attempts so far, restarts included
    permanent: bool = False  # FAILED for a reason no retry can mend (invalid arguments)
    stop_delivered: bool = False  # STOPPING: the switch answered the stop (whatever it said)

    @property
    def uuid(self) -> str:
        return self.info.uuid


class CallBook:
    """All calls the controller streams, keyed by channel uuid."""

    def __init__(self, match: Callable[[Any], Any], make_token: Callable[[], str], *,
                 max_streams: int | None = None, retry: RetryPolicy = RetryPolicy()) -> None:
        self.match = match
        self.make_token = make_token
        self.max_streams = max_streams
        self.retry = retry
        self.calls: dict[str, Call] = {}
        # Calls refused for a limit stay refused for their whole life: a later reconcile must not start
        # half a call that the operator's limit kept out.
        self.refused: set[str] = set()
        # Hangups of the last minute: a channel listing taken before a hangup we handled meanwhile must not
        # bring the call back.
        self.ended: dict[str, float] = {}
        # Streams held outside the book (the doctor's test call, run by the controller): counted against
        # max_streams like a call's.
        self.reserved = 0

    # ---- answer, and the decisions it needs ----------------------------------------------------------

    def on_answer(self, info, now: float, stop_first: bool = False) -> list[Action]:
        if info.uuid in self.calls or info.uuid in self.refused:
            # FreeSWITCH may repeat an answer (re-INVITE, reconnect replays): one stream per call, ever.
            return []
        rule = self.match(info)
        if rule is None:
            return [NotStreamed(info.uuid, "no_rule",
                                f"destination {info.destination!r} ({info.direction}) matches no rule")]
        over = self._over_limit(rule)
        if over:
            self.refused.add(info.uuid)
            return [NotStreamed(info.uuid, "limit", over)]
        call = Call(info, rule, self.make_token(), answered_at=now, start_at=now + rule.start_delay_s,
                    stop_first=stop_first)
        self.calls[info.uuid] = call
        log.info("call %s to %r matches rule %r", info.uuid, info.destination, rule.name)
        return self.due(now)

    def streams_full(self) -> str:
        """Why one more stream would go past max_streams, or "" when there is room."""
        held = sum(1 for c in self.calls.values() if c.phase in HOLDS_STREAM) + self.reserved
        if self.max_streams is not None and held >= self.max_streams:
            test = f" ({self.reserved} of them a test call)" if self.reserved else ""
            return f"{held} streams already{test}, the limit is {self.max_streams}"
        return ""

    def _over_limit(self, rule) -> str:
        full = self.streams_full()
        if full:
            return full
        holding = [c for c in self.calls.values() if c.phase in HOLDS_STREAM]
        rule_cap = getattr(rule, "max_streams", None)
        same_rule = [c for c in holding if c.rule.name == rule.name]
        if rule_cap is not None and len(same_rule) >= rule_cap:
            return f"rule {rule.name!r} has {len(same_rule)} streams already, its limit is {rule_cap}"
        return ""

    # ---- time --------------------------------------------------------------------------------------

    def due(self, now: float) -> list[Action]:
        """Actions whose time has come: delayed starts, restarts, and stops at the rule's time limit."""
        actions: list[Action] = []
        for call in self.calls.values():
            # The time limit first: a restart due at the same moment must not outlive the stop.
            if call.phase in STOPPABLE and call.stop_at is not None and call.stop_at <= now:
                call.phase = Phase.STOPPING
                actions.append(StopStream(call, f"rule {call.rule.name!r} limit of {call.rule.max_duration_s:g}s",
                                          close_reason=RULE_MAX_DURATION))
            elif call.phase is Phase.WAITING and call.start_at <= now:
                if call.rule.max_duration_s is not None:
                    call.stop_at = now + call.rule.max_duration_s
                actions.append(self._start(call, restart=call.stop_first))
            elif call.phase is Phase.RETRYING and call.retry_at <= now:
                actions.append(self._start(call, restart=True))
        return actions

    @staticmethod
    def _start(call: Call, restart: bool) -> StartStream:
        call.phase = Phase.STARTING
        call.start_accepted = False
        call.starts += 1
        return StartStream(call, restart=restart, attempt=call.starts)

    def next_deadline(self) -> float | None:
        times = [c.start_at for c in self.calls.values() if c.phase is Phase.WAITING]
        times += [c.retry_at for c in self.calls.values() if c.phase is Phase.RETRYING]
        times += [c.stop_at for c in self.calls.values() if c.phase in STOPPABLE and c.stop_at is not None]
        return min(times, default=None)

    def still_starting(self, start: StartStream) -> bool:
        """Whether a start under way should go on sending: its call not hung up, stopped or started anew."""
        call = start.call
        return self.calls.get(call.uuid) is call and call.phase is Phase.STARTING and call.starts == start.attempt

    # ---- what the module and the recorder report ---------------------------------------------------

    def on_start_result(self, start: StartStream, ok: bool, detail: str, now: float,
                        permanent: bool = False) -> list[Action]:
        """`permanent`: retrying cannot help (the arguments themselves are invalid)."""
        call = start.call
        if self.calls.get(call.uuid) is not call:
            return []
        if ok and call.phase is Phase.STOPPING:
            # Start and stop run as separate jobs in FreeSWITCH and may land in either order: stop again.
            return [StopStream(call, "a start was accepted after the stop")]
        if call.starts != start.attempt:
            return []  # a newer start has taken over; this one's result says nothing about it
        if ok and call.phase is Phase.STARTING:
            call.start_accepted = True
        if ok or call.phase is not Phase.STARTING:
            return []
        if permanent:
            call.errors.append(detail)
            call.phase = Phase.FAILED
            call.permanent = True
            return []
        return self._lost(call, f"start refused: {detail}", now)

    def on_stream_connected(self, uuid: str, now: float) -> None:
        call = self.calls.get(uuid)
        if call is not None and call.phase is Phase.STARTING:
            call.phase = Phase.STREAMING
            call.connected_at = now

    def on_stream_lost(self, uuid: str, detail: str, now: float) -> list[Action]:
        """The WebSocket went away while the call goes on (::error, ::disconnect, or the recorder saw it)."""
        call = self.calls.get(uuid)
        if call is None or call.phase not in (Phase.STARTING, Phase.STREAMING):
            # Already restarting, stopping on purpose, finished or failed: one loss, one restart.
            return []
        return self._lost(call, detail, now)

    def on_stop_result(self, call: Call, delivered: bool) -> None:
        """Whether the stop reached the switch; one lost with the connection is sent again at reconcile."""
        call.stop_delivered = delivered

    def on_recording_finished(self, uuid: str, reason: str) -> None:
        """The recorder closed the stream on purpose (its limits, a write error): do not restart it."""
        call = self.calls.get(uuid)
        if call is not None and call.phase in HOLDS_STREAM:
            call.phase = Phase.FINISHED
            call.errors.append(f"recording ended: {reason}")

    def on_hangup(self, uuid: str, now: float) -> list[Action]:
        # The module stops the stream itself on hangup; nothing to send, only to forget.
        self.refused.discard(uuid)
        self.ended[uuid] = now
        self._forget_old_hangups(now)
        if self.calls.pop(uuid, None) is None:
            return []
        return [ForgetCall(uuid, "hangup", at=now)]

    # ---- after an Event Socket (re)connect ---------------------------------------------------------

    def reconcile(self, answered: list, live_recordings: set[str], now: float,
                  present: set[str] | None = None) -> list[Action]:
        """Bring the book in line with what FreeSWITCH says is live (`show channels`), after any gap in events.

        Answered channels a rule matches whose recording is not live get their stream (re)started; calls
        the book holds that FreeSWITCH no longer has (`present`: every listed channel, answered or in
        another state; by default the answered ones) are forgotten. A call whose recording is live is left
        alone, so a reconnect never starts a second stream.
        """
        actions: list[Action] = []
        present = {info.uuid for info in answered} if present is None else present
        for uuid in [u for u in self.calls if u not in present]:
            del self.calls[uuid]
            actions.append(ForgetCall(uuid, "gone after reconnect"))
        self.refused &= present  # refused calls whose hangup we missed must not pile up over months
        self._forget_old_hangups(now)
        restarted = False
        for info in answered:
            if info.uuid in self.ended:
                continue
            call = self.calls.get(info.uuid)
            if call is None:
                actions += self.on_answer(info, now, stop_first=True)
            elif call.phase is Phase.STOPPING:
                if not call.stop_delivered:
                    actions.append(StopStream(call, "again after a reconnect: the stop may not have reached it"))
            elif info.uuid in live_recordings:
                if call.phase is Phase.STARTING:
                    call.phase = Phase.STREAMING
                    call.connected_at = now
            elif self._may_be_dead(call):
                if call.phase is Phase.FAILED:
                    call.restarts = 0  # it gave up while the switch was out of reach: a fresh set of tries
                actions += self._lost(call, "no live recording after reconnect", now, at_once=True)
                restarted = True
        return actions + (self.due(now) if restarted else [])

    def _forget_old_hangups(self, now: float) -> None:
        # Oldest first (insertion order), so this stops at the first one still worth keeping.
        while self.ended and now - next(iter(self.ended.values())) >= ENDED_KEPT_S:
            del self.ended[next(iter(self.ended))]

    @staticmethod
    def _may_be_dead(call: Call) -> bool:
        """With no live recording: a stream that was confirmed, or accepted (its ::connect or ::error may
        have been lost with the connection), or given up on while unreachable. A start still waiting for
        its reply settles by itself: the reply, or its failure when the connection it went out on dropped."""
        return (call.phase is Phase.STREAMING or (call.phase is Phase.STARTING and call.start_accepted)
                or (call.phase is Phase.FAILED and not call.permanent))

    def _lost(self, call: Call, detail: str, now: float, at_once: bool = False) -> list[Action]:
        call.errors.append(detail)
        if call.connected_at is not None and now - call.connected_at >= self.retry.stable_s:
            call.restarts = 0
        call.connected_at = None
        call.restarts += 1
        if call.restarts > self.retry.max_attempts:
            call.phase = Phase.FAILED
            log.error("call %s: stream lost (%s); gave up after %d restarts", call.uuid, detail,
                      self.retry.max_attempts)
            return []
        delay = 0.0 if at_once else self.retry.delay(call.restarts)
        call.phase = Phase.RETRYING
        call.retry_at = now + delay
        log.warning("call %s: stream lost (%s); restart %d in %.1fs", call.uuid, detail, call.restarts, delay)
        return []
