"""The Event Socket wire format: bytes in, messages out, and back. No sockets here.

Every message FreeSWITCH sends is a block of ``Name: value`` lines ended by a blank line; when the block
has ``Content-Length: N``, exactly N bytes of body follow. Events travel as such a body
(``text/event-plain`` or ``text/event-json``) and hold headers of their own, plus, for some events,
a body of their own (BACKGROUND_JOB results, mod_audio_stream JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import unquote

# Characters FreeSWITCH's switch_url_encode() escapes in plain-event header values (SWITCH_URL_UNSAFE),
# besides everything below space and above '~'. Comma and slash stay as they are, as the captures show.
URL_UNSAFE = set('\r\n "#%&+:;<=>?@[\\]^`{|}')

# A header block larger than this is not FreeSWITCH talking; refuse it rather than buffer forever.
MAX_HEADER_BLOCK = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent bytes that are not an Event Socket message."""


@dataclass(frozen=True)
class Message:
    """One framed message: its outer headers (never URL-encoded) and its raw body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Event:
    """An event with its headers decoded and its own body, whichever encoding carried it."""

    headers: dict[str, str]
    body: str = ""
    received_at: float = 0.0  # time.monotonic() when the client read it (0: not from a socket)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    @property
    def key(self) -> str:
        """What handlers subscribe to: the subclass for CUSTOM events, the event name otherwise."""
        return self.subclass if self.name == "CUSTOM" else self.name

    @property
    def uuid(self) -> str:
        return self.headers.get("Unique-ID", "")

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


def _parse_header_block(block: bytes, *, url_decoded: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_line in block.split(b"\n"):
        line = raw_line.rstrip(b"\r")
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise ProtocolError(f"header line without 'Name: value' form: {line[:80]!r}")
        # FreeSWITCH writes "Name: value"; a blank value is "Name: " and stays blank.
        if value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", "replace")
        headers[name.decode("utf-8", "replace").strip()] = unquote(text) if url_decoded else text
    return headers


def _content_length(headers: dict[str, str]) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    # int() would also take "1_2", "+12" or non-ASCII digits; FreeSWITCH only ever writes plain digits.
    if not (raw.isascii() and raw.isdigit()):
        raise ProtocolError(f"Content-Length is not a number: {raw!r}")
    length = int(raw)
    if length > MAX_BODY:
        raise ProtocolError(f"Content-Length out of range: {length}")
    return length


class MessageReader:
    """Incremental framer: feed() whatever recv() returned, get back the whole messages it completed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending_headers: dict[str, str] | None = None
        self._pending_length = 0

    @property
    def mid_message(self) -> bool:
        """True when bytes of an unfinished message are buffered (a cut at EOF loses them)."""
        return self._pending_headers is not None or bool(self._buffer.strip(b"\r\n"))

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while True:
            message = self._next()
            if message is None:
                return messages
            messages.append(message)

    def _next(self) -> Message | None:
        if self._pending_headers is None:
            # Stray blank lines between messages carry nothing.
            while self._buffer[:1] in (b"\n", b"\r"):
                del self._buffer[:1]
            end = self._buffer.find(b"\n\n")
            # Checked whether or not the block has ended, so the limit does not depend on how recv() cut it.
            if (end < 0 and len(self._buffer) > MAX_HEADER_BLOCK) or end > MAX_HEADER_BLOCK:
                raise ProtocolError(f"header block longer than {MAX_HEADER_BLOCK} bytes")
            if end < 0:
                return None
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._pending_headers = _parse_header_block(block, url_decoded=False)
            self._pending_length = _content_length(self._pending_headers)
        if len(self._buffer) < self._pending_length:
            return None
        body = bytes(self._buffer[: self._pending_length])
        del self._buffer[: self._pending_length]
        message = Message(self._pending_headers, body)
        self._pending_headers = None
        self._pending_length = 0
        return message


def parse_event(message: Message) -> Event:
    """Decode the event a text/event-plain or text/event-json message carries."""
    if message.content_type == "text/event-plain":
        return parse_plain_event(message.body)
    if message.content_type == "text/event-json":
        return parse_json_event(message.body)
    raise ProtocolError(f"not an event message: Content-Type {message.content_type!r}")


def parse_plain_event(data: bytes) -> Event:
    # Decode value by value: decoding the whole block would turn an encoded %0A into a fake header line.
    head, _, rest = data.partition(b"\n\n")
    headers = _parse_header_block(head, url_decoded=True)
    length = _content_length(headers)
    if len(rest) < length:
        raise ProtocolError(f"event body cut short: {len(rest)} of {length} bytes")
    return Event(headers, rest[:length].decode("utf-8", "replace"))


