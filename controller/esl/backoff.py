"""Reconnect delays: capped exponential backoff with jitter (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


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
        base = min(self.max_s, self.initial_s * self.multiplier**self._attempt)
        self._attempt += 1
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base + self.rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self._attempt = 0
