"""One greenlet that reads every stream: the recorder's data path after the upgrade.

A greenlet per connection, each waking for its own 20 ms frame, spends most of the recorder's CPU in the event
loop (a wake-up and two switches per frame, measured). Instead, after its upgrade a stream's socket joins one
epoll set, and the poller wakes when any of them has bytes, reads every ready socket once (non-blocking, into
one shared buffer), hands what it read to the recorder, then lets ``interval_s`` pass before it looks again,
so that each wake-up serves every stream that got a frame meanwhile. A frame waits at most that long.

Arrival times come from the kernel where it can say (SO_TIMESTAMPNS: when the last byte read reached the
socket), so a recorder that falls behind under load still places audio where it belongs in time.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys
import time
from typing import Callable

import gevent
from gevent.monkey import get_original
from gevent.socket import wait_read

log = logging.getLogger("controller.recorder")

# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), which Python's socket module does not name.
SO_TIMESTAMPNS = 35 if sys.platform.startswith("linux") else None
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
READ_BYTES = 64 * 1024

_epoll = get_original("select", "epoll")
_EPOLLIN = get_original("select", "EPOLLIN")


class StreamPoller:
    """Reads the registered streams; ``consume(stream, data, arrival)`` handles what came (in this greenlet),
    ``closed(stream)`` is told of an EOF or a reset. A stream is anything with a ``socket``."""

    def __init__(self, consume: Callable[[object, memoryview, float], None], closed: Callable[[object], None], *,
                 interval_s: float = 0.01, kernel_time: bool = True, clock: Callable[[], float] = time.monotonic):
        self.consume = consume
        self.closed = closed
        self.interval_s = interval_s
        self.clock = clock
        # Kernel timestamps are wall-clock time: only meaningful against the real monotonic clock.
        self.kernel_time = kernel_time and SO_TIMESTAMPNS is not None and clock is time.monotonic
        self._epoll = _epoll()
        self._streams: dict[int, object] = {}
        self._raw: dict[int, socket.socket] = {}
        self._fds: dict[int, int] = {}  # id(stream) -> its fd
        self._buffer = bytearray(READ_BYTES)
        self._view = memoryview(self._buffer)
        self._greenlet: gevent.Greenlet | None = None
        # Reads that came with the kernel's time of arrival (Linux turns timestamping on a moment after it is
        # first asked for; until then a read's arrival is when it was read).
        self.stamped_reads = 0

    def read_tls(self, stream) -> None:
        """A TLS stream's reads, in the calling greenlet (TLS holds decrypted bytes of its own, which epoll does
        not see), through the same callbacks; returns once the stream has ``ended`` or closed."""
        buffer = bytearray(READ_BYTES)
        view = memoryview(buffer)
        while not stream.ended:
            try:
                n = stream.socket.recv_into(buffer)
            except OSError:
                n = 0
            if stream.ended:
                return
            if not n:
                self.closed(stream)
                return
            self.consume(stream, view[:n], self.clock())

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()  # before the epoll set closes under it
            self._greenlet = None
        self._epoll.close()

    def add(self, stream) -> None:
        raw = getattr(stream.socket, "_sock", stream.socket)  # gevent's socket wraps a non-blocking one
        fd = raw.fileno()
        if self.kernel_time:
            try:
                raw.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass  # arrival then is when we read it
        self._streams[fd] = stream
        self._raw[fd] = raw
        self._fds[id(stream)] = fd
        self._epoll.register(fd, _EPOLLIN)

    def remove(self, stream) -> None:
        fd = self._fds.pop(id(stream), None)
        if fd is None or self._streams.get(fd) is not stream:
            return
        del self._streams[fd]
        del self._raw[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already

    def __contains__(self, stream) -> bool:
        return id(stream) in self._fds

    @property
    def greenlet(self) -> gevent.Greenlet | None:
        return self._greenlet

    def _run(self) -> None:
        while True:
            wait_read(self._epoll.fileno())
            began = self.clock()
            for fd, _ in self._epoll.poll(0):
                stream = self._streams.get(fd)
                if stream is not None:
                    self._read(fd, stream)
            # Let the next frames gather: one wake-up then serves many streams.
            gevent.sleep(max(0.0, self.interval_s - (self.clock() - began)))

    def _read(self, fd: int, stream) -> None:
        raw = self._raw[fd]
        arrival = None
        try:
            if self.kernel_time:
                n, ancillary, _, _ = raw.recvmsg_into([self._buffer], _ANCILLARY_BYTES)
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                        seconds, nanos = _TIMESPEC.unpack_from(data)
                        arrival = seconds + nanos / 1e9 - (time.time() - time.monotonic())
                        self.stamped_reads += 1
            else:
                n = raw.recv_into(self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            n = 0  # reset: the same as an EOF for the recording
        if not n:
            self.remove(stream)
            self.closed(stream)
            return
        now = self.clock()
        self.consume(stream, self._view[:n], now if arrival is None or arrival > now else arrival)
