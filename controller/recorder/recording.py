"""One call's recording as the recorder sees it: the stream it expects, where the file goes, what the limits
are, how it ends. Pure file logic on top of wav.py and sidecar.py; the WebSocket shell is server.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..audio_stream import RATES_TEXT, rate_problem
from ..channel_uuid import UUID_SHAPE, normalise_uuid
from .filenames import FilenameTemplate, choose_path
from .sidecar import Sidecar, sidecar_path_for
from .timeline import Gap, Piece, Silence, Timeline
from .wav import RecordingError, WavWriter

log = logging.getLogger("controller.recorder")

from .frames import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL


class Ending(StrEnum):
    """Why a connection or a recording ended, as written in the sidecar and passed to on_close, with what it
    means: ``final`` finalises the recording (else it is only detached and the next connection continues the
    file); ``lost`` means the stream was lost while the call goes on (the controller restarts it);
    ``deliberate`` means the recorder ended the call's recording on purpose (no restart); ``close`` is the
    close frame that tells the module why, when the recorder ended the connection."""

    def __new__(cls, value: str, final: bool, lost: bool = False, deliberate: bool = False,
                close: tuple[int, str] | None = None) -> "Ending":
        member = str.__new__(cls, value)
        member._value_ = value
        member.final, member.lost, member.deliberate, member.close = final, lost, deliberate, close
        return member

    CLIENT_CLOSE = "client_close", False  # the module sent a WebSocket close (stop, hangup)
    EOF = "eof", False, True  # the TCP connection ended without a close frame
    PROTOCOL_ERROR = "protocol_error", False, True  # its close was sent when the violation was read
    IDLE_TIMEOUT = "idle_timeout", False, True, False, (CLOSE_GOING_AWAY, "idle timeout")  # not even a ping
    REPLACED = "replaced", False, False, False, (CLOSE_NORMAL, "replaced by a newer connection")
    MAX_DURATION = "max_duration", True, False, True, (CLOSE_NORMAL, "max_duration")
    MAX_BYTES = "max_bytes", True, False, True, (CLOSE_NORMAL, "max_bytes")
    WRITE_ERROR = "write_error", True, False, True, (CLOSE_INTERNAL_ERROR, "recording failed")
    # After an internal error the recording's state is unknown, so it is saved as it is rather than continued.
    INTERNAL_ERROR = "internal_error", True, False, False, (CLOSE_INTERNAL_ERROR, "recording failed")
    SERVER_STOP = "server_stop", True, False, False, (CLOSE_GOING_AWAY, "recorder stopping")
    # The call is over; its connection was detached, or did not close within a grace after the hangup.
    CALL_END = "call_end", True, False, False, (CLOSE_NORMAL, "call_end")
    LINGER = "linger", True  # detached longer than the recorder waits for the stream to come back
    RULE_MAX_DURATION = "rule_max_duration", True  # the controller stopped the stream at its rule's limit


CLIENT_CLOSE, EOF, PROTOCOL_ERROR, IDLE_TIMEOUT, REPLACED = (Ending.CLIENT_CLOSE, Ending.EOF, Ending.PROTOCOL_ERROR,
                                                             Ending.IDLE_TIMEOUT, Ending.REPLACED)
MAX_DURATION, MAX_BYTES, WRITE_ERROR, INTERNAL_ERROR = (Ending.MAX_DURATION, Ending.MAX_BYTES, Ending.WRITE_ERROR,
                                                        Ending.INTERNAL_ERROR)
SERVER_STOP, CALL_END, LINGER, RULE_MAX_DURATION = (Ending.SERVER_STOP, Ending.CALL_END, Ending.LINGER,
                                                    Ending.RULE_MAX_DURATION)
# The controller's view of a connection's end (app.py): lost ones are restarted, deliberate ones are not.
LOST_REASONS = tuple(e for e in Ending if e.lost)
DELIBERATE_REASONS = tuple(e for e in Ending if e.deliberate)

# Why the recorder wrote silence, as listed in the sidecar's gaps.
NO_AUDIO = "no_audio"  # connected, nothing arrived (mixed/stereo while nothing plays, pause)
STREAM_LOST = "stream_lost"  # no connection between two connections of the call
CONTROLLER_RESTART = "controller_restart"  # an earlier process stopped or died, this one continues the file
TAIL = "tail"  # from the last audio to the end of the call

# Lateness below this is network and scheduling jitter, never silence (see timeline.py).
JITTER_S = 0.1
# How long a deficit may stay undecided, its audio held back, before it is taken for missing audio.
SETTLE_S = 2.0
# Gaps can come every second all call long: the sidecar that lists them is saved at most this often (the
# tick saves what is left), like the WAV header a kill leaves at most this far behind.
SIDECAR_SAVE_INTERVAL_S = 1.0
# A mixed or stereo stream connected this long without one frame: nothing is written to the channel.
NO_AUDIO_WARN_S = 5.0


@dataclass(frozen=True)
class StreamSpec:
    """What the controller announces before it asks FreeSWITCH to stream a call here."""

    uuid: str
    token: str
    rate: int
    channels: int
    caller: str = ""
    destination: str = ""
    rule_name: str = ""
    metadata: str | None = None
    # Seconds between the module's pings (0: none). Only a stream that pings can be told dead by its silence:
    # without pings, pause and mixed audio during a plain sleep send nothing for as long as they last.
    heartbeat_s: int = 0
    discard: bool = False  # a test stream (doctor): its files are removed once it is finalised
    # mono, mixed or stereo: mixed and stereo carry audio only while something is written to the channel
    mix: str = "mono"
    switch: str = ""  # the switch's FreeSWITCH-Hostname: a fleet's recordings say where each call was

    def __post_init__(self) -> None:
        uuid = normalise_uuid(self.uuid)
        if uuid is None:
            raise ValueError(f"stream uuid must be {UUID_SHAPE}, got {self.uuid!r}")
        object.__setattr__(self, "uuid", uuid)
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("stream token must be a non-empty string (the module must prove who it is)")
        problem = rate_problem(self.rate)
        if problem:
            raise ValueError(f"stream rate {problem}; {RATES_TEXT}")
        if self.channels not in (1, 2):
            raise ValueError(f"stream channels must be 1 (mono/mixed) or 2 (stereo), got {self.channels!r}")
        if not isinstance(self.heartbeat_s, int) or isinstance(self.heartbeat_s, bool) or self.heartbeat_s < 0:
            raise ValueError(f"stream heartbeat_s must be whole seconds >= 0 (0: no pings), got {self.heartbeat_s!r}")


class RecordingRegistry:
    """The calls the controller has announced; the recorder accepts connections for these only."""

    def __init__(self) -> None:
        self._expected: dict[str, StreamSpec] = {}

    def expect(self, spec: StreamSpec) -> None:
        self._expected[spec.uuid] = spec

    def forget(self, uuid: str) -> None:
        """No new connection for this call; a recording already open carries on to its natural end."""
        self._expected.pop((normalise_uuid(uuid) or uuid), None)

    def lookup(self, uuid: str) -> StreamSpec | None:
        key = normalise_uuid(uuid)
        return self._expected.get(key) if key else None

    def __len__(self) -> int:
        return len(self._expected)


# ---- one recording ----------------------------------------------------------------------------------

class Recording:
    """A call's WAV and sidecar, from its first connection until the call is over, with the recorder's
    limits applied. A stream that drops only detaches it: the next connection for the call continues the
    same file, the time in between written as silence and listed as a gap.
    """

    def __init__(self, spec: StreamSpec, writer: WavWriter, sidecar: Sidecar, *, max_duration_s: float | None,
                 max_bytes: int | None, clock: Callable[[], float], now: Callable[[], datetime],
                 jitter_s: float = JITTER_S, settle_s: float = SETTLE_S, origin: float | None = None) -> None:
        self.spec = spec
        self.writer = writer
        self.sidecar = sidecar
        self.sidecar_path = sidecar_path_for(writer.final_path)
        self.max_duration_s = max_duration_s
        self._clock = clock
        self._now = now
        self.timeline = Timeline(spec.rate, writer.frame_size, clock() if origin is None else origin,
                                 jitter_s=jitter_s, settle_s=settle_s)
        # Why the next silence is there: after a detach the stream was lost; otherwise nothing was sent.
        self._next_cause: str | None = None
        self.detached_at: float | None = None
        self._lost_at: float | None = None  # when the last connection ended, until audio flows again
        self.detach_reason: str | None = None  # how the last connection ended, while detached
        self._connection_errors: list[str] = []  # what went wrong on connections that ended before the call
        self.silent_frames = sum(int(g.get("frames", 0)) for g in sidecar.gaps) + sidecar.gaps_unlisted_frames
        self.limit_reason: str | None = None
        # Both limits become one byte budget in whole frames; the smaller one names the reason.
        self._budget: int | None = None
        self._budget_reason: str | None = None
        frame = writer.frame_size
        if max_bytes is not None:
            self._budget, self._budget_reason = max_bytes - max_bytes % frame, MAX_BYTES
        if max_duration_s is not None:
            by_time = int(max_duration_s * spec.rate) * frame
            if self._budget is None or by_time < self._budget:
                self._budget, self._budget_reason = by_time, MAX_DURATION
        self._sidecar_saved_at = float("-inf")
        self._sidecar_due = False  # a gap not saved yet
        self.finished = False
        self.file_failed = False  # the WAV could not be written or finalised: never to be continued
        self.sidecar_saved = True  # False: finished, but its final sidecar is not on disk yet
        self.arrived_bytes = 0  # audio bytes received by this process (held back or written)
        self.write_error: str | None = None  # set when opening could not write: end the recording at once
        self.attached_at = 0.0
        # Set once a mixed or stereo stream has been connected NO_AUDIO_WARN_S without a single frame.
        self.no_audio_warning: str | None = None

    @classmethod
    def open(cls, spec: StreamSpec, directory: os.PathLike | str, template: FilenameTemplate, *,
             max_duration_s: float | None = None, max_bytes: int | None = None,
             header_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
             now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
             jitter_s: float = JITTER_S, settle_s: float = SETTLE_S) -> "Recording":
        started = now()
        directory = Path(directory)
        relative = template.render(moment=started, uuid=spec.uuid, caller=spec.caller,
                                   destination=spec.destination, rule=spec.rule_name)
        final = choose_path(directory, relative)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(final.parent, "cannot create the recordings directory", exc) from exc
        writer = WavWriter.create(final, spec.rate, spec.channels, header_interval_s=header_interval_s,
                                  clock=clock)
        sidecar = Sidecar(uuid=spec.uuid, caller=spec.caller, destination=spec.destination, rule=spec.rule_name,
                          rate=spec.rate, channels=spec.channels, wav=final.name, started_at=started,
                          metadata=spec.metadata, switch=spec.switch)
        recording = cls(spec, writer, sidecar, max_duration_s=max_duration_s, max_bytes=max_bytes, clock=clock,
                        now=now, jitter_s=jitter_s, settle_s=settle_s)
        recording.attach()
        try:
            sidecar.write(recording.sidecar_path)
        except RecordingError:
            writer.abandon()
            _unlink_quietly(writer.part_path)
            raise
        return recording

    @classmethod
    def resume(cls, spec: StreamSpec, final_path: Path, *, away_s: float, cause: str,
               max_duration_s: float | None = None, max_bytes: int | None = None, header_interval_s: float = 1.0,
               clock: Callable[[], float] = time.monotonic,
               now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
               jitter_s: float = JITTER_S, settle_s: float = SETTLE_S) -> "Recording":
        """Continue a recording an earlier process left (repaired at start-up), `away_s` seconds later.

        When the silence for the time away cannot be written (a full disk), the recording comes back with
        ``write_error`` set: its owner ends it at once, which finalises the one file the call has."""
        writer = WavWriter.resume(final_path, spec.rate, spec.channels, header_interval_s=header_interval_s,
                                  clock=clock)
        sidecar = Sidecar(uuid=spec.uuid, caller=spec.caller, destination=spec.destination, rule=spec.rule_name,
                          rate=spec.rate, channels=spec.channels, wav=final_path.name, started_at=now(),
                          metadata=spec.metadata, switch=spec.switch)
        try:
            earlier = json.loads(sidecar_path_for(final_path).read_text(encoding="utf-8"))
            sidecar.started_at = datetime.fromisoformat(earlier["start_time"].replace("Z", "+00:00"))
            sidecar.frames = int(earlier.get("frames", 0))
            sidecar.text_frames = list(earlier.get("text_frames", []))
            sidecar.gaps = list(earlier.get("gaps", []))
            sidecar.gaps_unlisted = int(earlier.get("gaps_unlisted", 0))
            sidecar.gaps_unlisted_frames = int(earlier.get("gaps_unlisted_frames", 0))
            sidecar.connections = int(earlier.get("connections", 1))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("call %s: no usable sidecar beside %s; starting a new one", spec.uuid, final_path)
        # The audio on disk ends where the earlier process stopped, `away_s` ago (wall time, exact): that time
        # is silence now, whatever its length, and the timeline goes on from here.
        away = int(round(away_s * spec.rate))
        origin = clock() - (writer.sample_frames + away) / spec.rate
        recording = cls(spec, writer, sidecar, max_duration_s=max_duration_s, max_bytes=max_bytes, clock=clock,
                        now=now, jitter_s=jitter_s, settle_s=settle_s, origin=origin)
        recording.attach()
        try:
            recording._add_silence(away, cause, save=False)  # the sidecar is saved below
        except RecordingError as exc:
            recording.write_error = str(exc)
        # Open again: the sidecar must say so, or a second crash would leave the first one's verdict on it.
        recording._save_sidecar()
        return recording

    @property
    def path(self) -> Path:
        return self.writer.final_path

    @property
    def received_bytes(self) -> int:
        """Audio that came from the switch (what the WAV holds, less the silence the recorder wrote)."""
        return self.writer.data_bytes - self.silent_frames * self.writer.frame_size

    def attach(self) -> None:
        """A new connection carries the call's audio again."""
        self.attached_at = self._clock()
        self.detached_at = None
        self.detach_reason = None
        self.sidecar.connections += 1

    def detach(self, reason: str, error: str | None = None, at: float | None = None) -> None:
        """The connection ended (at `at`, default now) but the call goes on: keep the file open, its header
        current."""
        lost_at = self._clock() if at is None else at
        self._write(self.timeline.settle_now())  # no more frames will tell what a held-back deficit was
        self.detached_at = self._lost_at = lost_at
        self.detach_reason = reason
        if error:
            self._connection_errors.append(error)
        self._next_cause = STREAM_LOST
        # The rest of a half-received frame never comes: kept, it would shift every later sample by its bytes.
        dropped = self.writer.drop_partial_frame()
        if dropped:
            log.warning("call %s: connection ended mid-sample (%s); %d byte(s) of a partial frame dropped",
                        self.spec.uuid, reason, dropped)
        try:
            self.writer.refresh_header(force=True)
        except RecordingError as exc:
            log.error("call %s: %s", self.spec.uuid, exc)
        if self._sidecar_due:  # no tick saves it while detached
            self._save_sidecar()

    def _add_silence(self, frames: int, cause: str, save: bool = True) -> None:
        """Silence for time without audio; after a drop, the share before it was a connection sending nothing.

        Silence counts against the limits like audio: when it uses up the budget, the recording ends there.
        """
        if self._budget is not None:
            room = max(0, (self._budget - self.writer.data_bytes) // self.writer.frame_size)
            if frames and frames >= room:
                frames = room
                self.limit_reason = self._budget_reason
        if frames and cause == STREAM_LOST and self._lost_at is not None:
            quiet = min(frames, self.timeline.silence_until(self._lost_at, self.writer.sample_frames))
            if quiet:
                self._add_gap(quiet, NO_AUDIO, save)
            frames -= quiet
        if frames:
            self._add_gap(frames, cause, save)

    def _add_gap(self, frames: int, cause: str, save: bool = True) -> None:
        gap = Gap(self.writer.sample_frames, frames, cause, self.spec.rate)
        # One call that never yields (long silence is a file extension): nothing else can touch the recording
        # while its gap is half written.
        self.writer.append_silence(frames)
        self.silent_frames += frames
        self.sidecar.add_gap(gap.to_dict())
        log.info("call %s: %.3f s of silence for %s at %.3f s", self.spec.uuid, frames / self.spec.rate, cause,
                 gap.start_frame / self.spec.rate)
        # Saved soon after each gap, so a crash later still leaves the list that explains the WAV.
        if save:
            if self._clock() - self._sidecar_saved_at >= SIDECAR_SAVE_INTERVAL_S:
                self._save_sidecar()
            else:
                self._sidecar_due = True

    def _save_sidecar(self) -> None:
        self._sidecar_saved_at = self._clock()
        self._sidecar_due = False
        self.sidecar.bytes = self.writer.header_data_bytes
        self.sidecar.duration_s = self.sidecar.bytes / (self.writer.frame_size * self.spec.rate)
        try:
            self.sidecar.write(self.sidecar_path)
        except RecordingError as exc:
            log.error("call %s: %s", self.spec.uuid, exc)  # the WAV matters more; the final write retries

    def elapsed_s(self) -> float:
        """Time since the WAV's start (its sample frame 0), also after a restart continued the file."""
        return self._clock() - self.timeline.origin

    def on_audio(self, data: bytes | bytearray | memoryview, arrival: float | None = None) -> str | None:
        """Take one binary frame that arrived at ``arrival`` (default: now); returns the limit reason once a
        limit is reached (the rest is cut off). The wall-clock limit is the tick's to check."""
        if self.limit_reason is not None:
            return self.limit_reason
        self.sidecar.frames += 1
        self.arrived_bytes += len(data)
        writer = self.writer
        written = writer.data_bytes + writer.pending_bytes
        pieces = self.timeline.place(self._clock() if arrival is None else arrival, data, written)
        if (len(pieces) == 1 and pieces[0] is data and self._next_cause is None
                and (self._budget is None or written + len(data) < self._budget)):
            writer.write(data)  # the common case: in time, within the limits
        else:
            self._write(pieces)
        return self.limit_reason

    def _check_audio_flows(self) -> None:
        """Mixed and stereo carry audio only while something is written to the channel: a parked or sleeping
        call sends nothing, all call long. Say so once, clearly, instead of recording silence without a word."""
        if (self.no_audio_warning is None and self.spec.mix != "mono" and self.sidecar.frames == 0
                and self._clock() - self.attached_at >= NO_AUDIO_WARN_S):
            self.no_audio_warning = (f"its {self.spec.mix} stream has delivered no audio in {NO_AUDIO_WARN_S:g} s "
                                     "of being connected: nothing is written to the channel (is the call parked "
                                     "or sleeping? play something, e.g. endless_playback silence_stream://-1)")
            log.warning("call %s: %s", self.spec.uuid, self.no_audio_warning)

    def _check_duration(self) -> str | None:
        """The wall-clock limit (it also ends a recording that receives nothing)."""
        if self.limit_reason is None and self.max_duration_s is not None and self.elapsed_s() >= self.max_duration_s:
            self._write(self.timeline.settle_now())  # the end has come: decide what is held back now
            self.limit_reason = self.limit_reason or MAX_DURATION
        return self.limit_reason

    def _write(self, pieces: list[Piece]) -> None:
        """Write what the timeline placed, in order, within the limits."""
        for piece in pieces:
            if self.limit_reason is not None:
                return
            if isinstance(piece, Silence):
                self._add_silence(piece.frames, self._next_cause or NO_AUDIO)
                continue
            self._next_cause = self._lost_at = None  # audio flows again
            if self._budget is not None:
                room = self._budget - self.writer.data_bytes - self.writer.pending_bytes
                if len(piece) >= room:
                    self.writer.write(memoryview(piece)[:max(room, 0)])
                    self.limit_reason = self._budget_reason
                    return
            self.writer.write(piece)

    def live_stats(self, now: float, conn) -> dict:
        """What it holds so far (for /calls and the doctor); `conn`: the call's connection now, if any."""
        attached = conn is not None and conn.recording is self and not conn.ended
        writer, sidecar = self.writer, self.sidecar
        return {
            "rule": self.spec.rule_name, "rate": self.spec.rate, "channels": self.spec.channels,
            "path": str(self.path), "seconds": round(writer.duration_s, 3), "bytes": writer.data_bytes,
            "frames": sidecar.frames, "received_bytes": self.received_bytes, "arrived_bytes": self.arrived_bytes,
            "connected": attached, "last_frame_age_s": round(now - conn.heard_at, 3) if attached else None,
            "connections": sidecar.connections, "gaps": len(sidecar.gaps) + sidecar.gaps_unlisted,
            "gap_seconds": round(self.silent_frames / self.spec.rate, 3),
            "no_audio_warning": self.no_audio_warning,
        }

    def on_text(self, text: str) -> None:
        self.sidecar.add_text(self.elapsed_s(), text)

    def tick(self) -> str | None:
        """Periodic upkeep while no frame may be arriving: a held-back deficit decided once its time has come,
        header and sidecar current, wall time enforced."""
        self._write(self.timeline.settle(self._clock()))
        self.writer.refresh_header()
        self._check_audio_flows()
        if self._sidecar_due and self._clock() - self._sidecar_saved_at >= SIDECAR_SAVE_INTERVAL_S:
            self._save_sidecar()
        return self._check_duration()

    def finish(self, reason: str, *, close_code: int | None = None, close_text: str | None = None,
               error: str | None = None, end_at: float | None = None) -> Path:
        """Finalise the WAV (rename to its final name) and the sidecar. Safe to call once only.

        `end_at` (same clock as arrivals): when the call ended; silence up to it keeps the timeline true when
        the stream was down at the end. Without it the recording ends when its last connection did.
        A server stop is not the call's end: the silence up to it keeps its cause (the stream lost, or a
        connection sending nothing), so a later process that continues the file has a true timeline.
        """
        if self.finished:
            raise RecordingError(self.path, "the recording is already finished")
        self.finished = True
        sidecar = self.sidecar
        sidecar.close_reason = reason
        if close_code is not None or close_text is not None or sidecar.close_code is None:
            sidecar.close_code = close_code
            sidecar.close_text = close_text
        errors = self._connection_errors + ([error] if error else [])
        if reason not in (WRITE_ERROR, MAX_BYTES, MAX_DURATION):
            moment = end_at if end_at is not None else self.detached_at if self.detached_at is not None \
                else self._clock()
            # From the last audio to the end; but a stream that never brought any was not cut short at its end.
            cause = TAIL if self.sidecar.frames else NO_AUDIO
            if reason == SERVER_STOP:
                cause = STREAM_LOST if self.detached_at is not None else NO_AUDIO
            try:
                self._write(self.timeline.settle_now())  # audio held back for an undecided deficit first
                tail = self.timeline.silence_until(moment, self.writer.sample_frames)
                self._add_silence(tail, cause, save=False)  # the sidecar is written once, below
            except RecordingError as exc:
                self.file_failed = True
                errors.append(str(exc))
            if self.limit_reason is not None:  # the silence to the end was cut at a limit: that ended it
                sidecar.close_reason = self.limit_reason
        try:
            self.writer.close()
        except RecordingError as exc:
            self.file_failed = True
            errors.append(str(exc))
        sidecar.ended_at = self._now()
        sidecar.bytes = self.writer.data_bytes
        sidecar.duration_s = self.writer.duration_s
        sidecar.dropped_bytes = self.writer.dropped_bytes
        sidecar.captured_s = max(0.0, (self.writer.sample_frames - self.silent_frames) / self.spec.rate)
        sidecar.error = "; ".join(errors) or None
        self.sidecar_saved = self.save_final_sidecar()
        return self.path

    def save_final_sidecar(self) -> bool:
        """Write the finished recording's sidecar; False (logged) when it cannot be written yet (a full disk):
        the server tries again until it can, and start-up recovery repairs it if the process ends first."""
        try:
            self.sidecar.write(self.sidecar_path)
        except RecordingError as exc:
            log.error("call %s: %s; the WAV is complete, the sidecar will be written again", self.spec.uuid, exc)
            return False
        return True


    def remove_files(self) -> None:
        """Delete the finished recording's WAV and sidecar (a test stream's)."""
        for path in (self.path, self.writer.part_path, self.sidecar_path):
            _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
