"""The text of mod_audio_stream's API commands, built only from arguments that were checked first. Pure.

Each builder returns the argument text of an ``api``/``bgapi`` command (``uuid_audio_stream <uuid> start ...``,
and ``uuid_setvar_multi <uuid> NAME=value;...`` for the channel variables the module reads at start).
Nothing unchecked reaches FreeSWITCH: the module accepts junk rates such as ``abc`` or ``0``, answers
``-ERR Operation Failed`` and still opens a WebSocket that leaks (see PROTOCOL.md), so a bad argument must
be refused here, before it is ever sent.

How metadata survives the trip (see ``metadata_json``): FreeSWITCH splits the API argument line with
``switch_separate_string``, which drops every single quote and treats every backslash as an escape. The
module takes the rest of the line after the rate as the metadata, spaces included. Compact JSON written with
``ensure_ascii=False`` contains a backslash only where a string holds a double quote, a backslash or a control
character, and a single quote only where a string holds one. So metadata whose JSON has neither ``'`` nor
``\\`` reaches the WebSocket byte for byte; anything else is refused rather than silently mangled.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from .channel_uuid import UUID_RE, UUID_SHAPE

MIX_TYPES = ("mono", "mixed", "stereo")
RATE_STEP = 8000
MAX_RATE = 48000
ALLOWED_RATES = tuple(range(RATE_STEP, MAX_RATE + 1, RATE_STEP))
RATES_TEXT = "use 8000, 16000, 24000, 32000 or 48000"

BUFFER_STEP_MS = 20  # the module sends one frame per 20 ms of audio; other sizes are rounded with a warning
MAX_BUFFER_MS = 1000
MAX_HEARTBEAT_S = 3600

# The module copies the URL into a 4096-byte buffer and the metadata into an 8192-byte one (with the NUL);
# stay clearly below both so nothing is cut off.
MAX_URL_BYTES = 4000
MAX_METADATA_BYTES = 8000

# The module's validate_ws_uri: a host of letters, digits, '-' and '.', then optionally ':' and digits.
_HOST = re.compile(r"[A-Za-z0-9.-]+")
_PORT = re.compile(r"[0-9]+")
# Path characters that pass FreeSWITCH's argument splitting unchanged (no quotes, backslashes, spaces).
_SAFE_PATH = re.compile(r"[A-Za-z0-9._~/%=&?:,+@-]*")
# The bearer token travels inside a JSON string in a uuid_setvar_multi line: keep it to URL-safe characters.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
MIN_TOKEN_LEN = 16
MAX_TOKEN_LEN = 512


def check_uuid(uuid: Any) -> str:
    # Anything but a uuid (spaces, quotes) could change the command.
    if not isinstance(uuid, str) or not UUID_RE.fullmatch(uuid):
        raise ValueError(f"channel uuid {uuid!r} is not a uuid; expected {UUID_SHAPE}, "
                         "e.g. 166eb301-3ca5-4fc5-9751-d8ca093577dd")
    return uuid


def check_mix(mix: Any) -> str:
    if mix not in MIX_TYPES:
        raise ValueError(f"mix {mix!r} is not a mix type; use mono, mixed or stereo (lower case)")
    return mix


def rate_problem(rate: Any) -> str | None:
    """Why ``rate`` cannot be sent to the module, or None. Shared with the config loader's messages."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        return f"{rate!r} is not a whole number"
    if rate <= 0:
        return f"{rate} is not a positive multiple of {RATE_STEP}"
    if rate % RATE_STEP:
        return f"{rate} is not a multiple of {RATE_STEP}"
    if rate > MAX_RATE:
        return f"{rate} is above {MAX_RATE}"
    return None


def check_rate(rate: Any) -> int:
    problem = rate_problem(rate)
    if problem:
        raise ValueError(f"sample rate {problem}; {RATES_TEXT}")
    return rate


