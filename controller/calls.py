"""Per-call state: which calls stream, and which commands each event calls for. Pure: no sockets, no clock.

The controller feeds events in (answer, command results, module events, hangup, the passing of time) and
carries out the actions that come back. Keeping the decisions here means every rule about starting and
stopping (never twice, not for unmatched calls, stop after the rule's limit) is tested without a socket.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    WAITING = "waiting"  # answered and matched; the rule's start delay has not passed yet
    STARTING = "starting"  # start command sent or accepted; no ::connect yet
    STREAMING = "streaming"  # the module confirmed the WebSocket
    STOPPING = "stopping"  # stop sent after the rule's time limit
    FAILED = "failed"  # the module refused or lost the stream; nothing more is tried for this call


@dataclass(frozen=True)
class StartStream:
    call: "Call"


@dataclass(frozen=True)
class StopStream:
    call: "Call"
    reason: str


@dataclass(frozen=True)
class ForgetCall:
    """The call is over for the controller: the recorder stops accepting connections for it."""

    uuid: str
    reason: str


Action = StartStream | StopStream | ForgetCall


@dataclass
class Call:
    info: Any  # rules.CallInfo
    rule: Any  # config rule: name, start_delay_s, max_duration_s, ...
    token: str
    answered_at: float
    phase: Phase = Phase.WAITING
    start_at: float = 0.0
    stop_at: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        return self.info.uuid


class CallBook:
    """All calls the controller streams, keyed by channel uuid."""

    def __init__(self, match: Callable[[Any], Any], make_token: Callable[[], str]) -> None:
        self.match = match
        self.make_token = make_token
        self.calls: dict[str, Call] = {}

    def on_answer(self, info, now: float) -> list[Action]:
        if info.uuid in self.calls:
            # FreeSWITCH may repeat an answer (re-INVITE, reconnect replays): one stream per call, ever.
            return []
        rule = self.match(info)
        if rule is None:
            log.info("call %s to %r (%s) matches no rule: not streamed", info.uuid, info.destination,
                     info.direction)
            return []
        call = Call(info, rule, self.make_token(), answered_at=now, start_at=now + rule.start_delay_s)
        self.calls[info.uuid] = call
        log.info("call %s to %r matches rule %r", info.uuid, info.destination, rule.name)
        return self.due(now)

    def due(self, now: float) -> list[Action]:
        """Actions whose time has come: delayed starts, and stops at the rule's time limit."""
        actions: list[Action] = []
        for call in self.calls.values():
            if call.phase is Phase.WAITING and call.start_at <= now:
                call.phase = Phase.STARTING
                if call.rule.max_duration_s is not None:
                    call.stop_at = now + call.rule.max_duration_s
                actions.append(StartStream(call))
            elif (call.phase in (Phase.STARTING, Phase.STREAMING) and call.stop_at is not None
                  and call.stop_at <= now):
                call.phase = Phase.STOPPING
                actions.append(StopStream(call, f"rule {call.rule.name!r} limit of {call.rule.max_duration_s:g}s"))
        return actions

    def next_deadline(self) -> float | None:
        times = [c.start_at for c in self.calls.values() if c.phase is Phase.WAITING]
        times += [c.stop_at for c in self.calls.values()
                  if c.phase in (Phase.STARTING, Phase.STREAMING) and c.stop_at is not None]
        return min(times, default=None)

    def on_start_result(self, uuid: str, ok: bool, detail: str) -> list[Action]:
        call = self.calls.get(uuid)
        if call is None or ok:
            return []
        return self._fail(call, f"start refused: {detail}")

    def on_stream_connected(self, uuid: str) -> None:
        call = self.calls.get(uuid)
        if call is not None and call.phase is Phase.STARTING:
            call.phase = Phase.STREAMING

    def on_stream_lost(self, uuid: str, detail: str) -> list[Action]:
        """::error or ::disconnect from the module: the recording of this call has ended early."""
        call = self.calls.get(uuid)
        if call is None or call.phase is Phase.STOPPING:
            return []
        return self._fail(call, detail)

    def on_hangup(self, uuid: str) -> list[Action]:
        # The module stops the stream itself on hangup; nothing to send, only to forget.
        if self.calls.pop(uuid, None) is None:
            return []
        return [ForgetCall(uuid, "hangup")]

    def _fail(self, call: Call, detail: str) -> list[Action]:
        call.errors.append(detail)
        call.phase = Phase.FAILED
        log.error("call %s: stream failed: %s", call.uuid, detail)
        return []
