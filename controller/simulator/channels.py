"""One simulated channel (call leg): its state, variables, audio, and how it answers and hangs up."""

from __future__ import annotations

import logging
import time
import uuid as uuid_module

import gevent
from gevent.event import Event

from . import channel_events as ce
from .media import PTIME_S, CallMedia, StreamAudio, ticks
from .playback import Broadcaster

log = logging.getLogger("controller.simulator.calls")


class SimCall:
    """A channel in the simulated switch; `place_call` returns the A-leg (`b_leg` when bridged).

    Public: uuid, call_uuid, direction, destination, caller_id_number, caller_id_name, context,
    b_leg / a_leg, answered / hung_up (gevent Events), hangup_cause, streams (every stream the
    module opened on it), answer(), hangup(cause), set_variables(**values), get_variable(name),
    variables (a copy, in FreeSWITCH's order), vanished (True when the switch crashed under it:
    hung_up is set, but no event said so and hangup_cause stays empty), heard (what the caller heard),
    playbacks (one playback.PlaybackRecord per uuid_broadcast on this channel), sleeping (the dialplan is
    in its sleep: a uuid_break ends it).
    """

    def __init__(
        self,
        switch,
        *,
        destination: str,
        caller_id_number: str,
        caller_id_name: str,
        context: str,
        media: CallMedia,
        direction: str = "inbound",
        a_leg: SimCall | None = None,
        dial_target: str = "",
        frame_sizes: list[int] | None = None,
        odd_frames: bool = False,
        uuid: str | None = None,
        endpoint: str = "sofia",
        dial_variables: list[tuple[str, str]] | None = None,
    ):
        self.switch = switch
        self.uuid = uuid or str(uuid_module.uuid4())
        self.a_leg = a_leg
        self.b_leg: SimCall | None = None
        self.call_uuid = a_leg.uuid if a_leg else self.uuid
        self.direction = direction
        self.destination = destination
        self.caller_id_number = caller_id_number
        self.caller_id_name = caller_id_name
        self.context = context
        self.media = media
        self.dial_target = dial_target
        # Faults for the streams the module opens on this channel (see FrameChunker).
        self.frame_sizes = frame_sizes
        self.odd_frames = odd_frames
        self.created_us = ce.now_us()
        self.answered_us = 0
        self.answered_at = 0.0  # time.monotonic() of the answer: the audio clock starts here
        self.bridged_us = 0
        self.hangup_us = 0
        self.hangup_cause = ""
        self.answered = Event()
        self.hung_up = Event()
        self.vanished = False
        self.attached_stream = None  # the stream mod_audio_stream considers attached, if any
        self.streams: list = []
        self.broadcasts = Broadcaster(self)
        self.sleeping = False  # in the dialplan's sleep, which a break flag (CF_BREAK) ends
        self._sleep_ends_at: float | None = None
        self._sleep_wake = Event()
        self.application, self.application_data = "", ""
        self.hold_ms = 0  # what the dialplan's sleep waits for (shown as the current application's data)
        # What the dialplan runs once answered (sleep, park, endless_playback; a null leg: its &app), and its
        # data: it decides what is written to the channel and how broadcasts are taken (playback.py).
        self.plan = "sleep" if direction == "inbound" else ""
        self.plan_data = ""
        # The caller profile's other fields (a null leg's, from originate; switch_channel_flip_cid swaps them).
        self.endpoint = endpoint
        self.callee_id_name = self.callee_id_number = ""
        self.logical_direction = ""
        self.hit_dialplan: bool | None = None
        self.orig_caller_id_name: str | None = None
        self.orig_caller_id_number: str | None = None
        self.ani: str | None = None
        if endpoint == "null":
            self.callee_id_name, self.callee_id_number = "Outbound Call", destination
            self.ani = caller_id_number
            self._variables = dict(ce.null_created_variables(self.facts(), dial_variables or []))
        else:
            self._variables = dict(ce.created_variables(self.facts()))

    def __repr__(self) -> str:
        state = "hung up" if self.hung_up.is_set() else "answered" if self.answered.is_set() else "ringing"
        return f"<SimCall {self.uuid} {self.direction} {self.caller_id_number}->{self.destination} {state}>"

    # ---- what the caller hears ----

    @property
    def playbacks(self) -> list:
        """Every uuid_broadcast played (or queued, failed, dropped) on this channel, in order."""
        return self.broadcasts.records

    @property
    def heard(self) -> bytes:
        """The audio the switch wrote to the caller, at the codec rate, one 20 ms tick after another from the
        answer to now (the tick under way included: its frame is written as it starts) or to the hangup:
        broadcasts and the call's play windows, silence where nothing was written."""
        if not self.answered_at:
            return b""
        if self.hangup_us:
            count = ticks((self.hangup_us - self.answered_us) / 1e6)
        else:
            count = int((time.monotonic() - self.answered_at) // PTIME_S) + 1
        audio = StreamAudio(self.media, "mono", self.media.codec_rate, overlay=self.broadcasts.playback_at)
        silence = bytes(audio.tick_bytes)
        return b"".join(audio.played(tick) or silence for tick in range(count))

    # ---- variables ----

    @property
    def variables(self) -> list[tuple[str, str]]:
        return list(self._variables.items())

    def get_variable(self, name: str) -> str | None:
        return self._variables.get(name)

    def set_variable(self, name: str, value: str | None) -> None:
        # FreeSWITCH deletes and re-adds a variable it sets, so the latest ones come last.
        self._variables.pop(name, None)
        if value is not None:
            self._variables[name] = str(value)

    def set_variables(self, **values: str) -> None:
        for name, value in values.items():
            self.set_variable(name, value)

    def _apply(self, pairs: list[tuple[str, str]]) -> None:
        for name, value in pairs:
            self.set_variable(name, value)

    # ---- what events and api answers are made of ----

    @property
    def other_leg(self) -> SimCall | None:
        return self.b_leg or self.a_leg

    def facts(self) -> ce.ChannelFacts:
        return ce.ChannelFacts(
            uuid=self.uuid,
            call_uuid=self.call_uuid,
            direction=self.direction,
            caller_id_name=self.caller_id_name,
            caller_id_number=self.caller_id_number,
            destination=self.destination,
            context=self.context,
            codec_rate=self.media.codec_rate,
            created_us=self.created_us,
            answered_us=self.answered_us,
            hangup_us=self.hangup_us,
            bridged_us=self.bridged_us,
            hangup_cause=self.hangup_cause,
            other_leg_uuid=self.other_leg.uuid if self.other_leg else "",
            dial_target=self.dial_target,
            endpoint=self.endpoint,
            callee_id_name=self.callee_id_name,
            callee_id_number=self.callee_id_number,
            logical_direction=self.logical_direction,
            hit_dialplan=self.hit_dialplan,
            orig_caller_id_name=self.orig_caller_id_name,
            orig_caller_id_number=self.orig_caller_id_number,
            ani=self.ani,
        )

    @property
    def phase(self) -> str:
        if self.hangup_us:
            return "hangup"
        return "answered" if self.answered.is_set() else "ringing"

    # ---- life of the call ----

    def answer(self) -> None:
        if self.answered.is_set() or self.hangup_us:
            return
        self.answered_us = ce.now_us()
        self.answered_at = time.monotonic()
        if self.endpoint == "null":
            # mod_loopback answers it at once in CS_CONSUME_MEDIA: no SIP, no SDP; originate then runs its app.
            self.switch.fire_channel_event(self, "CHANNEL_ANSWER", "answering_null")
            self.answered.set()
            log.info("%s answered", self)
            return
        if self.other_leg and self.other_leg.answered.is_set():
            self.bridged_us = self.other_leg.bridged_us = self.answered_us
        self._apply(ce.answered_variables(self.facts()))
        self.switch.fire_channel_event(self, "CHANNEL_ANSWER", "answering")
        self.application = self.plan if self.direction == "inbound" else ""
        self.application_data = self.plan_data if self.direction == "inbound" else ""
        self._apply(ce.confirmed_variables(self.facts(), self.application or "bridge", self.application_data))
        self.answered.set()
        log.info("%s answered", self)

    def press(self, digit: str, duration: int = 2000, source: str = "RTP") -> None:
        """The caller presses a key: a DTMF event, as switch_channel_dequeue_dtmf fires it (the channel's
        headers and variables, then DTMF-Digit, DTMF-Duration in 8 kHz samples, DTMF-Source)."""
        if len(digit) != 1 or digit not in "0123456789*#ABCDabcd":
            raise ValueError(f"a DTMF digit is one of 0-9, *, #, A-D; got {digit!r}")
        headers = ce.channel_event(self.switch.identity, "DTMF", self.switch._next_sequence(), ce.now_us(),
                                   self.facts(), self.phase, self.variables)
        self.switch.fire(headers + [("DTMF-Digit", digit), ("DTMF-Duration", str(duration)),
                                    ("DTMF-Source", source)])

    def hangup(self, cause: str = "NORMAL_CLEARING", by_dialplan: bool = False) -> None:
        if self.hangup_us:
            return
        self.hangup_us = ce.now_us()
        self.hangup_cause = cause
        last_app, last_arg = (self.application or "hangup", self.application_data or None)
        if by_dialplan:
            self.set_variable("current_application_data", None)
            last_app, last_arg = "hangup", None
            self.set_variable("current_application", "hangup")
        self.switch.fire_channel_event(self, "CHANNEL_HANGUP", "hangup")
        self.broadcasts.on_hangup()
        self.switch.audio_stream.on_hangup(self)
        answered_ticks = ticks((self.hangup_us - self.answered_us) / 1e6) if self.answered_us else 0
        if self.media.idle_silence:
            played = answered_ticks  # something is written at every tick
        else:
            played = sum(max(0, min(p.end_tick, answered_ticks) - p.first_tick) for p in self.media.playbacks)
            played += self.broadcasts.ticks_written(answered_ticks)
        self._apply(ce.hangup_complete_variables(self.facts(), last_app, last_arg, answered_ticks, played))
        self.switch.fire_channel_event(self, "CHANNEL_HANGUP_COMPLETE", "reporting")
        self.hung_up.set()
        self.switch.forget_call(self)
        log.info("%s hung up: %s", self, cause)
        other = self.other_leg
        if other is not None and not other.hangup_us:
            other.hangup(cause)

    def execute(self, app) -> None:
        """originate's `&app(args)` on an answered null leg: the caller extension is set (which flips the
        caller id, switch_channel_sort_cid: the leg now shows the callee's, and counts as having hit the
        dialplan), then the application runs (see originate_rules.Application) until it ends or the leg hangs
        up; a leg whose last application ends is hung up (NORMAL_CLEARING), an unknown one at once
        (DESTINATION_OUT_OF_ORDER)."""
        self.orig_caller_id_name = self.orig_caller_id_name if self.orig_caller_id_name is not None \
            else self.caller_id_name
        self.orig_caller_id_number = self.orig_caller_id_number if self.orig_caller_id_number is not None \
            else self.caller_id_number
        (self.caller_id_name, self.callee_id_name) = (self.callee_id_name, self.caller_id_name)
        (self.caller_id_number, self.callee_id_number) = (self.callee_id_number, self.caller_id_number)
        self.hit_dialplan, self.logical_direction = True, "inbound"
        flipped = [("pre_transfer_caller_id_name", self.callee_id_name),
                   ("pre_transfer_caller_id_number", self.callee_id_number), ("channel_cid_flipped", "yes")]
        self._apply([(name, value) for name, value in flipped if value])  # an empty value sets nothing
        if not app.known:
            log.info("%s: Invalid Application %s", self, app.name)
            self.hangup("DESTINATION_OUT_OF_ORDER")
            return
        self.application, self.application_data = app.name, app.data
        self.plan, self.plan_data = app.name, app.data
        self._apply([("call_uuid", self.uuid), ("current_application_data", app.data),
                     ("current_application", app.name)])
        gevent.spawn(self._run_application, app)

    def _run_application(self, app) -> None:
        if app.name == "park":
            return  # until uuid_kill (or the switch stops)
        if app.name == "sleep":
            if self._hold(self.answered_at + app.hold_s - time.monotonic()):
                log.info("%s has executed the last dialplan instruction, hanging up", self)
                self.hangup("NORMAL_CLEARING")
            return
        if app.played is None:
            seconds = 0.0  # a file the simulator does not have: playback fails at once
        else:
            seconds = app.played.seconds(self.media.codec_rate)
            if seconds is None:
                return  # for ever: until uuid_kill
        remaining = self.answered_at + seconds - time.monotonic()
        if self.hung_up.wait(max(0.0, remaining)) or self.hangup_us:
            return
        if app.played is not None and app.played.audio:
            samples = str(len(app.played.audio) // 2)
            milliseconds = int(round(seconds * 1000))
            self._apply([("playback_last_offset_pos", samples), ("playback_seconds", str(milliseconds // 1000)),
                         ("playback_ms", str(milliseconds)), ("playback_samples", samples)])
        log.info("%s has executed the last dialplan instruction, hanging up", self)
        self.hangup("NORMAL_CLEARING")

    def vanish(self) -> None:
        """The switch died under this call (Simulator.crash): it is gone, with no event and no hangup cause.
        hung_up is set so nothing of this call (its dialplan, its playbacks) acts again."""
        if self.hangup_us:
            return
        self.vanished = True
        self.hangup_us = ce.now_us()
        self.attached_stream = None
        self.hung_up.set()

    def run(self, answer: bool, duration_s: float, auto_hangup: bool) -> None:
        """The dialplan: answer (B-leg first when bridged), then its application: sleep for duration_s and hang
        up; park or endless_playback until the caller hangs up after duration_s."""
        if answer:
            if self.b_leg is not None:
                self.b_leg.answer()
            self.answer()
        gevent.wait([self.answered, self.hung_up], count=1)
        if self.hung_up.is_set():
            return
        if self.media.playbacks:
            gevent.spawn(self._note_playbacks)
        if not auto_hangup:
            return
        if self.plan == "sleep":
            if self._hold(duration_s):
                self.hangup("NORMAL_CLEARING", by_dialplan=True)
        elif not self.hung_up.wait(duration_s):
            self.hangup("NORMAL_CLEARING")  # the caller hangs up

    def _hold(self, seconds: float) -> bool:
        """The dialplan's sleep (switch_ivr_sleep): `seconds`, unless a break flag ends it first (break_sleep).
        Broadcasts run inside it (its loop parses the queued ones), so it cannot end while one is taken or
        queued: it ends when the queue is empty. False when the call hung up meanwhile."""
        self.sleeping = True
        self._sleep_ends_at = None
        end = time.monotonic() + max(0.0, seconds)
        try:
            while not self.hung_up.is_set():
                now = time.monotonic()
                if self._sleep_ends_at is not None:
                    if now >= self._sleep_ends_at:
                        return True
                    self.hung_up.wait(self._sleep_ends_at - now)
                    continue
                if now >= end and not self.broadcasts.busy:
                    return True
                self._sleep_wake.clear()
                waits = [self.hung_up, self._sleep_wake] + ([self.broadcasts.idle] if now >= end else [])
                gevent.wait(waits, timeout=end - now if now < end else None, count=1)
            return False
        finally:
            self.sleeping = False

    def break_sleep(self, at: float) -> None:
        """CF_BREAK reaches the sleep's loop: it ends at `at` (time.monotonic())."""
        if self.sleeping and self._sleep_ends_at is None:
            self._sleep_ends_at = at
            self._sleep_wake.set()

    def _note_playbacks(self) -> None:
        """FreeSWITCH records each finished playback in channel variables, then the dialplan's
        current application is set again (so it comes after them)."""
        for playback in sorted(self.media.playbacks, key=lambda p: p.end_s):
            remaining = self.answered_at + playback.end_s - time.monotonic()
            if self.hung_up.wait(max(0.0, remaining)) or self.hangup_us:
                return
            milliseconds = int(round((playback.end_s - playback.start_s) * 1000))
            samples = str(len(playback.audio) // 2)
            self._apply([
                ("playback_last_offset_pos", samples),
                ("playback_seconds", str(milliseconds // 1000)),
                ("playback_ms", str(milliseconds)),
                ("playback_samples", samples),
                ("current_application_data", self.application_data),
                ("current_application", self.application),
            ])
