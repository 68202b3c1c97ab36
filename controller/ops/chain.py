"""The whole chain, end to end: a short test call made by the switch itself, streamed to the recorder exactly as
a real call's stream, checked where it arrives, then ended and its recording removed.

One function, ``run_for_rules``, serves both places it runs, with each format's full stream settings (mix, rate,
buffer_ms, heartbeat, deflate, metadata, as the first enabled rule of that format has them): the doctor (its own
Event Socket connection and its own recorder on the configured address) and the running controller (``POST
/doctor/chain`` on its HTTP listener, with its own Event Socket, recorder and registry, when the doctor finds it
holding the recorder's port). In the controller, ``ControllerChainTest`` runs one test at a time and holds one of
limits.max_streams' slots while it runs.

Per stream format (mix, rate) three steps, each a ``Step``:

- ``stream <mix>/<rate>``: the switch originates a call to mod_loopback's null endpoint (nothing rings anywhere)
  that plays a tone, and streams it with the very commands the controller sends (``audio_stream.start_commands``)
  to ``public_url``; ok once ``mod_audio_stream::connect`` came and the recorder holds the connection.
- ``audio <mix>/<rate>``: bytes arrive at rate x 2 x channels per second, within 10 %, measured at the recorder.
- ``cleanup <mix>/<rate>``: the stream stopped, the call killed, the test recording removed (announced with
  ``discard=True``, the recorder deletes its files once it is finalised).

Why the test call plays ONE long tone, not ``tone_stream://%(1000,0,440);loops=-1``: originate cuts an
application's argument at its first ')' (mod_commands originate_function, ``strchr(app_name, ')')``), so
``;loops=-1`` never reaches the file: the 1 s tone plays once and the call hangs up. A tone as long as the test
needs (teletone reads the spec without its ')' just the same) also ends the call by itself if we die midway.

The JSON form of the steps (``POST /doctor/chain`` answers it; ``to_json``/``from_json``)::

    {"steps": [{"name": "stream mono/8000", "ok": true, "detail": "...", "fix": ""}, ...]}

``ok`` is true, false, or null for a step that was skipped (``detail`` says why); ``fix`` is what to do when it
failed ("" otherwise). The request body is optional: ``{"seconds": 2.0}`` (how long to measure, from
MIN_SECONDS to MAX_SECONDS; ``seconds_of`` reads it).
"""

from __future__ import annotations

import json
import math
import secrets
import time
import uuid as uuid_module
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import gevent
from gevent.event import Event

from .. import audio_stream
from ..esl.client import api, bgapi
from ..recorder.recording import StreamSpec
from ..recorder.sidecar import sidecar_path_for
from ..recorder.wav import PART_SUFFIX

# The test call's channel variable: how anything watching the switch (the controller, a log) tells it apart.
TEST_CALL_VARIABLE = "fsctl_test_call"
TOLERANCE = 0.10  # the byte rate may differ from rate x 2 x channels by this much
MIN_FRAMES_MEASURED = 20  # the measuring window holds at least this many frames, so a frame's step is < 5 %

ORIGINATE_TIMEOUT_S = 10.0  # the null endpoint answers at once; a busy switch may take a moment
CONNECT_WAIT_S = 5.0  # the module reports ::connect within ms, or ::error after its 1 s handshake timeout
RECORDER_WAIT_S = 3.0  # from ::connect until the recorder holds the connection
FIRST_AUDIO_WAIT_S = 3.0
HANGUP_WAIT_S = 5.0
REMOVE_WAIT_S = 5.0
POLL_S = 0.02
TONE_MARGIN_S = 30.0  # the tone outlasts the test by this much, and no more: the call then ends by itself
# How long each format's audio is measured: the doctor's default, and what a request may ask for.
DEFAULT_SECONDS = 2.0
MIN_SECONDS, MAX_SECONDS = 0.5, 10.0


