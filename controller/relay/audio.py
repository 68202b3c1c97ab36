"""Audio conversions between the call and a voice agent: G.711 µ-law ⇄ 16-bit PCM, stereo → the caller,
resampling across chunks, and cutting a byte stream into fixed chunks.

All sample work is done by `audioop` (C code, no per-sample Python): the standard library's up to Python
3.12, and the `audioop-lts` package (the same module, kept alive) on 3.13+, where the stdlib one is gone.
PCM here is always signed 16-bit little-endian, as mod_audio_stream sends it. Pure: no sockets, no gevent.

The caller → Twilio-agent path for a call at `rate` with `channels` (CallerToUlaw does it all):
    mono(pcm, channels) → Resampler(rate, 8000).convert → ulaw_from_pcm → Framer(ULAW_20MS).push → media()
and the agent → caller path: pcm_from_ulaw, then Resampler(8000, rate).convert where the rates differ.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # 3.11 and 3.12 warn that the stdlib module goes away in 3.13; on 3.13+ this is audioop-lts.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_WIDTH = 2  # bytes per sample: s16le
ULAW_RATE = 8000
ULAW_20MS = 160  # bytes of 8 kHz µ-law in 20 ms: one Twilio media message
ULAW_SILENCE = 0xFF  # µ-law's code for 0
PCM_SILENCE = 0x00


def _whole_samples(pcm: bytes, what: str, channels: int = 1) -> None:
    frame = SAMPLE_WIDTH * channels
    if len(pcm) % frame:
        raise ValueError(f"{what}: {len(pcm)} bytes is not a whole number of {frame}-byte sample frames "
                         f"(16-bit PCM, {channels} channel{'s' if channels > 1 else ''})")


def ulaw_from_pcm(pcm: bytes) -> bytes:
    """16-bit PCM → G.711 µ-law, one byte per sample (the rate is unchanged)."""
    _whole_samples(pcm, "ulaw_from_pcm")
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def pcm_from_ulaw(ulaw: bytes) -> bytes:
    """G.711 µ-law → 16-bit PCM, two bytes per sample (the rate is unchanged)."""
    return audioop.ulaw2lin(ulaw, SAMPLE_WIDTH)


def mono(pcm: bytes, channels: int) -> bytes:
    """The caller's audio as mono: mono passes through; stereo (interleaved L,R) gives its left channel,
    which mod_audio_stream fills with what the caller says (right is what the caller hears)."""
    if channels == 1:
        _whole_samples(pcm, "mono")
        return bytes(pcm)
    if channels != 2:
        raise ValueError(f"mono: {channels} channels; mod_audio_stream sends 1 (mono, mixed) or 2 (stereo)")
    _whole_samples(pcm, "mono", 2)
    # Every other 16-bit sample, copied as is: exact, and no arithmetic on the values.
    return memoryview(pcm).cast("B").cast("h")[0::2].tobytes()


class Resampler:
    """Resamples one continuous stream of mono 16-bit PCM that arrives in chunks.

    `audioop.ratecv` keeps the interpolation's phase and last samples in a state that is carried from
    one chunk to the next, so 20 ms chunks come out exactly as the whole stream converted at once: no
    click at each chunk's edge, and no drift in length. It interpolates linearly with no anti-alias
    filter: fine for telephone speech, which carries little above 4 kHz. An output chunk may hold a sample
    more or less than ratio × input (the phase); upsampling interpolates only up to the newest input
    sample, so the samples after it come with the next chunk.
    """

    def __init__(self, from_rate: int, to_rate: int):
        for name, rate in (("from_rate", from_rate), ("to_rate", to_rate)):
            if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
                raise ValueError(f"Resampler: {name} {rate!r} is not a positive whole number of Hz")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._state = None

    def convert(self, pcm: bytes) -> bytes:
        """The next chunk of the stream at `to_rate` (passes through when the rates are equal)."""
        _whole_samples(pcm, "Resampler.convert")
        if self.from_rate == self.to_rate or not pcm:
            return bytes(pcm)
        out, self._state = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, self.from_rate, self.to_rate, self._state)
        return out

    def reset(self) -> None:
        """Forget the stream so far (e.g. after an agent's `clear`: the next audio is a new stream)."""
        self._state = None


class Framer:
    """Cuts a byte stream into chunks of exactly `bytes_per_chunk`, keeping the remainder for the next
    push (20 ms of 8 kHz µ-law = 160 bytes; the module's frames need not be a multiple of that)."""

    def __init__(self, bytes_per_chunk: int):
        if not isinstance(bytes_per_chunk, int) or isinstance(bytes_per_chunk, bool) or bytes_per_chunk <= 0:
            raise ValueError(f"Framer: bytes_per_chunk {bytes_per_chunk!r} is not a positive whole number")
        self.bytes_per_chunk = bytes_per_chunk
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, fewer than one chunk."""
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Every whole chunk that `data` completes, in order (possibly none)."""
        self._pending += data
        n = len(self._pending) // self.bytes_per_chunk * self.bytes_per_chunk
        if not n:
            return []
        whole = bytes(self._pending[:n])
        del self._pending[:n]
        size = self.bytes_per_chunk
        return [whole[i:i + size] for i in range(0, n, size)]

    def flush(self, fill: int | None = None) -> bytes:
        """The remainder, and forget it: b"" when none; with `fill` (a byte value, e.g. ULAW_SILENCE), a
        non-empty remainder is padded to a whole chunk."""
        rest = bytes(self._pending)
        self._pending.clear()
        if fill is not None and rest:
            rest += bytes([fill]) * (self.bytes_per_chunk - len(rest))
        return rest


class CallerToUlaw:
    """The caller's side of a call at `rate` with `channels`, as the module sends it, to 20 ms chunks of
    8 kHz µ-law for a Twilio agent (mono → resample → µ-law → exact chunks)."""

    def __init__(self, rate: int, channels: int):
        if channels not in (1, 2):
            raise ValueError(f"CallerToUlaw: channels {channels!r}; allowed: 1 (mono, mixed) or 2 (stereo)")
        self.channels = channels
        self._resampler = Resampler(rate, ULAW_RATE)
        self._framer = Framer(ULAW_20MS)

    def push(self, pcm: bytes) -> list[bytes]:
        """The whole 20 ms chunks this frame completes (a partial one waits for the next frame)."""
        return self._framer.push(ulaw_from_pcm(self._resampler.convert(mono(pcm, self.channels))))
