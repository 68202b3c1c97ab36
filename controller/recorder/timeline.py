"""A call's timeline: where arriving audio belongs in time, and how much silence must come before it. Pure.

mod_audio_stream sends nothing while the stream is down, paused, or (mixed/stereo) while the switch plays
nothing. To keep the WAV as long as the call, audio is placed by its arrival time: a frame that arrives later
than the audio before it can explain (beyond ``jitter_s``) leaves a deficit, which may be silence.

But lateness alone cannot tell a hole from a stall. When the recorder (or the network) stalls, the frames
queue in the socket and then arrive in a burst: the first of them is late, and the rest catch up. So a
deficit is only suspected at first: the audio that follows is held back (``held``) until it shows which it
was. If the arrivals catch up (the deficit falls back within ``jitter_s``), it was a stall and the held audio
is written as it is, with no silence. If the deficit stops falling (by ``IMPROVEMENT_S``) for ``settle_s``,
audio really was missing: the smallest deficit seen (jitter only ever adds lateness) becomes silence, then
the held audio follows.

Held audio is what a kill loses, so it is bounded whatever the deficit does: no piece is held ``settle_s``
after it arrived (checked on every frame and every ``settle`` call), and never more than ``settle_s`` of
audio is held. When a bound is reached while the deficit is still falling (a backlog draining slowly, say at
1.04x real time, for longer than the look-ahead), the held audio is handed on as it is, without silence,
and the suspicion goes on from there: the deficit is still measured against what is written, its smallest
value is still remembered. A drain that ends caught up so writes no silence at all. A deficit that has not
fallen at all by the bound is a hole, decided then (the byte bound can come a frame or two before
``settle_s``).

Where the silence goes: before the audio still held, which is where the deficit began when nothing was
handed on early, so a hole followed by arrivals in real time is silence of its exact length where it was.
Audio already handed on is written and cannot be moved, so after an early hand-on the silence goes after it,
where the deficit stopped falling: it keeps its length, the WAV keeps the call's length, but it may come up
to the time the backlog took to drain later than the audio was missing (a hole inside a stall; or a hole
whose first frames after it came with jitter that resolved by more than ``IMPROVEMENT_S``, which looks like
a short stall draining: then it comes up to ``settle_s`` later). The socket keeps no time for the bytes it
queues, so where inside a backlog a hole was cannot be known anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

# The deficit must fall by more than this to count as catching up (a burst falls by a frame, 20 ms, per frame).
IMPROVEMENT_S = 0.05


@dataclass(frozen=True)
class Gap:
    """Silence the recorder wrote in place of audio that never came, in the WAV's own time."""

    start_frame: int  # sample frames into the WAV
    frames: int
    cause: str  # stream_lost, controller_restart, no_audio, tail
    rate: int

    def to_dict(self) -> dict:
        return {"start_s": round(self.start_frame / self.rate, 3), "length_s": round(self.frames / self.rate, 3),
                "start_frame": self.start_frame, "frames": self.frames, "cause": self.cause}


@dataclass(frozen=True)
class Silence:
    """Sample frames of silence to write next, before the audio that follows it."""

    frames: int


# What the timeline hands back, in file order: audio as it arrived, or silence for time without audio.
Piece = Silence | bytes | bytearray | memoryview


