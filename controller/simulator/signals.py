"""Audio the simulated switch hears and plays: generated signals, WAV input, rate conversion, mixing.

Everything here is signed 16-bit little-endian mono PCM (``bytes``) unless a name says otherwise,
deterministic (the same call gives the same bytes every run), and free of I/O except `read_wav`.
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from functools import lru_cache

SAMPLE_BYTES = 2
TONE_AMPLITUDE = 9800  # about what tone_stream://%(500,0,800) peaks at in the captures


def _to_bytes(samples: array) -> bytes:
    if sys.byteorder != "little":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _to_samples(pcm: bytes) -> array:
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM must be whole 16-bit samples; got {len(pcm)} bytes (an odd count)")
    samples = array("h")
    samples.frombytes(pcm)
    if sys.byteorder != "little":
        samples.byteswap()
    return samples


def pcm(samples) -> bytes:
    """16-bit little-endian PCM from a sequence of ints (already within -32768..32767)."""
    return _to_bytes(array("h", samples))


def silence(seconds: float, rate: int) -> bytes:
    return bytes(int(round(seconds * rate)) * SAMPLE_BYTES)


def tone(frequency: float, seconds: float, rate: int, amplitude: int = TONE_AMPLITUDE) -> bytes:
    count = int(round(seconds * rate))
    step = 2 * math.pi * frequency / rate
    return _to_bytes(array("h", (int(amplitude * math.sin(step * i)) for i in range(count))))


PHRASE_S = 4.0  # speech_like repeats a phrase of this length


def speech_like(seconds: float, rate: int, seed: int = 1) -> bytes:
    """A voice-like test signal: syllables of a few harmonics, with short pauses between words.

    Recognisable in a recording (not silence, not a pure tone) and the same for the same seed.
    A 4 s phrase, repeated: long calls cost no more to make than short ones.
    """
    count = int(round(seconds * rate))
    phrase = _phrase(rate, seed)
    repeats = count * SAMPLE_BYTES // len(phrase) + 1
    return (phrase * repeats)[: count * SAMPLE_BYTES]


@lru_cache(maxsize=16)
def _phrase(rate: int, seed: int) -> bytes:
    count = int(PHRASE_S * rate)
    syllables_per_second = 4.0
    state = seed * 2654435761 % 2**32 or 1
    pitches: list[float] = []
    samples = array("h", bytes(count * SAMPLE_BYTES))
    for i in range(count):
        t = i / rate
        position = t * syllables_per_second
        syllable = int(position)
        while len(pitches) <= syllable:
            state = (1103515245 * state + 12345) % 2**31
            # Every fourth syllable is a pause between words.
            pitches.append(0.0 if len(pitches) % 4 == 3 else 110.0 + state % 120)
        pitch = pitches[syllable]
        if not pitch:
            continue
        envelope = math.sin(math.pi * (position - syllable)) ** 2
        wave_value = sum(math.sin(2 * math.pi * pitch * k * t) / k for k in range(1, 5))
        samples[i] = int(3500 * envelope * wave_value)
    return _to_bytes(samples)


def read_wav(path: str) -> tuple[bytes, int]:
    """(PCM, sample rate) of a mono 16-bit PCM WAV file, with a clear error for anything else."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"cannot read WAV {path}: {exc}") from None
    if channels != 1 or width != SAMPLE_BYTES:
        raise ValueError(
            f"WAV {path} is {channels} channel(s) of {8 * width}-bit samples; "
            "the caller's speech must be mono 16-bit PCM"
        )
    return frames, rate


def resample(pcm: bytes, from_rate: int, to_rate: int, first: int = 0, count: int | None = None) -> bytes:
    """Linear-interpolation rate change (FreeSWITCH uses speex; any fixed, smooth method will do).

    Gives output samples [first, first + count) of the whole converted signal (all of it by
    default), computed in integers so any slice equals the same slice of the whole.
    """
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM must be whole 16-bit samples; got {len(pcm)} bytes (an odd count)")
    if from_rate == to_rate:
        return pcm[first * SAMPLE_BYTES :][: None if count is None else count * SAMPLE_BYTES]
    available = len(pcm) // SAMPLE_BYTES
    total = available * to_rate // from_rate
    count = max(0, min(total - first, total if count is None else count))
    if not count:
        return b""
    # Only the source samples this slice interpolates between.
    low = first * from_rate // to_rate
    high = min(available - 1, (first + count - 1) * from_rate // to_rate + 1)
    source = _to_samples(pcm[low * SAMPLE_BYTES : (high + 1) * SAMPLE_BYTES])
    out = array("h", bytes(count * SAMPLE_BYTES))
    for j in range(count):
        i, remainder = divmod((first + j) * from_rate, to_rate)
        a = source[i - low]
        b = source[i - low + 1] if i < available - 1 else a
        out[j] = a + ((b - a) * remainder * 2 + to_rate) // (2 * to_rate)  # rounded
    return _to_bytes(out)


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two equal-length signals, saturating like a 16-bit mixer does."""
    left, right = _to_samples(a), _to_samples(b)
    if len(left) != len(right):
        raise ValueError(f"cannot mix {len(left)} samples with {len(right)}")
    return _to_bytes(array("h", (max(-32768, min(32767, x + y)) for x, y in zip(left, right))))


def interleave(left: bytes, right: bytes) -> bytes:
    """Stereo L,R sample pairs from two equal-length mono signals."""
    l_samples, r_samples = _to_samples(left), _to_samples(right)
    if len(l_samples) != len(r_samples):
        raise ValueError(f"cannot interleave {len(l_samples)} samples with {len(r_samples)}")
    out = array("h", bytes(2 * len(l_samples) * SAMPLE_BYTES))
    out[0::2] = l_samples
    out[1::2] = r_samples
    return _to_bytes(out)
