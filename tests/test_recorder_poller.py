"""The poller that reads every stream: arrival times are when the bytes reached the socket, not when the
recorder got round to reading them, and one wake-up serves every stream that has bytes."""

from __future__ import annotations

import socket
import time

import gevent
from gevent.event import Event
from gevent.monkey import get_original

from controller.recorder.poller import StreamPoller

real_sleep = get_original("time", "sleep")


class Stream:
    def __init__(self, sock) -> None:
        self.socket = sock


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(the recorder's end, the client's end) of a loopback TCP connection, like a stream's."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    return ours, client


def test_arrival_is_when_the_bytes_reached_the_socket_even_if_read_late():
    reads: list[tuple[bytes, float]] = []
    got = Event()
    poller = StreamPoller(lambda stream, data, arrival: (reads.append((bytes(data), arrival)), got.set()),
                          lambda stream: None, interval_s=0.0)
    ours, theirs = tcp_pair()
    try:
        poller.start()
        poller.add(Stream(ours))
        # Linux turns receive timestamps on a moment after they are first asked for: wait until it has.
        with gevent.Timeout(5, AssertionError("the kernel never timestamped a read")):
            while not poller.stamped_reads:
                got.clear()
                theirs.send(b"warm-up")
                got.wait()
        reads.clear()
        got.clear()
        sent_at = time.monotonic()
        theirs.send(b"frame")
        real_sleep(0.3)  # the whole recorder stalls: nothing runs, the bytes wait in the socket
        assert got.wait(5)
        [(data, arrival)] = reads
        assert data == b"frame"
        assert arrival - sent_at < 0.1  # the kernel's time of arrival, not the read 0.3 s later
        assert time.monotonic() - sent_at >= 0.3
    finally:
        poller.stop()
        ours.close()
        theirs.close()


def test_one_wake_up_reads_every_ready_stream_and_an_eof_is_reported():
    reads: list[bytes] = []
    closed: list[object] = []
    poller = StreamPoller(lambda stream, data, arrival: reads.append(bytes(data)), closed.append, interval_s=0.0)
    pairs = [tcp_pair() for _ in range(5)]
    streams = [Stream(ours) for ours, _ in pairs]
    try:
        for stream in streams:
            poller.add(stream)
        for n, (_, theirs) in enumerate(pairs):
            theirs.send(bytes([n]) * 10)
        poller.start()
        with gevent.Timeout(5):
            while len(reads) < 5:
                gevent.sleep(0.01)
        assert sorted(reads) == [bytes([n]) * 10 for n in range(5)]
        pairs[2][1].close()  # the client goes away
        with gevent.Timeout(5):
            while not closed:
                gevent.sleep(0.01)
        assert closed == [streams[2]] and streams[2] not in poller
    finally:
        poller.stop()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
