"""Twilio Media Streams, as Twilio itself sends it, so that an agent built for Twilio takes a call from this
controller unchanged. Pure: messages in, values out; the controller moves them over its WebSocket.

The messages follow Twilio's "Media Streams - WebSocket Messages" page, field for field:

- to the agent: `connected` (no sequenceNumber), then `start`, `media`, `dtmf`, `mark`, `stop`, each with a
  top-level `streamSid` and `sequenceNumber`, a string counting every message from "1" at `start`.
  `media.chunk` counts that track's media messages from "1"; `media.timestamp` is the chunk's position in
  that track in milliseconds from the start of the stream, taken from the audio sent (not a clock, so it
  stays exact whatever the network does). Numbers are strings, as Twilio sends them, except
  `mediaFormat.sampleRate` and `channels`. Audio is 8 kHz µ-law, base64, no header.
- from the agent: `media` (`media.payload`, base64 8 kHz µ-law of any length), `mark` (`mark.name`: echo it
  with `mark(name)` once the audio sent before it has played, or at once when a `clear` drops that audio)
  and `clear` (drop the agent's audio not yet played), each with the stream's `streamSid`.

What a stock Pipecat bot (TwilioFrameSerializer) reads of this: see examples/pipecat/README.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
CHUNK_BYTES = SAMPLE_RATE * 20 // 1000  # Twilio's media chunks: 20 ms of µ-law
TRACKS = ("inbound", "outbound")  # inbound: what the caller says; outbound: what the caller hears
DTMF_DIGITS = "0123456789*#ABCD"
AGENT_EVENTS = ("media", "mark", "clear")


@dataclass(frozen=True)
class Media:
    """Audio from the agent to play to the caller: 8 kHz µ-law."""

    ulaw: bytes


@dataclass(frozen=True)
class Mark:
    """The agent asks to hear `name` back once the audio it sent before this has played."""

    name: str


@dataclass(frozen=True)
class Clear:
    """The agent interrupts itself: drop its audio not yet played (and echo the marks waiting on it)."""


AgentMessage = Media | Mark | Clear


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _text(value: Any) -> str:
    # Twilio's customParameters come from TwiML attributes, so every value is text; ours may come from
    # YAML or metadata as numbers or booleans: a string stays as is, anything else becomes its JSON text.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class TwilioStream:
    """One call's stream as Twilio Media Streams: `connected()`, `start()`, then `media()`, `dtmf()` and
    `mark()` as they happen, then `stop()`; each returns the text message to send. `parse()` reads what
    the agent sends back.

    `call_sid` is Twilio's form of the call's id (`call_sid_for(uuid)`); `stream_sid` and `account_sid` are opaque to agents (Twilio's are
    "MZ"/"AC" and 32 hex digits: `stream_sid_for(uuid)` makes one in that form). `custom_parameters`
    reach the agent in `start.customParameters`, every value as text. `tracks` are those the stream
    will carry: ("inbound",) for the caller alone, ("inbound", "outbound") to send what the caller hears
    too (the right channel of a stereo stream).
    """

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str,
                 custom_parameters: Mapping[str, Any] | None = None, tracks: tuple[str, ...] = ("inbound",)):
        for name, value in (("stream_sid", stream_sid), ("call_sid", call_sid), ("account_sid", account_sid)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"TwilioStream: {name} {_shown(value)} is not a non-empty string")
        tracks = tuple(tracks)
        if not tracks or len(set(tracks)) != len(tracks) or not set(tracks) <= set(TRACKS):
            raise ValueError(f"TwilioStream: tracks {_shown(tracks)}; allowed: one or both of inbound, outbound")
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.custom_parameters = {str(k): _text(v) for k, v in (custom_parameters or {}).items()}
        self.tracks = tracks
        self._sequence = 0  # of the last message sent; `connected` has none
        self._chunks = {track: 0 for track in tracks}
        self._ulaw_bytes = {track: 0 for track in tracks}  # sent so far: the position of the next chunk
        self._phase = "new"  # new → connected → started → stopped

    # -- to the agent -----------------------------------------------------------------------------------

    def connected(self) -> str:
        """The first message: the protocol Twilio speaks."""
        self._advance("connected", ("new",), "connected")
        return _json({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        """The stream's metadata, once, right after `connected` (sequenceNumber "1")."""
        self._advance("start", ("connected",), "started")
        return _json({
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {  # in the order Twilio writes them
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": list(self.tracks),
                "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1},
                "customParameters": dict(self.custom_parameters),
            },
            "streamSid": self.stream_sid,
        })

    def media(self, ulaw: bytes, track: str = "inbound") -> str:
        """One chunk of a track's audio (8 kHz µ-law; Twilio sends 20 ms = 160 bytes: see audio.Framer)."""
        self._advance("media", ("started",))
        if track not in self._chunks:
            raise ValueError(f"media: track {_shown(track)} is not one of this stream's tracks {self.tracks}")
        if not ulaw:
            raise ValueError("media: no audio; a media message carries at least one µ-law byte")
        self._chunks[track] += 1
        timestamp_ms = self._ulaw_bytes[track] * 1000 // SAMPLE_RATE
        self._ulaw_bytes[track] += len(ulaw)
        return _json({
            "event": "media",
            "sequenceNumber": self._next(),
            "media": {
                "track": track,
                "chunk": str(self._chunks[track]),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(ulaw).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        })

    def skip(self, ulaw_bytes: int, track: str = "inbound") -> None:
        """Audio of this track that was dropped (a slow agent): the next chunk's timestamp and number advance
        over it, as Twilio's do (they are presentation time, not a count of what was sent)."""
        if track in self._chunks and ulaw_bytes > 0:
            self._ulaw_bytes[track] += ulaw_bytes
            self._chunks[track] += ulaw_bytes // CHUNK_BYTES

    def dtmf(self, digit: str) -> str:
        """A key the caller pressed (Twilio reports them on the inbound track only)."""
        self._advance("dtmf", ("started",))
        if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"dtmf: digit {_shown(digit)}; allowed: one of {DTMF_DIGITS}")
        return _json({
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self._next(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        })

    def mark(self, name: str) -> str:
        """The echo of the agent's mark `name`: the audio it sent before the mark has played (or was
        dropped by a `clear`)."""
        self._advance("mark", ("started",))
        if not isinstance(name, str):
            raise ValueError(f"mark: name {_shown(name)} is not a string")
        return _json({
            "event": "mark",
            "sequenceNumber": self._next(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        })

    def stop(self) -> str:
        """The last message: the stream stopped or the call ended. Nothing may follow it."""
        self._advance("stop", ("started",), "stopped")
        return _json({
            "event": "stop",
            "sequenceNumber": self._next(),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        })

    @property
    def sequence_number(self) -> int:
        """The sequenceNumber of the last message made (0 before `start`)."""
        return self._sequence

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _advance(self, what: str, allowed: tuple[str, ...], to: str | None = None) -> None:
        # A message out of order is a bug in the caller of this class, not something an agent did.
        if self._phase not in allowed:
            raise RuntimeError(f"TwilioStream: {what} after {self._phase}; Twilio's order is connected, start, "
                               "media/dtmf/mark..., stop")
        if to:
            self._phase = to

    # -- from the agent ---------------------------------------------------------------------------------

    def parse(self, message: str | bytes) -> AgentMessage:
        """What the agent's text message asks for. Anything else raises ValueError with a one-line reason
        (the message is then logged and ignored; the call goes on)."""
        if not isinstance(message, str):
            raise ValueError(f"twilio: a binary frame ({len(message)} bytes); agents send JSON text frames")
        try:
            msg = json.loads(message)
        except ValueError as e:
            raise ValueError(f"twilio: not JSON ({e}): {_shown(message)}") from None
        if not isinstance(msg, dict):
            raise ValueError(f"twilio: not a JSON object but {type(msg).__name__}: {_shown(message)}")
        event = msg.get("event")
        if event not in AGENT_EVENTS:
            what = "no 'event'" if event is None else f"event {_shown(event)} is not one an agent sends"
            raise ValueError(f"twilio: {what}; allowed: {', '.join(AGENT_EVENTS)}")
        sid = msg.get("streamSid")
        if sid != self.stream_sid:
            what = "no streamSid" if sid is None else f"streamSid {_shown(sid)} is not this stream's"
            raise ValueError(f"twilio: {event}: {what} ({self.stream_sid})")
        if event == "clear":
            return Clear()
        body = msg.get(event)
        if not isinstance(body, dict):
            raise ValueError(f"twilio: {event}: no '{event}' object")
        if event == "mark":
            name = body.get("name")
            if not isinstance(name, str):
                raise ValueError(f"twilio: mark: mark.name is {'missing' if name is None else _shown(name)}; "
                                 "it must be a string")
            return Mark(name)
        payload = body.get("payload")
        if not isinstance(payload, str):
            raise ValueError(f"twilio: media: media.payload is {'missing' if payload is None else _shown(payload)};"
                             " it must be base64 text")
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"twilio: media: media.payload is not base64 ({e}): {_shown(payload)}") from None
        if not ulaw:
            raise ValueError("twilio: media: media.payload is empty")
        return Media(ulaw)


def stream_sid_for(uuid: str) -> str:
    """A streamSid in Twilio's form ("MZ" and 32 hex digits) from a channel's uuid."""
    return "MZ" + _hex32(uuid, "stream_sid_for")


def call_sid_for(uuid: str) -> str:
    """A callSid in Twilio's form ("CA" and 32 hex digits) from a channel's uuid: agents that check the form
    accept it, and the same call always gets the same one (the uuid itself is in customParameters)."""
    return "CA" + _hex32(uuid, "call_sid_for")


def _hex32(uuid: str, what: str) -> str:
    digits = uuid.replace("-", "").lower()
    if len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"{what}: {_shown(uuid)} is not a uuid (32 hex digits)")
    return digits
