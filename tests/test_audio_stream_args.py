"""The exact mod_audio_stream commands the controller sends, and every argument it refuses to send."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from controller import audio_stream
from controller.audio_stream import (metadata_json, setvar_multi_command, start_command, stop_command,
                                    stream_url, stream_variables)

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"
TOKEN = "AbC_123-def.456~ghiJKL"


def rule(buffer_ms=20, heartbeat_s=0, deflate=False):
    return SimpleNamespace(buffer_ms=buffer_ms, heartbeat_s=heartbeat_s, deflate=deflate)


def freeswitch_args(line: str, max_args: int) -> list[str]:
    """How FreeSWITCH's switch_separate_string() hands an API line to a module, written from its documented
    behaviour: split at spaces outside single quotes into at most ``max_args`` parts (the last keeps the rest
    of the line), then drop single quotes and turn ``\\x`` into ``x`` (``\\n``, ``\\t`` into control bytes)."""
    parts: list[str] = []
    i, n = 0, len(line)
    while i < n and len(parts) < max_args:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        start, quoted = i, False
        if len(parts) == max_args - 1:
            i = n
        else:
            while i < n and (quoted or line[i] != " "):
                if line[i] == "\\":
                    i += 1
                elif line[i] == "'":
                    quoted = not quoted
                i += 1
        parts.append(line[start:i])
    return [clean(p) for p in parts]


def clean(part: str) -> str:
    """A part after splitting: single quotes dropped, ``\\x`` turned into ``x``, surrounding spaces stripped."""
    out, j = [], 0
    part = part.lstrip(" ")
    while j < len(part):
        ch = part[j]
        if ch == "\\" and j + 1 < len(part):
            nxt = part[j + 1]
            out.append({"n": "\n", "r": "\r", "t": "\t", "s": " "}.get(nxt, nxt))
            j += 2
            continue
        if ch != "'":
            out.append(ch)
        j += 1
    return "".join(out).rstrip(" ")


def setvar_multi_sees(command: str) -> tuple[str, dict[str, str]]:
    """What mod_commands' uuid_setvar_multi makes of a command, written from its source: the uuid is
    everything up to the first space; the rest is split at ';' outside single quotes (a backslash keeps the
    next character from splitting), each part cleaned, then split at its first '='."""
    name, _, args = command.partition(" ")
    assert name == "uuid_setvar_multi"
    uuid, _, rest = args.partition(" ")
    parts, start, i, quoted = [], 0, 0, False
    while i < len(rest):
        if rest[i] == "\\":
            i += 1
        elif rest[i] == "'":
            quoted = not quoted
        elif rest[i] == ";" and not quoted:
            parts.append(rest[start:i])
            start = i + 1
        i += 1
    if start < len(rest):
        parts.append(rest[start:])
    return uuid, dict(clean(part).partition("=")[::2] for part in parts)


def module_sees(command: str) -> list[str]:
    """The argv of uuid_audio_stream (6 parts) for the argument text of an api command."""
    name, _, args = command.partition(" ")
    assert name == "uuid_audio_stream"
    return freeswitch_args(args, 6)


# ---- exact strings --------------------------------------------------------------------------------------------

def test_stream_url_is_the_public_url_plus_calls_uuid():
    assert stream_url("ws://127.0.0.1:8080", UUID) == f"ws://127.0.0.1:8080/calls/{UUID}"
    assert stream_url("ws://127.0.0.1:8080/", UUID) == f"ws://127.0.0.1:8080/calls/{UUID}"
    assert stream_url("wss://rec-1.example.net/fs", UUID) == f"wss://rec-1.example.net/fs/calls/{UUID}"


def test_start_command_exact_text():
    url = stream_url("ws://127.0.0.1:8080", UUID)
    assert start_command(UUID, url, "mono", 8000, None) == (
        f"uuid_audio_stream {UUID} start ws://127.0.0.1:8080/calls/{UUID} mono 8000")
    assert start_command(UUID, url, "stereo", 16000, {"rule": "sales", "n": 1, "vip": True}) == (
        f'uuid_audio_stream {UUID} start ws://127.0.0.1:8080/calls/{UUID} stereo 16000 '
        '{"rule":"sales","n":1,"vip":true}')


def test_start_command_matches_what_was_sent_to_real_freeswitch(captures):
    sent = (captures / "esl" / "ws_mono_8000.sent.bin").read_text()
    starts = [line[len("api "):] for line in sent.split("\n") if " start " in line]
    uuid = "4b12f140-ca57-4467-8676-673191f252a4"
    assert starts == [start_command(uuid, "ws://127.0.0.1:8080/mono_8000", "mono", 8000)]


def test_metadata_arrives_byte_for_byte_as_the_real_module_sent_it(captures):
    # main_plain started a stream with this metadata; the capture server received it as a text frame.
    frames = (captures / "ws" / "main_plain" / "conn2.frames.jsonl").read_text().splitlines()
    first_text = next(json.loads(f)["text"] for f in frames if json.loads(f)["opcode"] == 1)
    metadata = {"meta": "initial metadata", "with": "spaces in it"}
    command = start_command(UUID, "ws://127.0.0.1:8080/stream", "mono", 8000, metadata)
    assert command.endswith(" " + first_text)
    assert module_sees(command)[5] == first_text


def test_stop_command_exact_text():
    assert stop_command(UUID) == f"uuid_audio_stream {UUID} stop"


def test_setvar_multi_command_exact_text():
    assert setvar_multi_command(UUID, stream_variables(rule(), TOKEN)) == (
        f"uuid_setvar_multi {UUID} STREAM_BUFFER_SIZE=20;STREAM_HEART_BEAT=0;STREAM_MESSAGE_DEFLATE=false;"
        f'STREAM_EXTRA_HEADERS={{"Authorization":"Bearer {TOKEN}"}}'
    )
    assert stream_variables(rule(buffer_ms=100, heartbeat_s=5, deflate=True), TOKEN)[:3] == [
        ("STREAM_BUFFER_SIZE", "100"), ("STREAM_HEART_BEAT", "5"), ("STREAM_MESSAGE_DEFLATE", "true")]


def test_every_variable_survives_uuid_setvar_multi_argument_handling():
    uuid, variables = setvar_multi_sees(setvar_multi_command(UUID, stream_variables(rule(), TOKEN)))
    assert uuid == UUID
    assert variables == dict(stream_variables(rule(), TOKEN))
    # The space after "Bearer" is inside the value: it stays.
    assert json.loads(variables["STREAM_EXTRA_HEADERS"]) == {"Authorization": f"Bearer {TOKEN}"}


def test_stream_variables_work_with_rules_from_the_config_loader():
    from controller.config import parse_config

    config = parse_config("esl: {password: x}\nrules:\n- name: r\n  match: {destination: '1'}\n  buffer_ms: 40\n",
                          "t.yaml", {})
    assert stream_variables(config.rules[0], TOKEN)[0] == ("STREAM_BUFFER_SIZE", "40")


@pytest.mark.parametrize("value, problem", [
    ("S3CR3T;b", "contains ';', which separates variables"),
    ("S3CR3T's", "contains a single quote"),
    ("S3CR3T\\b", "contains a backslash"),
    (" S3CR3T", "has a leading or trailing space"),
    ("S3CR3T ", "has a leading or trailing space"),
    ("", "is empty, which unsets the variable"),
    ("S3CR3T\nb", "contains a control character"),
    ("${S3CR3T}", "contains '${'"),
    (20, "int is not text"),
])
def test_a_variable_value_that_would_not_arrive_unchanged_is_refused_without_echoing_it(value, problem):
    with pytest.raises(ValueError) as info:
        setvar_multi_command(UUID, [("STREAM_BUFFER_SIZE", "20"), ("STREAM_EXTRA_HEADERS", value)])
    assert str(info.value).startswith(f"channel variable STREAM_EXTRA_HEADERS: its value {problem}")
    assert "S3CR3T" not in str(info.value)  # the value may hold the stream's token


@pytest.mark.parametrize("name", ["", "A=B", "A;B", "A B", "^^x", None])
def test_a_bad_variable_name_is_refused(name):
    with pytest.raises(ValueError, match="^channel variable name .* is not allowed"):
        setvar_multi_command(UUID, [(name, "1")])


def test_uuid_setvar_multi_takes_one_to_64_variables():
    with pytest.raises(ValueError, match="takes 1 to 64 variables, not 0"):
        setvar_multi_command(UUID, [])
    with pytest.raises(ValueError, match="not 65"):
        setvar_multi_command(UUID, [(f"V{i}", "1") for i in range(65)])
    assert setvar_multi_command(UUID, [(f"V{i}", "1") for i in range(64)]).endswith(";V63=1")


# ---- metadata: the chosen scheme provably survives, everything else is refused --------------------------------

SURVIVING = [
    {},
    {"a": "b"},
    {"text": "spaces  inside,  doubled", "n": -1.5, "ok": False, "none": None},
    {"unicode": "Zürich — 東京 ☎", "emoji": "🙂"},
    {"nested": {"list": [1, "two", {"three": 3}]}, "braces": "{not json}", "url": "ws://x/y?z=1&w=%20"},
    {"trailing": "space at the end "},
]


@pytest.mark.parametrize("metadata", SURVIVING)
def test_accepted_metadata_reaches_the_module_unchanged(metadata):
    command = start_command(UUID, "ws://127.0.0.1:8080/calls/x", "mixed", 8000, metadata)
    argv = module_sees(command)
    assert argv[:5] == [UUID, "start", "ws://127.0.0.1:8080/calls/x", "mixed", "8000"]
    assert json.loads(argv[5]) == metadata
    assert argv[5] == metadata_json(metadata)


@pytest.mark.parametrize("metadata", [
    {"quote": 'say "hi"'},
    {"apostrophe": "o'brien"},
    {"path": "C:\\temp"},
    {"newline": "a\nb"},
    {"tab": "a\tb"},
    {"o'key": 1},
])
def test_metadata_freeswitch_would_mangle_is_refused(metadata):
    # Proof that refusing is right: the module would have received something else.
    naive = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
    mangled = freeswitch_args(f"{UUID} start ws://h/x mono 8000 {naive}", 6)[5]
    assert mangled != naive
    with pytest.raises(ValueError, match=r"^metadata JSON would contain ' or \\, which FreeSWITCH mangles; "):
        start_command(UUID, "ws://h/x", "mono", 8000, metadata)


def test_metadata_text_problem_explains_each_character():
    assert audio_stream.metadata_text_problem("plain text") is None
    assert "single quote" in audio_stream.metadata_text_problem("it's")
    assert "double quote" in audio_stream.metadata_text_problem('"')
    assert "backslash" in audio_stream.metadata_text_problem("\\")
    assert "control character" in audio_stream.metadata_text_problem("\x07")
    assert "not valid Unicode" in audio_stream.metadata_text_problem("\ud800")


@pytest.mark.parametrize("metadata, message", [
    (["not", "a", "mapping"], "metadata must be a mapping (a JSON object), not list"),
    ({"x": float("nan")}, "metadata cannot be written as JSON: Out of range float values are not JSON compliant"),
    ({"x": object()}, "metadata cannot be written as JSON: Object of type object is not JSON serializable"),
    ({"x": "\ud800"}, "metadata is not valid Unicode text (the module refuses invalid UTF-8)"),
    ({"x": "a" * 8000}, "metadata JSON is 8008 bytes, above the module's limit; keep it to 8000 bytes"),
])
def test_metadata_that_cannot_be_sent(metadata, message):
    with pytest.raises(ValueError) as info:
        metadata_json(metadata)
    assert str(info.value) == message


# ---- every argument is checked before anything is built -------------------------------------------------------

URL = f"ws://127.0.0.1:8080/calls/{UUID}"


@pytest.mark.parametrize("uuid", [
    "", "not-a-uuid", UUID + " ", f"{UUID}\n\nexit", UUID[:-1], UUID.replace("-", ""), None, 42,
    f"{UUID} stop",
])
def test_bad_uuid_is_refused_everywhere(uuid):
    expected = r"^channel uuid .* is not a uuid; expected 8-4-4-4-12 hex digits"
    with pytest.raises(ValueError, match=expected):
        start_command(uuid, URL, "mono", 8000)
    with pytest.raises(ValueError, match=expected):
        stop_command(uuid)
    with pytest.raises(ValueError, match=expected):
        setvar_multi_command(uuid, stream_variables(rule(), TOKEN))
    with pytest.raises(ValueError, match=expected):
        stream_url("ws://127.0.0.1:8080", uuid)


def test_uppercase_uuid_is_a_uuid():
    assert stop_command(UUID.upper()) == f"uuid_audio_stream {UUID.upper()} stop"


@pytest.mark.parametrize("rate, problem", [
    (12000, "12000 is not a multiple of 8000"),
    (0, "0 is not a positive multiple of 8000"),
    (-8000, "-8000 is not a positive multiple of 8000"),
    (56000, "56000 is above 48000"),
    ("8000", "'8000' is not a whole number"),
    ("8k", "'8k' is not a whole number"),
    ("abc", "'abc' is not a whole number"),
    (8000.0, "8000.0 is not a whole number"),
    (True, "True is not a whole number"),
])
def test_bad_rate_is_refused(rate, problem):
    with pytest.raises(ValueError) as info:
        start_command(UUID, URL, "mono", rate)
    assert str(info.value) == f"sample rate {problem}; use 8000, 16000, 24000, 32000 or 48000"


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 32000, 48000])
def test_every_allowed_rate_is_sent_as_a_number(rate):
    assert start_command(UUID, URL, "mono", rate).endswith(f" mono {rate}")


@pytest.mark.parametrize("mix", ["Mono", "MIXED", "quad", "", " mono", None])
def test_bad_mix_is_refused(mix):
    with pytest.raises(ValueError) as info:
        start_command(UUID, URL, mix, 8000)
    assert str(info.value) == f"mix {mix!r} is not a mix type; use mono, mixed or stereo (lower case)"


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:8080/x", "does not start with ws:// or wss://"),
    ("WS://127.0.0.1:8080/x", "does not start with ws:// or wss://"),
    ("ws://127.0.0.1:8080?x=1", "has port '8080?x=1', which is not digits (a query needs a '/' before the '?')"),
    ("ws://rec_1:8080/x", "has host 'rec_1', which has characters other than letters, digits, '-' and '.'"),
    ("ws://user@host/x", "has host 'user@host', which has characters other than letters, digits, '-' and '.'"),
    ("ws:///x", "has no host"),
    ("ws://h:0/x", "has port 0, outside 1..65535"),
    ("ws://h:8080/a b", "has a character in its path that is unsafe in a FreeSWITCH command"),
    ("ws://h:8080/a\nb", "has a character in its path that is unsafe in a FreeSWITCH command"),
    ("ws://h:8080/it's", "has a character in its path that is unsafe in a FreeSWITCH command"),
    ("ws://h:8080/a\\b", "has a character in its path that is unsafe in a FreeSWITCH command"),
])
def test_bad_url_is_refused(url, problem):
    with pytest.raises(ValueError) as info:
        start_command(UUID, url, "mono", 8000)
    assert str(info.value).startswith(f"stream URL {url!r} {problem}; use ws:// or wss://")


def test_url_with_query_after_a_slash_is_what_the_module_accepts():
    url = f"ws://127.0.0.1:8080/stream?call={UUID}"
    assert module_sees(start_command(UUID, url, "mono", 8000))[2] == url


def test_too_long_url_is_refused():
    with pytest.raises(ValueError, match="longer than 4000 bytes"):
        start_command(UUID, "ws://h/" + "a" * 4000, "mono", 8000)


def test_public_url_with_query_is_refused():
    with pytest.raises(ValueError, match=r"^recorder public_url 'ws://h:8080/x\?t=1' has a query; "):
        stream_url("ws://h:8080/x?t=1", UUID)


@pytest.mark.parametrize("token, problem", [
    ("short", "must be 16 to 512 characters long"),
    ("has space in it 1234", "must be letters, digits"),
    ('quote"inside-1234567', "must be letters, digits"),
    ("apostrophe'inside-123", "must be letters, digits"),
    ("back\\slash-12345678", "must be letters, digits"),
    ("", "must be letters, digits"),
    (None, "must be letters, digits"),
])
def test_bad_token_is_refused_without_echoing_it(token, problem):
    with pytest.raises(ValueError) as info:
        stream_variables(rule(), token)
    assert problem in str(info.value)
    if token:
        assert token not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_ms": 30}, "buffer_ms 30 is not allowed; use a multiple of 20 from 20 to 1000"),
    ({"buffer_ms": 0}, "buffer_ms 0 is not allowed; use a multiple of 20 from 20 to 1000"),
    ({"buffer_ms": 1020}, "buffer_ms 1020 is not allowed; use a multiple of 20 from 20 to 1000"),
    ({"heartbeat_s": -1}, "heartbeat_s -1 is not allowed; use whole seconds from 0 (off) to 3600"),
    ({"heartbeat_s": 2.5}, "heartbeat_s 2.5 is not allowed; use whole seconds from 0 (off) to 3600"),
    ({"deflate": "yes"}, "deflate 'yes' is not allowed; use true or false"),
])
def test_bad_rule_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError) as info:
        stream_variables(rule(**kwargs), TOKEN)
    assert str(info.value) == message