class Timeline:
    """Maps arrival times (any monotonic clock, in seconds) onto the recording, holding back audio while a
    deficit is undecided. The caller says how much is written already; the timeline never writes."""

    def __init__(self, rate: int, frame_size: int, origin: float, *, jitter_s: float = 0.1,
                 settle_s: float = 2.0) -> None:
        if jitter_s < 0:
            raise ValueError(f"jitter_s must be >= 0 seconds, got {jitter_s!r}")
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0 seconds (0: decide at once), got {settle_s!r}")
        self.rate = rate
        self.byte_rate = rate * frame_size
        self.origin = origin  # the moment sample frame 0 stands for
        self.jitter_s = jitter_s
        self.settle_s = settle_s
        self.max_held_bytes = int(settle_s * self.byte_rate)  # never more than settle_s of audio held
        self.held: list = []  # audio waiting for a suspected deficit to be decided
        self.held_bytes = 0
        self.held_since: float | None = None  # when the oldest held piece arrived
        self._suspected_at: float | None = None
        self._fell_at: float | None = None  # when the deficit last fell by IMPROVEMENT_S (None: not yet) ...
        self._fell_to = 0.0  # ... and to what
        self._least_deficit = 0.0

    @property
    def suspecting(self) -> bool:
        return self._suspected_at is not None

    def place(self, arrival: float, data, written_bytes: int) -> list[Piece]:
        """Where a frame that arrived at ``arrival`` goes, ``written_bytes`` of audio and silence being written.

        Returns what to write now, in order: usually the frame itself; nothing while it is held; or, once a
        deficit is decided or the held audio reaches its bounds, the silence (if any) and every held frame.
        """
        end_s = (written_bytes + self.held_bytes) / self.byte_rate
        deficit = arrival - len(data) / self.byte_rate - self.origin - end_s
        if self._suspected_at is None:
            if deficit <= self.jitter_s:
                return [data]
            self._suspected_at, self._fell_at = arrival, None
            self._least_deficit = self._fell_to = deficit
        elif deficit <= self.jitter_s:
            self._hold(data, arrival)
            return self._release(0.0)  # caught up: it was a stall, nothing was missing
        elif deficit < self._fell_to - IMPROVEMENT_S:
            self._fell_at, self._fell_to = arrival, deficit  # still catching up: a backlog draining
        self._least_deficit = min(self._least_deficit, deficit)
        self._hold(data, arrival)
        return self.settle(arrival)

    def settle(self, now: float) -> list[Piece]:
        """Decide a suspected deficit whose look-ahead has passed, and hand on held audio that reached its bounds
        (called per frame and from a timer)."""
        if self._suspected_at is None:
            return []
        falling_since = self._suspected_at if self._fell_at is None else self._fell_at
        if now - falling_since >= self.settle_s:
            return self._release(self._least_deficit)  # it stopped falling: audio was missing
        if self.held_since is not None and (now - self.held_since >= self.settle_s
                                            or self.held_bytes > self.max_held_bytes):
            if self._fell_at is None:  # not fallen at all: a hole, decided a frame or two early
                return self._release(self._least_deficit)
            pieces, self.held, self.held_bytes, self.held_since = self.held, [], 0, None
            return pieces  # still falling, a slow drain: hand it on as it is and keep watching
        return []

    def settle_now(self) -> list[Piece]:
        """Decide at once with what is known (the connection ended, the recording ends): the least deficit
        seen is taken as missing audio."""
        if self._suspected_at is None:
            return []
        return self._release(self._least_deficit)

    def silence_until(self, moment: float, written_frames: int) -> int:
        """Sample frames of silence that bring the recording up to ``moment``, or 0 within the jitter.

        For times no frame will vouch for: the end of a call, or the moment its connection was lost.
        """
        lateness = moment - self.origin - written_frames / self.rate
        if lateness <= self.jitter_s:
            return 0
        return int(round(lateness * self.rate))

    def _hold(self, data, arrival: float) -> None:
        self.held.append(bytes(data))  # the caller's buffer is reused for the next read
        self.held_bytes += len(data)
        if self.held_since is None:
            self.held_since = arrival

    def _release(self, missing_s: float) -> list[Piece]:
        frames = int(round(missing_s * self.rate)) if missing_s > self.jitter_s else 0
        pieces: list[Piece] = [Silence(frames)] if frames else []
        pieces += self.held
        self.held, self.held_bytes, self.held_since = [], 0, None
        self._suspected_at = None
        return pieces