@dataclass
class Step:
    """One line of the doctor's report."""

    name: str
    ok: bool | None  # None: skipped, `detail` says why
    detail: str
    fix: str = ""

    @property
    def line(self) -> str:
        if self.ok is None:
            return f"skip {self.name}: {self.detail}"
        if self.ok:
            return f"ok   {self.name}: {self.detail}"
        return f"FAIL {self.name}: {self.detail}" + (f"; {self.fix}" if self.fix else "")


def to_json(steps: Iterable[Step]) -> dict:
    return {"steps": [asdict(step) for step in steps]}


def from_json(document: Any) -> list[Step]:
    """The steps of a ``POST /doctor/chain`` answer; ValueError says what is wrong with it."""
    if not isinstance(document, Mapping) or not isinstance(document.get("steps"), list):
        raise ValueError('the answer is not {"steps": [...]}')
    steps = []
    for item in document["steps"]:
        if (not isinstance(item, Mapping) or not isinstance(item.get("name"), str)
                or item.get("ok") not in (True, False, None) or not isinstance(item.get("detail"), str)):
            raise ValueError(f"a step is not {{name, ok, detail, fix}}: {str(item)[:200]}")
        steps.append(Step(item["name"], item["ok"], item["detail"], str(item.get("fix") or "")))
    return steps


def seconds_of(document: Any) -> float:
    """The measuring time a ``POST /doctor/chain`` body asks for (DEFAULT_SECONDS when it says none);
    ValueError says what is wrong with it."""
    if document is None:
        return DEFAULT_SECONDS
    if not isinstance(document, Mapping):
        raise ValueError('the body is not a JSON object such as {"seconds": 2}')
    unknown = sorted(str(key) for key in document if key != "seconds")
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in the body; the only key is seconds")
    value = document.get("seconds", DEFAULT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"seconds must be a number, got {json.dumps(value)[:40]}")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(f"seconds: {value:g} is outside {MIN_SECONDS:g}..{MAX_SECONDS:g}")
    return float(value)


@dataclass(frozen=True)
class Format:
    """What the test stream is started with: a rule's stream settings (``start_commands`` reads these)."""

    mix: str
    rate: int
    buffer_ms: int = 20
    heartbeat_s: int = 0
    deflate: bool = False
    metadata: Mapping[str, Any] | None = None
    name: str = "doctor"

    @property
    def label(self) -> str:
        return f"{self.mix}/{self.rate}"

    @property
    def channels(self) -> int:
        return 2 if self.mix == "stereo" else 1

    @property
    def byte_rate(self) -> int:
        return self.rate * 2 * self.channels


def formats_of(rules: Iterable[Any]) -> list[Format]:
    """One test per distinct (mix, rate) of the enabled rules, with the first such rule's settings."""
    seen: dict[tuple[str, int], Format] = {}
    for rule in rules:
        if getattr(rule, "enabled", True) and (rule.mix, rule.rate) not in seen:
            seen[(rule.mix, rule.rate)] = _format(rule)
    return list(seen.values())


def _format(item: Any) -> Format:
    if isinstance(item, Format):
        return item
    if isinstance(item, tuple):  # (mix, rate): the defaults a rule has
        mix, rate = item
        return Format(mix, rate)
    return Format(item.mix, item.rate, item.buffer_ms, item.heartbeat_s, item.deflate, item.metadata, item.name)


def measuring_window_s(fmt: Format, seconds: float) -> float:
    return max(seconds, MIN_FRAMES_MEASURED * fmt.buffer_ms / 1000)


def originate_command(channel_uuid: str, tone_s: float) -> str:
    """The switch calls itself: mod_loopback's null endpoint answers at once and rings nothing; the tone is
    written to the call all along, so mixed and stereo streams carry audio too (they send only what plays)."""
    tone_ms = int(tone_s * 1000)
    return (f"originate {{origination_uuid={channel_uuid},{TEST_CALL_VARIABLE}=true}}null/any "
            f"&playback(tone_stream://%({tone_ms},0,440))")


