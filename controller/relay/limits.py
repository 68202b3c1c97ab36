"""What an agent may send, as token buckets: a burst, then a steady rate. Pure (the caller says the time).

An agent that goes past either (messages a second, or audio faster than real time beyond a burst) is abusive:
its connection ends, counted, and the next one waits. A well-behaved agent never comes near: stock Pipecat
sends 25 media messages a second, each 40 ms of audio, in real time; a TTS that sends a whole reply at once
fits in the audio burst.
"""

from __future__ import annotations

from dataclasses import dataclass

# Messages: 10x a 20 ms-paced agent, with a burst for a reply sent at once in small pieces.
MESSAGES_PER_S = 500.0
MESSAGE_BURST = 2000.0
# Audio: 4x real time, after a burst of a minute's speech.
AUDIO_SPEED = 4.0
AUDIO_BURST_S = 60.0


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # at most this many saved up
    tokens: float = -1.0  # starts full
    at: float | None = None

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` if it is there (True); False (nothing spent) when it would go past the limit."""
        if self.at is None:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


def message_bucket() -> TokenBucket:
    return TokenBucket(MESSAGES_PER_S, MESSAGE_BURST)


def audio_bucket() -> TokenBucket:
    """Seconds of audio: refilled at AUDIO_SPEED seconds per second."""
    return TokenBucket(AUDIO_SPEED, AUDIO_BURST_S)
