#!/usr/bin/env python3
"""Ingest benchmark (issue #10): the recorder under N real-time streams, against a Node `ws` recorder.

Run it as ``scripts/bench`` (it makes .venv first). It is a benchmark, not a test: it asserts nothing about
speed; it measures, prints a table and writes JSON. The machine is shared and noisy, so it pins the server
to one core and the load to the other, reports CPU per unit of work, and compares both servers in one run.

What it runs (each part can be switched off; ``--help`` lists the options):

1. Ingest: for each N, a fresh server in a child process pinned to core 1 (``taskset -c 1``) and a load
   process pinned to core 0: N WebSocket clients that do mod_audio_stream's upgrade (``Name:value`` headers,
   Bearer token, ``/calls/<uuid>``, no extension offered) and then send one masked binary frame of s16le PCM
   every 20 ms, paced the way a switch sends (``--pacing switch``): each stream's 20 ms tick at its own random
   phase, as calls answered at different moments tick at different offsets of FreeSWITCH's media timer; each
   frame one send() once due on the load's monotonic clock, never early, and no catch-up bursts unless the load
   itself falls behind (its lateness is reported); then a close frame 1000. Streams are opened at
   ``--ramp-rate`` per second and each sends ``--seconds`` plus the ramp's length, so there are ``--seconds``
   with all N live (the steady window); lag and CPU criteria are read in that window, loss and WAVs over the whole run. Every frame's
   payload is deterministic (frame index and stream index in the first 8 bytes, then a per-stream pattern),
   so every WAV is compared byte for byte with what was sent.
2. The same load against scripts/bench_node/recorder.js (``ws`` from npm, installed at run time).
3. 16 kHz mono and 8 kHz stereo (640-byte frames) at one N each.
4. One stream at 20x real time (a frame every 1 ms) for a 2-hour call: the recorder's RSS must stay flat.
5. Reaction: CHANNEL_ANSWER -> ``uuid_audio_stream ... start`` latency at 10, 50 and 200 answers/s, the
   controller (``python -m controller``) pinned to core 1 against the bundled simulator on core 0.
"""

from __future__ import annotations

import sys

_ROLE = sys.argv[sys.argv.index("--role") + 1] if "--role" in sys.argv[:-1] else None
if _ROLE in ("recorder", "reaction"):
    # The recorder and the simulator are gevent code: patch before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import argparse
import array
import collections
import datetime
import errno
import json
import math
import os
import platform
import random
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT  # the checkout whose controller package is measured (--source)
NODE_DIR = ROOT / "scripts" / "bench_node"
TOKEN = "bench-token-2f6c1d9e8a7b"
FRAME_MS = 20
SERVER_CORE, LOAD_CORE = "1", "0"
SATURATED_PCT = 95.0  # a server this busy is at its core's ceiling: its CPU per frame is 1 core / frames offered
LADDER = [200, 500, 800, 1000, 1200, 1500, 2000]
PROFILE_PATH = "bench-results-profile.txt"
LAG_LIMIT_MS = 100.0
CPU_LIMIT_PCT = 90.0

LAG_METHOD = (
    "arrival lag = how long the oldest audio the server has not yet read has been waiting. Every 20 ms "
    "(with --pacing aligned: halfway between two send ticks) the load process asks the kernel (a "
    "sock_diag/inet_diag netlink dump: the Recv-Q that `ss` shows) how many bytes each server-side socket "
    "of one group of streams holds unread (groups of at most ~200 in turn, asked for by exact address: a dump "
    "walks the kernel's whole connection table, which takes milliseconds and would hold up the sends). Those are the stream's last bytes, so they name "
    "the oldest unread frame; the load noted when it sent each frame, and the lag is now minus that moment "
    "(0 = the server had read everything sent so far). Each stream is sampled every 20 ms x the number of "
    "groups (1 to 5: at most every 100 ms), so a stall shows within that long of when it began; bytes the load "
    "could not even hand to the kernel (a full window) count as unread. The sender's own SIOCOUTQ is not "
    "used: on loopback the receiving kernel acknowledges data on arrival, so it stays 0 however far behind "
    "the reader is.")


# ---- small helpers ---------------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q / 100 * (len(sorted_values) - 1)))))
    return sorted_values[index]


def hist_percentiles(hist: dict, scale: float) -> dict:
    """p50/p99/max of a histogram {bucket: count}; a bucket is value * scale, rounded down."""
    total = sum(hist.values())
    if not total:
        return {"samples": 0, "p50": None, "p99": None, "max": None}
    result = {"samples": total}
    keys = sorted(hist)
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        need, seen = q * total, 0
        for key in keys:
            seen += hist[key]
            if seen >= need:
                result[name] = key / scale
                break
    result["max"] = keys[-1] / scale
    return result


def cores_jiffies() -> dict[str, list[int]]:
    """/proc/stat's per-core counters (user nice system idle iowait irq softirq steal), by core number."""
    found = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            found[name[3:]] = [int(v) for v in values[:8]]
    return found


def cores_usage(a: dict, b: dict, seconds: float) -> dict:
    """Each core's use between two cores_jiffies(), in % of the core: busy (all but idle and iowait), of which
    softirq and steal (time the hypervisor gave to someone else)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for core in b:
        if core not in a or seconds <= 0:
            continue
        d = [y - x for x, y in zip(a[core], b[core])]
        pct = lambda j: round(j / tick / seconds * 100, 1)  # noqa: E731
        out[core] = {"busy_pct": pct(d[0] + d[1] + d[2] + d[5] + d[6] + d[7]), "softirq_pct": pct(d[6]),
                     "steal_pct": pct(d[7])}
    return out


def proc_switches(pid: int) -> tuple[int, int, int]:
    """Context switches of every thread of `pid` so far (voluntary: it went to sleep, i.e. it waited for more
    work and was woken again; involuntary: preempted), and how many threads."""
    voluntary = involuntary = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        threads += 1
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary, threads


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def proc_rss_kib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB


def proc_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


# ---- the audio every stream sends (deterministic, so WAVs can be checked byte for byte) -------------------

def stream_uuid(index: int) -> str:
    return f"b0000000-0000-4000-8000-{index:012x}"


def stream_filler(index: int, frame_bytes: int) -> bytes:
    """Bytes 8.. of every frame of stream `index`: a per-stream pattern, never silence."""
    return random.Random(index * 7919 + frame_bytes).randbytes(frame_bytes - 8)


def frame_payload(index: int, frame: int, filler: bytes) -> bytes:
    return struct.pack("<II", frame, index) + filler


def expected_audio(index: int, frames: int, frame_bytes: int) -> bytes:
    filler = stream_filler(index, frame_bytes)
    pack = struct.Struct("<II").pack
    return b"".join(pack(j, index) + filler for j in range(frames))


class FrameMaker:
    """Masked WebSocket frames for one stream, prebuilt except for the 8 bytes that carry the frame index."""

    __slots__ = ("head", "tail", "key", "index", "wire_bytes")
    _pack = struct.Struct("<II").pack

    def __init__(self, index: int, frame_bytes: int) -> None:
        mask = random.Random(-index - 1).randbytes(4)
        n = frame_bytes
        header = struct.pack("!BB", 0x82, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x82, 0x80 | 126, n)
        filler = stream_filler(index, frame_bytes)  # starts at payload byte 8: the mask lines up at byte 0
        key = (mask * (len(filler) // 4 + 1))[:len(filler)]
        self.tail = (int.from_bytes(filler, "little") ^ int.from_bytes(key, "little")).to_bytes(len(filler), "little")
        self.head = header + mask
        self.key = struct.unpack("<I", mask)[0]
        self.index = index
        self.wire_bytes = len(header) + 4 + n

    def frame(self, number: int) -> bytes:
        return self.head + self._pack(number ^ self.key, self.index ^ self.key) + self.tail


def close_frame() -> bytes:
    payload = struct.pack("!H", 1000) + b"Normal closure"
    mask = os.urandom(4)
    return struct.pack("!BB", 0x88, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade_request(port: int, uuid: str) -> bytes:
    """mod_audio_stream's upgrade request (libwebsockets): no space after the colons."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    return (f"GET /calls/{uuid} HTTP/1.1\r\nHost:127.0.0.1:{port}\r\nUpgrade:websocket\r\nConnection:Upgrade\r\n"
            f"Sec-WebSocket-Key:{key}\r\nSec-WebSocket-Version:13\r\nOrigin:http://127.0.0.1:{port}\r\n"
            f"Authorization:Bearer {TOKEN}\r\n\r\n").encode()


# ---- kernel view of the server's sockets: bytes received but not yet read (sock_diag) ---------------------

