"""Reconnect and restart delays: capped exponential, jittered, and safe after months of failures."""

import random

from controller.esl.backoff import Backoff, capped_exponential


def test_delays_double_up_to_the_cap():
    backoff = Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_months_of_failed_attempts_keep_the_capped_delay():
    # FreeSWITCH down for a long maintenance: ~1024 attempts overflowed 2.0**attempt and killed reconnecting.
    backoff = Backoff(initial_s=0.5, max_s=30.0, multiplier=10.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[-1] == 30.0
    assert capped_exponential(0.5, 2.0, 30.0, 10**6) == 30.0


def test_jitter_spreads_delays_but_never_past_the_cap():
    backoff = Backoff(initial_s=4.0, max_s=5.0, multiplier=2.0, jitter=0.2, rng=random.Random(1))
    first = backoff.next_delay()
    assert 3.2 <= first <= 4.8
    later = [backoff.next_delay() for _ in range(200)]
    assert all(4.0 <= d <= 5.0 for d in later) and len(set(later)) > 1