def ws_url_problem(url: Any, *, base: bool = False) -> str | None:
    """Why the module would refuse ``url`` (or FreeSWITCH would alter it), or None.

    ``base`` is for the configured public URL that stream paths are appended to: no query or fragment.
    """
    if not isinstance(url, str):
        return f"{url!r} is not text"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ws", "wss"):
        return f"{url!r} does not start with ws:// or wss://"
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.partition(":")
    if not host:
        return f"{url!r} has no host"
    if not _HOST.fullmatch(host):
        return f"{url!r} has host {host!r}, which has characters other than letters, digits, '-' and '.'"
    if colon and not _PORT.fullmatch(port):
        return f"{url!r} has port {port!r}, which is not digits (a query needs a '/' before the '?')"
    if colon and not 0 < int(port) <= 65535:
        return f"{url!r} has port {port}, outside 1..65535"
    if not _SAFE_PATH.fullmatch(slash + path):
        return f"{url!r} has a character in its path that is unsafe in a FreeSWITCH command"
    if base and "?" in path:
        return f"{url!r} has a query"
    if len(url.encode()) > MAX_URL_BYTES:
        return f"the URL is longer than {MAX_URL_BYTES} bytes"
    return None


WS_URL_RULES = ("use ws:// or wss://, a host of letters, digits, '-' and '.', an optional numeric port, "
                "and an optional path without spaces or quotes")


def check_ws_url(url: Any) -> str:
    problem = ws_url_problem(url)
    if problem:
        raise ValueError(f"stream URL {problem}; {WS_URL_RULES}")
    return url


def stream_url(public_url: str, uuid: str) -> str:
    """Where the module connects for one call: ``<public_url>/calls/<uuid>``."""
    problem = ws_url_problem(public_url, base=True)
    if problem:
        raise ValueError(f"recorder public_url {problem}; {WS_URL_RULES}, no query")
    return check_ws_url(f"{public_url.rstrip('/')}/calls/{check_uuid(uuid)}")


