"""The recorder's book of calls: one ``CallState`` per call it knows, and every decision about them. Pure.

Everything the recorder knows about a call lives in its entry here: the connection attached now, the open
recording, when the controller said the call is over, when and why its last connection ended, a file an
earlier process left for it, a final sidecar still to be written, where its audio is also tapped. The shell
(server.py) asks, with the time, and gets back what to do (``Finalise``, ``Detach``, ``EndConnection``, ...);
it does that, and tells the book what came of it. No I/O and no clock here: the tests drive it with numbers.

Connections and recordings are the shell's objects; the book only holds them (a connection is anything with
``heard_at``, the arrival time of the last bytes it read, and ``spec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .recording import CALL_END, CLIENT_CLOSE, IDLE_TIMEOUT, LINGER, SERVER_STOP, WRITE_ERROR, Ending, StreamSpec


@dataclass(frozen=True)
class CallEnd:
    """The controller said the call is over."""

    at: float | None  # when it ended (the hangup's own time), None when unknown
    asked: float  # when the controller said so
    why: str | None  # the controller's reason (e.g. rule_max_duration), written instead of the connection's


@dataclass(frozen=True)
class Resumable:
    """A file an earlier process (killed, or stopped while the call was live) left for this call."""

    path: Path
    last_write: float  # wall time of its last audio: the time since then is written as silence
    noted_at: float
    by_stop: bool = False  # this process's stop() finalised it: the next process is told to continue it


@dataclass(eq=False)
class CallState:
    uuid: str
    conn: Any = None  # the connection attached (admitted, then streaming), at most one
    recording: Any = None  # the open recording, attached or not
    ended: CallEnd | None = None  # over, while a connection is still attached: finalise when it ends
    detached_at: float | None = None  # when its last connection ended, while the recording stays open
    detach_reason: Ending | None = None
    resumable: Resumable | None = None
    finished_at: float | None = None  # the recorder finalised the call's recording: no second file for it
    unsaved: Any = None  # a finished recording whose final sidecar is not on disk yet ...
    sidecar_retry_at: float = 0.0  # ... and when to try again
    tap: Callable[[bytes], None] | None = None  # also gets every audio frame (a voice agent's relay)
    relay_stats: dict | None = None

    @property
    def empty(self) -> bool:
        return (self.conn is None and self.recording is None and self.resumable is None and self.unsaved is None
                and self.finished_at is None and self.tap is None)


# ---- what the book answers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refuse:
    status: str
    reason: str


@dataclass(frozen=True)
class Admit:
    replaces: Any  # the call's connection until now (a restart whose old close was not read yet), or None


@dataclass(frozen=True)
class OpenNew:
    pass


@dataclass(frozen=True)
class Attach:
    recording: Any  # the call's open recording: this connection continues it


@dataclass(frozen=True)
class Resume:
    path: Path
    last_write: float


@dataclass(frozen=True)
class AlreadyFinished:
    """The recorder ended this call's recording (a limit, an error): a later connection gets no second file."""


@dataclass(frozen=True)
class Finalise:
    uuid: str
    recording: Any
    reason: str
    end_at: float | None  # when the call ended; None: where its audio (or last connection) did
    close_code: int | None = None
    close_text: str | None = None
    error: str | None = None
    call_over: bool = False  # the controller said the call is over (else its stream may come back)


@dataclass(frozen=True)
class Detach:
    uuid: str
    recording: Any
    reason: Ending
    at: float
    close_code: int | None = None
    close_text: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class EndConnection:
    conn: Any
    ending: Ending
    detail: str  # why, for the log


@dataclass(frozen=True)
class Upkeep:
    """Time passes for an attached recording: settle held-back audio, keep the header current, wall limits."""

    conn: Any
    recording: Any


@dataclass(frozen=True)
class RetrySidecar:
    uuid: str
    recording: Any


Action = Finalise | Detach | EndConnection | Upkeep | RetrySidecar


def idle_limit_s(spec: StreamSpec, idle_timeout_s: float) -> float | None:
    """How long a connection may send nothing at all before it counts as dead: three missed pings, never less
    than ``idle_timeout_s``; None for a stream without pings, whose silence may be legal (mixed audio while
    nothing plays, pause)."""
    if spec.heartbeat_s <= 0:
        return None
    return max(idle_timeout_s, 3.0 * spec.heartbeat_s)


