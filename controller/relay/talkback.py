"""Talking back: the agent's audio into the call as one stream per reply, with no holes. Pure: no sockets, no
clock of its own (the caller says what time it is), like calls.CallBook.

How FreeSWITCH plays it (measured on a real switch, PROTOCOL.md "Talk-back timings"): the module writes each
``streamAudio`` message to a file of its own, ``<dir>/<uuid>_<n>.tmp.r8`` with n counting from 0 per stream
start, and says so with ``mod_audio_stream::play``. A ``uuid_broadcast`` of one file is heard 130 ms after the
ask, and two queued one behind the other leave a 100-180 ms hole: pieces played one by one are holey. But ONE
``file_string://f0!f1!...`` broadcast opens each file only when the one before it ends, so files written just
in time play back to back with no hole (after a 250 ms lead of silence). So a reply is one chain:

- its first audio goes at once, as the chain's first piece (latency first); that piece's ``::play`` names its
  file, and so the names of the pieces after it (n+1, n+2, ...): the chain, ``file_string://`` of the next
  CHAIN_FILES names, is broadcast then;
- the rest is cut into pieces as it comes (PIECE_S at least while the agent streams in real time, bigger when
  it sends faster: a chain holds at most CHAIN_FILES files) and written ahead of the estimated play position;
- a name missing when its turn comes is skipped, and the chain ends when every name left is missing: it must
  never starve. When the agent pauses mid-reply and what is written would run out within GUARD_S, a piece of
  silence is written instead;
- the agent quiet for QUIET_END_S: the reply is over. One more piece of silence pads it, and once its last
  piece of speech has played (its ``filestring::close``, or the estimated end) the chain is stopped with
  ``uuid_break`` (not by running into names that will never exist);
- marks: echoed when the piece holding the audio before them has played (``filestring::close``), at once when
  nothing is to play; ``clear`` breaks the chain at once, drops what waits, echoes every mark, and a piece
  already sent but not yet named by its ``::play`` is never played.

The module deletes its files only when the stream ends: a call leaves one file per piece (PIECE_S or longer,
silence included) in the switch's temp directory until then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..channel_uuid import UUID_RE

SAMPLE_BYTES = 2
CHAIN_FILES = 128  # mod_dptools' file_string takes at most 128 names
PIECE_S = 0.2  # the least a piece holds while the agent streams in real time (128 of them: 25.6 s a chain)
MAX_PIECE_S = 5.0  # the most, when the agent sends faster than real time
AHEAD_S = 1.0  # written this far ahead of the play position, pieces wait to grow (fewer files)
GUARD_S = 0.15  # written less than this ahead: whatever has come goes now, or silence
QUIET_END_S = 0.8  # the agent quiet this long: its reply is over
START_LATENCY_S = 0.13  # from uuid_broadcast to the first sample heard, as measured ...
LEAD_S = 0.25  # ... plus file_string's lead of silence before a non-native first file
BREAK_MARGIN_S = 0.25  # no filestring::close seen: break this long after the last speech's estimated end
STOP_WAIT_S = 2.0  # a break's PLAYBACK_STOP not seen this long after it was due: the chain is taken as over
# The agent's audio waiting to go into the call: beyond this much, what comes is dropped (counted), so an agent
# that sends ten minutes at once cannot make the process hold them.
MAX_PENDING_S = 60.0
# The module's talk-back files: <temp dir>/<channel uuid>_<n>.tmp.<ext>, n counting from 0 per stream start.
_MODULE_FILE = re.compile(rf"^(.*?({UUID_RE.pattern})_)(\d+)(\.tmp\.[A-Za-z0-9]+)$")


@dataclass(eq=False)
class Piece:
    number: int  # in the order sent to the module on this link
    pcm: bytes
    marks: list[str] = field(default_factory=list)
    speech: bool = True  # False: silence written to keep the chain fed, or to pad its end
    file: str | None = None  # the module's file for it (its ::play)
    played: bool = False  # its filestring::close came (or its chain ended)
    cancelled: bool = False  # cleared before it played: never to be played

    def seconds(self, rate: int) -> float:
        return len(self.pcm) / (SAMPLE_BYTES * rate)


@dataclass(eq=False)
class Chain:
    """One reply's pieces, played by one file_string broadcast."""

    pieces: list[Piece] = field(default_factory=list)
    names: list[str] | None = None  # every file it opens, once the first piece's ::play said where
    target: str | None = None  # the broadcast's file_string://...
    heard_at: float | None = None  # when its first piece begins to be heard (estimated, then seen)
    written_s: float = 0.0
    ending: bool = False  # the reply is over: break once its last speech has played
    broken: bool = False  # a break was sent


