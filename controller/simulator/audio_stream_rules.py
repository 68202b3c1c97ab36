"""mod_audio_stream's command-line rules and replies, as the real module applies them. No I/O.

`uuid_audio_stream <uuid> start <url> <mix> [rate] [metadata...]` reaches the module as one string,
which FreeSWITCH splits into at most six words with `switch_separate_string`: single quotes group
(and vanish), backslashes escape, and the sixth word keeps the rest of the line. So metadata keeps
its spaces but loses quotes and backslashes, and `send_text`/`stop` text is only the first word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

USAGE_SYNTAX = (
    "<uuid> [start | stop | send_text | pause | resume | graceful-shutdown ] [wss-url | path] "
    "[mono | mixed | stereo] [8000 | 16000] [metadata]"
)
USAGE = f"-USAGE: {USAGE_SYNTAX}\n"
SUCCESS = "+OK Success\n"
FAILED = "-ERR Operation Failed\n"
# The module writes nothing for these; the event socket then answers "-ERR no reply".
NO_OUTPUT = ""

MAX_WORDS = 6
MIX_TYPES = ("mono", "mixed", "stereo")
HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "s": " "}
DEFAULT_BUFFER_MS = 20


def _cleanup_word(word: str, delim: str = "") -> str:
    """FreeSWITCH's cleanup_separated_string: drop paired single quotes, unescape, trim spaces.

    `delim` is the separator the word was split at ("" for spaces): an escaped one stands for itself."""
    i = 0
    while i < len(word) and word[i] == " ":
        i += 1
    out: list[str] = []
    end: int | None = None
    inside_quotes = False
    while i < len(word):
        char = word[i]
        escaped = False
        if char == "\\" and i + 1 < len(word):
            follower = word[i + 1]
            replacement = _UNESCAPED.get(follower, follower)
            if follower in ("'", '"', "\\") or (delim and follower == delim) or replacement != follower:
                i += 1
                out.append(replacement)
                end = len(out)
                escaped = True
        if not escaped:
            # A quote counts only when it opens a pair or closes one; a lone quote is kept.
            if char == "'" and (inside_quotes or "'" in word[i + 1 :]):
                inside_quotes = not inside_quotes
                if inside_quotes:
                    end = len(out)
            else:
                out.append(char)
                if char != " " or inside_quotes:
                    end = len(out)
        i += 1
    return "".join(out if end is None else out[:end])


def separate_words(text: str, limit: int = MAX_WORDS) -> list[str]:
    """switch_separate_string(text, ' ', argv, limit): the last word keeps the rest of the line."""
    spans: list[list[int]] = []
    i, inside_quotes = 0, False
    state = "start"
    # Like the C loop, stop right after the last word starts: it keeps the rest of the line.
    while i < len(text) and len(spans) < limit:
        char = text[i]
        if state == "start":
            spans.append([i, len(text)])
            state = "skip_leading"
        elif state == "skip_leading":
            if char == " ":
                i += 1
            else:
                state = "find_delimiter"
        elif state == "find_delimiter":
            if char == "\\":
                i += 1
            elif char == "'":
                inside_quotes = not inside_quotes
            elif char == " " and not inside_quotes:
                spans[-1][1] = i
                state = "skip_trailing"
            i += 1
        else:  # skip_trailing
            if char == " ":
                i += 1
            else:
                state = "start"
    return [_cleanup_word(text[start:end]) for start, end in spans]


def separate_string(text: str, delim: str, limit: int) -> list[str]:
    """switch_separate_string(text, delim, argv, limit) for a delimiter other than a space (e.g. ';').

    As the C code does it: a text starting `^^<c>` (and longer) uses <c> as the delimiter instead; single
    quotes group only when a closing one follows; a backslash keeps the next character from splitting;
    the last word keeps the rest of the text; each word is then cleaned like any other (quotes dropped,
    escapes undone, leading and trailing spaces stripped). Empty words between two delimiters are kept.
    """
    if text.startswith("^^") and len(text) >= 4:
        delim, text = text[2], text[3:]
        if delim == " ":
            return separate_words(text, limit)
    starts: list[int] = []
    ends: list[int] = []
    i, inside_quotes, looking = 0, False, False
    while i < len(text) and len(starts) < limit:
        if not looking:  # START: a word begins here (the character itself is examined next)
            starts.append(i)
            looking = True
            continue
        char = text[i]
        if char == "\\":
            i += 1  # the escaped character never splits
        elif char == "'" and (inside_quotes or "'" in text[i + 1 :]):
            inside_quotes = not inside_quotes
        elif char == delim and not inside_quotes:
            ends.append(i)
            looking = False
        i += 1
    ends += [len(text)] * (len(starts) - len(ends))
    return [_cleanup_word(text[start:end], delim) for start, end in zip(starts, ends)]


def c_atoi(text: str) -> int:
    """C's atoi: optional spaces and sign, then digits; anything else stops it (no digits gives 0)."""
    i = 0
    while i < len(text) and text[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < len(text) and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    start = i
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    return sign * int(text[start:i]) if i > start else 0


@dataclass(frozen=True)
class WsUrl:
    scheme: str
    host: str
    port: int
    path: str  # path and query as sent in the request line; "/" when the URL has none

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"


def parse_ws_url(url: str) -> WsUrl | None:
    """The module's URL check: ws:// or wss://, a host of letters/digits/-/., digits for a port,
    and nothing but a path (starting with /) after that; None when the module refuses it."""
    for scheme, default_port in (("ws", 80), ("wss", 443)):
        prefix = f"{scheme}://"
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            break
    else:
        return None
    host_end = 0
    while host_end < len(rest) and rest[host_end] not in ":/":
        host_end += 1
    host, rest = rest[:host_end], rest[host_end:]
    if not host or not set(host) <= HOST_CHARS:
        return None
    port = default_port
    if rest.startswith(":"):
        digits_end = 1
        while digits_end < len(rest) and "0" <= rest[digits_end] <= "9":
            digits_end += 1
        if digits_end == 1:
            return None
        port, rest = int(rest[1:digits_end]), rest[digits_end:]
    if rest and not rest.startswith("/"):
        return None
    return WsUrl(scheme, host, port, rest or "/")


def parse_rate(word: str) -> int:
    if word == "16k":
        return 16000
    if word == "8k":
        return 8000
    return c_atoi(word)


# ---- what a command asks for, once its channel is known to exist ----


@dataclass(frozen=True)
class Reply:
    """Answer at once with this text (usage, failure, or nothing at all)."""

    text: str


@dataclass(frozen=True)
class Start:
    url: WsUrl
    mix: str
    rate: int
    metadata: str | None
    # The module's rate check lets 0 and junk (atoi gives 0) through; the start then fails, but only
    # after the WebSocket was created, which stays open on its own: a leak.
    leaks: bool = False


@dataclass(frozen=True)
class Stop:
    text: str | None


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class SendText:
    text: str


Request = Reply | Start | Stop | Pause | Resume | SendText


def usage_error(words: list[str]) -> bool:
    """The module answers -USAGE before it even looks the channel up."""
    return len(words) < 2 or (words[1] == "start" and len(words) < 4)


def interpret(words: list[str]) -> Request:
    """What `uuid_audio_stream` does with its words once the uuid (words[0]) names a live channel."""
    subcommand = words[1].lower()
    if subcommand == "stop":
        return Stop(words[2] if len(words) > 2 else None)
    if subcommand == "pause":
        return Pause()
    if subcommand == "resume":
        return Resume()
    if subcommand == "send_text":
        return SendText(words[2]) if len(words) > 2 else Reply(NO_OUTPUT)
    if subcommand != "start":
        return Reply(FAILED)
    mix = words[3]
    if mix not in MIX_TYPES:
        return Reply(NO_OUTPUT)
    rate = parse_rate(words[4]) if len(words) > 4 else 8000
    url = parse_ws_url(words[2])
    if url is None or rate % 8000 != 0:
        return Reply(FAILED)
    metadata = words[5] if len(words) > 5 else None
    return Start(url, mix, rate, metadata, leaks=rate <= 0)


# ---- channel variables read at start ----


def buffer_ms(value: str | None) -> tuple[int, str | None]:
    """STREAM_BUFFER_SIZE in ms and a warning when the module falls back to 20 ms."""
    if value is None:
        return DEFAULT_BUFFER_MS, None
    milliseconds = c_atoi(value)
    if milliseconds < DEFAULT_BUFFER_MS or milliseconds % DEFAULT_BUFFER_MS:
        return DEFAULT_BUFFER_MS, f"STREAM_BUFFER_SIZE={value!r} is not a multiple of 20 ms; using 20"
    return milliseconds, None


def heartbeat_s(value: str | None) -> int:
    """STREAM_HEART_BEAT: seconds between pings; unset or not a positive number means none."""
    return max(0, c_atoi(value)) if value else 0


def extra_headers(value: str | None) -> tuple[list[tuple[str, str]], str | None]:
    """STREAM_EXTRA_HEADERS: a JSON object of strings, sent sorted by name (the module keeps them in a
    std::map); entries that are not strings are skipped, and a value that is not an object is ignored."""
    if not value:
        return [], None
    try:
        document = json.loads(value)
    except ValueError:
        return [], f"STREAM_EXTRA_HEADERS is not JSON, ignored: {value!r}"
    if not isinstance(document, dict):
        return [], f"STREAM_EXTRA_HEADERS is not a JSON object, ignored: {value!r}"
    return sorted((k, v) for k, v in document.items() if isinstance(v, str)), None
