"""A call's audio on FreeSWITCH's 20 ms packet clock, and the bytes mod_audio_stream makes of it.

Tick n is the packet covering [n*20 ms, (n+1)*20 ms) after the answer. Per tick the caller always
says something (speech, then silence); the switch writes audio to the caller only inside playback
windows: the call's fixed ones (CallMedia.playbacks) and, taking precedence, what is broadcast into it
while it runs (an overlay: playback.Broadcaster.playback_at); a call whose dialplan runs
`endless_playback silence_stream://-1` (CallMedia.idle_silence) writes silence at every other tick. A stream's
media bug sees the caller every tick (mono) but the written direction only while something is written (mixed,
stereo): on a parked or sleeping call, between playbacks, those streams send nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle
from typing import Callable

from . import signals

PTIME_S = 0.020
MIX_TYPES = ("mono", "mixed", "stereo")


def ticks(seconds: float) -> int:
    return int(round(seconds / PTIME_S))


@dataclass(frozen=True)
class Playback:
    """Audio the switch writes to the caller from start_s to end_s after the answer (codec rate)."""

    start_s: float
    end_s: float
    audio: bytes
    # The audio starts again from its beginning whenever it ends, until end_s (a tone played with loops=-1).
    # Empty audio that loops is silence written all the while (silence_stream://0).
    loop: bool = False

    @property
    def first_tick(self) -> int:
        return ticks(self.start_s)

    @property
    def end_tick(self) -> int:
        return ticks(self.end_s)


@dataclass(frozen=True)
class CallMedia:
    codec_rate: int
    speech: bytes
    playbacks: tuple[Playback, ...] = ()
    # The dialplan writes silence whenever nothing else plays (endless_playback silence_stream://-1):
    # mixed and stereo streams then flow for the whole call.
    idle_silence: bool = False

    def playback_at(self, tick: int) -> Playback | None:
        for playback in self.playbacks:
            if playback.first_tick <= tick < playback.end_tick:
                return playback
        return None


class StreamAudio:
    """What one stream (mix type, rate) puts into its buffer per tick; None means nothing that tick."""

    def __init__(self, media: CallMedia, mix: str, rate: int,
                 overlay: Callable[[int], Playback | None] | None = None):
        """overlay(tick): a window written at that tick that takes precedence over the media's own."""
        if mix not in MIX_TYPES:
            raise ValueError(f"mix must be one of {', '.join(MIX_TYPES)}; got {mix!r}")
        self.media = media
        self.overlay = overlay
        self.mix = mix
        self.rate = rate
        self.tick_samples = rate * 20 // 1000
        self.tick_bytes = self.tick_samples * signals.SAMPLE_BYTES

    @property
    def channels(self) -> int:
        return 2 if self.mix == "stereo" else 1

    def _slice(self, pcm: bytes, tick: int, loop: bool = False) -> bytes:
        """Tick `tick` of pcm (codec rate) at the stream's rate; silence past its end (or, looping, pcm again)."""
        first, count = tick * self.tick_samples, self.tick_samples
        if loop and pcm:
            # One pass of the audio at the stream's rate (exact for whole milliseconds at multiples of 8 kHz).
            period = len(pcm) // signals.SAMPLE_BYTES * self.rate // self.media.codec_rate
            if period:
                pieces, first = [], first % period
                while count:
                    take = min(count, period - first)
                    pieces.append(signals.resample(pcm, self.media.codec_rate, self.rate, first, take))
                    count -= take
                    first = 0
                return b"".join(pieces)
        piece = signals.resample(pcm, self.media.codec_rate, self.rate, first, count)
        return piece + bytes(self.tick_bytes - len(piece))

    def played(self, tick: int) -> bytes | None:
        """What the switch writes to the caller at this tick (at the stream's rate); None: nothing."""
        playback = self.overlay(tick) if self.overlay is not None else None
        if playback is None:
            playback = self.media.playback_at(tick)
        if playback is None:
            return bytes(self.tick_bytes) if self.media.idle_silence else None
        return self._slice(playback.audio, tick - playback.first_tick, playback.loop)

    def chunk(self, tick: int) -> bytes | None:
        speech = self._slice(self.media.speech, tick)
        if self.mix == "mono":
            return speech
        played = self.played(tick)
        if played is None:
            return None
        if self.mix == "mixed":
            return signals.mix(speech, played)
        return signals.interleave(speech, played)


class FrameChunker:
    """Cuts the stream's bytes into WebSocket payloads.

    The module sends one payload per full buffer (STREAM_BUFFER_SIZE ms) and drops a partial buffer
    at the end. A fault can re-cut those same bytes into other sizes (odd lengths split samples
    across frames); `flush` then hands over the rest so the total audio stays the same.
    """

    def __init__(self, buffer_bytes: int, sizes: list[int] | None = None):
        if buffer_bytes <= 0:
            raise ValueError(f"buffer size must be positive; got {buffer_bytes} bytes")
        if sizes is not None and (not sizes or any(size <= 0 for size in sizes)):
            raise ValueError(f"frame sizes must be a non-empty list of positive byte counts; got {sizes!r}")
        self.buffer_bytes = buffer_bytes
        self._buffer = bytearray()
        self._sizes = cycle(sizes) if sizes else None
        self._next_size = next(self._sizes) if self._sizes else 0
        self._recut = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buffer += data
        full = []
        while len(self._buffer) >= self.buffer_bytes:
            full.append(bytes(self._buffer[: self.buffer_bytes]))
            del self._buffer[: self.buffer_bytes]
        if self._sizes is None:
            return full
        for payload in full:
            self._recut += payload
        out = []
        while len(self._recut) >= self._next_size:
            out.append(bytes(self._recut[: self._next_size]))
            del self._recut[: self._next_size]
            self._next_size = next(self._sizes)
        return out

    def flush(self) -> list[bytes]:
        rest = bytes(self._recut)
        self._recut.clear()
        return [rest] if rest else []
