#!/usr/bin/env python3
"""Benchmark the recorder: N concurrent calls of S seconds of audio, sent as fast as loopback takes them.

The recorder runs in a child process (so the clients' CPU does not count against it, and its memory can be
read from /proc); the calls are gevent greenlets in this process that speak exactly as mod_audio_stream
does (``Name:value`` upgrade headers, masked binary frames of one 20 ms packet each, close 1000).
Prints throughput (frames/s, MB/s, x real time) and the recorder's resident memory: at start, sampled
during the run, and its peak. Memory must not grow with the length of the calls.

    scripts/bench_recorder --calls 50 --seconds 60
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64
import json
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import wave
from pathlib import Path

import gevent
import gevent.event

TOKEN = "bench-token"


# ---- the recorder side (child process) --------------------------------------------------------------------

def serve(directory: str, uuids: list[str], rate: int, channels: int) -> None:
    import logging

    from controller.recorder.server import RecorderServer, RecordingRegistry, StreamSpec

    logging.basicConfig(level=logging.WARNING)
    registry = RecordingRegistry()
    for call in uuids:
        registry.expect(StreamSpec(uuid=call, token=TOKEN, rate=rate, channels=channels))
    closed = []
    server = RecorderServer(registry, directory, filename_template="{uuid}.wav",
                            on_close=lambda call, reason: closed.append(reason))
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)  # the parent says when (a blocking stdin read would freeze the hub)
    port = server.start("127.0.0.1", 0)
    print(json.dumps({"port": port}), flush=True)
    stop.wait()
    server.stop(timeout=5)
    print(json.dumps({"closed": len(closed), "reasons": sorted(set(closed))}), flush=True)


# ---- the module side (this process) ------------------------------------------------------------------------

def tone(rate: int, channels: int, n_bytes: int) -> bytes:
    samples = n_bytes // (2 * channels)
    frame = []
    for i in range(samples):
        value = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        frame.append(struct.pack("<h", value) * channels)
    return b"".join(frame)


def masked_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x82, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x82, 0x80 | 126, n)
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def close_frame() -> bytes:
    payload = struct.pack("!H", 1000) + b"Normal closure"
    mask = os.urandom(4)
    return struct.pack("!BB", 0x88, 0x80 | len(payload)) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def one_call(port: int, call: str, stream: bytes, chunk: int, pace_s: float | None) -> float:
    """Stream one call; returns the seconds from connect to the recorder's close echo.

    With ``pace_s`` each chunk (one frame) is sent on its own clock tick, as the module does in a real call.
    """
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /calls/{call} HTTP/1.1\r\nHost:127.0.0.1:{port}\r\nUpgrade:websocket\r\n"
                  f"Connection:upgrade\r\nSec-WebSocket-Key:{key}\r\nSec-WebSocket-Version:13\r\n"
                  f"Origin:http://127.0.0.1:{port}\r\nAuthorization:Bearer {TOKEN}\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError(f"call {call}: connection closed during the upgrade")
        reply += data
    if not reply.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"call {call}: upgrade refused: {reply.splitlines()[0]!r}")
    view = memoryview(stream)
    start = time.monotonic()
    for n, offset in enumerate(range(0, len(view), chunk)):
        if pace_s is not None:
            gevent.sleep(max(0.0, start + n * pace_s - time.monotonic()))
        sock.sendall(view[offset:offset + chunk])
    sock.sendall(close_frame())
    tail = reply.partition(b"\r\n\r\n")[2]
    while not tail.startswith(b"\x88"):  # the close echo means every frame before it was written
        data = sock.recv(4096)
        if not data:
            raise RuntimeError(f"call {call}: closed without a close frame")
        tail += data
    sock.close()
    return time.perf_counter() - started


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per call")
    parser.add_argument("--rate", type=int, default=8000, choices=[8000, 16000, 24000, 32000, 48000])
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--frame-ms", type=int, default=20, help="STREAM_BUFFER_SIZE: ms of audio per frame")
    parser.add_argument("--paced", action="store_true",
                        help="send each frame on time (one per --frame-ms) instead of as fast as possible: "
                             "measures what real-time calls cost")
    parser.add_argument("--keep", action="store_true", help="keep the recordings directory")
    parser.add_argument("--serve", nargs=2, metavar=("DIR", "UUIDS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    channels = 2 if args.stereo else 1
    if args.serve:
        serve(args.serve[0], json.loads(args.serve[1]), args.rate, channels)
        return 0

    frame_bytes = args.rate * 2 * channels * args.frame_ms // 1000
    n_frames = int(args.seconds * 1000 / args.frame_ms)
    payload = tone(args.rate, channels, frame_bytes)
    # One call's bytes, built once and sent for every call: the clients must cost next to nothing.
    stream = b"".join(masked_frame(payload) for _ in range(n_frames))
    calls = [str(uuidlib.uuid4()) for _ in range(args.calls)]
    directory = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    child = subprocess.Popen([sys.executable, __file__, "--rate", str(args.rate)] + (["--stereo"] if args.stereo else [])
                             + ["--serve", str(directory), json.dumps(calls)],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(child.stdout.readline())["port"]
        rss_start, _ = rss_kib(child.pid)
        cpu_start = cpu_s(child.pid)
        samples: list[int] = []
        sampling = True

        def sample() -> None:
            while sampling:
                samples.append(rss_kib(child.pid)[0])
                gevent.sleep(0.1)

        sampler = gevent.spawn(sample)
        started = time.perf_counter()
        if args.paced:
            chunk, pace = len(stream) // n_frames, args.frame_ms / 1000
        else:
            chunk, pace = 64 * 1024, None
        jobs = [gevent.spawn(one_call, port, call, stream, chunk, pace) for call in calls]
        gevent.joinall(jobs, raise_error=True)
        elapsed = time.perf_counter() - started
        sampling = False
        sampler.join()
        rss_end, rss_peak = rss_kib(child.pid)
        cpu_used = cpu_s(child.pid) - cpu_start
        child.send_signal(signal.SIGTERM)
        summary = json.loads(child.stdout.readline())
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()

    expected = n_frames * frame_bytes
    bad = []
    for call in calls:
        with wave.open(str(directory / f"{call}.wav")) as w:
            if w.getnframes() * 2 * channels != expected:
                bad.append(call)
    total_frames = n_frames * args.calls
    total_bytes = expected * args.calls
    audio_s = args.seconds * args.calls
    third = max(1, len(samples) // 3)
    print(f"calls: {args.calls} x {args.seconds:g} s of {args.rate} Hz {'stereo' if args.stereo else 'mono'} "
          f"({frame_bytes}-byte frames every {args.frame_ms} ms)")
    print(f"elapsed: {elapsed:.2f} s for {audio_s:g} s of audio = {audio_s / elapsed:.0f}x real time"
          + (" (paced: frames sent on time)" if args.paced else
             " (frames back to back, many per read; paced calls cost more per frame: use --paced)"))
    print(f"throughput: {total_frames / elapsed:,.0f} frames/s, {total_bytes / elapsed / 1e6:.2f} MB/s of PCM")
    print(f"recorder CPU: {cpu_used:.2f} s = {cpu_used / total_frames * 1e6:.1f} us per frame, "
          f"{cpu_used / elapsed * 100:.1f}% of a core over the run")
    print(f"recorder RSS: start {rss_start / 1024:.1f} MiB, during run min {min(samples) / 1024:.1f} / "
          f"median {statistics.median(samples) / 1024:.1f} / max {max(samples) / 1024:.1f} MiB "
          f"(first third median {statistics.median(samples[:third]) / 1024:.1f}, last third median "
          f"{statistics.median(samples[-third:]) / 1024:.1f}), end {rss_end / 1024:.1f}, peak {rss_peak / 1024:.1f} MiB")
    print(f"recordings: {args.calls - len(bad)}/{args.calls} complete ({expected} bytes each), "
          f"closed: {summary['closed']} {summary['reasons']}")
    if args.keep:
        print(f"kept in {directory}")
    else:
        shutil.rmtree(directory)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
