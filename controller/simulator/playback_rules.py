"""Playing a file into a call as FreeSWITCH 1.10.12 does it: uuid_broadcast / uuid_break (mod_commands.c), what
switch_ivr_play_file can open and what it writes (switch_ivr_play_say.c, switch_core_file.c, mod_sndfile,
mod_dptools' file_string), and the channel variables a playback leaves. No I/O except reading the file.

What the simulator can play, and how FreeSWITCH reads each (mod_sndfile picks the format by extension, matched
case-sensitively):
    .r8 .r16 .raw    raw s16le at 8000 / 16000 / 8000 Hz
    .r24 .r32        raw at 24000 / 32000 Hz, but read as 24-bit / 32-bit samples (mod_sndfile's mapping): the
                     s16le audio mod_audio_stream writes for a 24 or 32 kHz streamAudio plays as noise, 2/3 or
                     1/2 as long
    .wav             16-bit PCM WAV, any channel count (summed into one, saturating, as switch_mux_channels does)
    tone_stream://, silence_stream://   as originate_rules reads them
    file_string://a!b!c                 each part in turn, opened when the one before ends, after 250 ms of
                                        samples of -1 (see FileString)
Everything else fails to open, as on the real switch for .r48, .r64, .pcmu and .pcma (no module registers those
extensions: mod_native_file's are upper case). .mp3 and .ogg play on a switch with mod_shout or a libsndfile
that reads them; the simulator has no decoder for them and fails them too.
"""

from __future__ import annotations

import io
import struct
import sys
import wave
from array import array
from dataclasses import dataclass

from . import audio_stream_rules as words_rules
from . import originate_rules, signals

BROADCAST_SYNTAX = "<uuid> <path> [aleg|bleg|holdb|both]"
BROADCAST_USAGE = f"-USAGE: {BROADCAST_SYNTAX}\n"
BROADCAST_SENT = "+OK Message sent\n"
BROADCAST_NO_CHANNEL = "-ERR invalid uuid\n"
BREAK_SYNTAX = "<uuid> [all]"
BREAK_USAGE = f"-USAGE: {BREAK_SYNTAX}\n"
BREAK_DONE = "+OK\n"
NO_SUCH_CHANNEL = "-ERR No such channel!\n"

BASE_DIR = "/usr/local/freeswitch"  # SWITCH_GLOBAL_dirs.base_dir: where a relative playback path is looked for
SOUNDS_DIR = "/usr/local/freeswitch/sounds"  # ... and a relative file_string part
FILE_STRING_PREFIX = "file_string://"
FILE_STRING_LEAD_MS = 250  # file_string's next_file: the first file is preceded by this much (samples of -1)
FILE_STRING_MAX_FILES = 128  # file_string_context's argv[128]
READ_BLOCK_SAMPLES = 16384  # switch_ivr_play_file reads the file this many samples at a time (FILE_STARTSAMPLES/2)
PAD_BYTE = b"\xff"  # play_file fills the last frame's rest with 0xff bytes: samples of -1
RAW_FORMATS = {"r8": (8000, 2), "raw": (8000, 2), "r16": (16000, 2), "r24": (24000, 3), "r32": (32000, 4)}


# ---- the commands ----


@dataclass(frozen=True)
class Broadcast:
    """uuid_broadcast's arguments as mod_commands and switch_ivr_broadcast read them."""

    uuid: str
    path: str
    app: str = "playback"
    aleg: bool = True  # SMF_ECHO_ALEG: queued on this channel
    bleg: bool = False  # SMF_ECHO_BLEG: queued on the bridged partner
    hold_bleg: bool = True  # SMF_HOLD_BLEG (the partner hears hold music only if hold_music is set)
    cause: str | None = None  # app!cause::path: hang up with this cause after the application