@dataclass(frozen=True)
class SendAudio:
    """Send this piece to the module (a streamAudio message); its ::play will follow."""

    piece: Piece


@dataclass(frozen=True)
class Broadcast:
    """Play the chain into the call: uuid_broadcast <uuid> <target> aleg."""

    target: str


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


def chain_names(first_file: str, count: int) -> list[str] | None:
    """The module's file names from ``first_file`` on (n, n+1, ...), or None if it is not named that way."""
    match = _MODULE_FILE.match(first_file)
    if match is None:
        return None
    prefix, number, suffix = match.group(1), int(match.group(3)), match.group(4)
    return [f"{prefix}{number + i}{suffix}" for i in range(count)]


def call_of_file(file: str) -> str | None:
    """The channel uuid in one of the module's file names (filestring events name no channel), or None."""
    match = _MODULE_FILE.match(file)
    return match.group(2) if match else None


class TalkBack:
    """One call's agent audio on its way into the call. Feed it what happens; carry out what it returns."""

    def __init__(self, rate: int = 8000, *, piece_s: float = PIECE_S, max_piece_s: float = MAX_PIECE_S,
                 ahead_s: float = AHEAD_S, guard_s: float = GUARD_S, quiet_end_s: float = QUIET_END_S,
                 start_latency_s: float = START_LATENCY_S, lead_s: float = LEAD_S,
                 max_pending_s: float = MAX_PENDING_S, chain_files: int = CHAIN_FILES) -> None:
        self.rate = rate
        self.piece_s, self.max_piece_s, self.ahead_s, self.guard_s = piece_s, max_piece_s, ahead_s, guard_s
        self.quiet_end_s = quiet_end_s
        self.start_latency_s, self.lead_s = start_latency_s, lead_s
        self.max_pending_s = max_pending_s
        self.chain_files = chain_files
        self.pending = bytearray()  # agent audio not sent to the module yet
        self.pending_marks: list[tuple[int, str]] = []  # (offset in pending, name): a mark ends the audio before it
        self.chain: Chain | None = None  # the reply playing (or starting)
        self.unnamed: list[Piece] = []  # sent, their ::play not back yet, in order
        self._last_audio_at: float | None = None
        self._numbers = 0
        self.chunks_sent = 0  # for the sidecar: how many pieces the agent's speech took

    # ---- what the agent sends -------------------------------------------------------------------------

    def audio(self, pcm: bytes, now: float) -> list[Action]:
        room = int(self.max_pending_s * self.rate) * SAMPLE_BYTES - len(self.pending)
        dropped = max(0, len(pcm) - max(0, room))
        if dropped:
            pcm = pcm[:len(pcm) - dropped]
        self.pending += pcm
        self._last_audio_at = now
        actions = self._feed(now)
        if dropped:
            actions.append(DroppedAudio(dropped / (SAMPLE_BYTES * self.rate), self.max_pending_s))
        return actions

    def mark(self, name: str, now: float) -> list[Action]:
        if self.pending:
            self.pending_marks.append((len(self.pending), name))
            return self._feed(now)
        unplayed = [p for p in self.chain.pieces if p.speech and not p.played] if self.chain is not None else []
        if unplayed:
            unplayed[-1].marks.append(name)  # after the last audio sent: when it has played
            return []
        return [EchoMarks((name,))]  # nothing to play: it has "played" already

    def clear(self, now: float) -> list[Action]:
        """Barge-in: stop what plays, drop what waits, give back every mark not yet echoed."""
        marks: list[str] = []
        actions: list[Action] = []
        chain = self.chain
        if chain is not None:
            for piece in chain.pieces:
                if not piece.played:
                    marks += piece.marks
                    piece.marks, piece.cancelled = [], True
            if chain.target is not None and not chain.broken:
                chain.broken = True
                actions.append(Break())
        marks += [name for _, name in self.pending_marks]
        self.chain = None
        self.pending = bytearray()
        self.pending_marks = []
        if marks:
            actions.append(EchoMarks(tuple(marks)))
        return actions

    # ---- what the module and the switch report ----------------------------------------------------------

    def file_ready(self, file: str, now: float) -> list[Action]:
        """mod_audio_stream::play: the module wrote the next piece to `file` (they come in the order sent)."""
        if not self.unnamed:
            return []  # not ours (another sender's)
        piece = self.unnamed.pop(0)
        piece.file = file
        chain = self.chain
        if piece.cancelled or chain is None or piece not in chain.pieces:
            return []  # cleared while the module wrote it: never played
        if chain.names is None:  # the chain's first piece: now every name is known
            names = chain_names(file, self.chain_files)
            if names is None:  # not the module's naming: play this one file alone
                names = [file]
            chain.names = names
            chain.target = "file_string://" + "!".join(names)
            chain.heard_at = now + self.start_latency_s + self.lead_s
            return [Broadcast(chain.target)]
        expected = chain.names[chain.pieces.index(piece)]
        if file != expected:  # the module's count started again (its stream restarted): this chain is over
            return self._chain_failed(now)
        return []

    def file_opened(self, file: str, now: float) -> list[Action]:
        """filestring::open: the switch began playing `file`."""
        chain = self.chain
        if chain is not None and chain.pieces and chain.pieces[0].file == file and chain.names is not None:
            # The estimate, corrected by what the switch says: the first file opens, then its lead plays.
            chain.heard_at = now + self.lead_s
        return []

    def file_closed(self, file: str, now: float) -> list[Action]:
        """filestring::close: `file` has been played to its end."""
        chain = self.chain
        if chain is None:
            return []
        actions: list[Action] = []
        for piece in chain.pieces:
            if piece.played:
                continue
            piece.played = True  # a chain plays in order: everything up to this file is done
            if piece.marks:
                actions.append(EchoMarks(tuple(piece.marks)))
                piece.marks = []
            if piece.file == file:
                break
        if chain.ending and not chain.broken and all(p.played for p in chain.pieces if p.speech):
            chain.broken = True
            actions.append(Break())
        return actions + self.due(now)

    def playback_stopped(self, target: str, now: float) -> list[Action]:
        """PLAYBACK_STOP: a broadcast ended (broken, or every name it had left was missing)."""
        chain = self.chain
        if chain is None or target != chain.target:
            return []
        return self._chain_over(now)

    def unsent(self, piece: Piece) -> list[Action]:
        """The piece never reached the module (its stream was down): no ::play is waited for, the chain it was
        to be part of cannot play as planned, and the marks of what will not play come back now."""
        if piece in self.unnamed:
            self.unnamed.remove(piece)
        chain = self.chain
        if chain is None or piece not in chain.pieces:
            return []
        marks: list[str] = []
        for later in chain.pieces[chain.pieces.index(piece):]:
            marks += later.marks
            later.marks, later.cancelled = [], True
        actions: list[Action] = []
        if chain.target is not None and not chain.broken:
            chain.broken = True
            actions.append(Break())
        self.chain = None
        return actions + ([EchoMarks(tuple(marks))] if marks else [])

    # ---- time -----------------------------------------------------------------------------------------

    def due(self, now: float) -> list[Action]:
        deadline = self.next_deadline()
        if deadline is not None and deadline <= now:
            return self._feed(now)
        return []

    def next_deadline(self) -> float | None:
        """When the schedule must act next without news from the agent or the switch."""
        chain = self.chain
        if chain is None:
            return None if not self.pending else 0.0
        if chain.heard_at is None:
            return None  # waiting for the first piece's ::play
        written_end = chain.heard_at + chain.written_s
        if chain.ending:
            return self._speech_end(chain) + (STOP_WAIT_S if chain.broken else BREAK_MARGIN_S)
        deadlines = [written_end - self.guard_s]
        if self._last_audio_at is not None:
            deadlines.append(self._last_audio_at + self.quiet_end_s)
        if self.pending:
            deadlines.append(written_end - self.ahead_s)
        return min(deadlines)

    # ---- internals --------------------------------------------------------------------------------------

    def _feed(self, now: float) -> list[Action]:
        chain = self.chain
        if chain is None:
            if not self.pending:
                return []
            self.chain = Chain()
            return [self._send(*self._cut(len(self.pending)), speech=True)]  # the reply's first audio: at once
        if chain.ending:
            if chain.broken:
                if now >= self._speech_end(chain) + STOP_WAIT_S:  # its PLAYBACK_STOP went missing
                    return self._chain_over(now)
                return []
            # (Audio that comes now waits for the next chain: this one's padding plays, then it is broken.)
            if now >= self._speech_end(chain) + BREAK_MARGIN_S:  # no filestring::close came: break on time
                chain.broken = True
                return [Break()]
            return []
        full = len(chain.pieces) >= self.chain_files
        if chain.heard_at is None:  # first piece named soon: write ahead what has come, in real-time pieces
            if len(self.pending) >= self._bytes(self.piece_s) and not full:
                return [self._send(*self._cut(self._bytes(self.max_piece_s)), speech=True)]
            return []
        ahead = chain.heard_at + chain.written_s - now
        actions: list[Action] = []
        if full:
            return self._end_chain(now) if ahead < self.guard_s else []
        if self.pending and (ahead < self.guard_s or (ahead < self.ahead_s
                                                       and len(self.pending) >= self._bytes(self.piece_s))):
            actions.append(self._send(*self._cut(self._bytes(self.max_piece_s)), speech=True))
        elif ahead < self.guard_s:
            quiet_for = now - (self._last_audio_at if self._last_audio_at is not None else now)
            if quiet_for < self.quiet_end_s:  # a pause mid-reply: keep the chain fed
                actions.append(self._send(bytes(self._bytes(self.piece_s)), [], speech=False))
            else:
                actions += self._end_chain(now)
        elif (not self.pending and self._last_audio_at is not None
              and now - self._last_audio_at >= self.quiet_end_s):
            actions += self._end_chain(now)
        return actions

    def _end_chain(self, now: float) -> list[Action]:
        """The reply is over (or its chain is full): pad it with silence, break once its speech has played."""
        chain = self.chain
        chain.ending = True
        actions: list[Action] = []
        if len(chain.pieces) < self.chain_files:
            actions.append(self._send(bytes(self._bytes(self.piece_s)), [], speech=False))
        if all(p.played for p in chain.pieces if p.speech):
            chain.broken = True
            actions.append(Break())
        return actions

    def _chain_over(self, now: float) -> list[Action]:
        chain, self.chain = self.chain, None
        marks = [name for piece in chain.pieces if not piece.played for name in piece.marks]
        for piece in chain.pieces:
            piece.played, piece.marks = True, []
        actions: list[Action] = [EchoMarks(tuple(marks))] if marks else []
        return actions + (self._feed(now) if self.pending else [])  # what came meanwhile: a new chain

    def _chain_failed(self, now: float) -> list[Action]:
        chain = self.chain
        actions: list[Action] = []
        if chain.target is not None and not chain.broken:
            chain.broken = True
            actions.append(Break())
        return actions + self._chain_over(now)

    def _speech_end(self, chain: Chain) -> float:
        """When the chain's last speech is expected to have been heard to its end."""
        end, last = chain.heard_at or 0.0, chain.heard_at or 0.0
        for piece in chain.pieces:
            end += piece.seconds(self.rate)
            if piece.speech:
                last = end
        return last

    def _bytes(self, seconds: float) -> int:
        return int(seconds * self.rate) * SAMPLE_BYTES

    def _cut(self, most: int) -> tuple[bytes, list[str]]:
        """Up to `most` bytes of the pending audio, whole samples, with the marks that fall inside them."""
        size = min(len(self.pending), most)
        size -= size % SAMPLE_BYTES
        pcm = bytes(self.pending[:size])
        del self.pending[:size]
        marks = [name for offset, name in self.pending_marks if offset <= size]
        self.pending_marks = [(offset - size, name) for offset, name in self.pending_marks if offset > size]
        return pcm, marks

    def _send(self, pcm: bytes, marks: list[str], speech: bool) -> SendAudio:
        self._numbers += 1
        piece = Piece(self._numbers, pcm, list(marks), speech=speech)
        chain = self.chain
        chain.pieces.append(piece)
        chain.written_s += piece.seconds(self.rate)
        self.unnamed.append(piece)
        if speech:
            self.chunks_sent += 1
        return SendAudio(piece)