class RecordingBook:
    def __init__(self, *, max_streams: int, linger_s: float, end_grace_s: float, idle_timeout_s: float,
                 sidecar_retry_s: float = 5.0) -> None:
        self.calls: dict[str, CallState] = {}
        self.max_streams = max_streams
        self.linger_s = linger_s  # how long a detached recording waits for its stream to come back
        # After the call is over, how long an attached connection may stay open: the module closes at hangup,
        # so one still open is half-open TCP (its host died) and would otherwise hold the file open for ever.
        self.end_grace_s = end_grace_s
        self.idle_timeout_s = idle_timeout_s
        self.sidecar_retry_s = sidecar_retry_s
        self.stopping = False
        self.connected = 0  # calls with a connection attached

    def __getitem__(self, uuid: str) -> CallState | None:
        return self.calls.get(uuid)

    def _entry(self, uuid: str) -> CallState:
        state = self.calls.get(uuid)
        if state is None:
            state = self.calls[uuid] = CallState(uuid)
        return state

    def _tidy(self, state: CallState) -> None:
        if state.empty and self.calls.get(state.uuid) is state:
            del self.calls[state.uuid]

    def _set_conn(self, state: CallState, conn) -> None:
        self.connected += (conn is not None) - (state.conn is not None)
        state.conn = conn

    # ---- a connection's life ----------------------------------------------------------------------------

    def admit(self, uuid: str) -> Refuse | Admit:
        """A client proved it streams this call: may it? A new connection for a call that has one replaces it
        (the module holds one stream per channel: a restart writes stop and start together, and the new
        connection can arrive before the old one's close is read), whatever the limit."""
        if self.stopping:
            return Refuse("503 Service Unavailable", "the recorder is shutting down")
        state = self.calls.get(uuid)
        old = state.conn if state is not None else None
        if old is None and self.connected >= self.max_streams:
            return Refuse("503 Service Unavailable",
                          f"{self.connected} streams already, the recorder's limit is {self.max_streams}")
        return Admit(old)

    def reserve(self, uuid: str, conn) -> None:
        """The admitted connection is the call's from now on (its predecessor ended first)."""
        self._set_conn(self._entry(uuid), conn)

    def opening(self, uuid: str, conn) -> OpenNew | Attach | Resume | AlreadyFinished | None:
        """Which file the upgraded connection writes; None when it is no longer the call's (replaced or ended
        during its handshake)."""
        state = self.calls.get(uuid)
        if state is None or state.conn is not conn:
            return None
        if state.recording is not None:
            return Attach(state.recording)
        if state.finished_at is not None:
            return AlreadyFinished()
        if state.resumable is not None:
            found, state.resumable = state.resumable, None
            return Resume(found.path, found.last_write)
        return OpenNew()

    def opened(self, uuid: str, recording) -> None:
        state = self._entry(uuid)
        state.recording = recording
        state.detached_at = state.detach_reason = None

    def open_failed(self, uuid: str, conn) -> None:
        """No file could be opened for the connection (nothing was written): it ends; a later one may try again."""
        state = self.calls.get(uuid)
        if state is None or state.conn is not conn:
            return
        self._set_conn(state, None)
        state.ended = None
        self._tidy(state)

    def connection_ended(self, uuid: str, conn, ending: Ending, *, at: float, close_code: int | None = None,
                         close_text: str | None = None, error: str | None = None) -> list[Action]:
        """The connection ended at ``at`` (its close frame's arrival, its EOF, or when the recorder ended it)."""
        state = self.calls.get(uuid)
        if state is None or state.conn is not conn:
            return []  # replaced: its successor owns the call now
        self._set_conn(state, None)
        close = {"close_code": close_code, "close_text": close_text, "error": error}
        if ending.close is not None:  # the recorder ended it: the module is told that, not what it last said
            close["close_code"], close["close_text"] = ending.close
        if state.recording is None:
            state.ended = None
            self._tidy(state)
            return []
        if state.ended is not None:
            end = state.ended
            # The earlier of the hangup's own time and the stream's end: however late the controller got round
            # to either, no load ever adds silence to a call.
            end_at = (end.asked if ending is CALL_END else at) if end.at is None else min(end.at, at)
            # The controller's reason, unless the recorder itself ended the file first (a limit, an error).
            reason = end.why if end.why is not None and (not ending.final or ending is CALL_END) else ending
            return [self._finalise(state, reason, end_at, call_over=True, **close)]
        if ending.final:
            return [self._finalise(state, ending, None, **close)]
        state.detached_at, state.detach_reason = at, ending
        return [Detach(uuid, state.recording, ending, at, **close)]

    def recording_failed(self, uuid: str, error: str) -> list[Action]:
        """The recording's file failed outside a connection's frames (detaching it): finalise it as it is."""
        state = self.calls.get(uuid)
        if state is None or state.recording is None:
            return []
        return [self._finalise(state, WRITE_ERROR, None, error=error)]

    # ---- the controller's word ----------------------------------------------------------------------------

    def call_ended(self, uuid: str, at: float | None, why: str | None, now: float) -> list[Action]:
        """The call is over (hangup, gone, or its stream stopped on purpose), at ``at`` if known."""
        state = self.calls.get(uuid)
        if state is None:
            return []
        state.resumable = None  # an earlier process's file for it stays as that process left it
        if state.conn is not None:  # finalised when that connection ends (or after the grace)
            state.ended = CallEnd(at, now, why)
            return []
        if state.recording is None:
            state.finished_at = None
            self._tidy(state)
            return []
        end_at = at
        if state.detach_reason is CLIENT_CLOSE and (at is None or at > state.detached_at):
            end_at = state.detached_at  # the module closed at the hangup: the call ended with its stream
        return [self._finalise(state, why or state.detach_reason or CALL_END, end_at, call_over=True)]

    def note_resumable(self, uuid: str, path: Path, last_write: float, now: float) -> None:
        state = self._entry(uuid)
        if state.resumable is None and state.recording is None:
            state.resumable = Resumable(path, last_write, now)

    def set_tap(self, uuid: str, tap, stats: dict | None) -> CallState | None:
        if tap is None:
            state = self.calls.get(uuid)
            if state is not None:
                state.tap = state.relay_stats = None
                self._tidy(state)
            return state
        state = self._entry(uuid)
        state.tap, state.relay_stats = tap, stats
        return state

    # ---- after the shell acted ----------------------------------------------------------------------------

    def finished(self, uuid: str, recording, reason: str, *, sidecar_saved: bool, continuable: bool, now: float,
                 wall_now: float) -> None:
        """The shell finalised the call's recording. If the call's stream comes back (it lingered too long, say),
        it continues the same file (``continuable``: the file is sound and nothing ended it on purpose);
        after a limit or a failed file it gets none: one file per call, never a second."""
        state = self._entry(uuid)
        if not sidecar_saved:
            state.unsaved, state.sidecar_retry_at = recording, now + self.sidecar_retry_s
        if continuable:
            state.resumable = Resumable(recording.path, wall_now, now, by_stop=self.stopping)
        elif not self.stopping:
            state.finished_at = now
        self._tidy(state)

    def sidecar_retried(self, uuid: str, saved: bool, now: float) -> None:
        state = self.calls.get(uuid)
        if state is None:
            return
        if saved:
            state.unsaved = None
            self._tidy(state)
        else:
            state.sidecar_retry_at = now + self.sidecar_retry_s

    # ---- time ---------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for state in list(self.calls.values()):
            conn, recording = state.conn, state.recording
            if recording is not None and conn is None and state.detached_at is not None \
                    and now - state.detached_at > self.linger_s:
                actions.append(self._finalise(state, LINGER, None))
            elif recording is not None and conn is not None:
                limit = idle_limit_s(conn.spec, self.idle_timeout_s)
                if state.ended is not None and now - state.ended.asked > self.end_grace_s:
                    actions.append(EndConnection(conn, CALL_END, f"over for {now - state.ended.asked:.0f} s but "
                                                                 f"the connection is still open (half-open TCP?)"))
                elif limit is not None and now - conn.heard_at > limit:
                    actions.append(EndConnection(conn, IDLE_TIMEOUT, f"nothing for {limit:.0f} s, not even a ping"))
                else:
                    actions.append(Upkeep(conn, recording))
            if state.resumable is not None and now - state.resumable.noted_at > self.linger_s:
                state.resumable = None
            if state.unsaved is not None and now >= state.sidecar_retry_at:
                actions.append(RetrySidecar(state.uuid, state.unsaved))
            if state.finished_at is not None and conn is None and now - state.finished_at > self.linger_s:
                state.finished_at = None
            self._tidy(state)
        return actions

    def stop(self, now: float) -> list[Action]:
        """The recorder stops: end every connection (each finalises its recording), then the detached ones,
        silence up to now (the file notes the stop time for the next process)."""
        self.stopping = True
        actions: list[Action] = [EndConnection(s.conn, SERVER_STOP, "the recorder is stopping")
                                 for s in self.calls.values() if s.conn is not None]
        for state in list(self.calls.values()):
            if state.conn is None and state.recording is not None:
                actions.append(self._finalise(state, SERVER_STOP, now))
        return actions

    def unsaved(self) -> list[RetrySidecar]:
        return [RetrySidecar(s.uuid, s.unsaved) for s in self.calls.values() if s.unsaved is not None]

    # ---- internals ----------------------------------------------------------------------------------------

    def _finalise(self, state: CallState, reason: str, end_at: float | None, **close) -> Finalise:
        action = Finalise(state.uuid, state.recording, reason, end_at, **close)
        state.recording = state.ended = state.detached_at = state.detach_reason = None
        return action
