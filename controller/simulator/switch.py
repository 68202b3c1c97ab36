"""The simulated switch: live channels, api commands, event firing, and the fault knobs.

See the package docstring (controller/simulator/__init__.py) for how to use it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid as uuid_module
from collections import deque
from typing import Callable, Iterable

import gevent
from gevent.event import Event

from . import audio_stream_rules as rules
from . import channel_events as ce
from . import originate_rules
from . import playback_rules
from . import signals
from .audio_stream import AudioStreamModule
from .channels import SimCall
from .esl_server import EslConnection, EslServer, SwitchEvent
from .media import CallMedia, Playback
from .playback import BROADCAST_GAP_DEFAULT_PLAN, BROADCAST_GAPS_S, BROADCAST_START_DELAY_S, PlaybackModule
from .ws_client import CLOSE_WAIT_S, SimStream

log = logging.getLogger("controller.simulator")

DEFAULT_DURATION_S = 5.0
PROMPT_S = 2.0
TONE_HZ = 800
DEFAULT_PLAYS = "like-9999"  # answer, 0.5 s silence, 0.5 s tone, then a prompt
# place_call's app: what the dialplan runs once the call is answered (application, its data).
CALL_APPS = {
    "sleep": ("sleep", None),  # sleep for duration_s (the data), then hang up; a break ends the sleep
    "park": ("park", ""),  # nothing is written to the channel: mixed and stereo streams carry nothing
    "endless_silence": ("endless_playback", "silence_stream://-1"),  # silence written all the while
}
SHOW_USAGE = (
    "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels [count|like "
    "<match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|aliases|complete|chat|"
    "management|modules|nat_map|say|interfaces|interface_types|tasks|limits|status\n"
)
KNOWN_MODULES = frozenset({"mod_audio_stream", "mod_event_socket", "mod_sofia", "mod_commands", "mod_dptools",
                           "mod_loopback", "mod_tone_stream"})
# `show api`: each api the simulator has, as its module registers it (name: description, syntax, module).
API_INTERFACES = {
    "break": ("uuid_break", playback_rules.BREAK_SYNTAX, "mod_commands"),
    "echo": ("Echo", "<data>", "mod_commands"),
    "hostname": ("Return the system hostname", "", "mod_commands"),
    "module_exists": ("Check if module exists", "<module>", "mod_commands"),
    "originate": ("Originate a call", originate_rules.ORIGINATE_SYNTAX, "mod_commands"),
    "show": ("Show various reports", SHOW_USAGE[len("-USAGE: "):-1], "mod_commands"),
    "status": ("Show current status", "", "mod_commands"),
    "uuid_audio_stream": ("audio_stream API", rules.USAGE_SYNTAX, "mod_audio_stream"),
    "uuid_break": ("Break out of media sent to channel", playback_rules.BREAK_SYNTAX, "mod_commands"),
    "uuid_broadcast": ("Execute dialplan application", playback_rules.BROADCAST_SYNTAX, "mod_commands"),
    "uuid_exists": ("Check if a uuid exists", "<uuid>", "mod_commands"),
    "uuid_getvar": ("Get a variable from a channel", "<uuid> <var>", "mod_commands"),
    "uuid_kill": ("Kill channel", "<uuid> [cause]", "mod_commands"),
    "uuid_setvar": ("Set a variable", "<uuid> <var> [value]", "mod_commands"),
    "uuid_setvar_multi": ("Set multiple variables", "<uuid> <var>=<value>;<var>=<value>...", "mod_commands"),
    "version": ("Version", "[short]", "mod_commands"),
}
# A playback that never ends by itself (loops=-1, endless_playback) lasts this long in the media model.
FOREVER_S = 7 * 86400.0
NO_SUCH_CHANNEL = "-ERR No such channel!\n"
# mod_commands' SETVAR_MULTI_SYNTAX; its argv holds 64 entries.
SETVAR_MULTI_USAGE = "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
SETVAR_MULTI_MAX = 64
# switch_strip_whitespace: what switch_api_execute trims from both ends of an api's arguments.
API_WHITESPACE = " \t\r\n\v"
FIRED_EVENTS_KEPT = 10_000
HEARTBEAT_INTERVAL_S = 20.0  # switch.conf.xml event-heartbeat-interval's default
FIRST_SEQUENCE = 500


def _refers_to_a_variable(value: str) -> bool:
    """switch_string_var_check_const: "${" (backslashes allowed between) marks a value FreeSWITCH will not set."""
    dollar = False
    for char in value:
        if char == "$":
            dollar = True
        elif dollar:
            if char == "{":
                return True
            if char != "\\":
                dollar = False
    return False


class Simulator:
    """A FreeSWITCH 1.10.12 + mod_audio_stream stand-in on real sockets (see the package docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        esl_port: int = 0,
        password: str = "ClueCon",
        *,
        hostname: str = "freeswitch-sim",
        reject_acl: bool = False,
        silent_accept: bool = False,
        heartbeat_interval_s: float | None = HEARTBEAT_INTERVAL_S,
        temp_dir: str | os.PathLike | None = None,
        broadcast_start_delay_s: float = BROADCAST_START_DELAY_S,
        broadcast_gap_s: float | None = None,
        broadcast_gaps_s: dict[str, float] | None = None,
    ):
        """heartbeat_interval_s: fire HEARTBEAT this often while running (None or 0: never).
        temp_dir: SWITCH_GLOBAL_dirs.temp_dir, where mod_audio_stream writes the audio a server streams back
        (default: the system's temporary directory).
        broadcast_start_delay_s: uuid_broadcast -> the broadcast's first frame heard (measured: 0.13 s; on a
        20 ms tick, PLAYBACK_START at the tick before).
        broadcast_gaps_s: the hole between two queued broadcasts, by the application the channel runs
        (measured: endless_playback 0.10 s, park 0.18 s; see playback.BROADCAST_GAPS_S), merged over those;
        broadcast_gap_s: one hole for every application instead (None: per application).
        All settable while running (sim.broadcast_gaps_s["park"] = 0.1)."""
        self.host = host
        self.password = password
        self.identity = ce.SwitchIdentity(core_uuid=self.new_uuid(), hostname=hostname)
        self.audio_stream = AudioStreamModule(self)
        self.playback = PlaybackModule(self)
        self.temp_dir = os.fspath(temp_dir) if temp_dir is not None else tempfile.gettempdir()
        self.broadcast_start_delay_s = broadcast_start_delay_s
        self.broadcast_gap_s = broadcast_gap_s
        self.broadcast_gaps_s = {**BROADCAST_GAPS_S, **(broadcast_gaps_s or {})}
        self.calls: dict[str, SimCall] = {}  # live channels by uuid
        self.all_calls: list[SimCall] = []
        self.all_connections: list[EslConnection] = []
        self.received_commands: list[str] = []
        self.fired_events: deque[SwitchEvent] = deque(maxlen=FIRED_EVENTS_KEPT)
        self._port = esl_port
        self._reject_acl = reject_acl
        self._silent_accept = silent_accept
        self._reply_delay_s = 0.0
        self._handshake_delay_s = 0.0
        self._esl: EslServer | None = None
        self._command_arrived = Event()
        self._heartbeat_interval_s = self._check_interval(heartbeat_interval_s)
        self._heartbeat: gevent.Greenlet | None = None
        self._sequence = FIRST_SEQUENCE
        self._started_us = ce.now_us()
        self._sessions = 0
        self._peak = 0
        # Fault knobs for the module (see the package docstring).
        self.audio_stream_loaded = True
        self.module_stream_rate: int | None = None

    # ---- running ----

    def start(self) -> Simulator:
        if self._esl is not None:
            raise RuntimeError("the simulator is already running")
        self._esl = EslServer(self, self.host, self._port, self.password)
        self._esl.reject_acl = self._reject_acl
        self._esl.silent_accept = self._silent_accept
        self._esl.reply_delay_s = self._reply_delay_s
        self._esl.handshake_delay_s = self._handshake_delay_s
        self._esl.start()
        self._port = self._esl.port
        self._started_us = ce.now_us()
        if self._heartbeat is None:  # an event-socket-only restart keeps the core's timer
            self._start_heartbeat()
        log.info("event socket listening on %s:%d", self.host, self._port)
        return self

    @property
    def esl_port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._esl is not None

    def stop(self) -> None:
        """Shut down like FreeSWITCH: hang up every call, SHUTDOWN and MODULE_UNLOAD events, then
        `The system is being shut down.` to every connection, and close everything."""
        if self._esl is None:
            return
        self._stop_heartbeat()
        self._hang_up_all("SYSTEM_SHUTDOWN")
        self.audio_stream.shutdown()
        self.fire(ce.event_headers(self.identity, "SHUTDOWN", self._next_sequence(), ce.now_us())
                  + [("Event-Info", "System Shutting Down")])
        self.fire(ce.event_headers(self.identity, "MODULE_UNLOAD", self._next_sequence(), ce.now_us())
                  + ce.module_unload_headers())
        esl, self._esl = self._esl, None
        esl.stop()
        gevent.wait([s.ended for s in self.audio_stream.streams], timeout=CLOSE_WAIT_S + 0.5)
        log.info("stopped")

    def restart(self, keep_calls: bool = False) -> None:
        """Go away and come back on the same port. keep_calls=False: a real restart (calls end, new
        Core-UUID); keep_calls=True: only the event socket restarts, calls and streams go on."""
        if keep_calls and self._esl is not None:
            esl, self._esl = self._esl, None
            esl.stop()
        else:
            self.stop()
            self.identity = ce.SwitchIdentity(core_uuid=self.new_uuid(), hostname=self.identity.hostname)
        self.start()

    def crash(self) -> None:
        """FreeSWITCH killed (SIGKILL): everything ends at once as the kernel ends a dead process's sockets.

        Every Event Socket connection and every module WebSocket closes (FIN, or RST when data was unread)
        with no disconnect notice, no hangup or module event and no WebSocket close frame; every call
        vanishes (call.vanished); nothing listens on the Event Socket port. start() later brings up a new
        process on the same port: a new Core-UUID, no calls, counters from zero.
        """
        if self._esl is None:
            raise RuntimeError("the simulator is not running")
        log.warning("crashed: every connection and every call ends with no notice")
        # Nothing below yields until every socket is closed, so no greenlet can send in between.
        esl, self._esl = self._esl, None
        self._stop_heartbeat()
        for stream in self.audio_stream.streams:
            stream.crash()
        for call in list(self.calls.values()):
            call.vanish()
        self.calls.clear()
        esl.crash()
        self.identity = ce.SwitchIdentity(core_uuid=self.new_uuid(), hostname=self.identity.hostname)
        self._sequence = FIRST_SEQUENCE
        self._sessions = 0
        self._peak = 0

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- calls ----

    def place_call(
        self,
        destination: str,
        caller_id_number: str = "1000",
        caller_id_name: str | None = None,
        context: str = "default",
        *,
        speech: bytes | str | os.PathLike | None = None,
        duration_s: float | None = None,
        plays: Iterable | str = DEFAULT_PLAYS,
        bridge_to: str | None = None,
        answer: bool = True,
        auto_hangup: bool = True,
        codec_rate: int = 8000,
        variables: dict[str, str] | None = None,
        frame_sizes: list[int] | None = None,
        odd_frames: bool = False,
        uuid: str | None = None,
        app: str = "sleep",
    ) -> SimCall:
        """An inbound call to `destination`; returns its A-leg at once (CHANNEL_CREATE already fired).

        speech: the caller's audio from the answer on: s16le mono PCM at codec_rate, a WAV path, or
            None for a generated voice-like signal. After it ends the caller is silent.
        duration_s: from answer to hangup (default: the speech's length, else 5 s).
        plays: windows where the switch writes audio to the caller, (start_s, end_s) or
            (start_s, end_s, pcm); the default is extension 9999's: an 800 Hz tone from 0.5 to 1.0 s,
            then a 2 s prompt. Mixed and stereo streams carry audio only inside these windows.
        bridge_to: also create an outbound B-leg (dialled as this), which answers before the A-leg.
        answer / auto_hangup: False leaves answering / hanging up to call.answer() / call.hangup().
        variables: channel variables set before the call is answered (e.g. STREAM_BUFFER_SIZE).
        frame_sizes / odd_frames: streams on this call re-cut their audio into frames of these sizes
            (cycled) / of one byte more, then one byte less than the buffer: the same total audio.
        uuid: the A-leg's channel uuid, as `originate {origination_uuid=...}` gives it (taken as written,
            upper case included: FreeSWITCH finds a channel by the exact string).
        app: what the dialplan runs once answered. "sleep" (9999's: sleep for duration_s, then hang up; a
            uuid_break ends the sleep), "park" (the call stays until the caller hangs up after duration_s;
            no play windows unless given), "endless_silence" (endless_playback silence_stream://-1: silence is
            written whenever nothing else plays, so mixed and stereo streams flow for the whole call; a break
            stops only the broadcast). With auto_hangup=False the call stays up whatever the app.
        """
        if uuid is not None:
            if not uuid or any(char.isspace() for char in uuid):
                raise ValueError(f"uuid must be a non-empty string without spaces; got {uuid!r}")
            if uuid in self.calls:
                raise ValueError(f"a live channel already has uuid {uuid}")
        if codec_rate not in ce.CODECS:
            raise ValueError(f"codec_rate must be one of {sorted(ce.CODECS)}; got {codec_rate}")
        if not destination:
            raise ValueError("destination must not be empty")
        if app not in CALL_APPS:
            raise ValueError(f"app must be one of {', '.join(CALL_APPS)}; got {app!r}")
        if app != "sleep" and isinstance(plays, str) and plays == DEFAULT_PLAYS:
            plays = None  # 9999's tone and prompt come with its sleep
        speech_pcm = self._speech(speech, codec_rate, duration_s)
        if duration_s is None:
            duration_s = len(speech_pcm) / (codec_rate * signals.SAMPLE_BYTES) if speech is not None else DEFAULT_DURATION_S
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive; got {duration_s}")
        media = CallMedia(codec_rate, speech_pcm, self._playbacks(plays, codec_rate),
                          idle_silence=app == "endless_silence")
        call = SimCall(
            self,
            destination=destination,
            caller_id_number=caller_id_number,
            caller_id_name=caller_id_name if caller_id_name is not None else caller_id_number,
            context=context,
            media=media,
            frame_sizes=frame_sizes,
            odd_frames=odd_frames,
            uuid=uuid,
        )
        call.hold_ms = int(duration_s * 1000)
        call.plan, plan_data = CALL_APPS[app]
        call.plan_data = plan_data if plan_data is not None else str(call.hold_ms)
        call.set_variables(**(variables or {}))
        self._add_call(call)
        if bridge_to is not None:
            callee_speech = signals.speech_like(duration_s, codec_rate, seed=2)
            b_leg = SimCall(
                self,
                destination=destination,
                caller_id_number=caller_id_number,
                caller_id_name=call.caller_id_name,
                context=context,
                media=CallMedia(codec_rate, callee_speech),
                direction="outbound",
                a_leg=call,
                dial_target=bridge_to,
            )
            call.b_leg = b_leg
            self._add_call(b_leg)
        gevent.spawn(call.run, answer, duration_s, auto_hangup)
        return call

    def _add_call(self, call: SimCall) -> None:
        self.calls[call.uuid] = call
        self.all_calls.append(call)
        self._sessions += 1
        self._peak = max(self._peak, len(self.calls))
        log.info("new channel %s", call)
        self.fire_channel_event(call, "CHANNEL_CREATE", "created")

    @staticmethod
    def _speech(speech, codec_rate: int, duration_s: float | None) -> bytes:
        if speech is None:
            return signals.speech_like(duration_s or DEFAULT_DURATION_S, codec_rate)
        if isinstance(speech, (bytes, bytearray, memoryview)):
            pcm = bytes(speech)
            if len(pcm) % signals.SAMPLE_BYTES:
                raise ValueError(f"speech must be 16-bit PCM (an even number of bytes); got {len(pcm)} bytes")
            return pcm
        pcm, rate = signals.read_wav(speech)
        return signals.resample(pcm, rate, codec_rate)

    @staticmethod
    def _playbacks(plays, codec_rate: int) -> tuple[Playback, ...]:
        if plays == DEFAULT_PLAYS:
            return (
                Playback(0.5, 1.0, signals.tone(TONE_HZ, 0.5, codec_rate)),
                Playback(1.0, 1.0 + PROMPT_S, signals.speech_like(PROMPT_S, codec_rate, seed=7)),
            )
        if plays is None:
            return ()
        result = []
        for window in plays:
            if len(window) not in (2, 3):
                raise ValueError(f"a play window is (start_s, end_s) or (start_s, end_s, pcm); got {window!r}")
            start, end = window[0], window[1]
            if not 0 <= start < end:
                raise ValueError(f"a play window needs 0 <= start_s < end_s; got ({start}, {end})")
            audio = window[2] if len(window) == 3 else signals.tone(TONE_HZ, end - start, codec_rate)
            result.append(Playback(start, end, bytes(audio)))
        return tuple(result)

    def broadcast_gap_for(self, plan: str) -> float:
        """The hole between two queued broadcasts on a channel running `plan` (its dialplan application)."""
        if self.broadcast_gap_s is not None:
            return self.broadcast_gap_s
        gaps = self.broadcast_gaps_s
        return gaps.get(plan, gaps.get(BROADCAST_GAP_DEFAULT_PLAN, BROADCAST_GAPS_S[BROADCAST_GAP_DEFAULT_PLAN]))

    def live_call(self, uuid: str) -> SimCall | None:
        return self.calls.get(uuid)

    def forget_call(self, call: SimCall) -> None:
        self.calls.pop(call.uuid, None)

    def _hang_up_all(self, cause: str) -> None:
        for call in list(self.calls.values()):
            call.hangup(cause)

    # ---- streams ----

    @property
    def streams(self) -> list[SimStream]:
        return list(self.audio_stream.streams)

    @property
    def leaked_streams(self) -> list[SimStream]:
        return [s for s in self.audio_stream.streams if s.leaked]

    def streams_for(self, uuid: str) -> list[SimStream]:
        return [s for s in self.audio_stream.streams if s.uuid == uuid]

    # ---- events ----

    def new_uuid(self) -> str:
        return str(uuid_module.uuid4())

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def fire(self, headers: list[tuple[str, str]], body: str = "") -> SwitchEvent:
        event = SwitchEvent(headers, body)
        self.fired_events.append(event)
        if self._esl is not None:
            self._esl.deliver(event)
        return event

    def fire_heartbeat(self) -> SwitchEvent:
        """One HEARTBEAT, as the core's timer fires it every heartbeat_interval_s."""
        headers = ce.event_headers(self.identity, "HEARTBEAT", self._next_sequence(), ce.now_us())
        headers += ce.heartbeat_headers(ce.now_us() - self._started_us, self._sessions, len(self.calls), self._peak)
        return self.fire(headers)

    @property
    def heartbeat_interval_s(self) -> float | None:
        return self._heartbeat_interval_s

    @heartbeat_interval_s.setter
    def heartbeat_interval_s(self, value: float | None) -> None:
        """Takes effect at once: the next HEARTBEAT comes `value` seconds from now."""
        self._heartbeat_interval_s = self._check_interval(value)
        if self.running:
            self._start_heartbeat()

    @staticmethod
    def _check_interval(value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"heartbeat_interval_s must be positive, 0 or None; got {value}")
        return value or None

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        if self._heartbeat_interval_s:
            self._heartbeat = gevent.spawn(self._heartbeat_loop, self._heartbeat_interval_s)

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.kill(block=False)

    def _heartbeat_loop(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)  # a timer, as the core's scheduler runs it
            self.fire_heartbeat()

    def fire_channel_event(self, call: SimCall, name: str, phase: str, subclass: str | None = None,
                           body: str = "") -> SwitchEvent:
        headers = ce.channel_event(self.identity, name, self._next_sequence(), ce.now_us(), call.facts(),
                                   phase, call.variables, subclass)
        return self.fire(headers, body)

    def fire_playback_event(self, call: SimCall, name: str, extra: list[tuple[str, str]]) -> SwitchEvent:
        """PLAYBACK_START / PLAYBACK_STOP: the channel's data, then the Playback-* headers."""
        headers = ce.channel_event(self.identity, name, self._next_sequence(), ce.now_us(), call.facts(),
                                   call.phase, call.variables)
        return self.fire(headers + extra)

    def fire_custom_event(self, subclass: str, extra: list[tuple[str, str]],
                          called_from: tuple[str, str, str]) -> SwitchEvent:
        """A CUSTOM event made with switch_event_create_subclass and fired with no channel data (mod_dptools'
        filestring::*): the core headers, then `extra`."""
        headers = ce.event_headers(self.identity, "CUSTOM", self._next_sequence(), ce.now_us(), subclass,
                                   called_from)
        return self.fire(headers + extra)

    def fire_stream_event(self, call: SimCall, kind: str, body: str) -> SwitchEvent:
        log.info("%s: mod_audio_stream::%s %s", call.uuid, kind, body)
        return self.fire_channel_event(call, "CUSTOM", call.phase, f"mod_audio_stream::{kind}", body)

    # ---- api ----

    def run_api(self, command: str, args: str | None) -> str | None:
        """The text an api command answers; None when there is no such command."""
        api_event = ce.event_headers(self.identity, "API", self._next_sequence(), ce.now_us())
        api_event.append(("API-Command", command))
        if args:
            api_event.append(("API-Command-Argument", args))
        self.fire(api_event)
        handler = self._api_commands().get(command.lower())
        return handler(args or "") if handler else None

    def run_background_job(self, job_uuid: str, command: str, args: str | None) -> None:
        result = self.run_api(command, args)
        if result is None:
            result = f"-ERR {command} Command not found!\n"
        headers = ce.event_headers(self.identity, "BACKGROUND_JOB", self._next_sequence(), ce.now_us())
        headers += [("Job-UUID", job_uuid), ("Job-Command", command)]
        if args:
            headers.append(("Job-Command-Arg", args))
        self.fire(headers, result)

    def _api_commands(self) -> dict[str, Callable[[str], str]]:
        commands = {
            "status": self._api_status,
            "echo": lambda args: args,
            "version": lambda args: f"FreeSWITCH Version {ce.FREESWITCH_VERSION} ( 64bit)\n",
            "hostname": lambda args: self.identity.hostname,
            "module_exists": lambda args: "true" if args.strip() in self._modules() else "false",
            "originate": self._api_originate,
            "show": self._api_show,
            "uuid_exists": lambda args: "true" if args.strip() in self.calls else "false",
            "uuid_kill": self._api_uuid_kill,
            "uuid_setvar": self._api_uuid_setvar,
            "uuid_setvar_multi": self._api_uuid_setvar_multi,
            "uuid_getvar": self._api_uuid_getvar,
            "uuid_audio_stream": self.audio_stream.api,
            "uuid_broadcast": self.playback.api_broadcast,
            "uuid_break": self.playback.api_break,
            "break": self.playback.api_break,
        }
        if not self.audio_stream_loaded:
            del commands["uuid_audio_stream"]  # -ERR uuid_audio_stream Command not found!
        return commands

    def _modules(self) -> frozenset[str]:
        return KNOWN_MODULES if self.audio_stream_loaded else KNOWN_MODULES - {"mod_audio_stream"}

    def _api_originate(self, args: str) -> str:
        """mod_commands' originate for mod_loopback's null endpoint (see originate_rules): the leg is made
        (CHANNEL_CREATE), answers at once (CHANNEL_ANSWER), then runs its application; the reply names it.
        Other endpoints are not loaded here: -ERR CHAN_NOT_IMPLEMENTED, as a switch without them answers."""
        request = originate_rules.parse_originate(args)
        if isinstance(request, str):
            return request
        if request.endpoint != "null":
            log.error("Could not locate channel type %s", request.endpoint)
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        if request.legs > 1:
            log.warning("originate: the simulator makes only the first of %d legs", request.legs)
        # mod_loopback: the leg's L16 codec runs at {rate=} when it is a positive multiple of 8000, else 8000.
        rate = rules.c_atoi(request.variable("rate") or "")
        rate = rate if rate > 0 and rate % 8000 == 0 else 8000
        uuid = request.variable("origination_uuid")
        if uuid is not None and (not uuid or uuid in self.calls):
            log.critical("set UUID=%s FAILED", uuid)  # the leg keeps a uuid of its own, as FreeSWITCH does
            uuid = None
        if request.application is not None:
            app = originate_rules.application(request.application, request.application_data, rate)
        else:
            # The simulator has no dialplan to transfer the leg to: it stays up, playing nothing.
            app = originate_rules.Application("park", "")
        playbacks: tuple[Playback, ...] = ()
        played = app.played
        if played is not None:
            seconds = played.seconds(rate)
            if played.forever:
                playbacks = (Playback(0.0, FOREVER_S, played.audio, loop=True),)
            elif seconds:
                playbacks = (Playback(0.0, seconds, played.audio * played.plays),)
        cid_name = request.cid_name or request.variable("origination_caller_id_name") or ""
        cid_number = request.cid_num or request.variable("origination_caller_id_number") or "0000000000"
        call = SimCall(
            self,
            destination=request.target or "service",
            caller_id_number=cid_number,
            caller_id_name=cid_name,
            context="default",
            media=CallMedia(rate, b"", playbacks),  # what a null leg "says" is silence
            direction="outbound",
            uuid=uuid,
            endpoint="null",
            dial_variables=[(n, v) for n, v in request.variables if n != "origination_uuid"],
        )
        self._add_call(call)
        call.answer()
        call.execute(app)
        return f"+OK {call.uuid}\n"

    def _api_status(self, args: str) -> str:
        return ce.status_text(ce.now_us() - self._started_us, self._sessions, len(self.calls), self._peak)

    def _api_show(self, args: str) -> str:
        words = args.split()
        if words and words[0].lower() == "api":
            return self._show_api(words[1:])
        if not words or words[0].lower() != "channels":
            return SHOW_USAGE
        rows = [
            ce.show_channels_row(call.facts(), self.identity.hostname, call.application, call.application_data,
                                 call.answered.is_set())
            for call in self.calls.values()
        ]
        if [w.lower() for w in words[1:]] == ["as", "json"]:
            if not rows:
                return '{"row_count": 0}\n'
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"), ensure_ascii=False)
        if not rows:
            return "\n0 total.\n"
        lines = [",".join(ce.SHOW_CHANNELS_COLUMNS)] + [",".join(row.values()) for row in rows]
        return "\n".join(lines) + f"\n\n{len(rows)} total.\n"

    def _show_api(self, words: list[str]) -> str:
        """`show api [name]` (mod_commands show_function: rows of the interfaces table, the title line with the
        first row, then a blank line and the count; `as json` only when no name is given)."""
        name = words[0] if words and words[0].lower() != "as" else None
        as_json = name is None and [w.lower() for w in words] == ["as", "json"]
        rows = [{"name": api, "description": description, "syntax": syntax, "ikey": module}
                for api, (description, syntax, module) in sorted(API_INTERFACES.items())
                if (name is None or api == name) and (api in self._api_commands())]
        if as_json:
            if not rows:
                return '{"row_count": 0}\n'
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
        if not rows:
            return "\n0 total.\n"
        lines = [",".join(rows[0])] + [",".join(row.values()) for row in rows]
        return "\n".join(lines) + f"\n\n{len(rows)} total.\n"

    def _api_uuid_kill(self, args: str) -> str:
        words = args.split()
        if not words:
            return "-USAGE: <uuid> [cause]\n"
        call = self.calls.get(words[0])
        if call is None:
            return NO_SUCH_CHANNEL
        call.hangup(words[1] if len(words) > 1 else "NORMAL_CLEARING")
        return "+OK\n"

    def _api_uuid_setvar(self, args: str) -> str:
        words = rules.separate_words(args, 3)
        if len(words) < 2:
            return "-USAGE: <uuid> <var> [value]\n"
        call = self.calls.get(words[0])
        if call is None:
            return NO_SUCH_CHANNEL
        call.set_variable(words[1], words[2] if len(words) > 2 else None)
        return "+OK\n"

    def _api_uuid_setvar_multi(self, args: str) -> str:
        """mod_commands' uuid_setvar_multi, line for line: the uuid is everything up to the first space; the
        rest is split at ';' (switch_separate_string), each part at its first '='. Its quirks are kept: an
        unknown uuid answers -ERR and then the usage too; an empty name adds a -ERR line; +OK comes once,
        after those, if any variable was set; no variable set at all falls through to the usage."""
        uuid, space, variables = args.strip(API_WHITESPACE).partition(" ")
        if not uuid or not space:
            return SETVAR_MULTI_USAGE
        call = self.calls.get(uuid)
        if call is None:
            return NO_SUCH_CHANNEL + SETVAR_MULTI_USAGE
        out, count = [], 0
        for part in rules.separate_string(variables, ";", SETVAR_MULTI_MAX):
            name, equals, value = part.partition("=")
            if not name:
                out.append("-ERR No variable specified\n")
                continue
            count += 1
            # switch_channel_set_variable: an empty value unsets; one holding "${" is refused (logged only).
            if _refers_to_a_variable(value):
                log.error("%s: Invalid data (${%s} contains a variable)", call.uuid, name)
            else:
                call.set_variable(name, value if equals and value else None)
        return "".join(out) + ("+OK\n" if count else SETVAR_MULTI_USAGE)

    def _api_uuid_getvar(self, args: str) -> str:
        words = args.split()
        if len(words) < 2:
            return "-USAGE: <uuid> <var>\n"
        call = self.calls.get(words[0])
        if call is None:
            return NO_SUCH_CHANNEL
        value = call.get_variable(words[1])
        return "_undef_" if value is None else value

    # ---- commands received (for tests) ----

    def record_command(self, connection: EslConnection, command: str) -> None:
        self.received_commands.append(command)
        arrived, self._command_arrived = self._command_arrived, Event()
        arrived.set()

    def wait_for_command(self, predicate: Callable[[str], bool] | str, timeout: float = 5.0, start: int = 0) -> str:
        """The first command (from index `start` of received_commands on) that matches; a str
        predicate matches commands starting with it. Raises TimeoutError naming what did arrive."""
        matches = predicate if callable(predicate) else (lambda command: command.startswith(predicate))
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.received_commands):
                command = self.received_commands[index]
                index += 1
                if matches(command):
                    return command
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no command matching {predicate!r} within {timeout} s; received since #{start}: "
                    f"{self.received_commands[start:]!r}"
                )
            self._command_arrived.wait(remaining)

    # ---- fault knobs ----

    @property
    def connections(self) -> list[EslConnection]:
        """Event socket connections open now."""
        return list(self._esl.connections) if self._esl else []

    @property
    def reject_acl(self) -> bool:
        return self._reject_acl

    @reject_acl.setter
    def reject_acl(self, value: bool) -> None:
        self._reject_acl = value
        if self._esl:
            self._esl.reject_acl = value

    @property
    def silent_accept(self) -> bool:
        return self._silent_accept

    @silent_accept.setter
    def silent_accept(self, value: bool) -> None:
        self._silent_accept = value
        if self._esl:
            self._esl.silent_accept = value

    def delay_replies(self, seconds: float) -> None:
        """Hold every api reply (and the events behind it) for this long; 0 ends the delay."""
        if seconds < 0:
            raise ValueError(f"seconds must be 0 or more; got {seconds}")
        self._reply_delay_s = seconds
        if self._esl:
            self._esl.reply_delay_s = seconds

    def delay_handshake(self, seconds: float) -> None:
        """Hold every `auth` and `event` reply for this long (a switch slow to let clients in); 0 ends it."""
        if seconds < 0:
            raise ValueError(f"seconds must be 0 or more; got {seconds}")
        self._handshake_delay_s = seconds
        if self._esl:
            self._esl.handshake_delay_s = seconds

    def stop_reading(self) -> None:
        """The switch stops reading every Event Socket connection open now: the kernel buffers fill and the
        client's sends block (a wedged listener). New connections are read as usual."""
        if self._esl:
            self._esl.stop_reading()

    def freeze_esl_connections(self) -> None:
        """Every Event Socket connection open now goes half-open: it stays open at TCP level, but the switch
        never sends anything on it again (no replies, no events, no HEARTBEAT) and ignores what arrives.
        New connections are served as usual."""
        if self._esl:
            self._esl.freeze_all()

    def drop_esl_connections(self, reset: bool = False) -> None:
        """Close every event socket connection at once, without a notice (reset=True: with RST)."""
        if self._esl:
            self._esl.drop_all(reset=reset)

    def cut_next_event(self, after_bytes: int) -> None:
        """The next event any connection sends stops after this many bytes, and that connection closes."""
        if self._esl is None:
            raise RuntimeError("the simulator is not running")
        self._esl.cut_next_event(after_bytes)
