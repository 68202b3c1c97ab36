"""Log lines limited per key, so that one client cannot flood the journal (issue #15: one unauthenticated client
made 3441 WARNING lines a minute). Pure: stdlib logging and an injectable clock.

    limiter = LogLimiter(per_key_per_minute=10)
    limiter.log(log, logging.WARNING, peer_ip, "refused stream from %s: %s %s", peer, status, reason)

A key (a source address, a call, an agent's URL) gets a minute from its first line: the first
``per_key_per_minute`` lines in it are logged, the rest only counted. The key's next line after that minute
says how many were left out: ``... (3431 similar lines suppressed in the last 61 s)``. For a key that has gone
quiet, ``flush`` (call it now and then, e.g. from the periodic upkeep) logs the count on its own, with the last
line left out; so does evicting a key, when more than ``max_keys`` keys are remembered (least recently used
first out). Not thread-safe: the controller runs its greenlets on one thread.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0
    last: tuple = ()  # (logger, level, msg, args) of the last line left out


class LogLimiter:
    def __init__(self, per_key_per_minute: int = 10, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_key_per_minute < 1 or max_keys < 1:
            raise ValueError(f"per_key_per_minute and max_keys must be >= 1, got {per_key_per_minute!r}, "
                             f"{max_keys!r}")
        self.per_key = per_key_per_minute
        self.max_keys = max_keys
        self.clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()

    def log(self, logger: logging.Logger, level: int, key: Hashable, msg: str, *args) -> bool:
        """``logger.log(level, msg, *args)`` unless ``key`` has had its lines this minute; True if logged."""
        if not logger.isEnabledFor(level):
            return False
        now = self.clock()
        window = self._windows.get(key)
        carried = None
        if window is not None and now - window.start >= WINDOW_S:
            if window.suppressed:
                carried = (window.suppressed, now - window.start)
            window = None
        if window is None:
            window = self._windows[key] = _Window(start=now)
            self._evict()
        self._windows.move_to_end(key)
        if window.logged >= self.per_key:
            window.suppressed += 1
            window.last = (logger, level, msg, args)
            return False
        window.logged += 1
        if carried:
            logger.log(level, _escaped(msg, args) + " (%d similar lines suppressed in the last %.0f s)", *args,
                       *carried)
        else:
            logger.log(level, msg, *args)
        return True

    def flush(self) -> None:
        """Report the lines left out for keys whose minute is over, and forget those keys."""
        now = self.clock()
        for key, window in list(self._windows.items()):
            if now - window.start >= WINDOW_S:
                del self._windows[key]
                self._report(key, window, now)

    def _evict(self) -> None:
        while len(self._windows) > self.max_keys:
            key, window = self._windows.popitem(last=False)
            self._report(key, window, self.clock())

    @staticmethod
    def _report(key: Hashable, window: _Window, now: float) -> None:
        if window.suppressed:
            logger, level, msg, args = window.last
            logger.log(level, "%s: %d similar lines suppressed in the last %.0f s, the last: " + _escaped(msg, args),
                       key, window.suppressed, now - window.start, *args)


def _escaped(msg: str, args: tuple) -> str:
    """``msg`` to be formatted with more arguments than its own: logging leaves a message without arguments as
    it is, so its own % signs must not be taken for placeholders then."""
    return msg if args else msg.replace("%", "%%")
