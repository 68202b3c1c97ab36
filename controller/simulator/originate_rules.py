"""`originate` as FreeSWITCH 1.10.12 reads it, and the audio a test call's application plays. Pure, no I/O.

    originate <dial string> <&app(args)|exten> [dialplan] [context] [cid_name] [cid_num] [timeout_sec]

mod_commands' originate_function splits its argument at spaces (switch_separate_string: single quotes group,
backslashes escape), answers -USAGE for fewer than 2 or more than 7 words, and reads "undef" as a missing word.
The dial string is `{var=value,...}[var=value,...]endpoint/target` (switch_ivr_originate; the variables become
the new leg's channel variables, `origination_uuid` names the leg instead). An application is `&name(args)`,
cut at its FIRST ')' and then at its first '(' (strchr, both): so
`&playback(tone_stream://%(1000,0,440);loops=-1)` runs playback with `tone_stream://%(1000,0,440`: the
`;loops=-1` never reaches the file, and the tone plays once. (A known wart: freeswitch PR #1155, never merged.)

What the simulator can play (what a test call needs): `tone_stream://` specs made of `%(on_ms,off_ms,hz[,hz...])`
segments with `L=<n>` (mod_tone_stream on libteletone), a `;loops=<n>` suffix or a `{loops=<n>}` file prefix
(switch_buffer loops: n <= 1 plays once, n > 1 n times, negative for ever), and `silence_stream://<ms>` (ms <= 0:
for ever). Anything else is a file the simulator does not have: playback of it ends at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import audio_stream_rules as words_rules
from . import signals

ORIGINATE_SYNTAX = (
    "<call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] "
    "[<timeout_sec>]"
)
USAGE = f"-USAGE: {ORIGINATE_SYNTAX}\n"
MAX_WORDS = 10  # originate_function's argv
DEFAULT_TIMEOUT_S = 60
FOREVER = -1  # plays: until the channel hangs up


@dataclass(frozen=True)
class Originate:
    """One `originate` command, read as mod_commands and switch_ivr_originate read it."""

    variables: list[tuple[str, str]]  # {..} then [..], in order; a later one of the same name wins
    endpoint: str  # "null", "sofia", ...
    target: str  # what follows the endpoint's '/' ("any" in null/any)
    application: str | None  # &app(...): its name; None when an extension is given
    application_data: str | None
    extension: str | None
    dialplan: str = "XML"
    context: str = "default"
    cid_name: str | None = None
    cid_num: str | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    legs: int = 1  # dial strings with ',' or '|' name more legs; the simulator makes the first only

    def variable(self, name: str) -> str | None:
        value = None
        for key, val in self.variables:
            if key == name:
                value = val
        return value


def parse_originate(args: str) -> Originate | str:
    """The command read, or the text FreeSWITCH answers at once (the usage)."""
    if not args or not args.strip():
        return USAGE
    argv = words_rules.separate_words(args, MAX_WORDS)
    if len(argv) < 2 or len(argv) > 7:
        return USAGE
    argv = [None if word.lower() == "undef" else word for word in argv] + [None] * (7 - len(argv))
    dial, exten, dialplan, context, cid_name, cid_num, timeout = argv
    if dial is None or exten is None:
        return USAGE  # FreeSWITCH would crash on a missing exten (switch_assert); never sent by anyone sane
    variables, rest = _dial_variables(dial)
    leg_strings = _legs(rest)
    leg_variables, first_leg = _bracketed(leg_strings[0].lstrip(" "), "[", "]")
    endpoint, _, target = first_leg.partition("/")
    application = data = extension = None
    if exten.startswith("&") and len(exten) > 1:
        name = exten[1:].split(")", 1)[0]  # strchr(app_name, ')')
        application, paren, data = name.partition("(")
        data = data if paren else None
    else:
        extension = exten
    return Originate(
        variables=variables + leg_variables, endpoint=endpoint, target=target, application=application,
        application_data=data, extension=extension, dialplan=dialplan or "XML", context=context or "default",
        cid_name=cid_name, cid_num=cid_num, timeout_s=words_rules.c_atoi(timeout) if timeout else DEFAULT_TIMEOUT_S,
        legs=len(leg_strings),
    )


def _dial_variables(dial: str) -> tuple[list[tuple[str, str]], str]:
    variables: list[tuple[str, str]] = []
    rest = dial.lstrip(" ")
    # <..> (enterprise) and {..} both set variables on every leg.
    for opener, closer in (("<", ">"), ("{", "}")):
        found, rest = _bracketed(rest, opener, closer)
        variables += found
    return variables, rest


def _legs(text: str) -> list[str]:
    """The legs of a dial string: ',' (at once) and '|' (one after another) outside any brackets."""
    legs, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "[{<":
            depth += 1
        elif char in "]}>":
            depth -= 1
        elif char in ",|" and depth == 0:
            legs.append(text[start:index])
            start = index + 1
    return legs + [text[start:]]


def _bracketed(text: str, opener: str, closer: str) -> tuple[list[tuple[str, str]], str]:
    """Variables in a leading `{a=1,b=2}` (switch_event_create_brackets: ',' separates, quotes group, a
    leading ^^<c> picks another separator) and the text after it."""
    if not text.startswith(opener):
        return [], text
    depth, end = 0, -1
    for index, char in enumerate(text):
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                end = index
                break
    if end < 0:
        return [], text  # unbalanced: FreeSWITCH's "Parse Error!"; left to fail as an unknown endpoint
    found = []
    for part in words_rules.separate_string(text[1:end], ",", 1024):
        name, equals, value = part.partition("=")
        if name and equals:
            found.append((name, value))
    return found, text[end + 1:]


# ---- what an application plays ----


@dataclass(frozen=True)
class Played:
    """Audio an application writes to the channel: `audio` (PCM at the channel's rate) `plays` times in a row
    (FOREVER: until hangup). An empty `audio` with FOREVER is silence written for ever (silence_stream://0)."""

    audio: bytes
    plays: int = 1

    @property
    def forever(self) -> bool:
        return self.plays == FOREVER

    def seconds(self, rate: int) -> float | None:
        """How long it plays; None for ever."""
        if self.forever:
            return None
        return len(self.audio) / (signals.SAMPLE_BYTES * rate) * self.plays


@dataclass(frozen=True)
class Application:
    """What the simulator does with an originated leg's application."""

    name: str
    data: str
    played: Played | None = None  # playback: the file's audio (None: nothing the simulator can play)
    hold_s: float | None = None  # sleep: how long; park: None (until hangup)
    known: bool = True  # False: FreeSWITCH has no such application ("Invalid Application")
    notes: list[str] = field(default_factory=list)


# The applications a test call uses; any other name is "Invalid Application" to the simulator.
APPLICATIONS = ("playback", "endless_playback", "park", "sleep")


def application(name: str, data: str | None, rate: int) -> Application:
    data = data or ""
    if name not in APPLICATIONS:
        return Application(name, data, known=False)
    if name == "park":
        return Application(name, data)
    if name == "sleep":
        return Application(name, data, hold_s=max(0, words_rules.c_atoi(data)) / 1000)
    played = file_audio(data, rate)
    if name == "endless_playback" and played is not None:
        played = Played(played.audio, FOREVER)
    return Application(name, data, played=played)


def file_audio(path: str, rate: int) -> Played | None:
    """What switch_ivr_play_file gets from `path` at the channel's rate; None for a file the simulator lacks."""
    params, path = _bracketed(path, "{", "}")
    if path.startswith("silence_stream://"):
        milliseconds = words_rules.c_atoi(path[len("silence_stream://"):])
        if milliseconds <= 0:
            return Played(b"", FOREVER)
        return Played(signals.silence(milliseconds / 1000, rate))
    if not path.startswith("tone_stream://"):
        return None
    spec = path[len("tone_stream://"):]
    loops = 0
    # mod_tone_stream: a ";loops=" suffix (any case), then a {loops=} file parameter, each setting the buffer's
    # loop count.
    cut = spec.lower().find(";loops=")
    if cut >= 0:
        tail = spec[cut + len(";loops="):]
        spec = spec[:cut]
        if tail:
            loops = words_rules.c_atoi(tail)
    for name, value in params:
        if name == "loops":
            loops = words_rules.c_atoi(value)
    audio = teletone(spec, rate)
    # switch_buffer_read_loop: 0 and 1 play once, n plays n times, a negative count never stops.
    plays = FOREVER if loops < 0 else max(1, loops)
    return Played(audio, plays)


def teletone(spec: str, rate: int) -> bytes:
    """libteletone's teletone_run for the `%(on,off,hz...)` segments and `L=` repeats: on ms of the summed
    tones, then off ms of silence, per segment. A segment without its ')' is read to the end (as teletone does
    when originate has cut it off)."""
    pieces: list[bytes] = []
    repeats = 1
    for token in spec.split(";"):
        token = token.strip(" \r\n")
        if len(token) > 1 and token[1] == "=":
            if token[0] == "L":
                count = words_rules.c_atoi(token[2:])
                repeats = count if count > 0 else repeats
            continue
        position = 0
        while position < len(token):
            if token.startswith("%(", position):
                close = token.find(")", position)
                inner = token[position + 2: close if close >= 0 else len(token)]
                pieces.append(_segment(inner, rate))
                position = close + 1 if close >= 0 else len(token)
            else:
                position += 1  # named tone maps (DTMF digits and the like) are not simulated
    return b"".join(pieces) * repeats


def _segment(inner: str, rate: int) -> bytes:
    values = inner.split(",")
    if len(values) < 3:
        return b""  # teletone's "Syntax Error!": a % map needs at least one frequency
    on_ms, off_ms = words_rules.c_atoi(values[0]), words_rules.c_atoi(values[1])
    frequencies = [float(v) for v in values[2:] if _is_number(v)]
    on = _tones(frequencies, max(0, on_ms) / 1000, rate)
    return on + signals.silence(max(0, off_ms) / 1000, rate)


def _tones(frequencies: list[float], seconds: float, rate: int) -> bytes:
    if not frequencies:
        return signals.silence(seconds, rate)
    if len(frequencies) == 1:
        return signals.tone(frequencies[0], seconds, rate)
    count = int(round(seconds * rate))
    amplitude = signals.TONE_AMPLITUDE / len(frequencies)
    steps = [2 * math.pi * f / rate for f in frequencies]
    samples = [int(sum(amplitude * math.sin(step * i) for step in steps)) for i in range(count)]
    return signals.pcm(samples)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