def metadata_text_problem(text: str) -> str | None:
    """Why a string inside the metadata would not survive FreeSWITCH's argument handling, or None."""
    if "'" in text:
        return "contains a single quote ('), which FreeSWITCH strips from commands"
    if '"' in text:
        return 'contains a double quote ("), which JSON escapes with a backslash that FreeSWITCH removes'
    if "\\" in text:
        return "contains a backslash, which FreeSWITCH treats as an escape character"
    if any(ord(ch) < 0x20 for ch in text):
        return "contains a control character (such as a newline or tab), which JSON escapes with a backslash"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (the module refuses invalid UTF-8)"
    return None


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """The metadata as the single JSON line the module will send as its first text frame."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping (a JSON object), not {type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata cannot be written as JSON: {exc}") from None
    if "'" in text or "\\" in text:
        raise ValueError("metadata JSON would contain ' or \\, which FreeSWITCH mangles; use text without "
                         "quotes, backslashes or control characters")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("metadata is not valid Unicode text (the module refuses invalid UTF-8)") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata JSON is {size} bytes, above the module's limit; keep it to "
                         f"{MAX_METADATA_BYTES} bytes")
    return text


def start_command(uuid: str, url: str, mix: str, rate: int, metadata: Mapping[str, Any] | None = None) -> str:
    parts = ["uuid_audio_stream", check_uuid(uuid), "start", check_ws_url(url), check_mix(mix), str(check_rate(rate))]
    if metadata is not None:
        parts.append(metadata_json(metadata))
    return " ".join(parts)


def stop_command(uuid: str) -> str:
    # No closing text: the module would send only its first word anyway.
    return f"uuid_audio_stream {check_uuid(uuid)} stop"


def check_token(token: Any) -> str:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError("the stream token must be letters, digits, '-', '_', '.' or '~' only")
    if not MIN_TOKEN_LEN <= len(token) <= MAX_TOKEN_LEN:
        raise ValueError(f"the stream token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long")
    return token


def check_buffer_ms(buffer_ms: Any) -> int:
    if (isinstance(buffer_ms, bool) or not isinstance(buffer_ms, int)
            or not BUFFER_STEP_MS <= buffer_ms <= MAX_BUFFER_MS or buffer_ms % BUFFER_STEP_MS):
        raise ValueError(f"buffer_ms {buffer_ms!r} is not allowed; use a multiple of {BUFFER_STEP_MS} "
                         f"from {BUFFER_STEP_MS} to {MAX_BUFFER_MS}")
    return buffer_ms


def check_heartbeat_s(heartbeat_s: Any) -> int:
    if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, int) or not 0 <= heartbeat_s <= MAX_HEARTBEAT_S:
        raise ValueError(f"heartbeat_s {heartbeat_s!r} is not allowed; use whole seconds from 0 (off) "
                         f"to {MAX_HEARTBEAT_S}")
    return heartbeat_s


def stream_variables(rule: Any, token: str) -> list[tuple[str, str]]:
    """The channel variables the module reads at start, as (name, value); all must be set before start.

    Heart-beat and deflate are read into uninitialised variables when unset, so both are always set.
    """
    buffer_ms = check_buffer_ms(rule.buffer_ms)
    heartbeat_s = check_heartbeat_s(rule.heartbeat_s)
    if not isinstance(rule.deflate, bool):
        raise ValueError(f"deflate {rule.deflate!r} is not allowed; use true or false")
    headers = json.dumps({"Authorization": f"Bearer {check_token(token)}"}, separators=(",", ":"))
    return [
        ("STREAM_BUFFER_SIZE", str(buffer_ms)),
        ("STREAM_HEART_BEAT", str(heartbeat_s)),
        ("STREAM_MESSAGE_DEFLATE", "true" if rule.deflate else "false"),
        ("STREAM_EXTRA_HEADERS", headers),
    ]


# uuid_setvar_multi (mod_commands) splits its variables with switch_separate_string into at most 64 parts.
MAX_VARIABLES = 64
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def variable_value_problem(value: Any) -> str | None:
    """Why ``value`` would not reach the channel exactly as written through uuid_setvar_multi, or None.

    mod_commands splits the text after the uuid at ';' (quotes group, backslashes escape, each part loses its
    leading and trailing spaces), then each part at its first '='; an empty value unsets the variable and
    one holding "${" is not stored. Spaces inside a value survive.
    """
    if not isinstance(value, str):
        return f"{type(value).__name__} is not text"
    if not value:
        return "is empty, which unsets the variable"
    if value != value.strip(" "):
        return "has a leading or trailing space, which FreeSWITCH strips"
    if ";" in value:
        return "contains ';', which separates variables"
    if "'" in value:
        return "contains a single quote ('), which FreeSWITCH strips from commands"
    if "\\" in value:
        return "contains a backslash, which FreeSWITCH treats as an escape character"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "contains a control character (a line break would end the command)"
    if "${" in value:
        return "contains '${', which FreeSWITCH refuses to store in a channel variable"
    return None


def setvar_multi_command(uuid: str, variables: list[tuple[str, str]]) -> str:
    """``uuid_setvar_multi <uuid> NAME=value;NAME=value;...``: every variable in one command (+OK once).

    Errors name the variable, never its value (STREAM_EXTRA_HEADERS holds the stream's token).
    """
    uuid = check_uuid(uuid)
    if not 0 < len(variables) <= MAX_VARIABLES:
        raise ValueError(f"uuid_setvar_multi takes 1 to {MAX_VARIABLES} variables, not {len(variables)}")
    parts = []
    for name, value in variables:
        if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(f"channel variable name {name!r} is not allowed; use letters, digits and '_'")
        problem = variable_value_problem(value)
        if problem:
            raise ValueError(f"channel variable {name}: its value {problem}")
        parts.append(f"{name}={value}")
    return f"uuid_setvar_multi {uuid} {';'.join(parts)}"


def start_commands(channel_uuid: str, call_key: str, rule: Any, token: str, public_url: str, *,
                   restart: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """The stream URL and the commands that start one call's stream, in the order they must be written:
    ``[("api", stop) on a restart,] ("api", uuid_setvar_multi ...), ("bgapi", uuid_audio_stream ... start)``.

    FreeSWITCH runs an ``api`` before it reads the next command, so the variables (and the stop) are done
    when the start's background job runs; all of them can go out in one write. Commands name the channel as
    FreeSWITCH spells it (its session table is case-sensitive); the URL carries the call's key.
    Raises ValueError for anything the module would refuse.
    """
    url = stream_url(public_url, call_key)
    commands = [("api", setvar_multi_command(channel_uuid, stream_variables(rule, token))),
                ("bgapi", start_command(channel_uuid, url, rule.mix, rule.rate, rule.metadata))]
    if restart:
        # After a server-side close the module keeps the dead stream attached and refuses a new start until
        # stop; after ::error it has detached already and stop just answers -ERR. Either way: stop first.
        commands.insert(0, ("api", stop_command(channel_uuid)))
    return url, commands