def parse_broadcast(args: str) -> Broadcast | str:
    """The arguments, or the reply for bad ones. argv holds 4 words (the last keeps the rest of the line);
    the third is matched case-insensitively for both/aleg/bleg/holdb anywhere in it, in that order; a third
    word naming none of them queues nothing at all (the reply is still +OK Message sent)."""
    words = words_rules.separate_words(args, 4) if args else []
    if not args or len(words) < 2:
        return BROADCAST_USAGE
    uuid, path = words[0], words[1]
    aleg, bleg, hold = True, False, True
    if len(words) > 2:
        legs = words[2].lower()
        aleg = bleg = hold = False
        if "both" in legs:
            aleg = bleg = True
        if "aleg" in legs:
            aleg = True
        if "bleg" in legs:
            hold, bleg = False, True
        if "holdb" in legs:
            bleg, hold = False, True
    app, cause = "playback", None
    first_colon = path.find(":")
    if first_colon >= 0 and path[first_colon + 1 : first_colon + 2] == ":":
        app, path = path[:first_colon], path[first_colon + 2 :]
        if "!" in app:
            app, cause = app.split("!", 1)
            cause = cause or "normal_clearing"
    return Broadcast(uuid, path, app, aleg, bleg, hold, cause)


@dataclass(frozen=True)
class Break:
    uuid: str
    all: bool = False  # also drop the broadcasts queued behind the current one
    both: bool = False  # the bridged partner too


def parse_break(args: str) -> Break | str:
    """uuid_break <uuid> [all]: the uuid is everything before the first space; "all" / "both" anywhere after."""
    if not args:
        return BREAK_USAGE
    uuid, space, flags = args.partition(" ")
    return Break(uuid, all="all" in flags, both="both" in flags) if space else Break(uuid)


# ---- what a path plays ----


