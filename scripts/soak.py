#!/usr/bin/env python3
"""Soak: many concurrent calls through the controller and the simulated FreeSWITCH, with random faults,
for a set time; then every recording is checked against what the switch sent.

    scripts/soak --seconds 120 --concurrency 8 --seed 1

Prints a table: calls, faults injected by kind, recordings complete, bytes lost outside outages (must be 0),
duplicate starts (must be 0), crashes (must be 0). Exit status 1 if any of the last three is not as it must be.
Everything runs on 127.0.0.1 and stops by itself.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from controller.app import Controller  # noqa: E402
from controller.config import parse_config  # noqa: E402
from controller.simulator import Simulator  # noqa: E402

RATE = 8000
BYTES_PER_FRAME = 2


class CrashCounter(logging.Handler):
    """A crash is an exception that escaped to a log line with a traceback: a handler or greenlet died."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.crashes.append(record.getMessage())


def start_controller(sim: Simulator, directory: pathlib.Path, concurrency: int) -> Controller:
    config = parse_config(f"""
esl: {{host: 127.0.0.1, port: {sim.esl_port}, password: ClueCon, command_timeout_s: 3,
      reconnect: {{initial_s: 0.1, max_s: 1}}}}
recorder: {{listen_host: 127.0.0.1, listen_port: 0, public_url: "ws://127.0.0.1:1", directory: "{directory}"}}
limits: {{max_streams: {concurrency * 2}}}
metrics: {{enabled: false}}
rules:
  - name: soak
    match: {{destination: "9999"}}
""", "soak.yaml")
    controller = Controller(config)
    controller.start()
    controller.public_url = f"ws://127.0.0.1:{controller.recorder_port}"
    return controller


