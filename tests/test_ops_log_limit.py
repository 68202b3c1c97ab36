"""Log lines limited per key: what an operator sees when one client floods the log, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from controller.ops.log_limit import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def log():
    logger = logging.getLogger("test.log_limit")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Captured()
    logger.addHandler(handler)
    yield logger, handler.lines
    logger.removeHandler(handler)


def refuse(limiter: LogLimiter, logger, peer: str, n: int) -> bool:
    return limiter.log(logger, logging.WARNING, peer, "refused stream from %s: %s", f"{peer}:{40000 + n}", 403)


def test_a_flood_from_one_client_logs_its_share_then_says_how_many_were_left_out(log):
    logger, lines = log
    clock = Clock()
    limiter = LogLimiter(per_key_per_minute=10, clock=clock)
    logged = []
    for n in range(3441):  # 3441 refusals in a minute
        clock.now = 100.0 + n * 60.0 / 3441
        logged.append(refuse(limiter, logger, "192.0.2.7", n))
    assert logged == [True] * 10 + [False] * 3431
    assert lines == [("WARNING", f"refused stream from 192.0.2.7:{40000 + n}: 403") for n in range(10)]
    clock.now = 161.0  # the next one after the minute carries the count
    assert refuse(limiter, logger, "192.0.2.7", 3441)
    assert lines[-1] == ("WARNING", "refused stream from 192.0.2.7:43441: 403 "
                                    "(3431 similar lines suppressed in the last 61 s)")
    assert len(lines) == 11


def test_keys_are_limited_apart(log):
    logger, lines = log
    limiter = LogLimiter(per_key_per_minute=2, clock=Clock())
    for n in range(5):
        refuse(limiter, logger, "192.0.2.7", n)
        refuse(limiter, logger, "198.51.100.1", n)
    assert [m for _, m in lines] == ["refused stream from 192.0.2.7:40000: 403",
                                     "refused stream from 198.51.100.1:40000: 403",
                                     "refused stream from 192.0.2.7:40001: 403",
                                     "refused stream from 198.51.100.1:40001: 403"]


def test_a_key_gone_quiet_is_reported_by_flush_with_the_last_line_left_out(log):
    logger, lines = log
    clock = Clock()
    limiter = LogLimiter(per_key_per_minute=1, clock=clock)
    for n in range(4):
        refuse(limiter, logger, "192.0.2.7", n)
    limiter.log(logger, logging.INFO, "call 166eb301-3ca5-4fc5-9751-d8ca093577dd", "quiet key: 100% fine")
    clock.now = 159.0
    limiter.flush()  # the minute is not over yet
    assert len(lines) == 2
    clock.now = 172.0
    limiter.flush()
    assert lines[2:] == [("WARNING", "192.0.2.7: 3 similar lines suppressed in the last 72 s, the last: "
                                     "refused stream from 192.0.2.7:40003: 403")]  # nothing for the quiet key
    limiter.flush()
    assert len(lines) == 3  # reported once; the keys are forgotten
    assert refuse(limiter, logger, "192.0.2.7", 4) and lines[-1][1] == "refused stream from 192.0.2.7:40004: 403"


def test_remembered_keys_are_bounded_and_an_evicted_key_reports_its_count(log):
    logger, lines = log
    clock = Clock()
    limiter = LogLimiter(per_key_per_minute=1, max_keys=3, clock=clock)
    refuse(limiter, logger, "192.0.2.7", 0)
    refuse(limiter, logger, "192.0.2.7", 1)  # left out
    for n, peer in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.3"]):
        clock.now += 1.0
        refuse(limiter, logger, peer, n)
    assert [m for _, m in lines[1:]] == [
        "refused stream from 198.51.100.1:40000: 403",
        "refused stream from 198.51.100.2:40001: 403",
        "192.0.2.7: 1 similar lines suppressed in the last 3 s, the last: refused stream from 192.0.2.7:40001: 403",
        "refused stream from 198.51.100.3:40002: 403"]  # a fourth key: the least recently used one goes
    assert refuse(limiter, logger, "192.0.2.7", 2)  # forgotten: a fresh minute (and 198.51.100.1 goes)
    assert not refuse(limiter, logger, "198.51.100.3", 3)  # still remembered


def test_a_message_with_its_own_percent_sign_keeps_it_when_the_count_is_added(log):
    logger, lines = log
    clock = Clock()
    limiter = LogLimiter(per_key_per_minute=1, clock=clock)
    for _ in range(3):
        limiter.log(logger, logging.ERROR, "disk", "recordings volume 100% full")
    clock.now += 60.0
    limiter.log(logger, logging.ERROR, "disk", "recordings volume 100% full")
    assert lines == [("ERROR", "recordings volume 100% full"),
                     ("ERROR", "recordings volume 100% full (2 similar lines suppressed in the last 60 s)")]


def test_lines_below_the_loggers_level_are_neither_logged_nor_counted(log):
    logger, lines = log
    limiter = LogLimiter(per_key_per_minute=1, clock=Clock())
    assert not limiter.log(logger, logging.DEBUG, "k", "noise")
    assert limiter.log(logger, logging.WARNING, "k", "the first that counts")
    assert lines == [("WARNING", "the first that counts")]


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError, match="per_key_per_minute"):
        LogLimiter(per_key_per_minute=0)