def _header_from_json(value) -> str:
    # FreeSWITCH writes array variables as JSON arrays here but as "ARRAY::a|:b" in plain: keep one form.
    if isinstance(value, list):
        return "ARRAY::" + "|:".join(str(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value)


def parse_json_event(data: bytes) -> Event:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"event-json body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolError("event-json body is not a JSON object")
    body = document.pop("_body", "")
    headers = {str(k): _header_from_json(v) for k, v in document.items()}
    return Event(headers, body if isinstance(body, str) else json.dumps(body))


# ---- encoding: what the client sends, and what the simulator sends in FreeSWITCH's place ----


def command_name(command: str) -> str:
    """What a command may be called in logs and error messages: never its arguments.

    `auth`'s argument is the password, and other arguments carry callers' data, so only the command word
    is named (for `api`/`bgapi` also the api's name, e.g. `api show`).
    """
    words = command.split("\n", 1)[0].split(None, 2)
    if not words:
        return "(empty command)"
    if words[0].lower() in ("api", "bgapi") and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return words[0]


def encode_command(command: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    """One client command, with optional header lines (e.g. bgapi's Job-UUID).

    A line break inside any part would smuggle in a second command, so it is refused.
    """
    lines = [command, *(f"{name}: {value}" for name, value in headers or [])]
    for line in lines:
        if "\n" in line or "\r" in line:
            # The offending text is not quoted: it may be a password (auth) or a caller's data.
            raise ValueError(f"{command_name(command)}: the command contains a line break, which would "
                             f"smuggle in a second command")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def url_encode(value: str) -> str:
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if byte < 0x20 or byte > 0x7E or char in URL_UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def encode_message(headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A framed message with headers in the given order (FreeSWITCH's order differs by kind)."""
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    return head.encode("utf-8") + b"\n" + body


def auth_request() -> bytes:
    return encode_message([("Content-Type", "auth/request")])


def command_reply(reply_text: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return encode_message([("Content-Type", "command/reply"), ("Reply-Text", reply_text), *(extra or [])])


def api_response(text: str) -> bytes:
    body = text.encode("utf-8")
    return encode_message([("Content-Type", "api/response"), ("Content-Length", str(len(body)))], body)


def disconnect_notice(text: str) -> bytes:
    body = text.encode("utf-8")
    return encode_message([("Content-Type", "text/disconnect-notice"), ("Content-Length", str(len(body)))], body)


def rude_rejection() -> bytes:
    body = b"Access Denied, go away.\n"
    return encode_message([("Content-Type", "text/rude-rejection"), ("Content-Length", str(len(body)))], body)


def plain_event_body(headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = "".join(f"{name}: {url_encode(value)}\n" for name, value in headers)
    if body:
        raw = body.encode("utf-8")
        return (lines + f"Content-Length: {len(raw)}\n\n").encode("utf-8") + raw
    return (lines + "\n").encode("utf-8")


def _json_text(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_header_value(value: str) -> str | list[str]:
    # FreeSWITCH stores a value written as "ARRAY::a|:b" as an array header: plain events show it
    # as written, JSON events as a real array (variable_DP_MATCH in the captures).
    if value.startswith("ARRAY::"):
        return value[len("ARRAY::"):].split("|:")
    return value


def json_event_body(headers: list[tuple[str, str]], body: str = "") -> bytes:
    pairs: list[tuple[str, object]] = [(name, _json_header_value(value)) for name, value in headers]
    if body:
        pairs += [("Content-Length", str(len(body.encode("utf-8")))), ("_body", body)]
    # Written pair by pair, not through a dict: FreeSWITCH repeats a header an event holds twice
    # (CHANNEL_HANGUP_COMPLETE carries Hangup-Cause twice), and a dict would drop one of them.
    members = ",".join(f"{_json_text(name)}:{_json_text(value)}" for name, value in pairs)
    return ("{" + members + "}").encode("utf-8")


def event_message(event_format: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    """An event framed as FreeSWITCH frames it for a listener subscribed with `event plain|json`."""
    if event_format == "json":
        payload, content_type = json_event_body(headers, body), "text/event-json"
    else:
        payload, content_type = plain_event_body(headers, body), "text/event-plain"
    return encode_message([("Content-Length", str(len(payload))), ("Content-Type", content_type)], payload)


@dataclass
class CommandReader:
    """Server side: split the client's byte stream into commands (each ends with a blank line)."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[str]:
        # Normalise line ends on the whole buffer: a \r\n may be split across two recv() chunks.
        self._buffer += data
        normalised = self._buffer.replace(b"\r\n", b"\n")
        if len(normalised) != len(self._buffer):
            self._buffer[:] = normalised
        commands = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BLOCK:
                    raise ProtocolError("command longer than allowed")
                return commands
            text = bytes(self._buffer[:end]).decode("utf-8", "replace").strip("\n")
            del self._buffer[: end + 2]
            if text:
                commands.append(text)


def event_moment(event: Event, wall_now: float, monotonic_now: float) -> float:
    """When the switch says the event happened (its ``Event-Date-Timestamp``, microseconds since the epoch), on
    the monotonic clock: not when a busy process got round to it. Never later than when it was read (or now):
    a switch clock ahead of ours changes nothing, one behind only moves the moment earlier."""
    read = event.received_at or monotonic_now
    try:
        stamped = int(event.headers.get("Event-Date-Timestamp", "")) / 1e6 - wall_now + monotonic_now
    except ValueError:
        return read
    return min(read, stamped)