def received_segments(path: pathlib.Path) -> tuple[list[bytes], dict]:
    """The WAV's audio with every inserted silence cut out, split where a stream was lost: one segment per
    connection that delivered audio, in order; and the sidecar."""
    sidecar = json.loads(path.with_suffix(".json").read_text())
    with wave.open(str(path), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    segments, current, position = [], [], 0
    for gap in sidecar.get("gaps", []):
        start = gap["start_frame"] * BYTES_PER_FRAME
        current.append(pcm[position:start])
        position = start + gap["frames"] * BYTES_PER_FRAME
        if gap["cause"] in ("stream_lost", "controller_restart"):
            segments.append(b"".join(current))
            current = []
    current.append(pcm[position:])
    segments.append(b"".join(current))
    return segments, sidecar


def compare(streams, segments: list[bytes]) -> tuple[int, int]:
    """(bytes lost outside outages, bytes lost inside them) for one call.

    A stream cut by a TCP abort loses what was in flight: that is the outage, so its segment need only be
    the start of what it sent. Every other stream's audio must be there exactly.
    """
    lost = outage = 0
    remaining = [seg for seg in segments if seg]
    for stream in streams:
        sent = stream.sent_pcm
        segment = remaining[0] if remaining else b""
        aborted = stream.end_reason.startswith(("aborted", "error"))
        if remaining and (segment == sent or (aborted and segment and sent.startswith(segment))):
            remaining.pop(0)
            outage += len(sent) - len(segment)
        elif aborted:
            outage += len(sent)  # nothing of it arrived before the abort
        else:
            same = next((i for i, (a, b) in enumerate(zip(segment, sent)) if a != b), min(len(segment), len(sent)))
            lost += len(sent) - same
            if remaining:
                remaining.pop(0)
    return lost, outage


def overlapping_streams(streams) -> int:
    """Streams of one call that carried audio at the same time: a duplicate start."""
    spans = sorted((s.opened_at + s.frames[0][0], s.opened_at + s.frames[-1][0]) for s in streams if s.frames)
    return sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep placing calls")
    parser.add_argument("--concurrency", type=int, default=8, help="calls up at once")
    parser.add_argument("--fault-every", type=float, default=2.0, help="mean seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the recordings directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    crashes = CrashCounter()
    logging.getLogger().addHandler(crashes)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="soak-"))
    sim = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon").start()
    controller = start_controller(sim, workdir / "rec", args.concurrency)
    controller.esl.connected_event.wait(10)
    closed: dict[str, str] = {}
    controller.recording_listeners.append(lambda uuid, reason: closed.__setitem__(uuid, reason))
    faults: Counter = Counter()
    calls = []

    def place() -> None:
        odd = rng.random() < 0.2
        faults["odd_frames"] += odd
        calls.append(sim.place_call("9999", duration_s=rng.uniform(2.0, 6.0), odd_frames=odd))

    def inject() -> None:
        kind = rng.choice(["ws_abort", "ws_abort", "esl_drop", "esl_restart", "slow_replies"])
        if kind == "ws_abort":
            live = [s for c in calls if not c.hung_up.is_set() for s in sim.streams_for(c.uuid)
                    if s.frames and not s.ended.is_set()]
            if not live:
                return
            rng.choice(live).abort_ws_tcp()
        elif kind == "esl_drop":
            sim.drop_esl_connections()
        elif kind == "esl_restart":
            sim.restart(keep_calls=True)
        elif kind == "slow_replies":
            sim.delay_replies(0.8)
            gevent.spawn_later(1.5, sim.delay_replies, 0)
        faults[kind] += 1

    began = time.monotonic()
    next_fault = began + rng.expovariate(1 / args.fault_every)
    while time.monotonic() - began < args.seconds:
        while sum(1 for c in calls if not c.hung_up.is_set()) < args.concurrency:
            place()
        if time.monotonic() >= next_fault:
            inject()
            next_fault = time.monotonic() + rng.expovariate(1 / args.fault_every)
        gevent.sleep(0.05)
    gevent.wait([c.hung_up for c in calls], timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.uuid not in closed for c in calls):
        gevent.sleep(0.1)
    controller.stop()
    sim.stop()

    complete = lost = outage = duplicates = 0
    problems = []
    for call in calls:
        streams = [s for s in sim.streams_for(call.uuid) if s.frames]
        duplicates += overlapping_streams(streams)
        found = sorted((workdir / "rec").rglob(f"*{call.uuid}*.wav"))
        leftovers = sorted((workdir / "rec").rglob(f"*{call.uuid}*.part"))
        sent = b"".join(s.sent_pcm for s in streams)
        if len(found) != 1 or leftovers:
            problems.append(f"{call.uuid}: {len(found)} WAVs, {len(leftovers)} unfinished")
            lost += len(sent)
            continue
        segments, sidecar = received_segments(found[0])
        call_lost, call_outage = compare(streams, segments)
        outage += call_outage
        if call_lost == 0:
            complete += 1
        else:
            lost += call_lost
            problems.append(f"{call.uuid}: {call_lost} bytes lost; gaps "
                            f"{[(g['start_frame'], g['frames'], g['cause']) for g in sidecar['gaps']]}; "
                            f"streams {[(len(s.sent_pcm), s.end_reason) for s in streams]}")

    rows = [("calls", len(calls)), *((f"faults: {k}", v) for k, v in sorted(faults.items())),
            ("recordings complete", complete), ("bytes lost outside outages", lost),
            ("bytes in flight at an abort (outage)", outage),
            ("duplicate starts", duplicates), ("crashes", len(crashes.crashes))]
    width = max(len(name) for name, _ in rows)
    print(f"\nsoak: {args.seconds:g} s, {args.concurrency} concurrent, seed {args.seed}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>8}")
    for line in problems[:20] + crashes.crashes[:20]:
        print(f"  ! {line}")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"recordings kept in {workdir}")
    return 0 if (lost == 0 and duplicates == 0 and not crashes.crashes and complete == len(calls)) else 1


if __name__ == "__main__":
    sys.exit(main())
