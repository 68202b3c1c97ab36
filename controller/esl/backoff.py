"""Retry delays: capped exponential backoff with jitter (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def capped_exponential(initial_s: float, multiplier: float, max_s: float, attempt: int) -> float:
    """The delay before retry number `attempt` (1-based): initial_s * multiplier**(attempt-1), at most max_s.

    Stepped rather than computed with ``**``, so that months of failed attempts never overflow a float.
    """
    delay = min(initial_s, max_s)
    for _ in range(attempt - 1):
        if delay >= max_s:
            break
        delay = min(max_s, delay * multiplier)
    return delay


@dataclass
class Backoff:
    """Each failed attempt waits longer, up to a cap; jitter spreads many controllers' retries apart."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of the delay
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        self._attempt += 1
        base = capped_exponential(self.initial_s, self.multiplier, self.max_s, self._attempt)
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base + self.rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self._attempt = 0
