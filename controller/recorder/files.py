"""The recorder's file side: what becomes of the WAVs when the book decides, and who is told.

The shell (server.py) owns the connections; this owns what is done to recordings: open the file a connection
writes (new, the call's open one, or one an earlier process left), finalise, detach, keep each current (settle,
header, wall-clock limit, flush), write a final sidecar that could not be written before, and carry the calls
a stop left live over to the next process. Each change runs to its end without yielding, so no other greenlet
sees a recording half done. Where a failure means a connection must end, the method says so (an ``Ending`` and
the error) and the shell ends it. The controller hears through callbacks that run in a greenlet of their own,
in order: the recorder never waits for what they do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from gevent.pool import Group

from .book import Attach, Detach, Finalise, OpenNew, RecordingBook, Resume, RetrySidecar, Upkeep
from .filenames import FilenameTemplate
from .recording import CONTROLLER_RESTART, DELIBERATE_REASONS, INTERNAL_ERROR, WRITE_ERROR, Ending, Recording
from .recovery import load_stopped, recover_unfinished, save_stopped
from .wav import RecordingError

log = logging.getLogger("controller.recorder")


class RecordingFiles:
    def __init__(self, book: RecordingBook, directory: Path, template: FilenameTemplate, *,
                 max_duration_s: float | None, max_bytes: int | None, jitter_s: float, settle_s: float,
                 clock: Callable[[], float], wall_clock: Callable[[], float],
                 on_open: Callable[[str], None] | None = None,
                 on_close: Callable[[str, str], None] | None = None,
                 on_detach: Callable[[str, str], None] | None = None,
                 on_finished: Callable[[Recording], None] | None = None) -> None:
        if max_duration_s is not None and max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0 seconds or None (no limit), got {max_duration_s!r}")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0 or None (no limit), got {max_bytes!r}")
        self.book = book
        self.directory = directory
        self.template = template
        self.limits = {"max_duration_s": max_duration_s, "max_bytes": max_bytes, "jitter_s": jitter_s,
                       "settle_s": settle_s, "clock": clock}
        self.clock = clock
        self.wall_clock = wall_clock  # only the time across a restart is wall time
        self.on_open = on_open
        self.on_close = on_close  # once per recording, when it is finalised
        self.on_finished = on_finished  # the same moment, with the finished Recording (its files, its sidecar)
        self.on_detach = on_detach  # a connection ended but the call's recording stays open
        self._notifying = Group()

    # ---- a connection's file ------------------------------------------------------------------------------

    def open_for(self, conn, choice: OpenNew | Attach | Resume) -> Recording | None:
        """The file ``conn`` writes from now on, as the book chose it; None when none could be opened (logged)."""
        spec = conn.spec
        try:
            if isinstance(choice, Attach):
                recording = choice.recording
                recording.attach()
            elif isinstance(choice, Resume):
                # Another process's monotonic clock means nothing here: the outage is measured in wall time.
                away_s = max(0.0, self.wall_clock() - choice.last_write)
                log.info("call %s: continuing %s after %.1f s without a recorder", spec.uuid, choice.path, away_s)
                recording = Recording.resume(spec, choice.path, away_s=away_s, cause=CONTROLLER_RESTART,
                                             **self.limits)
            else:
                recording = Recording.open(spec, self.directory, self.template, **self.limits)
        except (RecordingError, ValueError) as exc:
            log.error("call %s: cannot start the recording: %s", spec.uuid, exc)
            self.book.open_failed(spec.uuid, conn)
            return None
        self.book.opened(spec.uuid, recording)
        state = self.book[spec.uuid]
        if state.relay_stats is not None:
            recording.sidecar.relay = state.relay_stats
        log.info("call %s: recording %s from %s (%d Hz, %d ch)", spec.uuid, recording.path, conn.peer, spec.rate,
                 spec.channels)
        self.notify_later((self.on_open, spec.uuid))
        if recording.write_error is not None:  # continuing the file failed: it ends now, as one file
            log.error("call %s: %s", spec.uuid, recording.write_error)
        return recording

    # ---- the book's decisions -------------------------------------------------------------------------------

    def finalise(self, action: Finalise) -> None:
        recording = action.recording
        if recording.finished:
            return
        try:
            recording.finish(action.reason, end_at=action.end_at, close_code=action.close_code,
                             close_text=action.close_text, error=action.error)
        except RecordingError as exc:
            log.error("call %s: cannot finalise %s: %s", action.uuid, recording.path, exc)
        discard = recording.spec.discard
        if discard:  # a test stream (doctor): counted, then removed
            recording.remove_files()
        reason = recording.sidecar.close_reason or action.reason  # a limit may have cut the silence to the end
        continuable = not (action.call_over or recording.file_failed or discard or reason in DELIBERATE_REASONS
                           or reason == INTERNAL_ERROR)
        self.book.finished(action.uuid, recording, reason, sidecar_saved=recording.sidecar_saved or discard,
                           continuable=continuable, now=self.clock(), wall_now=self.wall_clock())
        sidecar = recording.sidecar
        log.info("call %s: recording finished (%s%s): %s, %d bytes, %.2f s, %d frames, %d text frames%s",
                 action.uuid, reason, f" {action.close_code}" if action.close_code is not None else "",
                 recording.path, sidecar.bytes, sidecar.duration_s, sidecar.frames, len(sidecar.text_frames),
                 f", error: {sidecar.error}" if sidecar.error else "")
        self.notify_later((self.on_finished, recording), (self.on_close, action.uuid, reason))

    def detach(self, action: Detach) -> list[Finalise]:
        """The connection ended but the call's recording stays open; if the file cannot take the audio held
        back, it ends as it is (returned: the shell carries that out)."""
        recording = action.recording
        recording.sidecar.close_code, recording.sidecar.close_text = action.close_code, action.close_text
        try:
            recording.detach(action.reason, action.error, at=action.at)
        except RecordingError as exc:
            log.error("call %s: %s", action.uuid, exc)
            return self.book.recording_failed(action.uuid, str(exc))
        log.info("call %s: stream detached (%s%s); the recording stays open", action.uuid, action.reason,
                 f" {action.close_code}" if action.close_code is not None else "")
        self.notify_later((self.on_detach, action.uuid, action.reason))
        return []

    def upkeep(self, action: Upkeep) -> tuple[Ending, str | None] | None:
        """Time passes for an attached recording; how its connection must end, if it must."""
        try:
            limit = action.recording.tick()
        except RecordingError as exc:
            log.error("call %s: %s", action.conn.spec.uuid, exc)
            return WRITE_ERROR, str(exc)
        if limit is not None:
            log.warning("call %s: %s reached, ending the recording", action.conn.spec.uuid, limit)
            return Ending(limit), None
        return None

    def retry_sidecar(self, action: RetrySidecar) -> None:
        saved = action.recording.save_final_sidecar()
        if saved:
            log.info("call %s: the final sidecar %s is written now", action.uuid, action.recording.sidecar_path)
        self.book.sidecar_retried(action.uuid, saved, self.clock())

    def flush(self) -> list[tuple[object, str]]:
        """Buffered audio to the file (the page cache, which outlives the process). Returns the connections that
        must end because their file failed; a detached recording whose file failed is finalised here."""
        failed = []
        for state in list(self.book.calls.values()):
            recording, conn = state.recording, state.conn
            if recording is None or recording.finished or not recording.writer.buffered_bytes:
                continue
            try:
                recording.writer.flush()
            except RecordingError as exc:
                log.error("call %s: %s", state.uuid, exc)
                if conn is not None:
                    failed.append((conn, str(exc)))
                else:
                    for action in self.book.recording_failed(state.uuid, str(exc)):
                        self.finalise(action)
        return failed

    # ---- telling the controller ------------------------------------------------------------------------------

    def notify_later(self, *calls) -> None:
        """Callbacks run in a greenlet of their own, in order: the recorder never waits for what they do."""
        calls = [c for c in calls if c[0] is not None]
        if calls:
            self._notifying.spawn(lambda: [self._notify(*c) for c in calls])

    @staticmethod
    def _notify(callback, *args) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("recorder callback %r failed for %s", callback, args)

    def join(self, timeout: float) -> None:
        self._notifying.join(timeout=timeout)

    # ---- across a restart -------------------------------------------------------------------------------------

    def recover(self) -> None:
        """An earlier process may have died mid-call: make its files playable, and let a call that is still live
        continue in the same file once the controller announces it again; the same for the calls the last
        stop() finalised while they were live."""
        for found in recover_unfinished(self.directory):
            if found.uuid and found.renamed:
                self.book.note_resumable(found.uuid, found.final_path, found.last_write, self.clock())
        stopped_at, recordings = load_stopped(self.directory)
        for uuid, path in recordings.items():
            self.book.note_resumable(uuid, path, stopped_at, self.clock())

    def save_stopped(self) -> None:
        save_stopped(self.directory, self.wall_clock(), {state.uuid: str(state.resumable.path)
                                                         for state in self.book.calls.values()
                                                         if state.resumable is not None and state.resumable.by_stop})
