"""Talking back: when the agent's audio goes into the call, in how many pieces, and when its marks come back.
Pure: no sockets, no clock of its own (the caller says what time it is), like calls.CallBook.

How FreeSWITCH plays it (measured on a real switch, see PROTOCOL.md): the module turns each ``streamAudio``
message into a file and fires ``mod_audio_stream::play``; ``uuid_broadcast`` then plays the file ~200 ms after
it is asked, and the caller hears a ~120 ms hole between two broadcasts queued one behind the other. So 20 ms
pieces played one by one would be unlistenable, and every boundary costs a hole. The schedule:

- nothing playing: the first chunk goes once the agent pauses for ``quiet_s`` (an agent faster than real time
  has then sent the whole reply: it goes as one piece, no hole at all) or sends a mark, and at the latest
  ``first_wait_s`` after its first audio came (an agent that streams in real time) — latency first;
- something playing: the audio is held, and everything that has come is sent as ONE chunk ``lead_s`` before
  what plays now is expected to end, so it is queued in time (a broadcast asked for after the last one
  ended would wait the whole start latency). Agents synthesise faster than real time, so
  an utterance usually needs one boundary; a real-time agent gets chunks that grow with each one.

Marks: a mark belongs to the audio before it, so it is echoed when the chunk holding that audio has finished
playing (never before); with nothing to play it is echoed at once. ``clear`` (barge-in) stops what plays,
drops what waits, and echoes every pending mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_BYTES = 2
FIRST_WAIT_S = 0.2  # the longest the first audio of a reply waits before it goes
QUIET_S = 0.06  # no audio from the agent for this long: what came is a whole reply
# Queue the next chunk this long before what plays now should end: enough for streamAudio -> ::play ->
# uuid_broadcast (milliseconds) and for the end being an estimate until PLAYBACK_START says when it began.
LEAD_S = 0.1
START_LATENCY_S = 0.2  # from uuid_broadcast to the first sample heard, as measured
QUEUE_GAP_S = 0.12  # between two broadcasts queued one behind the other, as measured
# The agent's audio waiting to go into the call: beyond this much, what comes is dropped (counted), so an agent
# that sends ten minutes at once cannot make the process hold them.
MAX_PENDING_S = 60.0


@dataclass
class Chunk:
    number: int
    pcm: bytes
    marks: list[str] = field(default_factory=list)
    sent_at: float = 0.0
    file: str | None = None  # the module's file for it (mod_audio_stream::play)
    broadcast_at: float | None = None
    started_at: float | None = None
    cancelled: bool = False  # cleared before it finished

    def seconds(self, rate: int) -> float:
        return len(self.pcm) / (SAMPLE_BYTES * rate)


@dataclass(frozen=True)
class SendAudio:
    """Send this chunk to the module (a streamAudio message); its ::play will follow."""

    chunk: Chunk


@dataclass(frozen=True)
class Broadcast:
    """Play the chunk's file into the call (uuid_broadcast <uuid> <file> aleg)."""

    chunk: Chunk


@dataclass(frozen=True)
class Break:
    """Stop what plays and drop what is queued (uuid_break <uuid> all)."""


@dataclass(frozen=True)
class EchoMarks:
    """Tell the agent these marks' audio has been played (or dropped by a clear), in order."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class DroppedAudio:
    """The agent's audio went past MAX_PENDING_S waiting: this much of it was dropped."""

    seconds: float
    limit_s: float


Action = SendAudio | Broadcast | Break | EchoMarks | DroppedAudio


