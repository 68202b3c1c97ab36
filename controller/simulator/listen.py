"""Listening to what a simulated caller heard: where a known piece of audio is in it, and how alike. Pure.

For checks such as "the caller heard their own words back from the agent": `find(heard, utterance)` gives
the best normalised correlation of the utterance anywhere in what was heard, and its delay. The sample work
is done by audioop (C), so a minute of audio is searched in a fraction of a second.
"""

from __future__ import annotations

from ..relay.audio import audioop

BLOCK = 160  # bytes: 10 ms of 8 kHz 16-bit audio, the coarse step


def correlation(x: bytes, y: bytes) -> float:
    """Normalised correlation of two 16-bit signals (the shorter length counts): 1.0 for the same sound.

    sum(xy) = n (rms(a+b)^2 - rms(a-b)^2) with a, b the halves of x, y (halved so that no sum can clip).
    """
    n = min(len(x), len(y)) // 2 * 2
    x, y = x[:n], y[:n]
    a, b = audioop.mul(x, 2, 0.5), audioop.mul(y, 2, 0.5)
    both, diff = audioop.add(a, b, 2), audioop.add(a, audioop.mul(b, 2, -1.0), 2)
    energy = audioop.rms(x, 2) * audioop.rms(y, 2)
    return (audioop.rms(both, 2) ** 2 - audioop.rms(diff, 2) ** 2) / energy if energy else 0.0


def find(heard: bytes, utterance: bytes, rate: int = 8000) -> tuple[float, float]:
    """(best correlation, delay in seconds) of `utterance` inside `heard`: the loudness envelopes (10 ms
    blocks) line them up to a block, then every sample around that is tried (a pure tone correlates almost as
    well one period off, so a coarse search on the samples themselves can settle on the wrong period)."""
    if len(utterance) > len(heard):
        return 0.0, 0.0

    def envelope(pcm: bytes) -> list[int]:
        return [audioop.rms(pcm[at:at + BLOCK], 2) for at in range(0, len(pcm) - BLOCK + 1, BLOCK)]

    heard_env, utter_env = envelope(heard), envelope(utterance)
    coarse = max(range(len(heard_env) - len(utter_env) + 1),
                 key=lambda k: sum(h * u for h, u in zip(heard_env[k:], utter_env)))
    width = len(utterance)
    candidates = range(max(0, (coarse - 1) * BLOCK), min(len(heard) - width, (coarse + 1) * BLOCK) + 1, 2)
    score, offset = max((correlation(heard[o:o + width], utterance), o) for o in candidates)
    return score, offset / (2 * rate)
