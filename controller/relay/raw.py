"""`protocol: raw`: the call's audio as it comes, for agents that want PCM and no framing of ours.

To the agent: first one JSON text frame with the call's details,
    {"uuid": …, "caller": …, "destination": …, "rule": …, "rate": 16000, "channels": 1,
     "encoding": "pcm_s16le", "metadata": …}
then binary frames of signed 16-bit little-endian PCM at `rate` with `channels` (stereo interleaved L,R: left
the caller, right what the caller hears), exactly as mod_audio_stream sent them: same bytes, same cuts.

From the agent: binary frames are audio to play to the caller: 16-bit little-endian PCM, MONO, at the
call's rate (the `rate` of the hello), of any length in whole samples. Text frames mean nothing here: they
are refused with a reason (the controller logs and ignores them). Pure: no sockets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENCODING = "pcm_s16le"


@dataclass(frozen=True)
class Audio:
    """PCM from the agent to play to the caller: mono s16le at the call's rate."""

    pcm: bytes


class RawStream:
    """One call's stream in the raw protocol: `start()` is the hello, `audio(pcm)` each binary frame;
    `parse()` reads what the agent sends back."""

    def __init__(self, uuid: str, caller: str, destination: str, rule: str, rate: int, channels: int,
                 metadata: Any = None):
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise ValueError(f"RawStream: rate {rate!r} is not a positive whole number of Hz")
        if channels not in (1, 2):
            raise ValueError(f"RawStream: channels {channels!r}; allowed: 1 (mono, mixed) or 2 (stereo)")
        self.uuid = uuid
        self.rate = rate
        self.channels = channels
        details = {"uuid": uuid, "caller": caller, "destination": destination, "rule": rule, "rate": rate,
                   "channels": channels, "encoding": ENCODING,
                   "metadata": dict(metadata) if isinstance(metadata, Mapping) else metadata}
        try:
            # Built now, so metadata that JSON cannot carry fails where the stream is made, not mid-call.
            self._hello = json.dumps(details, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"RawStream: metadata cannot be sent as JSON ({e})") from None

    def start(self) -> str:
        """The first message: a JSON text frame with the call's details."""
        return self._hello

    def audio(self, pcm: bytes) -> bytes:
        """The module's PCM frame, to send as one binary frame, unchanged."""
        if len(pcm) % (2 * self.channels):
            raise ValueError(f"raw: {len(pcm)} bytes is not a whole number of {2 * self.channels}-byte sample "
                             f"frames (16-bit PCM, {self.channels} channel(s))")
        return bytes(pcm)

    def parse(self, message: str | bytes) -> Audio:
        """A binary frame from the agent as audio to play; a text frame, or half a sample, raises ValueError
        with a one-line reason."""
        if isinstance(message, str):
            shown = message if len(message) <= 40 else message[:40] + "…"
            raise ValueError(f"raw: a text frame ({len(message)} characters) means nothing in the raw protocol; "
                             f"agents send binary PCM: {shown!r}")
        if not message:
            raise ValueError("raw: an empty binary frame")
        if len(message) % 2:
            raise ValueError(f"raw: a binary frame of {len(message)} bytes is not whole 16-bit samples "
                             "(mono s16le at the call's rate)")
        return Audio(bytes(message))
