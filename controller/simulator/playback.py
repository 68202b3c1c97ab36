"""Talking back into a call: `uuid_broadcast` and `uuid_break` (mod_commands), and each channel's queue of
broadcasts played on FreeSWITCH's 20 ms media clock (switch_ivr_broadcast, switch_ivr_parse_event,
switch_ivr_play_file).

A broadcast is a private event queued on the channel. The channel's thread takes the next one when it is free
(parked or sleeping: between two frames; in a playback such as endless_playback: in its loop, nested; after a
broadcast: at once), reads "lead frames", runs `playback`: PLAYBACK_START, then one frame per 20 ms tick (the
first at the tick after PLAYBACK_START), then PLAYBACK_STOP right after the last frame is written. Measured on a
real switch from the caller's RTP (shared/PROTOCOL.md, "Talk-back timings"): a plain broadcast is heard 130 ms
after uuid_broadcast; two queued broadcasts leave a hole of 100 ms (a call in `endless_playback
silence_stream://-1`) to 180 ms (a parked call) between the first's last sample and the second's first
(Simulator knobs broadcast_start_delay_s, broadcast_gaps_s per dialplan application, broadcast_gap_s for all).

A `file_string://a!b!c` broadcast (playback_rules.FileString, ChainPlayer) is one playback whose files are
opened one at a time: play_file keeps a buffer, reads again only when it holds no more than one frame, and makes
the frame of tick t right after the frame of tick t-1 is written. So the next file is opened (or found missing)
at the tick before the first frame that needs it, and a file that exists by then plays with no hole. Each step
fires CUSTOM filestring::close / filestring::fail / filestring::open (header File, no channel data); a missing
file also logs `Can't open file <path>` (ERROR); when no name is left the playback ends after its last frame
(padded with samples of -1). A break or a hangup ends it without a close event (file_string_file_close fires
none). A file shorter than what the frame being made still lacks leaves that frame padded: a small hole.

uuid_break: the playing loop checks its break flag (CF_BREAK) once per frame, right after writing one; a
break that arrives while it waits for the next tick therefore lets that frame out, then stops:
PLAYBACK_STOP with `Playback-Status: break` at the next tick. `all` also drops the broadcasts queued behind it
(they never fire an event). A broken broadcast leaves the flag set (switch_ivr_parse_event: CF_STOP_BROADCAST
becomes CF_BREAK), and a break on a channel with nothing playing sets it too: a sleeping channel's sleep ends
there (the simulated dialplan then hangs up), a parked one ignores it until the next application clears it. A
broadcast already taken but not yet started (its lead frames) plays in full: `playback` clears the flag before
it starts.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import gevent
from gevent.event import Event

from . import playback_rules as rules
from .media import PTIME_S, Playback

FILE_STRING_EVENT_LINES = {"close": "4974", "fail": "5021", "open": "5033"}  # mod_dptools.c 1.10.12, next_file

log = logging.getLogger("controller.simulator.playback")

BROADCAST_START_DELAY_S = 0.130  # measured (caller's RTP): uuid_broadcast -> the broadcast's first sample heard
# Measured (caller's RTP): the hole between two queued broadcasts, by what the channel's dialplan runs.
# endless_playback / playback: the broadcast runs nested in the playback's loop, which takes the next one
# within a frame; park and sleep take it in their own loop (sleep: not measured, its loop is park's).
BROADCAST_GAPS_S = {"endless_playback": 0.100, "playback": 0.100, "park": 0.180, "sleep": 0.180}
BROADCAST_GAP_DEFAULT_PLAN = "park"  # any other application (a bridge, none) is taken as park is
API_WHITESPACE = " \t\r\n\v"  # switch_api_execute strips these from both ends of the arguments
FOREVER_TICKS = 7 * 86400 * 50  # a looping tone plays until it is broken or the call ends


class PlaybackRecord:
    """One broadcast on one channel, for tests (call.playbacks).

    path (as asked), file_path (Playback-File-Path once opened), status: queued -> starting (taken, its lead
    frames) -> playing -> done | break; or failed (FreeSWITCH could not open it: no events) or dropped
    (uuid_break all, or the call ended, before it started: no events). Times (time.monotonic()): asked_at,
    started_at (PLAYBACK_START), stopped_at (PLAYBACK_STOP). first_tick / end_tick: the 20 ms ticks after the
    answer whose frames it wrote, [first_tick, end_tick). audio: what it writes, at the call's codec rate, from
    first_tick on (the last frame padded with samples of -1). finished: a gevent Event set at its end, whatever
    it was. start_event / stop_event: the events fired.
    """

    def __init__(self, path: str, asked_at: float):
        self.path = path
        self.file_path: str | None = None
        self.status = "queued"
        self.asked_at = asked_at
        self.taken_at: float | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.first_tick: int | None = None
        self.end_tick: int | None = None
        self.audio = b""
        self.loop = False
        self.broken = False
        self.playable: rules.Playable | None = None
        self.finished = Event()
        self.start_event = None
        self.stop_event = None
        self.tick_bytes = 320  # one 20 ms frame at the call's codec rate (set when queued)

    def __repr__(self) -> str:
        return f"<PlaybackRecord {self.path!r} {self.status} ticks [{self.first_tick}, {self.end_tick})>"

    @property
    def frames(self) -> int:
        return 0 if self.first_tick is None else self.end_tick - self.first_tick

    @property
    def heard(self) -> bytes:
        """What the caller heard of it (codec rate): its frames, up to where it stopped."""
        length = self.frames * self.tick_bytes
        if self.loop:
            return (self.audio * (length // len(self.audio) + 1))[:length] if self.audio else bytes(length)
        return self.audio[:length]

    def window(self) -> Playback:
        return Playback(self.first_tick * PTIME_S, self.end_tick * PTIME_S, self.audio, self.loop)


class Broadcaster:
    """One channel's broadcasts: the queue, the one being played, and the greenlet that plays them."""

    def __init__(self, call):
        self.call = call
        self.records: list[PlaybackRecord] = []
        self.current: PlaybackRecord | None = None
        self.idle = Event()
        self.idle.set()
        self._queue: deque[PlaybackRecord] = deque()
        self._wake = Event()
        self._free_tick: int | None = None  # the tick after which the channel's thread took up the queue again
        self._halted = False  # a break ended the channel's sleep: nothing more is taken before the hangup
        self._greenlet: gevent.Greenlet | None = None

    # ---- the media clock ----

    @property
    def tick_samples(self) -> int:
        return self.call.media.codec_rate * 20 // 1000

    def time_of(self, tick: int) -> float:
        return self.call.answered_at + tick * PTIME_S

    def tick_at(self, moment: float) -> int:
        """The tick in progress at `moment`."""
        return int((moment - self.call.answered_at) // PTIME_S)

    def _first_tick_from(self, moment: float) -> int:
        """The first tick boundary at or after `moment`."""
        return max(0, -int(-(moment - self.call.answered_at) // PTIME_S))

    # ---- what the caller hears ----

    def playback_at(self, tick: int) -> Playback | None:
        """The broadcast writing the frame of this tick, as a media window (None: none)."""
        for record in self.records:
            if record.first_tick is not None and record.first_tick <= tick < record.end_tick:
                return record.window()
        return None

    def ticks_written(self, before_tick: int) -> int:
        return sum(max(0, min(r.end_tick, before_tick) - r.first_tick) for r in self.records if r.first_tick is not None)

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._queue)

    # ---- driven by the api ----

    def enqueue(self, path: str) -> PlaybackRecord:
        record = PlaybackRecord(path, time.monotonic())
        record.tick_bytes = self.tick_samples * 2
        self.records.append(record)
        self._queue.append(record)
        self.idle.clear()
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        self._wake.set()
        return record

    def break_(self, drop_queued: bool) -> None:
        """uuid_break on this channel (see the module docstring)."""
        now = time.monotonic()
        if drop_queued:
            self._drop_queue()
        record = self.current
        if record is not None and record.status == "playing":
            if now < self.time_of(record.end_tick - 1):
                # The frame it waits to write still goes out; the break is seen right after it.
                tick = max(self.tick_at(now), record.first_tick - 1)
                record.end_tick = min(record.end_tick, tick + 2)
                record.broken = True
                self._wake.set()
                return
            # Its last frame is written: STOP is due this instant; the break finds the channel free.
        elif record is not None:
            return  # taken, still reading its lead frames: `playback` clears the flag before it plays
        if self.call.sleeping:
            self.call.break_sleep(self.time_of(self.tick_at(now) + 1))  # the sleep checks once per frame

    def on_hangup(self) -> None:
        """The channel hangs up (after CHANNEL_HANGUP, before CHANNEL_HANGUP_COMPLETE): a playback under way
        stops (PLAYBACK_STOP, Playback-Status done) after the frames already written; the rest never runs."""
        self._drop_queue()
        record, self.current = self.current, None
        if record is not None:
            if record.status == "playing":
                tick = self.tick_at(time.monotonic())
                record.end_tick = max(record.first_tick, min(record.end_tick, tick + 1))
                self._stop(record, cut=True)
            else:
                record.status = "dropped"
                record.finished.set()
        self.idle.set()
        self._wake.set()

    def _drop_queue(self) -> None:
        while self._queue:
            record = self._queue.popleft()
            record.status = "dropped"
            record.finished.set()

    # ---- the channel's thread ----

    def _run(self) -> None:
        call = self.call
        gevent.wait([call.answered, call.hung_up], count=1)  # the media clock starts at the answer
        while not call.hung_up.is_set():
            if self._halted or not self._queue:
                self.idle.set()
                self._wake.clear()
                gevent.wait([self._wake, call.hung_up], count=1)
                continue
            record = self._queue.popleft()
            self.current = record
            record.status = "starting"
            record.taken_at = time.monotonic()
            switch = call.switch
            # The first frame is heard broadcast_start_delay_s after the api call (on a tick); PLAYBACK_START
            # fires at the tick before it.
            first = self._first_tick_from(max(record.asked_at, call.answered_at) + switch.broadcast_start_delay_s)
            start = max(0, first - 1)
            if self._free_tick is not None:
                gap_ticks = int(round(switch.broadcast_gap_for(call.plan) / PTIME_S))
                start = max(start, self._free_tick + gap_ticks)
            if call.hung_up.wait(max(0.0, self.time_of(start) - time.monotonic())):
                return
            if call.hangup_us or record.status != "starting":
                continue  # the hangup under way has dropped it
            self._play(record, start)

    def _play(self, record: PlaybackRecord, start_tick: int) -> None:
        call = self.call
        # switch_ivr_parse_event, then switch_core_session_exec: the loop counters, then the application.
        call.set_variables(current_loop="1", total_loops="1", current_application="playback")
        call.set_variable("current_application_data", record.path)
        call.set_variable("current_application_response", None)
        call.set_variable("current_application", "playback")
        chain = None
        if record.path.startswith(rules.FILE_STRING_PREFIX):
            files = rules.FileString(record.path, call.media.codec_rate)
            self._chain_steps(files.next_file())  # file_string_file_open opens the first name that exists
            if files.current is not None:
                chain = rules.ChainPlayer(files, self.tick_samples)
                playable = self._chain_playable(chain)
            else:
                playable = None
        else:
            playable = rules.open_playable(record.path, call.media.codec_rate)
        if playable is None:
            log.error("%s: playback of %s: FILE NOT FOUND (FreeSWITCH cannot open it: no events)", call.uuid,
                      record.path)
            record.status = "failed"
            call.set_variable("current_application_response", "FILE NOT FOUND")
            self._done(record, start_tick)
            return
        record.playable = playable
        record.file_path = playable.path
        record.loop = playable.loop
        record.first_tick = start_tick + 1
        if chain is None:
            record.audio = playable.frames_audio(self.tick_samples)
            record.end_tick = record.first_tick + (FOREVER_TICKS if playable.loop
                                                   else playable.ticks(self.tick_samples))
        else:
            record.audio = b""
            record.end_tick = record.first_tick + FOREVER_TICKS  # until the chain runs out of names
        record.status = "playing"
        record.started_at = time.monotonic()
        record.start_event = call.switch.fire_playback_event(call, "PLAYBACK_START", self._file_headers(playable))
        log.info("%s: playing %s (from tick %d)", call.uuid, playable.path, record.first_tick)
        while True:
            self._wake.clear()
            now = time.monotonic()
            read_at = None
            if chain is not None and not chain.ended:
                tick = record.first_tick + chain.count  # the frame that needs a read
                if tick < record.end_tick:  # a break may have ended it before then
                    read_at = self.time_of(tick - 1)  # it is made right after the frame before it is written
            if read_at is not None and read_at <= now:
                self._chain_steps(chain.make_frame_with_read())
                self._chain_update(record, chain)
                continue
            due = read_at if read_at is not None else self.time_of(record.end_tick - 1)
            if due <= now:
                break
            gevent.wait([self._wake, call.hung_up], timeout=due - now, count=1)
            if call.hung_up.is_set() or record.stopped_at is not None:
                return  # on_hangup stopped it
        self._stop(record)
        if record.broken and call.sleeping:
            # The flag the break left ends the sleep at once (parse_all_events returns, the sleep loop sees it).
            self._halted = True
            call.break_sleep(time.monotonic())

    # ---- a file_string chain ----

    def _chain_playable(self, chain: rules.ChainPlayer) -> rules.Playable:
        """The frames made so far as a Playable (the file_string handle runs at the channel's rate)."""
        files = chain.chain
        return rules.Playable(files.path, bytes(chain.frames), files.rate, files.samples)

    def _chain_update(self, record: PlaybackRecord, chain: rules.ChainPlayer) -> None:
        record.playable = self._chain_playable(chain)
        record.audio = record.playable.audio
        if chain.ended:  # no name left: it ends after the frames made
            record.end_tick = min(record.end_tick, record.first_tick + chain.count)

    def _chain_steps(self, steps: list[rules.ChainStep]) -> None:
        switch = self.call.switch
        for step in steps:
            if step.kind == "fail":
                log.error("Can't open file %s", step.path)
            switch.fire_custom_event(f"filestring::{step.kind}", [("File", step.name)],
                                     ("mod_dptools.c", "next_file", FILE_STRING_EVENT_LINES[step.kind]))

    def _stop(self, record: PlaybackRecord, cut: bool = False) -> None:
        call = self.call
        status = "break" if record.broken else "done"
        finished = status == "done" and not cut
        call._apply(rules.stop_variables(record.playable, record.frames, self.tick_samples, finished))
        headers = self._file_headers(record.playable) + [("Playback-Status", status)]
        record.stop_event = call.switch.fire_playback_event(call, "PLAYBACK_STOP", headers)
        record.status = status
        record.stopped_at = time.monotonic()
        log.info("%s: playback of %s stopped: %s after %d frames", call.uuid, record.file_path, status, record.frames)
        call.set_variable("current_application_response", "FILE PLAYED")
        self._done(record, record.end_tick - 1)

    def _done(self, record: PlaybackRecord, free_tick: int) -> None:
        self.call.set_variables(current_loop=None, total_loops=None)
        self._free_tick = free_tick
        if self.current is record:
            self.current = None
        record.finished.set()

    @staticmethod
    def _file_headers(playable: rules.Playable) -> list[tuple[str, str]]:
        kind = [("Playback-File-Type", playable.file_type)] if playable.file_type else []
        return kind + [("Playback-File-Path", playable.path)]


class PlaybackModule:
    """The api commands: uuid_broadcast and uuid_break (and mod_commands' alias `break`)."""

    def __init__(self, switch):
        self.switch = switch

    def api_broadcast(self, args: str) -> str:
        request = rules.parse_broadcast(args.strip(API_WHITESPACE))
        if isinstance(request, str):
            return request
        call = self.switch.live_call(request.uuid)
        if call is None:
            return rules.BROADCAST_NO_CHANNEL
        if request.app != "playback":
            log.warning("%s: uuid_broadcast of application %s is not simulated: nothing is played", call.uuid,
                        request.app)
            return rules.BROADCAST_SENT
        if request.cause is not None:
            log.warning("%s: uuid_broadcast's !%s (hang up after) is not simulated", call.uuid, request.cause)
        targets = []
        partner = call.other_leg if call.other_leg is not None and not call.other_leg.hangup_us else None
        if request.bleg and partner is not None:
            targets.append(partner)
        if request.aleg:
            targets.append(call)
        for target in targets:
            target.broadcasts.enqueue(request.path)
        return rules.BROADCAST_SENT

    def api_break(self, args: str) -> str:
        request = rules.parse_break(args.strip(API_WHITESPACE))
        if isinstance(request, str):
            return request
        call = self.switch.live_call(request.uuid)
        if call is None:
            return rules.NO_SUCH_CHANNEL
        call.broadcasts.break_(request.all)
        partner = call.other_leg
        if request.both and partner is not None and not partner.hangup_us:
            partner.broadcasts.break_(request.all)
        return rules.BREAK_DONE