class RecvQueues:
    """Recv-Q of the established TCP sockets whose local port is `port` (the server's side), by peer port:
    ``dump()`` all of them, ``dump(part)`` one group set with ``split``."""

    NETLINK_SOCK_DIAG = 4
    SOCK_DIAG_BY_FAMILY = 20
    _header = struct.Struct("=IHHII")
    _ports = struct.Struct("!HH")
    _queue = struct.Struct("=I")
    LOOPBACK = socket.inet_aton("127.0.0.1") + bytes(12)

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.NETLINK_SOCK_DIAG)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.buffer = bytearray(1 << 20)  # reused: a fresh 1 MiB per recv costs an mmap and page faults each time
        # inet_diag bytecode: keep sport >= port and sport <= port (jump past the end = reject).
        bytecode = (struct.pack("=BBH", 2, 8, 20) + struct.pack("=BBH", 0, 0, port)
                    + struct.pack("=BBH", 3, 8, 12) + struct.pack("=BBH", 0, 0, port))
        attribute = struct.pack("=HH", 4 + len(bytecode), 1) + bytecode
        request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 1) + bytes(48) + attribute
        self.request = struct.pack("=IHHII", 16 + len(request), self.SOCK_DIAG_BY_FAMILY, 0x301, 1, 0) + request
        self.groups: list[tuple[bytes, int]] = []

    def split(self, peer_ports: list[int], parts: int) -> None:
        """Ask for the sockets in `parts` groups, each by exact address: a dump walks the kernel's whole table of
        connections (over a millisecond however few match), which would hold up the load's sends every time;
        a batch of exact look-ups (many requests in one send) costs about a microsecond a socket."""
        self.groups = []
        for k in range(parts):
            batch = []
            for peer in peer_ports[k::parts]:
                identity = struct.pack("!HH", self.port, peer) + self.LOOPBACK + self.LOOPBACK + struct.pack(
                    "=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
                body = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 1) + identity
                batch.append(struct.pack("=IHHII", 16 + len(body), self.SOCK_DIAG_BY_FAMILY, 0x1, 1, 0) + body)
            self.groups.append((b"".join(batch), len(batch)))

    def dump(self, part: int | None = None) -> list[tuple[int, int]]:
        if part is None:
            self.sock.send(self.request)
            expected = None
        else:
            request, expected = self.groups[part]
            self.sock.send(request)
        found = []
        answers = 0
        header, ports, queue = self._header.unpack_from, self._ports.unpack_from, self._queue.unpack_from
        data = self.buffer
        while expected is None or answers < expected:
            # Exact look-ups are answered while the request is sent: once none is left to read, that was all.
            try:
                size = self.sock.recv_into(data, 0, 0 if expected is None else socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            offset = 0
            while offset < size:
                length, kind = header(data, offset)[:2]
                if kind == 3:  # NLMSG_DONE
                    return found
                answers += 1
                if kind == 2:  # NLMSG_ERROR
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if expected is None or code != errno.ENOENT:  # ENOENT: that connection is gone
                        raise OSError(code, "sock_diag request failed")
                else:
                    found.append((ports(data, offset + 20)[1], queue(data, offset + 72)[0]))
                offset += (length + 3) & ~3
        return found


# ---- role: the load (core 0): N clients on one epoll loop ------------------------------------------------
#
# How a switch paces its streams: FreeSWITCH reads each call's media on that call's own 20 ms timer (the soft
# timer counts milliseconds, and a session's ticks fall on the millisecond its timer was set up, so calls answered
# at different moments tick at different offsets); mod_audio_stream's media bug hands each frame to its WebSocket
# client, whose service thread writes it: one write per frame per stream, the streams' writes spread over the
# 20 ms. The load does the same (--pacing switch, the default): every stream gets a random phase in [0, 20 ms)
# (seeded: --seed), frame k of a stream is due at its phase + k * 20 ms on the load's monotonic clock, and each
# frame is one send() once it is due. The loop sleeps in epoll_wait, whose timeout is in whole milliseconds, so
# frames due within the same millisecond go out back to back (as FreeSWITCH's millisecond timer releases them).
# A frame never goes out early; if the load falls behind, the frames it owes go out as soon as it can (the
# module's queue would do the same) and the lateness of every send is reported: the load's own lag.
# --pacing aligned is the load this benchmark used before: every stream on one common 20 ms tick, so each tick
# sends one frame of every stream in a single burst of N sends (and the server sees N frames at once, then
# nothing for the rest of the 20 ms).

CONNECTING, UPGRADING, RUNNING, CLOSING, DONE, FAILED = range(6)


class Client:
    __slots__ = ("index", "uuid", "sock", "fd", "state", "maker", "pending", "sent", "start", "opened_at",
                 "reply", "port", "close_sent_at", "handshake_s", "close_s", "error", "max_lag_ms", "blocked",
                 "sent_at", "connect_s", "target", "max_late", "due0", "extensions")

    def __init__(self, index: int, frame_bytes: int, frames: int, fixed: bool) -> None:
        self.index = index
        self.uuid = stream_uuid(index)
        self.sent_at = array.array("d", bytes(8 * frames))  # when each frame was handed to the kernel
        self.maker = FrameMaker(index, frame_bytes)
        self.state = CONNECTING
        self.pending = b""
        self.opened_at = 0.0
        self.connect_s = None
        self.target = frames if fixed else None  # frames this stream sends; None: until all N have been live
        self.max_late = 0.0  # the most the load was behind this stream's schedule (s)
        self.sent = 0
        self.start = 0.0  # when its upgrade completed
        self.due0 = 0.0  # when its first frame was due; frame k is due at due0 + k * interval
        self.reply = b""
        self.port = 0
        self.close_sent_at = 0.0
        self.handshake_s = None
        self.close_s = None
        self.error = None
        self.max_lag_ms = 0.0
        self.blocked = 0
        self.extensions = None  # the Sec-WebSocket-Extensions the server answered with (none expected)


def run_load(args) -> None:
    import heapq

    raise_nofile()
    n, interval = args.n, args.interval_ms / 1000.0
    frame_bytes = args.rate * 2 * args.channels * FRAME_MS // 1000
    # Either every stream sends --frames (the long call), or streams run until all N have been live together for
    # --seconds: then each gets the same length, so they end in the order (and at the pace) they began.
    fixed = args.frames is not None
    ramp_limit = n / args.ramp_rate * 4 + 30.0  # all N must be live by then, or the run is over
    capacity = args.frames if fixed else int((ramp_limit + args.seconds + 5) / interval) + 1
    clients = [Client(i, frame_bytes, capacity, fixed) for i in range(n)]
    aligned = args.pacing == "aligned"
    rng = random.Random(args.seed)
    phases = [0.0 if aligned else rng.random() * interval for _ in range(n)]  # offset of each stream's tick
    wire_bytes = clients[0].maker.wire_bytes
    by_fd: dict[int, Client] = {}
    by_port: dict[int, Client] = {}
    ep = select.epoll()
    queues = RecvQueues(args.port)
    bye = close_frame()
    server = args.server_pid
    schedule: list[tuple[float, int]] = []  # a heap: (when the stream's next frame is due, stream index)

    lag_all: collections.Counter = collections.Counter()  # lag in 0.1 ms buckets
    lag_steady: collections.Counter = collections.Counter()
    late_all: collections.Counter = collections.Counter()  # each send's lateness behind its due time, 0.1 ms buckets
    late_steady: collections.Counter = collections.Counter()
    burst_steady: collections.Counter = collections.Counter()  # frames sent per pass of the loop (all N live)
    catch_up = [0, 0]  # frames sent a whole interval or more late (behind another of the same stream): all, steady
    dump_busy: list[float] = []  # how long each lag sample took (s)
    dump_kernel: list[float] = []  # of which asking the kernel (s)
    slow_passes: list[tuple] = []  # (t, ms behind, ms sending, frames, streams running, done) of passes over 20 ms late
    slowest = dict.fromkeys(("open", "poll_overrun", "events", "send", "proc_sample"), 0.0)  # the load's stalls (s)
    samples: list[tuple[float, float, int, int]] = []  # (t, server cpu s, server rss KiB, frames sent so far)
    sample_every = 0.1
    lag_every = FRAME_MS / 1000

    clock = time.monotonic
    started = clock()
    cpu0 = os.times()
    opened = inflight = running_count = finished_sending = failed = total_sent = 0
    running: set[Client] = set()
    steady_from = steady_to = None
    cores_from = cores_to = load_cpu_from = load_cpu_to = switches_from = switches_to = None
    sent_from = sent_to = 0
    steady = False
    deadline = started + ramp_limit + capacity * interval + 60.0
    first_start = None
    ramp_failed = False

    def fail(client: Client, why: str) -> None:
        nonlocal failed, inflight
        if client.state in (CONNECTING, UPGRADING):
            inflight -= 1
        running.discard(client)  # its entry in the schedule is dropped when it comes up
        client.state = FAILED
        client.error = why
        failed += 1
        try:
            ep.unregister(client.fd)
        except (OSError, ValueError):
            pass
        client.sock.close()

    def open_more(now: float) -> None:
        nonlocal opened, inflight
        allowed = min(n - opened, args.concurrency - inflight, int((now - started) * args.ramp_rate) + 1 - opened)
        for _ in range(max(0, allowed)):
            client = clients[opened]
            opened += 1
            inflight += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as libwebsockets does
            client.sock, client.fd, client.opened_at = sock, sock.fileno(), clock()
            by_fd[client.fd] = client
            code = sock.connect_ex(("127.0.0.1", args.port))
            if code not in (0, errno.EINPROGRESS):
                fail(client, f"connect: {os.strerror(code)}")
                continue
            ep.register(client.fd, select.EPOLLOUT)

    def on_event(client: Client, events: int, now: float) -> None:
        nonlocal inflight, running_count, first_start
        state = client.state
        if state == CONNECTING:
            code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                fail(client, f"connect: {os.strerror(code)}")
                return
            client.connect_s = now - client.opened_at
            client.port = client.sock.getsockname()[1]
            by_port[client.port] = client
            client.sock.send(upgrade_request(args.port, client.uuid))
            client.state = UPGRADING
            ep.modify(client.fd, select.EPOLLIN)
        elif state == UPGRADING:
            try:
                data = client.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                fail(client, f"upgrade: {exc}")
                return
            if not data:
                fail(client, "closed during the upgrade")
                return
            client.reply += data
            if b"\r\n\r\n" in client.reply:
                head = client.reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                if not head[0].startswith(b"HTTP/1.1 101"):
                    fail(client, f"upgrade refused: {head[0].decode('latin-1')}")
                    return
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"sec-websocket-extensions":
                        client.extensions = value.strip().decode("latin-1")
                inflight -= 1
                client.state = RUNNING
                client.start = now
                if first_start is None:
                    first_start = now
                client.handshake_s = now - client.opened_at
                # The first frame goes out on the stream's own tick after the upgrade: its phase on the 20 ms grid.
                phase = phases[client.index]
                due = started + phase + math.ceil((now - started - phase) / interval) * interval
                client.due0 = due if due > now else due + interval
                heapq.heappush(schedule, (client.due0, client.index))
                running.add(client)
                running_count += 1
        elif state in (RUNNING, CLOSING):
            if events & select.EPOLLOUT and client.pending:
                try:
                    sent = client.sock.send(client.pending)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    fail(client, f"send: {exc}")
                    return
                client.pending = client.pending[sent:]
                if not client.pending:
                    ep.modify(client.fd, select.EPOLLIN)
                    if client.state == CLOSING:
                        client.close_sent_at = now
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    data = client.sock.recv(4096)
                except BlockingIOError:
                    return
                except OSError as exc:
                    data = b""
                    if client.state == RUNNING:
                        fail(client, f"recv: {exc}")
                        return
                if client.state == RUNNING:
                    fail(client, "the server closed the stream" + (f" ({data[:16]!r})" if data else " (EOF)"))
                elif not data or data[:1] == b"\x88":  # the close echo (or EOF): this stream is over
                    finish_close(client, now)

    def finish_close(client: Client, now: float) -> None:
        client.state = DONE
        client.close_s = now - client.close_sent_at
        try:
            ep.unregister(client.fd)
        except (OSError, ValueError):
            pass
        client.sock.close()

    def end_stream(client: Client, now: float) -> None:
        nonlocal finished_sending
        running.discard(client)
        finished_sending += 1
        client.state = CLOSING
        client.close_sent_at = now
        if client.pending:
            client.pending += bye
        else:
            try:
                client.sock.send(bye)
            except OSError as exc:
                fail(client, f"send: {exc}")

    def send_due(now: float) -> int:
        """Every frame due by `now`, earliest first, each in its own send(); frames falling due meanwhile wait
        for the next pass (after the loop has looked at its sockets again)."""
        nonlocal total_sent
        burst = 0
        heap = schedule
        while heap and heap[0][0] <= now:
            due, index = heap[0]
            client = clients[index]
            if client.state != RUNNING:
                heapq.heappop(heap)
                continue
            limit = client.target if client.target is not None else capacity
            if client.sent >= limit:
                heapq.heappop(heap)
                end_stream(client, now)
                continue
            frame = client.maker.frame(client.sent)
            mark = clock()
            late = mark - due
            bucket = int(late * 1e4)
            late_all[bucket] += 1
            if steady:
                late_steady[bucket] += 1
            if late >= interval:
                catch_up[0] += 1
                catch_up[1] += steady
            if late > client.max_late:
                client.max_late = late
            client.sent_at[client.sent] = mark
            client.sent += 1
            total_sent += 1
            burst += 1
            if client.pending:
                client.pending += frame
            else:
                try:
                    sent = client.sock.send(frame)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    heapq.heappop(heap)
                    fail(client, f"send: {exc}")
                    continue
                took = clock() - mark
                if took > slowest["send"]:
                    slowest["send"] = took
                if sent < len(frame):
                    client.pending = frame[sent:]
                    client.blocked += 1
                    ep.modify(client.fd, select.EPOLLIN | select.EPOLLOUT)
            if client.sent >= limit:
                heapq.heappop(heap)
                end_stream(client, now)
            else:
                heapq.heapreplace(heap, (client.due0 + client.sent * interval, index))
        return burst

    def sample_lag(steady: bool, part: int | None) -> None:
        now = clock()
        answers = queues.dump(part)
        dump_kernel.append(clock() - now)
        for peer_port, unread in answers:
            client = by_port.get(peer_port)
            if client is None or client.state != RUNNING:
                continue
            backlog = unread + len(client.pending)
            if client.pending:  # the kernel's send queue too: the server's receive window is full
                backlog += struct.unpack("i", fcntl_ioctl(client.sock, termios.TIOCOUTQ))[0]
            if not backlog:
                lag = 0.0
            else:
                # The unread bytes are the stream's last ones: the oldest belongs to this frame, sent at sent_at.
                oldest = max(0, client.sent - -(-backlog // wire_bytes))
                lag = (now - client.sent_at[oldest]) * 1e3
            bucket = int(lag * 10)
            lag_all[bucket] += 1
            if steady:
                lag_steady[bucket] += 1
            client.max_lag_ms = max(client.max_lag_ms, lag)

    # Lag samples every 20 ms (aligned: halfway between two ticks, as before); the server's CPU every 100 ms. Once
    # all N are live, each sample asks for one of `parts` groups of streams by exact address (each stream then
    # sampled every parts * 20 ms), so that no sample holds up the sends for long; before that (the ramp), a dump
    # of every stream every parts * 20 ms.
    parts = max(1, min(5, -(-n // 200)))
    slot = 0
    split_done = False
    next_sample = started + (lag_every / 2 if aligned else lag_every)
    next_proc = started
    passes = 0
    while True:
        now = clock()
        open_more(now)
        mark = clock()
        slowest["open"] = max(slowest["open"], mark - now)
        wake_at = min(schedule[0][0] if schedule else mark + 0.05, next_sample, next_proc)
        timeout = max(0.0, wake_at - mark)
        events_now = ep.poll(timeout)  # whole milliseconds, rounded up: never wakes before the earliest due time
        polled = clock()
        slowest["poll_overrun"] = max(slowest["poll_overrun"], polled - mark - max(0.0, timeout))
        for fd, events in events_now:
            client = by_fd.get(fd)
            if client is not None:
                on_event(client, events, clock())
        now = clock()
        slowest["events"] = max(slowest["events"], now - polled)
        steady = running_count == n and finished_sending == 0 and not failed
        if steady and steady_from is None:
            steady_from = now
            cores_from, load_cpu_from = cores_jiffies(), os.times()
            switches_from, sent_from = proc_switches(server), total_sent
            if not fixed:  # all live: from now on, --seconds more for the first stream, the same length for all
                length = int(round((now + args.seconds - first_start) / interval))
                for client in clients:
                    client.target = min(length, capacity)
        if steady_from is not None and steady_to is None and not steady:
            steady_to = now
            cores_to, load_cpu_to = cores_jiffies(), os.times()
            switches_to, sent_to = proc_switches(server), total_sent
        if not fixed and steady_from is None and not ramp_failed and now - started > ramp_limit:
            ramp_failed = True
            for client in clients:  # never all live at once: end what runs, open nothing more
                if client.target is None:
                    client.target = min(client.sent + 1, capacity)
            n_open = opened
            for client in clients[opened:]:
                client.state, client.error = FAILED, "never opened: the ramp did not complete in time"
            opened = n
            failed += n - n_open
        if steady and not split_done:
            queues.split([c.port for c in clients], parts)
            split_done = True
        if now >= next_sample:
            if split_done or slot % parts == 0:
                sample_lag(steady, slot % parts if split_done else None)
                dump_busy.append(clock() - now)
            slot += 1
            next_sample += lag_every
            if next_sample < now:
                next_sample = now + lag_every
        if now >= next_proc:
            mark = clock()
            try:
                samples.append((mark, proc_cpu_s(server), proc_rss_kib(server), total_sent))
            except (OSError, ValueError):
                pass
            slowest["proc_sample"] = max(slowest["proc_sample"], clock() - mark)
            next_proc += sample_every
            if next_proc < now:
                next_proc = now + sample_every
        if schedule and schedule[0][0] <= now:
            behind = now - schedule[0][0]
            burst = send_due(now)
            passes += 1
            if steady:
                burst_steady[burst] += 1
            if behind > 0.02:
                slow_passes.append((round(now - started, 3), round(behind * 1e3, 1), round((clock() - now) * 1e3, 1),
                                    burst, running_count, finished_sending))
        if opened == n and not inflight and not running and all(c.state in (DONE, FAILED) for c in clients):
            break
        if now > deadline:
            for client in clients:
                if client.state not in (DONE, FAILED):
                    fail(client, f"still {['connecting', 'upgrading', 'running', 'closing'][client.state]} "
                                 f"at the deadline")
            break
    ended = clock()
    cpu1 = os.times()
    try:
        samples.append((ended, proc_cpu_s(server), proc_rss_kib(server), total_sent))
        server_hwm = proc_hwm_kib(server)
    except (OSError, ValueError):
        server_hwm = None
    if steady_from is not None and steady_to is None:
        steady_to = ended
        cores_to, load_cpu_to = cores_jiffies(), os.times()
        try:
            switches_to, sent_to = proc_switches(server), total_sent
        except OSError:
            switches_to = None
    if steady_from is not None:
        cores = cores_usage(cores_from, cores_to, steady_to - steady_from)
        load_steady_pct = ((load_cpu_to.user - load_cpu_from.user) + (load_cpu_to.system - load_cpu_from.system)) \
            / (steady_to - steady_from) * 100
    else:
        cores, load_steady_pct = {}, None
    server_switches = None
    if steady_from is not None and switches_from and switches_to and sent_to > sent_from:
        frames = sent_to - sent_from
        server_switches = {"threads": switches_to[2],
                           "voluntary_per_1000_frames": round((switches_to[0] - switches_from[0]) / frames * 1000, 1),
                           "involuntary_per_1000_frames": round((switches_to[1] - switches_from[1]) / frames * 1000, 1)}
    bursts = sorted(burst_steady.elements()) if burst_steady else []
    result = {
        "n": n, "frame_bytes": frame_bytes, "wire_bytes": wire_bytes, "ramp_failed": ramp_failed,
        "pacing": args.pacing, "seed": args.seed,
        "ramp_s": None if steady_from is None else round(steady_from - started, 3),
        "interval_ms": args.interval_ms, "started": started, "ended": ended,
        "steady": [steady_from, steady_to], "total_sent": total_sent,
        "lag_all": hist_percentiles(lag_all, 10), "lag_steady": hist_percentiles(lag_steady, 10),
        "lag_hist_steady": {str(k): v for k, v in sorted(lag_steady.items())},
        "send_late_ms_all": hist_percentiles(late_all, 10), "send_late_ms_steady": hist_percentiles(late_steady, 10),
        "catch_up_frames": catch_up[0], "catch_up_frames_steady": catch_up[1],
        "frames_per_pass_steady": {"passes": len(bursts), "p50": percentile(bursts, 50), "p99": percentile(bursts, 99),
                                   "max": bursts[-1] if bursts else None,
                                   "mean": round(sum(bursts) / len(bursts), 2) if bursts else None},
        "passes": passes,
        "lag_sample_every_ms": parts * FRAME_MS,
        "lag_sample_kernel_ms": {"p50": percentile(sorted(dump_kernel), 50) * 1e3 if dump_kernel else None,
                                 "max": max(dump_kernel) * 1e3 if dump_kernel else None},
        "lag_sample_ms": {"p50": percentile(sorted(dump_busy), 50) * 1e3 if dump_busy else None,
                          "p99": percentile(sorted(dump_busy), 99) * 1e3 if dump_busy else None,
                          "max": max(dump_busy) * 1e3 if dump_busy else None},
        "slow_passes": slow_passes[:200],
        "load_slowest_ms": {k: round(v * 1e3, 2) for k, v in slowest.items()},
        "load_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "cores_steady": cores, "load_cpu_pct_steady": load_steady_pct, "server_switches_steady": server_switches,
        "load_user_s": cpu1.user - cpu0.user, "load_system_s": cpu1.system - cpu0.system,
        "server_hwm_kib": server_hwm,
        "extensions_answered": collections.Counter(c.extensions for c in clients if c.extensions).most_common(3),
        "samples": samples,
        "streams": [{"sent": c.sent, "ok": c.state == DONE, "error": c.error,
                     "opened_s": round(c.opened_at - started, 3) if c.state != CONNECTING else None,
                     "start_s": round(c.start - started, 3) if c.start else None,
                     "phase_ms": round(phases[c.index] * 1e3, 3),
                     "connect_ms": None if c.connect_s is None else round(c.connect_s * 1e3, 2), "handshake_ms":
                     None if c.handshake_s is None else round(c.handshake_s * 1e3, 2),
                     "close_ms": None if c.close_s is None else round(c.close_s * 1e3, 2),
                     "max_lag_ms": round(c.max_lag_ms, 1), "blocked": c.blocked,
                     "max_late_ms": round(c.max_late * 1e3, 1)} for c in clients],
    }
    Path(args.out).write_text(json.dumps(result))


def fcntl_ioctl(sock: socket.socket, request: int) -> bytes:
    import fcntl

    return fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")


# ---- role: the Python recorder (core 1) ------------------------------------------------------------------

def run_recorder(args) -> None:
    import inspect
    import logging

    import gevent
    import gevent.event

    from controller.recorder.server import RecorderServer, RecordingRegistry, StreamSpec

    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    registry = RecordingRegistry()
    for index in range(args.n):
        registry.expect(StreamSpec(uuid=stream_uuid(index), token=TOKEN, rate=args.rate, channels=args.channels))
    closed = collections.Counter()
    options = {"filename_template": "{uuid}.wav", "max_streams": args.n + 10, "max_connections": args.n + 20,
               "on_close": lambda call, reason: closed.update([reason])}
    server_box = []
    accepted = inspect.signature(RecorderServer).parameters
    if "on_detach" in accepted:
        # What the controller does at hangup: the module closed (its stop, or the hangup), the call is over.
        # at=None: the recording ends where its audio did. Spawned, as the hangup event arrives on its own.
        def on_detach(call: str, reason: str) -> None:
            if hasattr(server_box[0], "end_call"):
                gevent.spawn(server_box[0].end_call, call)
        options["on_detach"] = on_detach
    server = RecorderServer(registry, args.dir, **options)
    server_box.append(server)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    port = server.start("127.0.0.1", 0)
    import controller.recorder.server as module

    print(json.dumps({"port": port, "pid": os.getpid(), "module": module.__file__}), flush=True)
    stop.wait()
    server.stop(timeout=10)
    print(json.dumps({"closed": sum(closed.values()), "reasons": dict(closed)}), flush=True)


# ---- role: reaction (core 0): the simulator, timestamped, against `python -m controller` on core 1 -------
# CHANNEL_ANSWER -> uuid_audio_stream start. The simulator is the project's; this subclass only notes when it
# fires each CHANNEL_ANSWER and when each start command arrives (both on this process's monotonic clock).

START_COMMAND = re.compile(r"uuid_audio_stream (\S+) start ")


def run_reaction(args) -> None:
    import gevent

    from controller.simulator import Simulator

    class TimedSimulator(Simulator):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.answered_at: dict[str, float] = {}
            self.start_at: dict[str, float] = {}

        def fire_channel_event(self, call, name, phase, subclass=None, body=""):
            if name == "CHANNEL_ANSWER":
                self.answered_at.setdefault(call.uuid, time.monotonic())
            return super().fire_channel_event(call, name, phase, subclass, body)

        def record_command(self, connection, command):
            match = START_COMMAND.search(command)
            if match:
                self.start_at.setdefault(match.group(1), time.monotonic())
            super().record_command(connection, command)

    raise_nofile()
    workdir = Path(args.dir)
    sim = TimedSimulator(host="127.0.0.1", esl_port=0, password="ClueCon").start()
    config = workdir / "controller.yaml"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    metrics_port = probe.getsockname()[1]  # a free port for its HTTP/metrics listener (9464 may be taken)
    probe.close()
    config.write_text(
        f"esl: {{host: 127.0.0.1, port: {sim.esl_port}, password: ClueCon}}\n"
        f"recorder: {{listen_host: 127.0.0.1, listen_port: 0, directory: {workdir / 'rec'}}}\n"
        f"limits: {{max_streams: 5000}}\n"
        f"metrics: {{listen_host: 127.0.0.1, listen_port: {metrics_port}}}\n"
        f"logging: {{level: {args.log_level}}}\n"
        "rules:\n  - name: bench\n    match: {destination: \"9999\"}\n    mix: mono\n    rate: 8000\n")
    log = open(workdir / "controller.log", "ab")
    controller = subprocess.Popen(["taskset", "-c", SERVER_CORE, sys.executable, "-m", "controller", "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=log, cwd=SOURCE, env=source_env(),
                                  preexec_fn=raise_nofile)
    results = {"controller_pid": controller.pid, "rates": []}
    try:
        for _ in range(40):  # connected, subscribed, reconciled
            try:
                sim.wait_for_command(lambda c: "show channels" in c, timeout=0.5)
                break
            except TimeoutError:
                if controller.poll() is not None:
                    raise RuntimeError(f"the controller exited ({controller.returncode}); its log: "
                                       f"{workdir / 'controller.log'}") from None
        else:
            raise RuntimeError(f"the controller did not connect within 20 s; its log: {workdir / 'controller.log'}")
        gevent.sleep(1.0)
        speech = bytes(range(256)) * int(8000 * 2 * args.call_s / 256 + 2)
        for rate in args.rates:
            count = max(1, int(round(rate * args.seconds)))
            calls = []
            cpu_c0, cpu_s0, t0 = proc_cpu_s(controller.pid), proc_cpu_s(os.getpid()), time.monotonic()
            for k in range(count):
                gevent.sleep(max(0.0, t0 + k / rate - time.monotonic()))
                calls.append(sim.place_call("9999", speech=speech[:int(8000 * args.call_s) * 2], duration_s=args.call_s,
                                            plays=None))
            placed = time.monotonic()
            limit = placed + 10.0
            while time.monotonic() < limit and not all(c.uuid in sim.start_at for c in calls):
                gevent.sleep(0.05)
            gevent.wait([c.hung_up for c in calls], timeout=args.call_s + 10)
            gevent.sleep(1.0)  # the last streams close, the recorder finalises
            t1 = time.monotonic()
            cpu_c1, cpu_s1 = proc_cpu_s(controller.pid), proc_cpu_s(os.getpid())
            latencies = sorted((sim.start_at[c.uuid] - sim.answered_at[c.uuid]) * 1e3
                               for c in calls if c.uuid in sim.start_at and c.uuid in sim.answered_at)
            results["rates"].append({
                "rate": rate, "calls": count, "placed_in_s": round(placed - t0, 3),
                "started": len(latencies), "missing": count - len(latencies),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": latencies[-1] if latencies else None,
                "controller_cpu_pct": round((cpu_c1 - cpu_c0) / (t1 - t0) * 100, 1),
                "simulator_cpu_pct": round((cpu_s1 - cpu_s0) / (t1 - t0) * 100, 1),
                "window_s": round(t1 - t0, 2),
            })
            gevent.sleep(0.5)
        results["controller_rss_kib"] = proc_hwm_kib(controller.pid)
    finally:
        controller.send_signal(signal.SIGTERM)
        try:
            controller.wait(timeout=20)
        except subprocess.TimeoutExpired:
            controller.kill()
        sim.stop()
        log.close()
    print(json.dumps(results), flush=True)


# ---- the orchestrator --------------------------------------------------------------------------------------

class Child:
    """A child process whose stdout carries one JSON object per line."""

    def __init__(self, argv: list[str], log_path: Path, cwd: Path = ROOT, env: dict | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, cwd=cwd, env=env,
                                     preexec_fn=raise_nofile)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.proc.stdout], [], [], 0)[0]:
                raise RuntimeError(f"{self.proc.args[:4]}... said nothing within {timeout:g} s "
                                   f"(exit {self.proc.poll()}); its log {self.log_path}:\n{self.tail()}")
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk and self.proc.poll() is not None:
                    continue
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> dict | None:
        summary = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                summary = self.line(timeout)
            except (RuntimeError, ValueError):
                summary = None
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return summary


_RT_OK: bool | None = None


def load_priority_argv(opts) -> list[str]:
    """The load at real-time priority (SCHED_RR), as FreeSWITCH's own systemd unit runs the switch
    (CPUSchedulingPolicy=rr, priority 89): on a shared machine, another process on its core must not delay the
    frames (then they leave late and bunched, which flatters whichever server gets them). Needs root or
    CAP_SYS_NICE; without it the load runs at normal priority, and the report says so."""
    global _RT_OK
    if opts.load_priority != "rt" or not shutil.which("chrt"):
        return []
    if _RT_OK is None:
        _RT_OK = subprocess.run(["chrt", "--rr", "1", "true"], capture_output=True).returncode == 0
        if not _RT_OK:
            print("  the load cannot have real-time priority here (chrt --rr needs root or CAP_SYS_NICE): it runs "
                  "at normal priority, and other processes on its core may delay its frames", flush=True)
    return ["chrt", "--rr", "1"] if _RT_OK else []


def node_status() -> dict:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return {"ok": False, "why": f"{'node' if not node else 'npm'} not found on PATH: the Node column is skipped"}
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["ws"]
    installed = NODE_DIR / "node_modules" / "ws" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        print(f"installing ws {wanted} into {NODE_DIR.relative_to(ROOT)} (npm ci) ...", flush=True)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True)
        if done.returncode != 0:
            return {"ok": False, "why": f"npm ci failed: {done.stderr.strip()[-300:]}: the Node column is skipped"}
    return {"ok": True, "node": version, "ws": wanted}


def start_server(kind: str, directory: Path, n: int, rate: int, channels: int, logs: Path) -> tuple[Child, dict]:
    if kind == "python":
        argv = ["taskset", "-c", SERVER_CORE, sys.executable, str(Path(__file__).resolve()), "--role", "recorder",
                "--dir", str(directory), "--n", str(n), "--rate", str(rate), "--channels", str(channels)]
        child = Child(argv, logs / f"{kind}-server.log", cwd=SOURCE, env=source_env())
    else:
        argv = ["taskset", "-c", SERVER_CORE, shutil.which("node"), str(NODE_DIR / "recorder.js"), "--dir",
                str(directory), "--token", TOKEN, "--rate", str(rate), "--channels", str(channels)]
        child = Child(argv, logs / f"{kind}-server.log")
    hello = child.line(60)
    return child, hello


def wait_finalised(directory: Path, n: int, timeout: float) -> None:
    """The Python recorder finalises each call shortly after its close; wait for the sidecars to say so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(directory.glob("*.wav"))) >= n and not list(directory.glob("*.part")):
            return
        time.sleep(0.2)


def read_wav(path: Path) -> tuple[dict, bytes, list[str]]:
    """The format, the audio and what is wrong with the header of a PCM WAV: the RIFF length must match the file,
    and the data chunk's length must be exactly the bytes that follow it (no placeholder, nothing beyond)."""
    raw = path.read_bytes()
    problems = []
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return {}, b"", ["not a RIFF/WAVE file"]
    if struct.unpack_from("<I", raw, 4)[0] != len(raw) - 8:
        problems.append(f"RIFF length {struct.unpack_from('<I', raw, 4)[0]} != file length - 8 ({len(raw) - 8})")
    fmt, data, position = {}, None, 12
    while position + 8 <= len(raw):
        kind, size = raw[position:position + 4], struct.unpack_from("<I", raw, position + 4)[0]
        body = position + 8
        if kind == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", raw, body)
            fmt = {"tag": tag, "channels": channels, "rate": rate, "bits": bits}
        elif kind == b"data":
            data = raw[body:body + size]
            if body + size != len(raw):
                problems.append(f"data chunk says {size} bytes, {len(raw) - body} follow it")
            break
        position = body + size + (size & 1)
    if data is None:
        return fmt, b"", problems + ["no data chunk"]
    return fmt, data, problems


def check_recordings(kind: str, directory: Path, streams: list[dict], frame_bytes: int, rate: int,
                     channels: int) -> dict:
    """Every WAV against the bytes its stream sent: exact (no more, no less), its header consistent, frames found;
    and every gap its sidecar lists, of any cause (the tail included), counted as invented: the load never
    leaves a hole, so any silence the recorder wrote is silence that never happened."""
    sample_bytes = 2 * channels
    out = {"wavs": 0, "missing": 0, "frames_found": 0, "length_exact": 0, "bytes_exact": 0, "header_bad": 0, "exact": 0,
           "audio_exact_outside_gaps": 0, "with_gaps": 0, "gaps": 0, "gap_s": 0.0, "gap_causes": collections.Counter(),
           "sidecars": 0, "sidecars_missing": 0, "dropped_bytes": 0, "duration_error_s_max": 0.0, "examples": []}
    for index, stream in enumerate(streams):
        uuid = stream_uuid(index)
        path = directory / f"{uuid}.wav"
        sent = stream["sent"]
        if not path.exists():
            out["missing"] += 1
            if len(out["examples"]) < 5:
                out["examples"].append(f"{uuid}: no WAV")
            continue
        out["wavs"] += 1
        fmt, data, problems = read_wav(path)
        if (fmt.get("tag"), fmt.get("rate"), fmt.get("channels"), fmt.get("bits")) != (1, rate, channels, 16):
            problems.append(f"format {fmt}")
        if problems:
            out["header_bad"] += 1
            if len(out["examples"]) < 5:
                out["examples"].append(f"{uuid}: header: {'; '.join(problems)}")
        gaps, unlisted = [], (0, 0)
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            out["sidecars"] += 1
            try:
                note = json.loads(sidecar.read_text())
            except ValueError:
                note = {}
                out["examples"].append(f"{uuid}: the sidecar is not JSON")
            gaps = note.get("gaps", [])
            unlisted = (note.get("gaps_unlisted", 0), note.get("gaps_unlisted_frames", 0))
            out["dropped_bytes"] += note.get("dropped_bytes", 0) or 0
        elif kind == "python":
            out["sidecars_missing"] += 1
        if gaps or unlisted[0]:
            out["with_gaps"] += 1
            out["gaps"] += len(gaps) + unlisted[0]
            out["gap_s"] += (sum(g["frames"] for g in gaps) + unlisted[1]) / rate
            for gap in gaps:
                out["gap_causes"][gap["cause"]] += 1
            if unlisted[0]:
                out["gap_causes"]["(unlisted)"] += unlisted[0]
            if len(out["examples"]) < 5:
                out["examples"].append(
                    f"{uuid}: {len(gaps) + unlisted[0]} gap(s), {(sum(g['frames'] for g in gaps) + unlisted[1]) / rate:.3f} s"
                    f" of silence the load never left ({', '.join(sorted({g['cause'] for g in gaps}))})")
        expected = expected_audio(index, sent, frame_bytes)
        out["duration_error_s_max"] = max(out["duration_error_s_max"],
                                          abs(len(data) - len(expected)) / (sample_bytes * rate))
        if len(data) == len(expected):
            out["length_exact"] += 1
        if data == expected:
            out["bytes_exact"] += 1
            out["audio_exact_outside_gaps"] += 1
            out["frames_found"] += sent
            if not problems and not gaps and not unlisted[0] and (sidecar.exists() or kind != "python"):
                out["exact"] += 1  # the audio, the header and the sidecar all say what was sent
            continue
        audio = data
        if gaps:
            kept, position = [], 0
            for gap in gaps:
                kept.append(data[position:gap["start_frame"] * sample_bytes])
                position = (gap["start_frame"] + gap["frames"]) * sample_bytes
            kept.append(data[position:])
            audio = b"".join(kept)
        if audio == expected:
            out["audio_exact_outside_gaps"] += 1
            out["frames_found"] += sent
            continue
        found, position = 0, 0
        for j in range(sent):
            piece = expected[j * frame_bytes:(j + 1) * frame_bytes]
            if audio[position:position + frame_bytes] == piece:
                found, position = found + 1, position + frame_bytes
                continue
            where = audio.find(piece, position)
            if where >= 0:
                found, position = found + 1, where + frame_bytes
        out["frames_found"] += found
        if len(out["examples"]) < 5:
            out["examples"].append(f"{uuid}: {sent - found} of {sent} frames not in the WAV "
                                   f"({len(data)} bytes, expected {len(expected)})")
    out["gap_causes"] = dict(out["gap_causes"])
    out["gap_s"] = round(out["gap_s"], 3)
    return out


def window_stats(samples: list, t0: float | None, t1: float | None) -> dict | None:
    """Server CPU over [t0, t1] from the load's /proc samples: % of one core, and the frames sent meanwhile."""
    if t0 is None or t1 is None:
        return None
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2:
        return None
    (a_t, a_cpu, _, a_frames), (b_t, b_cpu, _, b_frames) = inside[0], inside[-1]
    if b_t - a_t <= 0 or b_frames == a_frames:
        return None
    return {"seconds": round(b_t - a_t, 2), "cpu_pct": (b_cpu - a_cpu) / (b_t - a_t) * 100,
            "us_per_frame": (b_cpu - a_cpu) / (b_frames - a_frames) * 1e6, "frames": b_frames - a_frames}


def run_ingest(kind: str, n: int, seconds: float, rate: int, channels: int, opts, *, interval_ms: float = FRAME_MS,
               frames: int | None = None, label: str = "ingest", profile: bool = False) -> dict:
    frame_bytes = rate * 2 * channels * FRAME_MS // 1000
    ramp_s = n / opts.ramp_rate
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-{n}-", dir=opts.tmp))
    recordings = workdir / "rec"
    recordings.mkdir()
    record = {"server": kind, "n": n, "rate": rate, "channels": channels, "frame_bytes": frame_bytes,
              "seconds_all_live": seconds, "ramp_rate": opts.ramp_rate, "interval_ms": interval_ms, "label": label,
              "pacing": opts.pacing, "seed": opts.seed}
    record["load_priority"] = "rt" if load_priority_argv(opts) else "normal"
    server, hello = start_server(kind, recordings, n, rate, channels, workdir)
    if hello.get("module"):
        record["module"] = hello["module"]
    spy = None
    try:
        pid = hello["pid"]
        time.sleep(1.0)
        record["rss_idle_kib"] = proc_rss_kib(pid)
        out = workdir / "load.json"
        load_argv = load_priority_argv(opts) + ["taskset", "-c", LOAD_CORE, sys.executable, str(Path(__file__).resolve()), "--role", "load",
                     "--port", str(hello["port"]), "--server-pid", str(pid), "--n", str(n),
                     "--rate", str(rate), "--channels", str(channels), "--interval-ms", str(interval_ms),
                     "--ramp-rate", str(opts.ramp_rate), "--concurrency", str(opts.concurrency), "--out", str(out),
                     "--pacing", opts.pacing, "--seed", str(opts.seed)]
        load_argv += ["--frames", str(frames)] if frames is not None else ["--seconds", str(seconds)]
        run_s = frames * interval_ms / 1000 if frames is not None else ramp_s * 4 + 30 + seconds * 2
        if profile:
            spy = start_profile(pid, workdir, ramp_s + 2, max(2.0, min(seconds - 2, 15)))
        with open(workdir / "load.log", "ab") as load_log:
            subprocess.run(load_argv, stderr=load_log, check=True, cwd=ROOT, preexec_fn=raise_nofile,
                           timeout=run_s + 180)
        load = json.loads(out.read_text())
        if kind == "python":
            wait_finalised(recordings, n, 30)
        record["server_stop"] = server.stop()
    except Exception:
        server.stop()
        print(f"  {kind} N={n} failed; logs in {workdir}", flush=True)
        raise
    streams = load.pop("streams")
    samples = load.pop("samples")
    check = check_recordings(kind, recordings, streams, frame_bytes, rate, channels)
    whole = window_stats(samples, samples[0][0] if samples else None, samples[-1][0] if samples else None)
    steady = window_stats(samples, *load["steady"])
    rss = [s[2] for s in samples]
    handshakes = sorted(s["handshake_ms"] for s in streams if s["handshake_ms"] is not None)
    closes = sorted(s["close_ms"] for s in streams if s["close_ms"] is not None)
    sent = load["total_sent"]
    elapsed = load["ended"] - load["started"]
    peak = max([load["server_hwm_kib"] or 0] + rss)
    record.update({
        "ramp_s": load["ramp_s"], "ramp_failed": load["ramp_failed"],
        "frames_per_stream": max(s["sent"] for s in streams),
        "load_late_ms_per_stream": {"p99": percentile(sorted(s["max_late_ms"] for s in streams), 99),
                                    "max": max(s["max_late_ms"] for s in streams)},
        "extensions_answered": load["extensions_answered"],
        "frames_sent": sent, "frames_written": check["frames_found"], "frames_lost": sent - check["frames_found"],
        "streams_failed": sum(1 for s in streams if not s["ok"]),
        "stream_errors": collections.Counter(s["error"] for s in streams if s["error"]).most_common(3),
        "sends_blocked": sum(s["blocked"] for s in streams),
        "lag_ms_steady": load["lag_steady"], "lag_ms_all": load["lag_all"],
        "lag_hist_steady_0.1ms": load["lag_hist_steady"],
        "streams_max_lag_over_100ms": sum(1 for s in streams if s["max_lag_ms"] >= 100),
        "cpu_steady": steady, "cpu_whole_run": whole, "elapsed_s": round(elapsed, 2),
        "rss_peak_kib": peak, "rss_during_kib": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None,
                                                 "first_tenth_median": statistics.median(rss[:max(1, len(rss) // 10)]) if rss else None,
                                                 "last_tenth_median": statistics.median(rss[-max(1, len(rss) // 10):]) if rss else None,
                                                 "max": max(rss) if rss else None, "samples": len(rss)},
        "kib_per_stream": (peak - record["rss_idle_kib"]) / n,
        "handshake_ms": {"p50": percentile(handshakes, 50), "p99": percentile(handshakes, 99),
                         "max": handshakes[-1] if handshakes else None},
        "close_echo_ms": {"p50": percentile(closes, 50), "p99": percentile(closes, 99),
                          "max": closes[-1] if closes else None},
        "load": {"cpu_pct": load["load_cpu_s"] / elapsed * 100, "us_per_frame": load["load_cpu_s"] / max(1, sent) * 1e6,
                 "user_us_per_frame": load["load_user_s"] / max(1, sent) * 1e6,
                 "system_us_per_frame": load["load_system_s"] / max(1, sent) * 1e6,
                 "send_late_ms": load["send_late_ms_steady"] if load["send_late_ms_steady"]["samples"]
                 else load["send_late_ms_all"], "send_late_ms_all": load["send_late_ms_all"],
                 "catch_up_frames": load["catch_up_frames"], "catch_up_frames_steady": load["catch_up_frames_steady"],
                 "frames_per_pass_steady": load["frames_per_pass_steady"], "lag_sample_ms": load["lag_sample_ms"],
                 "lag_sample_kernel_ms": load["lag_sample_kernel_ms"], "lag_sample_every_ms": load["lag_sample_every_ms"],
                 "slowest_ms": load["load_slowest_ms"], "slow_passes": load["slow_passes"][:20],
                 "cpu_pct_steady": load["load_cpu_pct_steady"]},
        "cores_steady": load["cores_steady"], "server_switches_steady": load["server_switches_steady"],
        "wav": check,
    })
    if spy is not None:
        record["profile"] = finish_profile(spy, workdir)
    lag99 = (record["lag_ms_steady"]["p99"] if record["lag_ms_steady"]["samples"] else record["lag_ms_all"]["p99"])
    cpu = (steady or whole or {}).get("cpu_pct")
    # Others on the machine, all N live: what the cores did besides this server (its core) and the load (its core).
    cores = load["cores_steady"]
    if steady and SERVER_CORE in cores and LOAD_CORE in cores and load["load_cpu_pct_steady"] is not None:
        record["others_pct_steady"] = {"server_core": round(cores[SERVER_CORE]["busy_pct"] - steady["cpu_pct"], 1),
                                       "load_core": round(cores[LOAD_CORE]["busy_pct"] - load["load_cpu_pct_steady"], 1)}
    # At its core's ceiling a server's CPU per frame sent is 1 core / frames offered, whatever it would have cost:
    # it only falls as N grows, and a ratio with it says nothing (it reads as if that server were cheaper).
    record["saturated"] = bool(cpu is not None and cpu >= SATURATED_PCT)
    steady_frames = (steady or {}).get("frames") or 0
    record["load_lagged"] = bool(load["catch_up_frames_steady"] > 0.001 * steady_frames)
    record["wav_exact_all"] = check["exact"] == n and check["dropped_bytes"] == 0
    record["pass"] = bool(record["frames_lost"] == 0 and record["streams_failed"] == 0 and record["wav_exact_all"]
                          and lag99 is not None and lag99 < LAG_LIMIT_MS and cpu is not None and cpu < CPU_LIMIT_PCT
                          and (steady is not None or label == "long_call"))
    if opts.keep:
        record["kept"] = str(workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return record


# ---- py-spy (optional): where the recorder's CPU goes ----------------------------------------------------

def start_profile(pid: int, workdir: Path, delay_s: float, duration_s: float):
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  --profile: py-spy not found (.venv/bin/python -m pip install py-spy); not profiling", flush=True)
        return None
    out = workdir / "profile.txt"
    argv = ["taskset", "-c", LOAD_CORE, spy, "record", "--nonblocking", "--pid", str(pid), "--format", "raw",
            "--rate", "200", "--duration", str(int(duration_s)), "-o", str(out)]
    log = open(workdir / "py-spy.log", "ab")
    # Starts once the ramp is over, so the profile is the steady state.
    return subprocess.Popen(["sh", "-c", f"sleep {delay_s:.1f}; exec {shlex.join(argv)}"], stdout=log, stderr=log), out


def finish_profile(spy, workdir: Path) -> dict:
    proc, out = spy
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.exists():
        return {"error": "py-spy wrote nothing: " + (workdir / "py-spy.log").read_text(errors="replace")[-300:]}
    own, total_incl, total = collections.Counter(), collections.Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count = int(count)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total_incl[frame] += count
    kept = Path(PROFILE_PATH)
    shutil.copy(out, kept)
    return {"samples": total, "raw": str(kept),
            "own": [(name, round(c / total * 100, 1)) for name, c in own.most_common(15)],
            "inclusive": [(name, round(c / total * 100, 1)) for name, c in total_incl.most_common(25)]}


# ---- the report -----------------------------------------------------------------------------------------

def row(record: dict) -> str:
    lag = record["lag_ms_steady"] if record["lag_ms_steady"]["samples"] else record["lag_ms_all"]
    cpu = record["cpu_steady"] or record["cpu_whole_run"] or {}
    wav = record["wav"]
    invented = f"{wav['with_gaps']} WAVs/{wav['gap_s']:.2f} s" if wav["with_gaps"] else "0"
    exact = wav["exact"]
    return (f"{record['n']:>5} {record['server']:<6} {record['frames_sent']:>9} {record['frames_lost']:>6} "
            f"{fmt(lag['p50']):>6} {fmt(lag['p99']):>7} {fmt(lag['max']):>7} "
            f"{fmt(cpu.get('cpu_pct')):>6} {fmt(cpu.get('us_per_frame')):>6} "
            f"{fmt((record['cpu_whole_run'] or {}).get('us_per_frame')):>6} "
            f"{record['rss_idle_kib'] / 1024:>5.1f}->{record['rss_peak_kib'] / 1024:<6.1f} "
            f"{record['kib_per_stream']:>6.1f} "
            f"{exact:>5}/{record['n']:<5} {invented:>18} "
            f"{record['load']['cpu_pct']:>5.1f} {fmt(record['load']['send_late_ms']['p99']):>5} "
            f"{'yes' if record['pass'] else 'NO':>4}")


HEADER = ("    N server     sent   lost  lag p50    p99     max  CPU%  us/fr  us/fr  RSS MiB      KiB/  WAVs exact   "
          "  invented gaps  load  load  pass\n"
          "                                (ms, all streams live)  core steady  whole  idle->peak   stream"
          "                         CPU%  late99\n"
          "                                                                                                    "
          "                              (ms)")


PACING = {
    "switch": "pacing: switch (each stream's 20 ms tick at its own random phase, seed {seed}; one send() per frame "
              "when due, on the load's monotonic clock)",
    "aligned": "pacing: aligned (all streams on one common 20 ms tick: a burst of N sends per tick)",
}


def print_ratio(a: dict, b: dict) -> None:
    ca, cb = a["cpu_steady"] or a["cpu_whole_run"], b["cpu_steady"] or b["cpu_whole_run"]
    parts = []
    if ca and cb:
        ceiling = [r["server"] for r in (a, b) if r.get("saturated")]
        parts.append(f"CPU per frame {ca['us_per_frame'] / cb['us_per_frame']:.2f}x"
                     + (f" (not a cost ratio: {' and '.join(ceiling)} at its core's ceiling)" if ceiling else ""))
    if b["kib_per_stream"] > 0:
        parts.append(f"KiB per stream {a['kib_per_stream'] / b['kib_per_stream']:.2f}x")
    if parts:
        print(f"{'':>6} python/node: " + ", ".join(parts))


def describe(record: dict) -> None:
    wav = record["wav"]
    notes = []
    if record["streams_failed"]:
        notes.append(f"{record['streams_failed']} streams failed: {record['stream_errors']}")
    if wav["with_gaps"]:
        notes.append(f"{wav['with_gaps']} WAVs carry {wav['gap_s']:.3f} s of inserted silence the load never sent "
                     f"(causes {wav['gap_causes']}); audio outside the gaps exact in {wav['audio_exact_outside_gaps']}")
    if wav["length_exact"] != record["n"]:
        notes.append(f"{record['n'] - wav['length_exact']} WAVs not exactly as long as the audio sent "
                     f"(worst by {wav['duration_error_s_max']:.3f} s)")
    if record["sends_blocked"]:
        notes.append(f"{record['sends_blocked']} sends found the socket buffer full (the server stopped reading)")
    if record["cpu_steady"] is None and record["label"] != "long_call":
        notes.append(f"the N streams were never all live at once (upgrades p99 {fmt(record['handshake_ms']['p99'])} ms"
                     f"{', the ramp gave up' if record['ramp_failed'] else ''}): lag and CPU are over the whole run, "
                     f"and the run fails")
    if wav["header_bad"]:
        notes.append(f"{wav['header_bad']} WAV headers wrong (lengths that do not match the file, or the format)")
    if wav["sidecars_missing"]:
        notes.append(f"{wav['sidecars_missing']} WAVs without a sidecar")
    if wav["dropped_bytes"]:
        notes.append(f"the sidecars report {wav['dropped_bytes']} dropped bytes")
    if record.get("saturated"):
        cpu = (record["cpu_steady"] or record["cpu_whole_run"])["cpu_pct"]
        notes.append(f"at {cpu:.0f}% of its core: saturated, so its CPU per frame is the core's ceiling (1 core / "
                     f"{record['n'] * 1000 // FRAME_MS:,} frames a second = {FRAME_MS * 1000 / record['n']:.1f} us), a "
                     f"lower bound of what a frame costs it, not a measure")
    others = record.get("others_pct_steady") or {}
    if max(others.values(), default=0) > 15:
        notes.append(f"other processes used {others['server_core']:.0f}% of the server's core and "
                     f"{others['load_core']:.0f}% of the load's while all N were live (a shared machine)")
    if record.get("extensions_answered"):
        notes.append(f"the server answered the upgrade with extensions {record['extensions_answered']} (none offered)")
    late = record["load_late_ms_per_stream"]
    load = record["load"]
    if late["max"] >= FRAME_MS:
        notes.append(f"the load itself lagged: sends up to {late['max']:.0f} ms behind their due time (p99 of the "
                     f"streams' worst {late['p99']:.0f} ms; of all sends p99 {fmt(load['send_late_ms']['p99'])} ms), "
                     f"{load['catch_up_frames']} frames sent back to back with the stream's previous one "
                     f"({load['catch_up_frames_steady']} with all N live): they reached the server late and bunched "
                     f"through no fault of the server")
    for example in wav["examples"][:2]:
        notes.append("e.g. " + example)
    for note in notes:
        print(f"{'':>6} {record['server']}: {note}")


def source_env() -> dict:
    """The environment of a child that imports the measured controller package: SOURCE first on its path (ahead
    of the editable install in .venv, which points at this checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def source_state() -> dict:
    """Which recorder was measured: the commit, and the files under controller/ that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True, check=False)
        return done.stdout.rstrip() if done.returncode == 0 else ""
    return {"path": str(SOURCE), "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
            "subject": git("log", "-1", "--format=%s")[:100],
            "controller_uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "controller").splitlines()]}


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)}


def ingest_series(opts, servers: list[str], results: dict) -> None:
    rate, channels = opts.rate, opts.channels
    print(f"\n== Ingest: {rate} Hz {'stereo' if channels == 2 else 'mono'}, "
          f"{rate * 2 * channels * FRAME_MS // 1000}-byte frames every {FRAME_MS} ms, {opts.seconds:g} s with all "
          f"N live (streams opened at {opts.ramp_rate:g}/s, each sends that long plus the ramp) ==")
    print(PACING[opts.pacing].format(seed=opts.seed) + f"; the load at {'real-time (chrt --rr 1)' if load_priority_argv(opts) else 'normal'} priority")
    print(HEADER)
    runs = results["ingest"]
    largest = {kind: None for kind in servers}
    smallest_fail = {kind: None for kind in servers}

    def one(kind: str, n: int) -> dict:
        for attempt in range(1 + opts.retries):
            record = run_ingest(kind, n, opts.seconds, rate, channels, opts,
                                profile=(kind == "python" and n in opts.profile))
            record["attempt"] = attempt + 1
            runs.append(record)
            print(row(record), flush=True)
            describe(record)
            if record.get("profile"):
                print_profile(record["profile"])
            if not record["load_lagged"] or attempt == opts.retries:
                break
            record["superseded"] = True
            print(f"{'':>6} {kind}: the load lagged (it was not pacing like a switch): running N={n} again", flush=True)
        if record["pass"]:
            largest[kind] = max(largest[kind] or 0, n)
        else:
            smallest_fail[kind] = min(smallest_fail[kind] or n, n)
        return record

    for position, n in enumerate(opts.n):
        order = servers if position % 2 == 0 else list(reversed(servers))
        done = {}
        for kind in order:
            if opts.search and smallest_fail[kind] is not None and smallest_fail[kind] < n:
                continue  # it failed at a smaller N already
            done[kind] = one(kind, n)
        if "python" in done and "node" in done:
            print_ratio(done["python"], done["node"])
    if opts.search:
        for kind in servers:
            low, high = largest[kind] or 0, smallest_fail[kind]
            while high is not None and high - low > opts.resolution:
                middle = (low + high) // 2
                middle -= middle % 10
                if middle <= low:
                    break
                if one(kind, middle)["pass"]:
                    low = middle
                else:
                    high = middle
            largest[kind], smallest_fail[kind] = low or None, high
    results["largest_n"] = {kind: {"largest_passing": largest[kind], "smallest_failing": smallest_fail[kind]}
                            for kind in servers}
    print(f"\nlargest N with 0 frames lost, p99 lag < {LAG_LIMIT_MS:g} ms and server CPU < {CPU_LIMIT_PCT:g}% of its core "
          f"(steady window){' (search resolution ' + str(opts.resolution) + ')' if opts.search else ' (of the N run)'}:")
    for kind in servers:
        print(f"  {kind:<6} {largest[kind] or 'none'}"
              + (f" (fails at {smallest_fail[kind]})" if smallest_fail[kind] else " (passed every N run)"))
    if all(largest.get(k) and smallest_fail.get(k) for k in ("python", "node")):
        print(f"  python/node: {largest['python'] / largest['node']:.2f}x")


def print_profile(profile: dict) -> None:
    if "error" in profile:
        print(f"       profile: {profile['error']}")
        return
    print(f"       py-spy, {profile['samples']} samples in the steady window; own time (leaf frame) %:")
    for name, pct in profile["own"][:12]:
        print(f"         {pct:5.1f}  {name}")


def formats_series(opts, servers: list[str], results: dict) -> None:
    print(f"\n== Other formats: 640-byte frames every {FRAME_MS} ms, {opts.formats_seconds:g} s all live ==")
    print(HEADER)
    for spec in opts.formats:
        rate, channels, n = spec
        print(f"-- {rate} Hz {'stereo' if channels == 2 else 'mono'}, N={n}")
        done = {}
        for kind in servers:
            record = run_ingest(kind, n, opts.formats_seconds, rate, channels, opts, label="format")
            results["formats"].append(record)
            done[kind] = record
            print(row(record), flush=True)
            describe(record)
        if "python" in done and "node" in done:
            print_ratio(done["python"], done["node"])


def long_call(opts, servers: list[str], results: dict) -> None:
    frames = int(round(opts.long_call_hours * 3600 * 1000 / FRAME_MS))
    interval = FRAME_MS / opts.long_call_speed
    print(f"\n== Memory over a long call: one 8 kHz mono stream, {frames:,} frames "
          f"({opts.long_call_hours:g} h of audio) sent one every {interval:g} ms ({opts.long_call_speed:g}x real time) ==")
    for kind in servers:
        record = run_ingest(kind, 1, 0, 8000, 1, opts, interval_ms=interval, frames=frames, label="long_call")
        results["long_call"].append(record)
        wav = record["wav"]
        during = record["rss_during_kib"]
        print(f"  {kind:<6} {record['elapsed_s']:.0f} s; RSS before {record['rss_idle_kib'] / 1024:.1f} MiB, sampled every "
              f"0.1 s: first {during['first'] / 1024:.1f}, median of the first tenth {during['first_tenth_median'] / 1024:.1f}"
              f", of the last tenth {during['last_tenth_median'] / 1024:.1f}, last {during['last'] / 1024:.1f}, peak "
              f"{record['rss_peak_kib'] / 1024:.1f} MiB; frames lost {record['frames_lost']}; WAV exact: "
              f"{'yes' if wav['exact'] == 1 else 'NO'} ({'exactly' if wav['length_exact'] == 1 else 'NOT'} "
              f"{frames * FRAME_MS / 1000 / 3600:g} h); CPU {fmt((record['cpu_whole_run'] or {}).get('us_per_frame'))} "
              f"us per frame; lag p99 {fmt(record['lag_ms_all']['p99'])} ms")
        describe(record)


def reaction(opts, results: dict) -> None:
    print(f"\n== Reaction: CHANNEL_ANSWER -> uuid_audio_stream start, controller (python -m controller, log level "
          f"{opts.reaction_log_level}) on core {SERVER_CORE}, simulator on core {LOAD_CORE}; calls of "
          f"{opts.reaction_call_s:g} s placed for {opts.reaction_seconds:g} s per rate, rule mono 8000 ==")
    print("  measured inside the simulator: from just before it queues CHANNEL_ANSWER to the moment it reads the "
          "uuid_audio_stream start command (whatever the controller sends before it is included)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-reaction-", dir=opts.tmp))
    argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(Path(__file__).resolve()), "--role", "reaction",
            "--dir", str(workdir), "--rates", ",".join(map(str, opts.reaction_rates)),
            "--seconds", str(opts.reaction_seconds), "--call-s", str(opts.reaction_call_s),
            "--log-level", opts.reaction_log_level, "--source", str(SOURCE)]
    child = Child(argv, workdir / "reaction.log", cwd=SOURCE, env=source_env())
    total = sum(opts.reaction_seconds + opts.reaction_call_s + 14 for _ in opts.reaction_rates) + 60
    try:
        outcome = child.line(total)
    finally:
        child.stop(5)
    results["reaction"] = outcome
    print(f"  {'rate/s':>6} {'calls':>6} {'started':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'controller CPU%':>15} {'simulator CPU%':>14}")
    for r in outcome["rates"]:
        print(f"  {r['rate']:>6g} {r['calls']:>6} {r['started']:>7} {fmt(r['p50_ms'], '.2f'):>7} "
              f"{fmt(r['p99_ms'], '.2f'):>7} {fmt(r['max_ms'], '.2f'):>7} {r['controller_cpu_pct']:>15.1f} "
              f"{r['simulator_cpu_pct']:>14.1f}")
        if r["placed_in_s"] > opts.reaction_seconds * 1.1 + 0.2:
            print(f"         the simulator needed {r['placed_in_s']:.1f} s to place calls meant for "
                  f"{opts.reaction_seconds:g} s: the rate was not reached")
    if opts.keep:
        results["reaction"]["kept"] = str(workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def format_list(text: str) -> list[tuple[int, int, int]]:
    found = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        match = re.fullmatch(r"(\d+)x([12])@(\d+)", item)
        if not match:
            raise argparse.ArgumentTypeError(f"{item!r}: write RATExCHANNELS@N, e.g. 16000x1@500")
        found.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return found


EPILOG = f"""
what each column means:
  sent / lost      frames the load sent / sent frames not found in the WAVs (each WAV is compared byte for
                   byte with the frames its stream sent; a frame counts as found even if silence was
                   inserted before it)
  lag              {LAG_METHOD}
                   p50/p99/max over every (stream, sample) while all N streams were live
  CPU% core        the server's utime+stime (/proc/<pid>/stat: the process, all its threads, e.g. Node's
                   libuv pool doing the file writes; no children, neither server has any) over that window, as
                   % of one core; us/fr steady = CPU per frame sent in that window; us/fr whole = over the
                   whole run, upgrades and finalising included. A server at >= {SATURATED_PCT:g}% is saturated: its
                   figure is then the ceiling (1 core / frames offered: 33.3 us at 600 streams, 20 us at 1000),
                   not its cost, and a ratio with it means nothing. The kernel's TCP receive work on loopback
                   runs in the sender's softirq, on the load's core, so neither server pays it; softirq ticks on
                   the server's core (ACKs, wake-ups) go to whichever task runs, the same for both. Neither
                   server calls fsync; the page cache's writeback is kernel threads, in neither figure
  RSS MiB          resident memory before the first connection -> peak (VmHWM); KiB/stream = (peak - idle)/N
  WAVs exact       WAVs whose audio is byte for byte what was sent (no more, no less), whose header is right
                   (format; RIFF and data lengths exactly the file's) and whose sidecar lists no gap
  invented gaps    WAVs whose sidecar lists any gap (of any cause, the tail included, and any the sidecar
                   only counts), and their total seconds: the load never leaves a hole, so all of it is
                   silence that never happened
  load CPU%        the load process's own CPU over the run (core {LOAD_CORE}); late99 = p99 of how late its
                   sends went out behind their due time (ms), all N live. A frame a whole 20 ms late goes out
                   back to back with the stream's previous one (a catch-up, reported): if that happens, the
                   load and not the server shaped the run
  pass             0 lost, no stream failed, every WAV exact with no invented gap, lag p99 < {LAG_LIMIT_MS:g} ms and
                   CPU < {CPU_LIMIT_PCT:g}% of the core

pacing (--pacing):
  switch (default) as FreeSWITCH sends: each stream's 20 ms tick at its own random phase (calls are answered
                   at different moments; seeded by --seed, the same for both servers), frames due at
                   phase + k * 20 ms on the load's monotonic clock, each frame one send() once it is due
                   (epoll's 1 ms resolution: frames due within one millisecond go out together), never early,
                   no catch-up unless the load itself lags (then reported)
  aligned          every stream on one common 20 ms tick: each tick one burst of N sends, then silence (what
                   this benchmark did before; kept to show how much the pacing changes the result)

examples:
  scripts/bench --quick                        a smoke run of everything, under a minute
  scripts/bench                                the full run (~25-35 min): search, formats, 2-hour call, reaction
  scripts/bench --n 200,500,800,1000 --no-search --no-formats --long-call-hours 0 --reaction-rates ''
  scripts/bench --servers python --n 500 --no-search --profile 500   (py-spy: .venv/bin/pip install py-spy)
  scripts/bench --source ../bench-before --n 600,1000 --no-search --no-formats --long-call-hours 0 \\
                --reaction-rates ''          the recorder of another checkout (e.g. a git worktree of HEAD)
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (N=100 at 4 s, formats at N=50 for 3 s, a 36 s call at 20x, reaction at "
                             "10 and 50/s for 2 s): under a minute; options given explicitly still win")
    parser.add_argument("--servers", default="python,node",
                        help="which servers: python (controller/recorder), node (scripts/bench_node); default both")
    parser.add_argument("--n", type=int_list, default=None,
                        help=f"comma-separated N (concurrent streams) to run; default the search ladder "
                             f"{','.join(map(str, LADDER))}")
    parser.add_argument("--no-search", dest="search", action="store_false",
                        help="run exactly --n; by default the N are climbed until a server fails (it is not run at "
                             "higher N), then bisected between its largest pass and smallest failure")
    parser.add_argument("--resolution", type=int, default=50, help="stop bisecting when the bracket is this narrow (50)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds with all N streams live (default 20)")
    parser.add_argument("--rate", type=int, default=8000, choices=[8000, 16000, 24000, 32000, 48000],
                        help="sample rate of the main ingest runs (8000)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 2], help="channels of the main runs (1)")
    parser.add_argument("--ramp-rate", type=float, default=200.0,
                        help="new streams per second while ramping up (200); at most --concurrency upgrades at once")
    parser.add_argument("--concurrency", type=int, default=50, help="upgrades in flight at once (50)")
    parser.add_argument("--pacing", choices=["switch", "aligned"], default="switch",
                        help="how the load paces the streams: switch (default), each stream's 20 ms tick at a "
                             "random phase, one send() per frame when due, like FreeSWITCH's media timers; aligned, "
                             "all streams on one common tick (one burst of N sends every 20 ms)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the streams' random phases (1)")
    parser.add_argument("--load-priority", choices=["rt", "normal"], default="rt",
                        help="rt (default): the load runs at real-time priority (chrt --rr 1), as FreeSWITCH's "
                             "systemd unit runs the switch (CPUSchedulingPolicy=rr), so another process on its core "
                             "cannot delay its frames; needs root or CAP_SYS_NICE, else it falls back to normal")
    parser.add_argument("--retries", type=int, default=1,
                        help="run an ingest point again, up to this many times, when the load itself lagged (more "
                             "than 0.1%% of its frames a whole 20 ms late with all N live: on a shared machine, "
                             "something else took its core); the JSON keeps every attempt (1)")
    parser.add_argument("--source", default=None,
                        help="the checkout whose controller package is measured (default: this one), e.g. a git "
                             "worktree of an older commit; its directory goes first on the recorder's PYTHONPATH")
    parser.add_argument("--formats", type=format_list, default=None,
                        help="extra formats as RATExCHANNELS@N, comma-separated (default 16000x1@500,8000x2@500); "
                             "'' for none")
    parser.add_argument("--no-formats", dest="formats", action="store_const", const=[], help="skip the extra formats")
    parser.add_argument("--formats-seconds", type=float, default=None, help="seconds all live for them (default 10)")
    parser.add_argument("--long-call-hours", type=float, default=None,
                        help="the long call's audio in hours (default 2; 0 skips it)")
    parser.add_argument("--long-call-speed", type=float, default=20.0, help="times real time (20: a frame per ms)")
    parser.add_argument("--long-call-servers", default="python",
                        help="servers for the long call (python; 'python,node' adds the Node recorder)")
    parser.add_argument("--reaction-rates", type=float_list, default=None,
                        help="answers per second for the reaction part (default 10,50,200; '' skips it)")
    parser.add_argument("--reaction-seconds", type=float, default=None, help="seconds of answers per rate (default 5)")
    parser.add_argument("--reaction-call-s", type=float, default=1.5, help="length of each call (1.5 s)")
    parser.add_argument("--reaction-log-level", default="INFO", help="the controller's log level there (INFO)")
    parser.add_argument("--profile", type=int_list, default=[],
                        help="N values at which to run py-spy on the Python recorder (steady window, own time); "
                             "needs py-spy in .venv; the raw profile goes beside --json as <name>-profile.txt")
    parser.add_argument("--json", default="bench-results.json", help="where to write the results (bench-results.json)")
    parser.add_argument("--keep", action="store_true", help="keep each run's recordings and logs (under --tmp)")
    parser.add_argument("--tmp", default=None, help="where runs write their recordings (default: the system's temp dir)")
    # internal: the child roles
    parser.add_argument("--role", choices=["load", "recorder", "reaction"], help=argparse.SUPPRESS)
    for name in ("--port", "--server-pid", "--frames"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval-ms", type=float, default=FRAME_MS, help=argparse.SUPPRESS)
    parser.add_argument("--out", "--dir", dest="out", help=argparse.SUPPRESS)
    parser.add_argument("--rates", type=float_list, help=argparse.SUPPRESS)
    parser.add_argument("--call-s", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    quick = opts.quick
    if opts.n is None:
        opts.n = [100] if quick else list(LADDER)
        if quick:
            opts.search = False
    if opts.seconds is None:
        opts.seconds = 3.0 if quick else 20.0
    if opts.formats is None:
        opts.formats = [(16000, 1, 50), (8000, 2, 50)] if quick else [(16000, 1, 500), (8000, 2, 500)]
    if opts.formats_seconds is None:
        opts.formats_seconds = 3.0 if quick else 10.0
    if opts.long_call_hours is None:
        opts.long_call_hours = 0.01 if quick else 2.0
    if opts.reaction_rates is None:
        opts.reaction_rates = [10.0, 50.0] if quick else [10.0, 50.0, 200.0]
    if opts.reaction_seconds is None:
        opts.reaction_seconds = 2.0 if quick else 5.0
    opts.n = sorted(set(opts.n))
    return opts


def main(argv: list[str]) -> int:
    global PROFILE_PATH, SOURCE
    opts = parse_args(argv)
    if opts.source:
        SOURCE = Path(opts.source).resolve()
        if not (SOURCE / "controller" / "__init__.py").exists():
            print(f"--source {opts.source}: no controller package there", file=sys.stderr)
            return 2
    PROFILE_PATH = str(Path(opts.json).with_suffix("")) + "-profile.txt"
    if opts.role in ("load", "recorder"):
        opts.n = opts.n[0]
    if opts.role == "load":
        run_load(opts)
        return 0
    if opts.role == "recorder":
        opts.dir = opts.out
        run_recorder(opts)
        return 0
    if opts.role == "reaction":
        opts.dir, opts.seconds = opts.out, opts.seconds
        run_reaction(opts)
        return 0
    return orchestrate(opts, argv)


def orchestrate(opts, argv: list[str]) -> int:
    if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        print("needs taskset and at least 2 cores (the server on one, the load on the other)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # this process too stays off the server's core
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    results = {"machine": machine(), "source": source_state(), "command": "scripts/bench " + shlex.join(argv), "lag_method": LAG_METHOD,
               "criteria": {"lag_p99_ms_below": LAG_LIMIT_MS, "cpu_pct_below": CPU_LIMIT_PCT, "frames_lost": 0},
               "ingest": [], "formats": [], "long_call": [], "reaction": None}
    m = results["machine"]
    print(f"fs-stream-controller ingest benchmark, {m['date']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; Python {m['python']}")
    print(f"command: {results['command']}")
    source = results["source"]
    print(f"recorder measured: {source['path']} at commit {source['commit']} ({source['subject']})"
          + (f", with uncommitted changes in {', '.join(source['controller_uncommitted'])}"
             if source["controller_uncommitted"] else ""))
    print(f"pinning: each server alone on core {SERVER_CORE} (taskset), the load and this process on core {LOAD_CORE}")
    if "node" in servers:
        status = node_status()
        results["node"] = status
        if status["ok"]:
            print(f"node: {status['node']}, ws {status['ws']} (scripts/bench_node/recorder.js)")
        else:
            print(f"node: {status['why']}")
            servers.remove("node")
    print(f"lag: {LAG_METHOD}")
    started = time.monotonic()
    try:
        if opts.n and servers:
            ingest_series(opts, servers, results)
        if opts.formats and servers:
            formats_series(opts, servers, results)
        long_servers = [s for s in opts.long_call_servers.split(",") if s in servers]
        if opts.long_call_hours > 0 and long_servers:
            long_call(opts, long_servers, results)
        if opts.reaction_rates:
            reaction(opts, results)
    finally:
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        Path(opts.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"\n{results['elapsed_s']:.0f} s; results in {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
