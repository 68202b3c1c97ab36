"""Streaming WAV files for s16le PCM: the file on disk is playable at every moment. No sockets, no gevent.

A recording is written to ``<final>.part``. The canonical 44-byte header (RIFF, ``fmt `` PCM, ``data``) is
written first and its two size fields are rewritten after every second of audio and, by the owner's timer
(``refresh_header``), once a second of wall time while audio comes sparsely, so a
process killed with SIGKILL leaves a file whose header matches the data up to the last update; ``repair``
makes the rest of it count. ``close`` finalises the header and renames the file to its final name atomically.

The header is hand-written with ``struct`` because stdlib ``wave`` can neither reopen a file to append nor
update its sizes on our schedule; tests read the results with ``wave`` to prove the layout is standard.
Writes go straight to the file descriptor through a small bounded buffer, so the writer always knows how
many bytes reached the file (which matters when the disk fills up) and memory stays flat however long the
call is. The buffer only batches writes: its owner flushes it every few tens of milliseconds (``flush``), so a
killed process loses no audio it had received.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SAMPLE_WIDTH = 2  # signed 16-bit little-endian, the only format mod_audio_stream sends
HEADER_SIZE = 44
PART_SUFFIX = ".part"
ALLOWED_CHANNELS = (1, 2)

# Bytes held in memory before they go to the file: a few seconds of 8 kHz audio, ~0.3 s of 48 kHz stereo.
WRITE_BUFFER = 64 * 1024
_ZEROS = bytes(WRITE_BUFFER)

# "RIFF" <riff size> "WAVE" "fmt " 16 <PCM=1> <channels> <rate> <byte rate> <block align> <bits> "data" <size>
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_RIFF_SIZE_OFFSET = 4
_DATA_SIZE_OFFSET = 40
_MAX_DATA = 0xFFFFFFFF - (HEADER_SIZE - 8)  # the RIFF size field is 32 bits


class RecordingError(Exception):
    """A recording file could not be written, read or repaired; names the file and the cause."""

    def __init__(self, path: os.PathLike | str, problem: str, cause: BaseException | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.cause = cause
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{self.path}: {problem}{detail}")


def part_path_for(final_path: os.PathLike | str) -> Path:
    final_path = Path(final_path)
    return final_path.with_name(final_path.name + PART_SUFFIX)


def final_path_for(part_path: os.PathLike | str) -> Path:
    part_path = Path(part_path)
    if not part_path.name.endswith(PART_SUFFIX):
        raise RecordingError(part_path, f"not an unfinished recording (name does not end in {PART_SUFFIX!r})")
    return part_path.with_name(part_path.name[: -len(PART_SUFFIX)])


def build_header(rate: int, channels: int, data_bytes: int) -> bytes:
    block_align = SAMPLE_WIDTH * channels
    return _HEADER.pack(
        b"RIFF", HEADER_SIZE - 8 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, channels, rate, rate * block_align, block_align, SAMPLE_WIDTH * 8,
        b"data", data_bytes,
    )


@dataclass(frozen=True)
class WavFormat:
    rate: int
    channels: int
    data_bytes: int  # as the header claims

    @property
    def frame_size(self) -> int:
        return SAMPLE_WIDTH * self.channels


def parse_header(header: bytes, path: os.PathLike | str = "<bytes>") -> WavFormat:
    """Read the canonical 44-byte header this module writes; anything else is refused, not guessed at."""
    if len(header) < HEADER_SIZE:
        raise RecordingError(path, f"too short for a WAV header ({len(header)} bytes, need {HEADER_SIZE})")
    (riff, _riff_size, wave_id, fmt_id, fmt_size, fmt_tag, channels, rate, byte_rate, block_align, bits,
     data_id, data_bytes) = _HEADER.unpack(header[:HEADER_SIZE])
    if (riff, wave_id, fmt_id, data_id) != (b"RIFF", b"WAVE", b"fmt ", b"data") or fmt_size != 16:
        raise RecordingError(path, "not a canonical 44-byte PCM WAV header (RIFF/WAVE/fmt /data) as this recorder writes")
    if fmt_tag != 1 or bits != SAMPLE_WIDTH * 8:
        raise RecordingError(path, f"not 16-bit PCM (format tag {fmt_tag}, {bits} bits per sample)")
    if channels not in ALLOWED_CHANNELS or rate <= 0:
        raise RecordingError(path, f"unsupported layout: {rate} Hz, {channels} channels")
    if block_align != SAMPLE_WIDTH * channels or byte_rate != rate * block_align:
        raise RecordingError(path, f"inconsistent header: block align {block_align}, byte rate {byte_rate}")
    return WavFormat(rate=rate, channels=channels, data_bytes=data_bytes)


def _check_same_format(found: "WavFormat | RepairResult", path: Path, rate: int, channels: int) -> None:
    if (found.rate, found.channels) != (rate, channels):
        raise RecordingError(path, f"cannot append {rate} Hz {channels}-channel audio to a {found.rate} Hz "
                                   f"{found.channels}-channel recording")


def _check_format(rate: int, channels: int) -> None:
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"rate must be a positive whole number of Hz, got {rate!r}")
    if channels not in ALLOWED_CHANNELS:
        raise ValueError(f"channels must be 1 (mono/mixed) or 2 (stereo), got {channels!r}")


@dataclass(frozen=True)
class RepairResult:
    """What ``repair`` found and did to one unfinished file."""

    path: Path
    rate: int
    channels: int
    header_data_bytes: int  # what the header claimed before the repair
    data_bytes: int  # whole frames of audio in the file now
    truncated_bytes: int  # a trailing partial frame cut off

    @property
    def changed(self) -> bool:
        return self.header_data_bytes != self.data_bytes or self.truncated_bytes > 0


def repair(path: os.PathLike | str) -> RepairResult:
    """Make an unfinished recording's header tell the truth: truncate to whole frames, set both sizes.

    Works in place on any file this module wrote (usually a ``.part`` left by a killed process); the name
    is left alone so the caller decides whether to finalise or resume it.
    """
    path = Path(path)
    try:
        with open(path, "r+b") as f:
            fmt = parse_header(f.read(HEADER_SIZE), path)
            size = os.fstat(f.fileno()).st_size
            audio = size - HEADER_SIZE
            whole = min(audio - audio % fmt.frame_size, _MAX_DATA - _MAX_DATA % fmt.frame_size)
            if whole != audio:
                f.truncate(HEADER_SIZE + whole)
            if whole != fmt.data_bytes:
                f.seek(0)
                f.write(build_header(fmt.rate, fmt.channels, whole))
    except OSError as exc:
        raise RecordingError(path, "cannot repair the recording", exc) from exc
    return RepairResult(path, fmt.rate, fmt.channels, fmt.data_bytes, whole, audio - whole)


class WavWriter:
    """One recording being written: any byte sizes in, whole frames on disk, header current each second.

    Create with ``WavWriter.create`` (a new file) or ``WavWriter.resume`` (append to an earlier one).
    """

    def __init__(self, final_path: Path, fd: int, rate: int, channels: int, data_bytes: int, *,
                 header_interval_s: float, clock: Callable[[], float]) -> None:
        self.final_path = final_path
        self.part_path = part_path_for(final_path)
        self.rate = rate
        self.channels = channels
        self.frame_size = SAMPLE_WIDTH * channels
        self.header_interval_s = header_interval_s
        self._clock = clock
        self._fd: int | None = fd
        self._buffer = bytearray()
        self._pending = bytearray()  # < one frame, waiting for the rest of its bytes
        self.data_bytes = data_bytes  # whole frames accepted (on disk or in the buffer)
        self.dropped_bytes = 0  # partial frames discarded (at close, before silence, after a failure)
        self.error: RecordingError | None = None
        self._on_disk = data_bytes
        self._header_bytes = data_bytes
        self._header_at = clock()
        self._header_every_bytes = max(self.frame_size, int(rate * self.frame_size * header_interval_s))

    # ---- opening ----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, final_path: os.PathLike | str, rate: int, channels: int, *,
               header_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> "WavWriter":
        """Start a new recording at ``<final_path>.part``; refuses to overwrite either name."""
        _check_format(rate, channels)
        final_path = Path(final_path)
        if final_path.exists():
            raise RecordingError(final_path, "a recording with this name already exists")
        part = part_path_for(final_path)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileExistsError as exc:
            raise RecordingError(part, "an unfinished recording with this name already exists", exc) from exc
        except OSError as exc:
            raise RecordingError(part, "cannot create the recording", exc) from exc
        writer = cls(final_path, fd, rate, channels, 0, header_interval_s=header_interval_s, clock=clock)
        try:
            writer._write_all(build_header(rate, channels, 0))
        except OSError as exc:
            writer._abandon()
            raise RecordingError(part, "cannot write the WAV header", exc) from exc
        return writer

    @classmethod
    def resume(cls, final_path: os.PathLike | str, rate: int, channels: int, *,
               header_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> "WavWriter":
        """Append to an earlier recording of the same format (repairing an unfinished one first).

        With neither ``<final>`` nor ``<final>.part`` on disk this is ``create``. A finished file is moved
        back to its ``.part`` name while it grows, so a crash never leaves a final name with a stale header.
        """
        _check_format(rate, channels)
        final_path = Path(final_path)
        part = part_path_for(final_path)
        try:
            if not part.exists():
                if not final_path.exists():
                    return cls.create(final_path, rate, channels, header_interval_s=header_interval_s, clock=clock)
                # Check before the rename: a refused file must keep its final name, where its sidecar points.
                with open(final_path, "rb") as f:
                    _check_same_format(parse_header(f.read(HEADER_SIZE), final_path), final_path, rate, channels)
                os.replace(final_path, part)
        except OSError as exc:
            raise RecordingError(final_path, "cannot reopen the recording", exc) from exc
        found = repair(part)
        _check_same_format(found, part, rate, channels)
        try:
            fd = os.open(part, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise RecordingError(part, "cannot reopen the recording", exc) from exc
        return cls(final_path, fd, rate, channels, found.data_bytes, header_interval_s=header_interval_s,
                   clock=clock)

    # ---- writing ----------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def sample_frames(self) -> int:
        """Audio frames (one sample per channel) accepted so far."""
        return self.data_bytes // self.frame_size

    @property
    def duration_s(self) -> float:
        return self.sample_frames / self.rate

    @property
    def pending_bytes(self) -> int:
        """Bytes of a frame begun but not completed yet."""
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """Whole frames accepted but not yet handed to the file (see ``flush``)."""
        return len(self._buffer)

    @property
    def header_data_bytes(self) -> int:
        """What the header on disk currently claims."""
        return self._header_bytes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append PCM of any length; a frame split across calls is joined, never misaligned.

        The header is brought up to date here after every second of audio; when audio comes sparsely, the
        owner's timer does it (``refresh_header``), so the frame path never reads the clock.
        """
        n = len(data)
        if (n % self.frame_size or self._pending or self._fd is None or self.error is not None
                or self.data_bytes + n > _MAX_DATA):
            self._write_any(data)
            return
        # The common case, once per frame of every call: whole samples, nothing pending.
        self.data_bytes += n
        self._buffer += data
        if len(self._buffer) >= WRITE_BUFFER:
            self._flush()
        if self.data_bytes - self._header_bytes >= self._header_every_bytes:
            self._update_header()

    def _write_any(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        view = memoryview(data).cast("B")
        if self._pending:
            need = self.frame_size - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < self.frame_size:
                return
            self._accept(self._pending)
            self._pending = bytearray()
        whole = len(view) - len(view) % self.frame_size
        if whole:
            self._accept(view[:whole])
        if whole < len(view):
            self._pending += view[whole:]
        if self.data_bytes - self._header_bytes >= self._header_every_bytes:
            self._update_header()

    def append_silence(self, n_frames: int) -> None:
        """Append ``n_frames`` frames of digital silence (to keep a call's timeline across gaps)."""
        self._check_open()
        if not isinstance(n_frames, int) or n_frames < 0:
            raise ValueError(f"silence must be a whole number of frames >= 0, got {n_frames!r}")
        # A half-received frame cannot straddle a gap: its other half never came.
        self._drop_pending()
        size = n_frames * self.frame_size
        if size <= len(_ZEROS):
            self._accept(memoryview(_ZEROS)[:size])
        else:
            # Longer silence extends the file instead (its new bytes read as zeros): an hour of it costs one
            # system call, and nothing waits while it is written.
            self._flush()
            if self.data_bytes + size > _MAX_DATA:
                self._fail("the WAV format cannot hold more than 4 GiB of audio", None)
            try:
                os.ftruncate(self._fd, HEADER_SIZE + self._on_disk + size)
                os.lseek(self._fd, 0, os.SEEK_END)
            except OSError as exc:
                self._fail("cannot write silence", exc)
            self._on_disk += size
            self.data_bytes += size
        if self.data_bytes - self._header_bytes >= self._header_every_bytes:
            self._update_header()

    def flush(self) -> None:
        """Hand every buffered frame to the file now. The owner calls this on a short timer, so audio reaches
        the page cache (which outlives a killed process) within that time, while a burst still goes out in
        few writes."""
        self._check_open()
        self._flush()

    def drop_partial_frame(self) -> int:
        """Discard a frame begun but not completed (its connection ended); returns the bytes dropped."""
        dropped = len(self._pending)
        self._drop_pending()
        return dropped

    def refresh_header(self, force: bool = False) -> bool:
        """Bring the header up to date if it is due (or ``force``); True when it was rewritten.

        The server calls this from its periodic tick so the header also stays current while no frames come.
        """
        self._check_open()
        if self._header_bytes == self.data_bytes:
            self._header_at = self._clock()
            return False
        if not force and self._clock() - self._header_at < self.header_interval_s:
            return False
        self._update_header()
        return True

    def close(self) -> Path:
        """Finalise the header, rename to the final name atomically, return that name.

        A trailing partial frame is dropped (and counted in ``dropped_bytes``). After a write failure the file
        is still finalised with whatever reached the disk, then the original error is raised.
        """
        if self._fd is None:
            raise RecordingError(self.part_path, "the recording is already closed")
        self._drop_pending()
        try:
            if self.error is None:
                try:
                    self._flush()
                except RecordingError:
                    pass  # recorded in self.error; finalise what is on disk below
            self._truncate_to_disk_contents()
            os.pwrite(self._fd, build_header(self.rate, self.channels, self._on_disk), 0)
            self._header_bytes = self._on_disk
            self._close_fd()
            self._rename_final()
        except OSError as exc:
            self._abandon()
            raise RecordingError(self.part_path, "cannot finalise the recording", exc) from exc
        if self.error is not None:
            raise self.error
        return self.final_path

    def abandon(self) -> None:
        """Close without finalising: leaves the ``.part`` as it is (for ``repair`` or ``resume`` later)."""
        self._abandon()

    # ---- internals --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._fd is None:
            raise RecordingError(self.part_path, "the recording is already closed")
        if self.error is not None:
            raise self.error

    def _accept(self, frames: memoryview | bytearray) -> None:
        if self.data_bytes + len(frames) > _MAX_DATA:
            self._flush()
            self._fail("the WAV format cannot hold more than 4 GiB of audio", None)
        self.data_bytes += len(frames)
        if len(self._buffer) + len(frames) > WRITE_BUFFER:
            self._flush()
            if len(frames) >= WRITE_BUFFER:
                self._write_data(frames)
                return
        self._buffer += frames

    def _flush(self) -> None:
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            self._write_data(data)

    def _write_data(self, data: memoryview | bytearray) -> None:
        try:
            self._on_disk += self._write_all(data)
        except OSError as exc:
            self._fail("cannot write audio", exc)

    def _write_all(self, data) -> int:
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            exc.bytes_written = done  # type: ignore[attr-defined]
            raise
        return done

    def _fail(self, problem: str, exc: OSError | None) -> None:
        # Keep the count of what really reached the file so close() can finalise exactly that; all the
        # rest (the failed write, anything still buffered) is lost and counted as dropped.
        if exc is not None:
            self._on_disk += getattr(exc, "bytes_written", 0)
        self._buffer = bytearray()
        self.dropped_bytes += self.data_bytes - self._on_disk
        self.data_bytes = self._on_disk
        self.error = RecordingError(self.part_path, problem, exc)
        raise self.error

    def _update_header(self) -> None:
        # Data first, then the sizes that describe it: a kill between the two leaves a header that is
        # merely behind, which still plays.
        self._flush()
        whole = self._on_disk
        try:
            os.pwrite(self._fd, build_header(self.rate, self.channels, whole), 0)
        except OSError as exc:
            self._fail("cannot update the WAV header", exc)
        self._header_bytes = whole
        self._header_at = self._clock()

    def _drop_pending(self) -> None:
        self.dropped_bytes += len(self._pending)
        self._pending = bytearray()

    def _truncate_to_disk_contents(self) -> None:
        # A failed write may have left a partial frame on disk; the header must only count whole frames.
        whole = self._on_disk - self._on_disk % self.frame_size
        if whole != self._on_disk or os.fstat(self._fd).st_size != HEADER_SIZE + whole:
            self.dropped_bytes += self._on_disk - whole
            os.ftruncate(self._fd, HEADER_SIZE + whole)
            self._on_disk = whole
            self.data_bytes = whole

    def _rename_final(self) -> None:
        # Never clobber an existing final file (another recording, or an earlier part of this one).
        if self.final_path.exists():
            raise FileExistsError(f"{self.final_path} appeared while recording; keeping {self.part_path.name}")
        os.replace(self.part_path, self.final_path)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _abandon(self) -> None:
        try:
            self._close_fd()
        except OSError:
            pass
