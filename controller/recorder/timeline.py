"""A call's timeline: where arriving audio belongs in time, and how much silence must come before it. Pure.

mod_audio_stream sends nothing while the stream is down, paused, or (mixed/stereo) while the switch plays
nothing. To keep the WAV as long as the call, each frame is placed by its arrival time: when it arrives
later than the audio written so far can explain (beyond a threshold that absorbs network and scheduling
jitter), the difference becomes silence. Audio is never dropped or moved earlier: frames that arrive in a
burst after a stall are written as they come.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class Timeline:
    """Maps arrival times (any monotonic clock, in seconds) onto sample frames of the recording."""

    def __init__(self, rate: int, origin: float, threshold_s: float = 0.3) -> None:
        if threshold_s < 0:
            raise ValueError(f"gap threshold must be >= 0 seconds, got {threshold_s!r}")
        self.rate = rate
        self.origin = origin  # the moment sample frame 0 stands for
        self.threshold_s = threshold_s

    def silence_before(self, arrival: float, frame_s: float, written_frames: int) -> int:
        """Sample frames of silence to write before a frame of `frame_s` seconds that arrived at `arrival`."""
        return self.silence_until(arrival - frame_s, written_frames)

    def silence_until(self, moment: float, written_frames: int) -> int:
        """Sample frames of silence that bring the recording up to `moment`, or 0 within the threshold."""
        lateness = moment - self.origin - written_frames / self.rate
        if lateness <= self.threshold_s:
            return 0
        return int(round(lateness * self.rate))