class TalkBack:
    """One call's agent audio on its way into the call. Feed it what happens; carry out what it returns."""

    def __init__(self, rate: int = 8000, *, first_wait_s: float = FIRST_WAIT_S, quiet_s: float = QUIET_S,
                 lead_s: float = LEAD_S, start_latency_s: float = START_LATENCY_S,
                 queue_gap_s: float = QUEUE_GAP_S, max_pending_s: float = MAX_PENDING_S) -> None:
        self.rate = rate
        self.max_pending_s = max_pending_s
        self.first_wait_s = first_wait_s
        self.quiet_s = quiet_s
        self.lead_s = lead_s
        self.start_latency_s = start_latency_s
        self.queue_gap_s = queue_gap_s
        self.pending = bytearray()  # agent audio not sent to the module yet
        self.pending_marks: list[tuple[int, str]] = []  # (offset in pending, name): a mark ends the audio before it
        self.in_flight: list[Chunk] = []  # sent, not finished playing, in order
        self._last_audio_at: float | None = None
        self._first_pending_at: float | None = None  # when the audio now pending began to come
        self._numbers = 0
        self.chunks_sent = 0  # for the sidecar: how many pieces the agent's speech took

    # ---- what the agent sends -------------------------------------------------------------------------

    def audio(self, pcm: bytes, now: float) -> list[Action]:
        if not self.pending:
            self._first_pending_at = now
        room = int(self.max_pending_s * self.rate) * SAMPLE_BYTES - len(self.pending)
        dropped = max(0, len(pcm) - max(0, room))
        if dropped:
            pcm = pcm[:len(pcm) - dropped]
        self.pending += pcm
        self._last_audio_at = now
        actions = self.due(now)
        if dropped:
            actions.append(DroppedAudio(dropped / (SAMPLE_BYTES * self.rate), self.max_pending_s))
        return actions

    def mark(self, name: str, now: float) -> list[Action]:
        if self.pending:
            self.pending_marks.append((len(self.pending), name))
            if not self.in_flight:  # a reply is complete: no reason to wait for more
                return self._cut(now)
            return self.due(now)
        live = [chunk for chunk in self.in_flight if not chunk.cancelled]
        if live:
            live[-1].marks.append(name)  # after the last audio sent: when it has played
            return []
        return [EchoMarks((name,))]  # nothing to play: it has "played" already

    def clear(self, now: float) -> list[Action]:
        """Barge-in: stop what plays, drop what waits, give back every mark not yet echoed."""
        marks = [name for chunk in self.in_flight if not chunk.cancelled for name in chunk.marks]
        marks += [name for _, name in self.pending_marks]
        playing = any(chunk.broadcast_at is not None and not chunk.cancelled for chunk in self.in_flight)
        for chunk in self.in_flight:
            chunk.cancelled = True
            chunk.marks = []
        # Kept: the ones playing (their STOP comes) and the ones whose ::play has not come yet, so that it is
        # matched to them (and dropped), never to the next reply's chunk.
        self.in_flight = [chunk for chunk in self.in_flight if chunk.broadcast_at is not None or chunk.file is None]
        self.pending = bytearray()
        self.pending_marks = []
        actions: list[Action] = [Break()] if playing else []
        if marks:
            actions.append(EchoMarks(tuple(marks)))
        return actions

    def unsent(self, chunk: Chunk) -> list[Action]:
        """The chunk never reached the module (its stream was down): it will never play, so no ::play is
        waited for (the next one belongs to a later chunk) and its marks are echoed now."""
        if chunk in self.in_flight:
            self.in_flight.remove(chunk)
        marks, chunk.marks = ([] if chunk.cancelled else chunk.marks), []
        return [EchoMarks(tuple(marks))] if marks else []

    # ---- what the switch reports ----------------------------------------------------------------------

    def file_ready(self, file: str, now: float) -> list[Action]:
        """mod_audio_stream::play: the module wrote the next chunk to `file` (they come in the order sent)."""
        for chunk in self.in_flight:
            if chunk.file is None:
                chunk.file = file
                if chunk.cancelled:  # cleared while the module wrote it: never played
                    self.in_flight.remove(chunk)
                    return []
                chunk.broadcast_at = now
                return [Broadcast(chunk)]
        return []  # not ours (another sender's), or after a clear that dropped it

    def playback_started(self, file: str, now: float) -> list[Action]:
        chunk = self._by_file(file)
        if chunk is not None and chunk.started_at is None:
            chunk.started_at = now
        return self.due(now)

    def playback_stopped(self, file: str, now: float) -> list[Action]:
        chunk = self._by_file(file)
        if chunk is None:
            return []
        self.in_flight.remove(chunk)
        actions: list[Action] = [EchoMarks(tuple(chunk.marks))] if chunk.marks and not chunk.cancelled else []
        return actions + self.due(now)

    # ---- time -----------------------------------------------------------------------------------------

    def due(self, now: float) -> list[Action]:
        deadline = self.next_deadline()
        if deadline is not None and deadline <= now:
            return self._cut(now)
        return []

    def next_deadline(self) -> float | None:
        """When the pending audio should go to the module, if there is any."""
        if not self.pending:
            return None
        live = [chunk for chunk in self.in_flight if not chunk.cancelled]
        if not live:
            return min((self._last_audio_at or 0.0) + self.quiet_s, (self._first_pending_at or 0.0) + self.first_wait_s)
        return self.expected_end(live[-1]) - self.lead_s

    def expected_end(self, chunk: Chunk) -> float:
        if chunk.started_at is not None:
            begins = chunk.started_at
        else:
            asked = chunk.broadcast_at if chunk.broadcast_at is not None else chunk.sent_at
            begins = asked + self.start_latency_s
            earlier = [c for c in self.in_flight if c is not chunk and not c.cancelled and c.number < chunk.number]
            if earlier:  # queued behind another: it begins after that one, and a hole
                begins = max(begins, self.expected_end(earlier[-1]) + self.queue_gap_s)
        return begins + chunk.seconds(self.rate)

    def _cut(self, now: float) -> list[Action]:
        if not self.pending:
            return []
        self._numbers += 1
        chunk = Chunk(self._numbers, bytes(self.pending), [name for _, name in self.pending_marks], sent_at=now)
        self.pending = bytearray()
        self.pending_marks = []
        self.in_flight.append(chunk)
        self.chunks_sent += 1
        return [SendAudio(chunk)]

    def _by_file(self, file: str) -> Chunk | None:
        for chunk in self.in_flight:
            if chunk.file == file:
                return chunk
        return None
