"""mod_audio_stream's processMessage (audio_streamer_glue.cpp, ec2a781): what a text message from the WebSocket
server becomes. Pure, no I/O.

    {"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000,"audioData":"<base64>"}}

The module parses every text message with FreeSWITCH's cJSON (1.7.12). A message whose "type" is not the string
"streamAudio" is not its business: the text fires `::json` verbatim. A streamAudio message is checked in this
order, each failure only logging an error and then falling back to `::json` with the text verbatim (the
module's eventCallback does that for every message processMessage did not take): no "data" key; no "audioData"
in it; "audioData" not a string; a bad "audioDataType" (raw, wav, mp3, ogg, pcmu, pcma) or, for raw, a
"sampleRate" (cJSON's valueint) other than 8000..64000 in steps the module knows; base64 the module's decoder
refuses. Otherwise the audio goes to `<temp dir>/<uuid>_<n>.tmp<suffix>` and `::play` fires with the data object
as cJSON prints it: its keys in order, "audioData" (the first match) taken out, "file" added last.

cJSON's ways are kept where a server could meet them: key lookups ignore ASCII case and take the first match,
duplicate keys stay, numbers are doubles printed with %1.15g (17 digits when 15 do not round-trip), text after
the JSON value is ignored, NaN/Infinity and lone surrogates are not JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

RAW_SUFFIXES = {8000: ".r8", 16000: ".r16", 24000: ".r24", 32000: ".r32", 48000: ".r48", 64000: ".r64"}
TYPE_SUFFIXES = {"wav": ".wav", "mp3": ".mp3", "ogg": ".ogg", "pcmu": ".pcmu", "pcma": ".pcma"}
INT_MAX, INT_MIN = 2**31 - 1, -(2**31)
BASE64_INVALID = "Input is not valid base64-encoded data."


class JsonObject(list):
    """A JSON object as cJSON keeps it: (key, value) pairs in order, duplicates included."""

    def get(self, key: str):
        """cJSON_GetObjectItem: the first pair whose key matches ignoring ASCII case, or None."""
        for index, (name, _) in enumerate(self):
            if _ascii_lower(name) == _ascii_lower(key):
                return self[index]
        return None

    def detach(self, key: str):
        """cJSON_DetachItemFromObject: take out the first match; its value, or None."""
        pair = self.get(key)
        if pair is None:
            return None
        self.remove(pair)
        return pair


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)  # C tolower in the "C" locale: A-Z only


class NotJson(ValueError):
    pass


def _refuse_constant(name: str):
    raise NotJson(f"{name} is not JSON to cJSON")


_DECODER = json.JSONDecoder(object_pairs_hook=JsonObject, parse_int=float, parse_float=float,
                            parse_constant=_refuse_constant, strict=False)


def parse(text: str):
    """cJSON_Parse: the first JSON value in the text (what follows it is ignored); raises NotJson."""
    text = text.split("\x00", 1)[0]  # the module hands cJSON a C string
    if text.startswith("\ufeff"):
        text = text[1:]  # cJSON skips a UTF-8 byte order mark
    start = 0
    while start < len(text) and ord(text[start]) <= 32:
        start += 1
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise NotJson(str(exc)) from None
    if _has_lone_surrogate(value):
        raise NotJson("a lone UTF-16 surrogate")
    return value


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, JsonObject):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def value_int(value) -> int:
    """cJSON's valueint: a number truncated toward zero and saturated to int; true is 1; anything else 0."""
    if value is True:
        return 1
    if isinstance(value, float):
        if value >= INT_MAX:
            return INT_MAX
        if value <= INT_MIN:
            return INT_MIN
        return int(value)
    return 0


