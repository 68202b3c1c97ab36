#!/usr/bin/env python3
"""Voice-agent latencies on the simulator (a measurement, not a test): the controller relays calls to a
measuring Twilio Media Streams agent, which also talks back.

- caller -> agent: from the moment the simulated module sent a 20 ms frame of the caller's audio to the
  moment the agent received the media message that carries it (chunk n of the stream is frame n);
- agent -> caller: from the agent sending a reply to the caller hearing its first sample (the simulator's
  PLAYBACK_START, which models the real switch's ~200 ms broadcast start);
- holes per reply: broadcasts a reply took, less one (each boundary between queued broadcasts is a ~120 ms
  hole on a real switch), for an agent that sends a reply at once (faster than real time, as most
  text-to-speech does) and for one that paces 40 ms pieces in real time (as a stock Pipecat bot does).

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
from controller.relay.audio import ulaw_from_pcm  # noqa: E402
from controller.simulator import Simulator, signals  # noqa: E402

RATE = 8000


class MeasuringAgent:
    """Notes when each media chunk arrives; sends replies when asked, at once or paced in real time."""

    def __init__(self) -> None:
        self.calls: dict[str, dict] = {}  # callSid -> {"ws", "sid", "arrivals": [t per chunk]}
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
                call = self.calls.setdefault(data["start"]["callSid"], {"arrivals": []})
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
    hold_s = 2 * args.replies * (args.reply_s + 1.5) + 3
    calls = [sim.place_call("9999", duration_s=hold_s, plays=None, app="endless_silence",
                            speech=signals.speech_like(hold_s, RATE, seed=n)) for n in range(args.calls)]
    deadline = time.monotonic() + 10
    while any(call.uuid not in agent.calls or not agent.calls[call.uuid]["arrivals"] for call in calls):
        assert time.monotonic() < deadline, "the agent did not get every call"
        gevent.sleep(0.05)
    reply_pcm = signals.speech_like(args.reply_s, RATE, seed=99)
    heard_after: dict[str, list[float]] = {"at once": [], "paced": []}
    holes: dict[str, list[int]] = {"at once": [], "paced": []}

    def talk(call, kind: str) -> None:
        for _ in range(args.replies):
            before = len(call.playbacks)
            began = agent.reply(call.uuid, reply_pcm, paced=(kind == "paced"))
            deadline = time.monotonic() + args.reply_s + 5
            while time.monotonic() < deadline:  # until the reply has been played out
                played = call.playbacks[before:]
                if played and all(p.stopped_at is not None for p in played) and \
                        sum(p.frames for p in played) * 0.02 >= args.reply_s - 0.05:
                    break
                gevent.sleep(0.02)
            played = call.playbacks[before:]
            if played and played[0].started_at is not None:
                heard_after[kind].append(played[0].started_at - began)
                holes[kind].append(len(played) - 1)
            gevent.sleep(0.5)

    for kind in ("at once", "paced"):
        gevent.joinall([gevent.spawn(talk, call, kind) for call in calls])
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
    print(f"{args.calls} calls at once, {args.replies} replies of {args.reply_s:g} s per call and agent kind")
    print(f"caller -> agent ({len(to_agent)} chunks): {percentiles(to_agent)}")
    for kind in ("at once", "paced"):
        print(f"agent -> caller heard, reply sent {kind} ({len(heard_after[kind])} replies): "
              f"{percentiles(heard_after[kind])}; holes per reply: "
              f"{statistics.mean(holes[kind]) if holes[kind] else 0:.2f} (max {max(holes[kind], default=0)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