@dataclass(frozen=True)
class Playable:
    """What switch_ivr_play_file opened: `audio` at the channel's rate (the last frame not yet padded)."""

    path: str  # Playback-File-Path: the path as opened (a relative one with its prefix)
    audio: bytes
    native_rate: int  # the file's own rate: playback_ms counts in it
    native_samples: int  # samples read from the file when it plays to the end (playback_samples)
    file_type: str | None = None  # Playback-File-Type: tone_stream or local_stream, else no header
    loop: bool = False  # plays until stopped (tone_stream with loops=-1, silence_stream://0)

    def ticks(self, tick_samples: int) -> int:
        """20 ms frames the playback writes (the last one padded); at least one for a looping playable."""
        samples = len(self.audio) // signals.SAMPLE_BYTES
        return max(1, -(-samples // tick_samples))

    def frames_audio(self, tick_samples: int) -> bytes:
        """The audio as written: whole frames, the last padded with samples of -1."""
        if self.loop:
            return self.audio
        frame = tick_samples * signals.SAMPLE_BYTES
        return self.audio + PAD_BYTE * (-len(self.audio) % frame)


def open_playable(path: str, rate: int) -> Playable | None:
    """switch_ivr_play_file's opening of `path` on a channel at `rate`; None when FreeSWITCH could not open it
    (then no PLAYBACK_START or PLAYBACK_STOP fires: FILE NOT FOUND). Not for file_string:// (see FileString)."""
    if not path:
        return None
    if "://" in path:
        if path.startswith(FILE_STRING_PREFIX):
            return None  # read a file at a time, as the playback goes: FileString
        return _open(path, rate)
    if not path.startswith("/"):
        path = f"{BASE_DIR}/{path}"
    dot = path.rfind(".")
    if dot < 0:
        # No extension: the channel's codec name first (a native file the simulator cannot decode), then .wav.
        path = f"{path}.wav"
    return _open(path, rate)


def _open(path: str, rate: int) -> Playable | None:
    """switch_core_file_open: the module is chosen by the stream name (xxx://) or the extension."""
    if path.startswith(("tone_stream://", "silence_stream://")):
        played = originate_rules.file_audio(path, rate)
        if played is None:
            return None
        kind = "tone_stream" if path.startswith("tone_stream://") else None
        if played.forever:
            return Playable(path, played.audio, rate, 0, kind, loop=True)
        audio = played.audio * played.plays
        return Playable(path, audio, rate, len(audio) // signals.SAMPLE_BYTES, kind)
    if "://" in path:
        return None
    dot = path.rfind(".")
    if dot < 0:
        return None
    extension = path[dot + 1 :]
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if extension in RAW_FORMATS:
        native_rate, width = RAW_FORMATS[extension]
        pcm = to_16bit(data, width)
    elif extension == "wav":
        decoded = decode_wav(data)
        if decoded is None:
            return None
        pcm, native_rate = decoded
    else:
        return None
    return Playable(path, signals.resample(pcm, native_rate, rate), native_rate, len(pcm) // signals.SAMPLE_BYTES)


@dataclass(frozen=True)
class ChainStep:
    """One thing mod_dptools' next_file did: "close" (the file that ended: filestring::close), "fail" (a name
    that did not open: filestring::fail and `Can't open file <path>` in the log) or "open" (filestring::open).
    name is the entry as written in the file_string (the events' File header), path the file as opened."""

    kind: str
    name: str
    path: str


class FileString:
    """mod_dptools' file_string handle (`file_string://a!b!c`): file_string_file_open / _read and next_file.

    The string is split at '!' into at most FILE_STRING_MAX_FILES entries (switch_separate_string into
    argv[128]: with more names the last entry keeps the rest of the string, `f128!f129!...`, which names no file
    and is skipped like a missing one, so 127 files play). A relative entry is looked for under the sounds
    directory. The handle has ONE entry open at a time: the first that opens when the playback opens it, each
    next one only when a read finds the open one at its end (next_file): an entry that does not exist at that
    moment is skipped (fail), and when no entry is left the reads end. When entry 0 is the one that opened, its
    audio comes after 250 ms of samples of -1 (given by the first read on its own): its file is not native
    (.r8, .r16, .wav never are).

    read(n) gives up to n samples at the channel's rate, or None with what next_file did: a file opened (read
    again) or, once `ended`, nothing is left."""

    def __init__(self, path: str, rate: int):
        self.path = path
        self.rate = rate
        self.names = words_rules.separate_string(path[len(FILE_STRING_PREFIX):], "!", FILE_STRING_MAX_FILES)
        self.index = -1
        self.current: str | None = None  # the entry open now
        self.ended = False
        self.samples = 0  # samples given by read() so far, the lead included
        self._lead = 0  # samples of -1 still to give before the open file's audio
        self._data = b""  # the open file's audio
        self._position = 0  # bytes of it given

    def read(self, want: int) -> tuple[bytes | None, list[ChainStep]]:
        if self._lead:
            count = min(want, self._lead)
            self._lead -= count
            self.samples += count
            return PAD_BYTE * (count * signals.SAMPLE_BYTES), []
        if self._position < len(self._data):
            data = self._data[self._position : self._position + want * signals.SAMPLE_BYTES]
            self._position += len(data)
            self.samples += len(data) // signals.SAMPLE_BYTES
            return data, []
        return None, self.next_file()

    def next_file(self) -> list[ChainStep]:
        """The open entry is at its end (or none is open yet): close it, open the next that exists, skipping
        the ones that do not. What it did, in order."""
        steps: list[ChainStep] = []
        while True:
            self.index += 1
            if self.current is not None:
                steps.append(ChainStep("close", self.current, self._full_path(self.current)))
                self.current = None
            if self.index >= len(self.names):
                self.ended = True
                self._data, self._position = b"", 0
                return steps
            name = self.names[self.index]
            path = self._full_path(name)
            opened = _open(path, self.rate)
            if opened is None or opened.loop:  # a stream that never ends is not simulated inside a file_string
                steps.append(ChainStep("fail", name, path))
                continue
            steps.append(ChainStep("open", name, path))
            self.current = name
            self._data, self._position = opened.audio, 0
            if self.index == 0:
                self._lead = self.rate // 1000 * FILE_STRING_LEAD_MS
            return steps

    @staticmethod
    def _full_path(name: str) -> str:
        return name if name.startswith("/") or "://" in name else f"{SOUNDS_DIR}/{name}"


class ChainPlayer:
    """switch_ivr_play_file's loop over a FileString: reads go into its audio buffer and each 20 ms frame is
    taken from it. While the buffer holds more than one frame a frame is just taken; otherwise the loop reads
    first (READ_BLOCK_SAMPLES at most; at a file's end next_file runs, and the loop reads again from the file
    it opened) and takes what the buffer then holds, a frame at most, padded with samples of -1 when the read
    fell short (a file shorter than what the frame lacked: a padded frame in the middle of the chain). When
    nothing is left to read, the last frame is what the buffer holds, padded, and the playback ends.

    `frames` is the audio of every frame made so far (whole frames). make_ready_frames() makes the frames that
    need no read (they are decided already); make_frame_with_read() makes the next one, which does. A frame is
    made right after the one before it is written, so the one that needs a read is made a tick before it is
    heard: that is when the next file must exist."""

    def __init__(self, chain: FileString, tick_samples: int):
        self.chain = chain
        self.frame_bytes = tick_samples * signals.SAMPLE_BYTES
        self.frames = bytearray()
        self.ended = False  # no frame is left to make
        self._buffer = bytearray()
        self._eof = False

    @property
    def count(self) -> int:
        return len(self.frames) // self.frame_bytes

    def make_ready_frames(self) -> None:
        while not self.ended:
            if self._eof:
                if not self._buffer:
                    self.ended = True
                    return
                self._take()
            elif len(self._buffer) > self.frame_bytes:
                self._take()
            else:
                return

    def make_frame_with_read(self) -> list[ChainStep]:
        steps: list[ChainStep] = []
        while not self.ended and not self._eof:
            data, done = self.chain.read(READ_BLOCK_SAMPLES)
            steps += done
            if data is None:
                if self.chain.ended:
                    self._eof = True  # the loop sees the end: what the buffer holds is its last frame
                continue  # next_file opened a file (SWITCH_STATUS_BREAK): read again
            self._buffer += data
            self._take()
            break
        self.make_ready_frames()
        return steps

    def _take(self) -> None:
        frame = self._buffer[: self.frame_bytes]
        del self._buffer[: self.frame_bytes]
        self.frames += frame + PAD_BYTE * (self.frame_bytes - len(frame))


def to_16bit(data: bytes, width: int) -> bytes:
    """Raw little-endian samples of `width` bytes as libsndfile's sf_read_short gives them: the top 16 bits
    (a trailing partial sample is dropped)."""
    usable = len(data) - len(data) % width
    if width == 2:
        return data[:usable]
    return b"".join(data[i + width - 2 : i + width] for i in range(0, usable, width))


def decode_wav(data: bytes) -> tuple[bytes, int] | None:
    """(mono s16le, rate) of a 16-bit PCM WAV, channels summed with saturation; None for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (EOFError, wave.Error, struct.error):
        return None
    if width != signals.SAMPLE_BYTES or channels < 1 or rate <= 0:
        return None
    if channels == 1:
        return frames, rate
    samples = array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % (2 * channels)])
    if sys.byteorder != "little":
        samples.byteswap()
    mixed = array("h", (max(-32768, min(32767, sum(samples[i : i + channels])))
                        for i in range(0, len(samples), channels)))
    if sys.byteorder != "little":
        mixed.byteswap()
    return mixed.tobytes(), rate


# ---- the variables a playback leaves ----


def stop_variables(playable: Playable, frames: int, tick_samples: int, finished: bool) -> list[tuple[str, str]]:
    """playback_last_offset_pos (samples taken for the frames written), playback_seconds / playback_ms (of what
    was read from the file, in its own rate) and playback_samples, as switch_ivr_play_file sets them before
    PLAYBACK_STOP. The file is read ahead READ_BLOCK_SAMPLES at a time, so a playback stopped early has read
    more than it played."""
    total = len(playable.audio) // signals.SAMPLE_BYTES
    native_total = playable.native_samples
    if playable.loop:  # a stream that never ends has given what was asked of it
        total = native_total = frames * tick_samples
    offset = min(total, frames * tick_samples)
    read = total if finished else min(total, _read_ahead(total, frames, tick_samples))
    native = native_total if read >= total else read * native_total // max(1, total)
    return _variables(offset, native, playable.native_rate)


def _read_ahead(total: int, frames: int, tick_samples: int) -> int:
    """Samples play_file has read from the file once it has written `frames` frames: it reads a block whenever
    no more than one frame's worth is left in its buffer."""
    read = buffered = 0
    for _ in range(frames):
        if buffered <= tick_samples and read < total:
            block = min(READ_BLOCK_SAMPLES, total - read)
            read += block
            buffered += block
        buffered -= min(tick_samples, buffered)
    return read


def _variables(offset: int, native_samples: int, native_rate: int) -> list[tuple[str, str]]:
    out = [("playback_last_offset_pos", str(offset))]
    if native_rate >= 1000:
        out += [("playback_seconds", str(native_samples // native_rate)),
                ("playback_ms", str(native_samples // (native_rate // 1000)))]
    return out + [("playback_samples", str(native_samples))]