def run_for_rules(esl, recorder, registry, public_url: str, rules: Iterable[Any], *,
                  seconds: float = DEFAULT_SECONDS, token: str | None = None,
                  on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """The chain test for a configuration's rules, wherever it runs (the doctor's recorder or the controller's):
    one test per stream format of the enabled rules (``formats_of``), or one skipped ``chain`` step when no rule
    is enabled."""
    formats = formats_of(rules)
    if not formats:
        step = Step("chain", None, "no enabled rule: nothing to stream")
        if on_step is not None:
            on_step(step)
        return [step]
    return run_chain_test(esl, recorder, registry, public_url, formats, seconds=seconds, token=token,
                          on_step=on_step)


class Refused(Exception):
    """The running controller will not run a test call now: ``status`` (an HTTP status code) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class ControllerChainTest:
    """The chain test as the running controller runs it (``POST /doctor/chain``), with its own Event Socket,
    recorder and rules: one test at a time (another is refused, 409), and only with a stream slot free under
    limits.max_streams (else refused, 503), which the test holds until it ends, so that real calls see it."""

    def __init__(self, controller, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.controller = controller
        self.clock = clock
        self.running_since: float | None = None

    def __call__(self, seconds: float = DEFAULT_SECONDS) -> dict:
        if self.running_since is not None:
            raise Refused(409, f"a test call is already running (for {self.clock() - self.running_since:.0f} s); "
                               "one runs at a time: try again when it has ended")
        book = self.controller.calls
        full = book.streams_full()
        if full:
            raise Refused(503, f"no stream is free for a test call: {full} (limits.max_streams); a test call "
                               "would take a real call's stream: try again when fewer calls stream")
        # Nothing yields between the checks and here: a second request cannot slip in between (one thread).
        self.running_since = self.clock()
        book.reserved += 1
        try:
            c = self.controller
            steps = run_for_rules(c.esl, c.recorder, c.registry, c.public_url, c.config.rules, seconds=seconds,
                                  token=c.config.recorder.token)
        finally:
            book.reserved -= 1
            self.running_since = None
        return to_json(steps)


def run_chain_test(esl, recorder, registry, public_url: str, formats: Sequence[Any], *,
                   seconds: float = DEFAULT_SECONDS, token: str | None = None,
                   on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Test each format in turn (see the module docstring); `formats`: rules, Formats or (mix, rate) pairs.

    esl: a connected and subscribed EventSocketClient; recorder/registry: a started RecorderServer and the
    RecordingRegistry it admits streams from; token: the fixed stream token if the configuration has one.
    on_step: told each step as soon as it is decided (the doctor prints as it goes).
    """
    steps: list[Step] = []

    def report(step: Step) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    for item in formats:
        _ChainRun(esl, recorder, registry, public_url, _format(item), seconds, token, report).run()
    return steps


class _ChainRun:
    """One format's test call, from originate to the removed recording."""

    def __init__(self, esl, recorder, registry, public_url: str, fmt: Format, seconds: float, token: str | None,
                 report: Callable[[Step], None]) -> None:
        self.esl, self.recorder, self.registry = esl, recorder, registry
        self.public_url = public_url
        self.fmt = fmt
        self.window_s = measuring_window_s(fmt, seconds)
        self.token = token or secrets.token_urlsafe(24)
        self.report = report
        self.uuid = str(uuid_module.uuid4())
        self.url = ""
        self.connected, self.errored, self.disconnected, self.hung_up = Event(), Event(), Event(), Event()
        self.error_body = self.disconnect_body = self.hangup_cause = ""
        self.path: str | None = None
        self.call_made = False
        self.originate_unanswered = False  # the switch may have made the call all the same
        self._handlers = {
            "mod_audio_stream::connect": self._on_connect,
            "mod_audio_stream::error": self._on_error,
            "mod_audio_stream::disconnect": self._on_disconnect,
            "CHANNEL_HANGUP_COMPLETE": self._on_hangup,
        }

    def name(self, what: str) -> str:
        return f"{what} {self.fmt.label}"

    # ---- the run ----

    def run(self) -> None:
        for key, handler in self._handlers.items():
            self.esl.register_handle(key, handler)
        try:
            streaming = self._stream()
            if streaming:
                self._measure()
            else:
                self.report(Step(self.name("audio"), None, "needs the stream"))
        finally:
            try:
                self.report(self._cleanup())
            finally:
                self.registry.forget(self.uuid)
                for key, handler in self._handlers.items():
                    self.esl.unregister_handle(key, handler)

    def _stream(self) -> bool:
        name = self.name("stream")
        try:
            self.url, commands = audio_stream.start_commands(self.uuid, self.uuid, self.fmt, self.token,
                                                             self.public_url)
        except ValueError as exc:
            self.report(Step(name, False, f"cannot build the start command: {exc}",
                             "fix recorder.public_url or this rule's settings"))
            return False
        # Announced before the call exists: the controller, seeing its answer, knows it for a test call.
        self.registry.expect(StreamSpec(uuid=self.uuid, token=self.token, rate=self.fmt.rate,
                                        channels=self.fmt.channels, destination="any", rule_name="doctor",
                                        heartbeat_s=self.fmt.heartbeat_s, discard=True))
        tone_s = self.window_s + TONE_MARGIN_S
        try:
            reply = self.esl.bgapi(originate_command(self.uuid, tone_s), timeout=ORIGINATE_TIMEOUT_S).strip()
        except Exception as exc:  # timeout, connection lost, bgapi refused: no answer, so maybe a call
            self.originate_unanswered = True
            self.report(Step(name, False, f"no answer to originate: {exc}", "check the Event Socket connection"))
            return False
        if not reply.startswith("+OK"):
            self.report(Step(name, False, f"the switch could not make the test call: {reply}",
                             _originate_fix(reply)))
            return False
        self.call_made = True
        results = self.esl.run_in_order([api(text) if kind == "api" else bgapi(text) for kind, text in commands])
        setvar, start = (_text(result) for result in results)
        if not setvar.startswith("+OK"):
            self.report(Step(name, False, f"uuid_setvar_multi on the test call answered {setvar}",
                             "see the FreeSWITCH log for the test call"))
            return False
        if not start.startswith("+OK"):
            self.report(Step(name, False, f"uuid_audio_stream start answered {start}", _start_fix(start)))
            return False
        gevent.wait([self.connected, self.errored, self.disconnected, self.hung_up], timeout=CONNECT_WAIT_S,
                    count=1)
        if not self.connected.is_set():
            self.report(self._no_connect(name))
            return False
        if not _poll(lambda: self._stats() is not None, RECORDER_WAIT_S):
            self.report(Step(name, False, f"the switch connected to {self.url} but this recorder saw no connection",
                             "public_url reaches a different server: point recorder.public_url at this recorder, "
                             "as the switch reaches it"))
            return False
        self.report(Step(name, True, f"the switch reached the recorder at {self.url.split('/calls/', 1)[0]} "
                                     f"(test call {self.uuid})"))
        return True

    def _measure(self) -> None:
        name = self.name("audio")
        expected = self.fmt.byte_rate
        if not _poll(lambda: _arrived(self._stats()) > 0, FIRST_AUDIO_WAIT_S):
            self.report(Step(name, False, f"no audio arrived within {FIRST_AUDIO_WAIT_S:g} s of the connection",
                             self._trouble() or "see the FreeSWITCH log for the test call"))
            return
        start_bytes, start_at = _arrived(self._stats()), time.monotonic()
        # The measurement itself takes this long; the wait ends early only if the stream or the call does.
        gevent.wait([self.errored, self.disconnected, self.hung_up], timeout=self.window_s, count=1)
        stats = self._stats()
        trouble = self._trouble()
        if trouble or stats is None:
            self.report(Step(name, False, "the stream ended while it was measured",
                             trouble or "see the FreeSWITCH log for the test call"))
            return
        measured = (_arrived(stats) - start_bytes) / (time.monotonic() - start_at)
        what = f"{self.fmt.rate} Hz x 2 B x {self.fmt.channels} channel{'s' if self.fmt.channels > 1 else ''}"
        if abs(measured - expected) <= TOLERANCE * expected:
            self.report(Step(name, True, f"{measured:,.0f} B/s arrived, {expected:,} B/s expected ({what})"))
            return
        implied = measured / (2 * self.fmt.channels)
        self.report(Step(
            name, False,
            f"{measured:,.0f} B/s arrived, {expected:,} B/s expected ({what}): a sample-rate mismatch, the module "
            f"sends about {_likely_rate(implied):,} Hz",
            f"the WAV header says {self.fmt.rate} Hz, so such a recording plays at the wrong speed: make the module "
            f"stream the rate it is asked for (update mod_audio_stream), or set the rule's rate to what it sends"))

    def _cleanup(self) -> Step:
        name = self.name("cleanup")
        if not self.call_made:
            if self.originate_unanswered:
                _try(lambda: self.esl.api(f"uuid_kill {self.uuid}"))  # in case it came up after all
            return Step(name, None, "no test call was made")
        problems = []
        stopped = _text(_try(lambda: self.esl.api(audio_stream.stop_command(self.uuid))))
        # After a refusal or an error the module has detached the stream itself: -ERR is fine then.
        if not stopped.startswith("+OK") and self.connected.is_set() and not self.errored.is_set():
            problems.append(f"uuid_audio_stream stop answered {stopped}")
        if not self.hung_up.is_set():
            killed = _text(_try(lambda: self.esl.api(f"uuid_kill {self.uuid}")))
            if not killed.startswith("+OK") and not self.hung_up.is_set():
                problems.append(f"uuid_kill answered {killed}")
            if not self.hung_up.wait(HANGUP_WAIT_S):
                problems.append(f"the test call did not hang up within {HANGUP_WAIT_S:g} s")
        self.recorder.end_call(self.uuid)
        if not _poll(self._removed, REMOVE_WAIT_S):
            problems.append(f"the test recording {self.path} was not removed within {REMOVE_WAIT_S:g} s")
        if problems:
            return Step(name, False, "; ".join(problems),
                        f"end the test call by hand if it is still up (fs_cli: uuid_kill {self.uuid})")
        removed = "its recording removed" if self.path else "nothing recorded"
        return Step(name, True, f"stream stopped, test call hung up, {removed}")

    # ---- what the switch and the recorder say ----

    def _stats(self) -> dict | None:
        stats = self.recorder.live_stats().get(self.uuid)
        if stats is not None:
            self.path = stats.get("path") or self.path
        return stats

    def _removed(self) -> bool:
        if self.uuid in self.recorder.live_stats():
            return False
        if not self.path:
            return True
        final = Path(self.path)
        return not any(p.exists() for p in (final, final.with_name(final.name + PART_SUFFIX),
                                            sidecar_path_for(final)))

    def _mine(self, event) -> bool:
        return event.uuid == self.uuid

    def _on_connect(self, event) -> None:
        if self._mine(event):
            self.connected.set()

    def _on_error(self, event) -> None:
        if self._mine(event):
            self.error_body = event.body
            self.errored.set()

    def _on_disconnect(self, event) -> None:
        if self._mine(event):
            self.disconnect_body = event.body
            self.disconnected.set()

    def _on_hangup(self, event) -> None:
        if self._mine(event):
            self.hangup_cause = event.get("Hangup-Cause") or event.get("variable_hangup_cause")
            self.hung_up.set()

    def _trouble(self) -> str:
        """What went wrong with the stream or the call, as far as the switch said; "" when nothing."""
        if self.errored.is_set():
            return _error_step(self.error_body, self.url)[0]
        if self.disconnected.is_set():
            code, reason = _message(self.disconnect_body, "reason")
            return f"the recorder closed the stream ({code} {reason})".strip()
        if self.hung_up.is_set():
            return f"the test call hung up ({self.hangup_cause or 'no cause given'})"
        return ""

    def _no_connect(self, name: str) -> Step:
        if self.errored.is_set():
            detail, fix = _error_step(self.error_body, self.url)
            return Step(name, False, detail, fix)
        if self.disconnected.is_set():
            code, reason = _message(self.disconnect_body, "reason")
            return Step(name, False, f"the server at {self.url} closed the stream at once ({code} {reason})",
                        "see the recorder's log: it names why it refused the stream")
        if self.hung_up.is_set():
            return Step(name, False, f"the test call hung up before its stream connected "
                                     f"({self.hangup_cause or 'no cause given'})",
                        "see the FreeSWITCH log for the test call")
        return Step(name, False, f"neither mod_audio_stream::connect nor ::error within {CONNECT_WAIT_S:g} s",
                    "see the FreeSWITCH log: the module may be stuck; restart FreeSWITCH if it persists")


def _error_step(body: str, url: str) -> tuple[str, str]:
    """(what is wrong, what to do) for a mod_audio_stream::error body."""
    code, error = _message(body, "error")
    where = url.split("/calls/", 1)[0]
    said = f"mod_audio_stream::error {code} {error!r}"
    if code == 6 and "refused" in error.lower():
        return (f"the switch cannot reach the recorder at {where}: connection refused ({said})",
                "nothing listens there as the switch sees it: check that recorder.public_url names this "
                "host and port as the switch reaches them, that the recorder listens on "
                "listen_host:listen_port, and firewalls between the two")
    if code == 6:
        return (f"something at {where} answered but refused the WebSocket upgrade ({said})",
                "public_url reaches a different server (or a proxy that does not pass WebSocket upgrades): "
                "point recorder.public_url at this recorder")
    if code == 10:
        return (f"something at {where} accepted the connection but never answered the upgrade ({said})",
                "a TLS/ws mismatch (wss:// to a plain port or ws:// to a TLS one) or a proxy holding the request: "
                "check the scheme and port in recorder.public_url")
    return (f"the stream to {where} failed ({said})", "see the FreeSWITCH log for the test call")


def _message(body: str, field: str) -> tuple[int | str, str]:
    """(code, text) from the module's {"status":..,"message":{"code":N,"<field>":".."}} body."""
    try:
        message = json.loads(body)["message"]
        return message.get("code", ""), str(message.get(field, ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", body.strip()


def _originate_fix(reply: str) -> str:
    if "CHAN_NOT_IMPLEMENTED" in reply:
        return ("the test call uses mod_loopback's null endpoint: at fs_cli `load mod_loopback`, and add "
                '<load module="mod_loopback"/> to modules.conf.xml')
    return "see the FreeSWITCH log for the originate"


def _start_fix(reply: str) -> str:
    if "Command not found" in reply:
        return "mod_audio_stream is not loaded: at fs_cli `load mod_audio_stream`"
    if "Operation Failed" in reply:
        return ("the module refused the URL or the rate (see the FreeSWITCH log), or the module's free build "
                "already streams its 10 channels")
    return "see the FreeSWITCH log for the test call"


def _likely_rate(implied: float) -> int:
    """The usual sample rate nearest a measured one (within the tolerance), else the measurement, rounded."""
    usual = min((8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000), key=lambda rate: abs(rate - implied))
    return usual if abs(usual - implied) <= TOLERANCE * usual else int(round(implied, -2))


def _arrived(stats: dict | None) -> int:
    """Audio bytes that came from the switch. Not `bytes`: that includes the silence the recorder writes for a
    stream running late, which would hide a stream slower than its rate."""
    if stats is None:
        return 0
    for key in ("arrived_bytes", "received_bytes", "bytes"):
        if key in stats:
            return int(stats[key])
    return 0


def _text(result: Any) -> str:
    if isinstance(result, BaseException):
        return f"an error ({result})"
    return str(result).strip()


def _try(command: Callable[[], str]) -> str | Exception:
    try:
        return command()
    except Exception as exc:  # reported as the step's problem; cleanup goes on regardless
        return exc


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` became true within `timeout` (checked every POLL_S: recorder state has no event)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(POLL_S)
    return True
