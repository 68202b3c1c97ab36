"""A call's timeline: where arriving audio belongs in time, and how much silence must come before it. Pure.

mod_audio_stream sends nothing while the stream is down, paused, or (mixed/stereo) while the switch plays
nothing. To keep the WAV as long as the call, audio is placed by its arrival time: a frame that arrives later
than the audio before it can explain (beyond ``jitter_s``) leaves a deficit, which may be silence.

But lateness alone cannot tell a hole from a stall. When the recorder (or the network) stalls, the frames
queue in the socket and then arrive in a burst: the first of them is late, and the rest catch up. So a
deficit is only suspected at first: the audio that follows is held back (``held``) until it shows which it
was. If the arrivals catch up (the deficit falls back within ``jitter_s``), it was a stall and the held audio
is written as it is, with no silence. If the deficit stops shrinking for ``settle_s``, audio really was
missing: the smallest deficit seen (jitter only ever adds lateness) becomes silence at the point where the
deficit began, then the held audio follows. The price: up to ``settle_s`` of audio waits in memory after a
real hole (``max_held_s`` bounds it), which a kill in that moment would lose.
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
                 settle_s: float = 2.0, max_held_s: float = 20.0) -> None:
        if jitter_s < 0:
            raise ValueError(f"jitter_s must be >= 0 seconds, got {jitter_s!r}")
        if settle_s < 0 or max_held_s <= 0:
            raise ValueError(f"settle_s must be >= 0 seconds (0: decide at once) and max_held_s > 0, got "
                             f"{settle_s!r}, {max_held_s!r}")
        self.rate = rate
        self.byte_rate = rate * frame_size
        self.origin = origin  # the moment sample frame 0 stands for
        self.jitter_s = jitter_s
        self.settle_s = settle_s
        self.max_held_bytes = int(max_held_s * self.byte_rate)
        self.held: list = []  # audio waiting for a suspected deficit to be decided
        self.held_bytes = 0
        self._suspected_at: float | None = None
        self._improved_at = 0.0  # when the deficit last fell by IMPROVEMENT_S ...
        self._improved_to = 0.0  # ... and to what
        self._least_deficit = 0.0

    @property
    def suspecting(self) -> bool:
        return self._suspected_at is not None

    def place(self, arrival: float, data, written_bytes: int) -> list[Piece]:
        """Where a frame that arrived at ``arrival`` goes, ``written_bytes`` of audio and silence being written.

        Returns what to write now, in order: usually the frame itself; nothing while it is held; or, once a
        deficit is decided, the silence (if any) and every held frame.
        """
        end_s = (written_bytes + self.held_bytes) / self.byte_rate
        deficit = arrival - len(data) / self.byte_rate - self.origin - end_s
        if self._suspected_at is None:
            if deficit <= self.jitter_s:
                return [data]
            self._suspected_at = self._improved_at = arrival
            self._least_deficit = self._improved_to = deficit
            self._hold(data)
            return self.settle(arrival)
        self._hold(data)
        if deficit <= self.jitter_s:
            return self._release(0.0)  # caught up: it was a stall, nothing was missing
        if deficit < self._improved_to - IMPROVEMENT_S:
            self._improved_at, self._improved_to = arrival, deficit  # still catching up: a backlog draining
        self._least_deficit = min(self._least_deficit, deficit)
        return self.settle(arrival)

    def settle(self, now: float) -> list[Piece]:
        """Decide a suspected deficit whose look-ahead has passed (called per frame and from a timer)."""
        if self._suspected_at is None:
            return []
        if now - self._improved_at >= self.settle_s or self.held_bytes >= self.max_held_bytes:
            return self._release(self._least_deficit)
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

    def _hold(self, data) -> None:
        self.held.append(bytes(data))  # the caller's buffer is reused for the next read
        self.held_bytes += len(data)

    def _release(self, missing_s: float) -> list[Piece]:
        frames = int(round(missing_s * self.rate)) if missing_s > self.jitter_s else 0
        pieces: list[Piece] = [Silence(frames)] if frames else []
        pieces += self.held
        self.held, self.held_bytes = [], 0
        self._suspected_at = None
        return pieces