def print_unformatted(value) -> str:
    """cJSON_PrintUnformatted."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return print_number(value)
    if isinstance(value, str):
        return _print_string(value)
    if isinstance(value, JsonObject):
        return "{" + ",".join(f"{_print_string(k)}:{print_unformatted(v)}" for k, v in value) + "}"
    return "[" + ",".join(print_unformatted(v) for v in value) + "]"


def print_number(number: float) -> str:
    if math.isnan(number) or math.isinf(number):
        return "null"
    text = "%1.15g" % number
    if float(text) != number:
        text = "%1.17g" % number
    return text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _print_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 32:
            out.append("\\u%04x" % ord(char))
        else:
            out.append(char)  # everything else as it is, UTF-8 included
    return '"' + "".join(out) + '"'


class Base64Error(ValueError):
    pass


def _position(char: int) -> int:
    if 65 <= char <= 90:
        return char - 65
    if 97 <= char <= 122:
        return char - 97 + 26
    if 48 <= char <= 57:
        return char - 48 + 52
    if char in (43, 45):  # '+' or '-'
        return 62
    if char in (47, 95):  # '/' or '_'
        return 63
    raise Base64Error(BASE64_INVALID)


def base64_decode(text: str) -> bytes:
    """The module's base64.cpp (René Nyffenegger, 2.rc.09): chunks of four, '+'/'-' and '/'/'_' alike, padding
    ('=' or '.') optional, a '=' or '.' in the third or fourth place ends that chunk (what follows in it is
    ignored), any other character (whitespace included) is an error, and so is a lone character at the end
    (std::string::at past the end)."""
    data = text.encode("utf-8", "surrogatepass")
    length = len(data)
    out = bytearray()

    def at(index: int) -> int:
        if index >= length:
            raise Base64Error(f"basic_string::at: __n (which is {index}) >= this->size() (which is {length})")
        return data[index]

    pos = 0
    while pos < length:
        second = _position(at(pos + 1))
        out.append(((_position(at(pos)) << 2) + ((second & 0x30) >> 4)) & 0xFF)
        if pos + 2 < length and data[pos + 2] not in b"=.":
            third = _position(data[pos + 2])
            out.append((((second & 0x0F) << 4) + ((third & 0x3C) >> 2)) & 0xFF)
            if pos + 3 < length and data[pos + 3] not in b"=.":
                out.append((((third & 0x03) << 6) + _position(data[pos + 3])) & 0xFF)
        pos += 4
    return bytes(out)


@dataclass(frozen=True)
class PlayRequest:
    """A streamAudio message the module takes: write `audio` to a file with this suffix, then fire ::play with
    `details` (the data object without audioData; the caller adds "file")."""

    suffix: str
    audio: bytes
    details: JsonObject


def read_message(text: str) -> PlayRequest | str | None:
    """processMessage: a PlayRequest; an error message (the module logs it, then fires ::json); or None when
    the text is not a streamAudio message (::json)."""
    try:
        root = parse(text)
    except NotJson:
        return None
    kind = root.get("type") if isinstance(root, JsonObject) else None
    if kind is None or kind[1] != "streamAudio":  # cJSON_GetObjectCstr: a string, or nothing
        return None
    data = root.get("data")
    if data is None:
        return "processMessage - no data in streamAudio"
    data = data[1]
    members = data if isinstance(data, JsonObject) else JsonObject()
    kind_pair = members.get("audioDataType")
    audio_type = kind_pair[1] if kind_pair is not None and isinstance(kind_pair[1], str) else ""
    audio = members.detach("audioData")
    if audio is None:
        return "processMessage - streamAudio missing 'audioData' field"
    if not isinstance(audio[1], str):
        return "processMessage - 'audioData' is not a string (expected base64 string)"
    rate_pair = members.get("sampleRate")
    rate = value_int(rate_pair[1]) if rate_pair is not None else 0
    if audio_type == "raw":
        suffix = RAW_SUFFIXES.get(rate)
        if suffix is None:
            return f"processMessage - unsupported sample rate: {rate}"
    elif audio_type in TYPE_SUFFIXES:
        suffix = TYPE_SUFFIXES[audio_type]
    else:
        return f"processMessage - unsupported audio type: {audio_type}"
    try:
        decoded = base64_decode(audio[1])
    except Base64Error as exc:
        return f"processMessage - base64 decode error: {exc}"
    return PlayRequest(suffix, decoded, members)


def play_body(details: JsonObject, path: str) -> str:
    """The ::play body: the data object as cJSON prints it, with "file" added last."""
    return print_unformatted(JsonObject(list(details) + [("file", path)]))
