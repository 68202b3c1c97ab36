#!/usr/bin/env python3
"""Voice-agent latencies on the simulator (a measurement, not a test): the controller relays calls to a
measuring Twilio Media Streams agent, which also talks back.

- caller -> agent: from the moment the simulated module sent a 20 ms frame of the caller's audio to the
  moment the agent received the media message that carries it (chunk n of the stream is frame n);
- agent -> caller: for every 20 ms of a reply, from the agent sending it to the caller hearing it (found
  byte for byte in what the simulated caller heard, on the simulator's 20 ms media clock, whose broadcast
  timings are the ones measured on a real switch): the first piece, and the median over the reply;
- holes inside a reply: places where the caller heard something else (silence) between two consecutive 20 ms
  of the reply, for an agent that sends a reply at once (as most text-to-speech does), one that paces 40 ms
  pieces in real time (a stock Pipecat bot), and a 20 s reply paced in real time;
- barge-in: from the agent's `clear` to the last of the cleared reply the caller heard.

    scripts/bench_agent --calls 5 --replies 6
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

from controller.app import Controller  # noqa: E402
from controller.config import parse_config  # noqa: E402
from controller.relay.audio import pcm_from_ulaw, ulaw_from_pcm  # noqa: E402
from controller.simulator import Simulator, signals  # noqa: E402

RATE = 8000
BLOCK_BYTES = 320  # 20 ms at 8 kHz
KINDS = ("at once", "paced", "paced 20 s")


def heard_blocks(heard: bytes, expected: bytes, start: int) -> list[int | None]:
    """Where each 20 ms of `expected` is in `heard` (byte offsets, searched in order from `start`)."""
    positions: list[int | None] = []
    at = start - start % 2
    for k in range(0, len(expected) - BLOCK_BYTES + 1, BLOCK_BYTES):
        found = heard.find(expected[k:k + BLOCK_BYTES], at)
        while found >= 0 and found % 2:  # whole samples only
            found = heard.find(expected[k:k + BLOCK_BYTES], found + 1)
        positions.append(found if found >= 0 else None)
        if found >= 0:
            at = found + BLOCK_BYTES
    return positions


class MeasuringAgent:
    """Notes when each media chunk arrives; sends replies when asked, at once or paced in real time."""

    def __init__(self) -> None:
        self.calls: dict[str, dict] = {}  # call uuid (customParameters) -> {"ws", "sid", "arrivals": [t per chunk]}
        self.server = WSGIServer(("127.0.0.1", 0), self._app, handler_class=WebSocketHandler, log=None)
        self.server.start()
        self.url = f"ws://127.0.0.1:{self.server.server_port}/media"

    def _app(self, environ, start_response):
        ws = environ["wsgi.websocket"]
        call = None
        while True:
            message = ws.receive()
            if message is None:
                return []
            now = time.monotonic()
            data = json.loads(message)
            if data["event"] == "start":
                call = self.calls.setdefault(data["start"]["customParameters"]["uuid"], {"arrivals": []})
                call.update(ws=ws, sid=data["streamSid"])
            elif data["event"] == "media" and call is not None:
                call["arrivals"].append(now)

    def reply(self, call_sid: str, pcm: bytes, paced: bool) -> float:
        """Send `pcm` as a reply (20 ms media messages; paced: 40 ms every 40 ms); returns when it began."""
        call = self.calls[call_sid]
        ulaw = ulaw_from_pcm(pcm)
        began = time.monotonic()
        step = 320 if paced else 160
        for at in range(0, len(ulaw), step):
            call["ws"].send(json.dumps({"event": "media", "streamSid": call["sid"],
                                        "media": {"payload": base64.b64encode(ulaw[at:at + step]).decode()}}))
            if paced:
                gevent.sleep(max(0.0, began + (at + step) / RATE - time.monotonic()))
        return began

    def clear(self, call_sid: str) -> float:
        """Interrupt the reply under way (barge-in); returns when."""
        call = self.calls[call_sid]
        call["ws"].send(json.dumps({"event": "clear", "streamSid": call["sid"]}))
        return time.monotonic()


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5, help="calls at once (default 5)")
    parser.add_argument("--replies", type=int, default=6, help="replies per call and agent kind (default 6)")
    parser.add_argument("--reply-s", type=float, default=1.5, help="seconds per reply (default 1.5)")
    parser.add_argument("--long-s", type=float, default=20.0, help="seconds of the long paced reply (default 20)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    agent = MeasuringAgent()
    sim = Simulator(esl_port=0).start()
    directory = tempfile.TemporaryDirectory(prefix="fsctl-bench-agent-")
    config = parse_config(textwrap.dedent(f"""\
        esl: {{port: {sim.esl_port}, password: ClueCon}}
        recorder: {{listen_port: 0, directory: {directory.name}}}
        metrics: {{enabled: false}}
        limits: {{max_streams: 100}}
        rules:
          - name: agent
            match: {{destination: "9999"}}
            record: false
            relay: {{url: "{agent.url}"}}
        """), "bench-agent.yaml")
    controller = Controller(config)
    controller.start()
    assert controller.esl.connected_event.wait(10), "the controller did not connect"
    hold_s = 2 * args.replies * (args.reply_s + 2.0) + args.long_s + 2.0 + 3.0 + 10
    calls = [sim.place_call("9999", duration_s=hold_s, plays=None, app="endless_silence",
                            speech=signals.speech_like(hold_s, RATE, seed=n)) for n in range(args.calls)]
    deadline = time.monotonic() + 10
    while any(call.uuid not in agent.calls or not agent.calls[call.uuid]["arrivals"] for call in calls):
        assert time.monotonic() < deadline, "the agent did not get every call"
        gevent.sleep(0.05)
    reply_pcm = signals.speech_like(args.reply_s, RATE, seed=99)
    long_pcm = signals.speech_like(args.long_s, RATE, seed=98)
    first: dict[str, list[float]] = {kind: [] for kind in KINDS}
    each: dict[str, list[float]] = {kind: [] for kind in KINDS}
    holes: dict[str, list[int]] = {kind: [] for kind in KINDS}
    barge_in: list[float] = []

    def measure(call, kind: str, pcm: bytes, began: float, paced: bool, heard_from: int) -> None:
        expected = pcm_from_ulaw(ulaw_from_pcm(pcm))  # what the agent's µ-law becomes: heard byte for byte
        positions = heard_blocks(call.heard, expected, heard_from)
        found = [(k, at) for k, at in enumerate(positions) if at is not None]
        if not found:
            holes[kind].append(-1)  # never heard: counted as a failure below
            return
        heard_at = [call.answered_at + at / (2 * RATE) for _, at in found]
        sent_at = [began + (k * 0.02 // 0.04) * 0.04 if paced else began for k, _ in found]
        first[kind].append(heard_at[0] - sent_at[0])
        each[kind] += [h - s for h, s in zip(heard_at, sent_at)]
        holes[kind].append(sum(1 for (_, a), (_, b) in zip(found, found[1:]) if b - a > BLOCK_BYTES)
                           + len(positions) - len(found))

    def talk(call, kind: str) -> None:
        pcm, paced, count = {"at once": (reply_pcm, False, args.replies), "paced": (reply_pcm, True, args.replies),
                             "paced 20 s": (long_pcm, True, 1)}[kind]
        for _ in range(count):
            heard_from = len(call.heard)
            began = agent.reply(call.uuid, pcm, paced=paced)
            gevent.sleep(max(0.0, began + len(pcm) / (2 * RATE) + 1.5 - time.monotonic()))
            measure(call, kind, pcm, began, paced, heard_from)
            gevent.sleep(0.5)

    def interrupt(call) -> None:
        heard_from = len(call.heard)
        replying = gevent.spawn(agent.reply, call.uuid, long_pcm, True)
        gevent.sleep(2.0)
        replying.kill()
        cleared_at = agent.clear(call.uuid)
        gevent.sleep(1.0)
        expected = pcm_from_ulaw(ulaw_from_pcm(long_pcm))
        positions = heard_blocks(call.heard, expected, heard_from)
        # The reply as heard runs block after block until the break; what matches after that is chance (a
        # 20 ms of digital silence in the reply matches the silence the call goes on with).
        last = None
        for at in positions:
            if at is None or (last is not None and at != last + BLOCK_BYTES):
                break
            last = at
        if last is not None:
            barge_in.append(call.answered_at + (last + BLOCK_BYTES) / (2 * RATE) - cleared_at)

    for kind in KINDS:
        gevent.joinall([gevent.spawn(talk, call, kind) for call in calls])
    gevent.joinall([gevent.spawn(interrupt, call) for call in calls])
    # Caller -> agent: chunk n of a stream is the module's frame n.
    to_agent = []
    for call in calls:
        [stream] = sim.streams_for(call.uuid)
        sent = [stream.opened_at + t for t, opcode, _ in stream.frames if opcode == 2]
        to_agent += [got - sent_at for sent_at, got in zip(sent, agent.calls[call.uuid]["arrivals"])]
    for call in calls:
        call.hangup()
    controller.stop(timeout=5)
    sim.stop()
    print(f"{args.calls} calls at once, {args.replies} replies of {args.reply_s:g} s per call at once and paced, "
          f"one of {args.long_s:g} s paced, one interrupted")
    print(f"caller -> agent ({len(to_agent)} chunks): {percentiles(to_agent)}")
    for kind in KINDS:
        never = holes[kind].count(-1)
        counted = [h for h in holes[kind] if h >= 0]
        print(f"agent -> caller, reply sent {kind} ({len(holes[kind])} replies{f', {never} never heard' if never else ''}):"
              f" first piece {percentiles(first[kind])}; every 20 ms {percentiles(each[kind])}; holes per reply "
              f"{statistics.mean(counted) if counted else 0:.2f} (max {max(counted, default=0)})")
    print(f"barge-in, clear -> the caller hears the last of the reply ({len(barge_in)} calls): {percentiles(barge_in)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
