"""A small voice agent that speaks Twilio Media Streams and says back what the caller said.

It is a WebSocket server, as any agent built for Twilio is. After each utterance of the caller (energy
based: speech, then 0.6 s below a threshold) it waits a short pause and sends the utterance back as
`media` messages (8 kHz µ-law, 20 ms each, all at once: the controller paces playback) followed by a
`mark` named reply-N. When the caller speaks again before a reply has finished playing (the mark has not
come back yet), it interrupts itself with `clear`, as a real agent does on barge-in; the controller then
echoes the reply's mark at once, and the agent logs the reply as interrupted rather than played.

Run it (from the checkout, with the project's venv, which has gevent and gevent-websocket):

    .venv/bin/python examples/echo_agent.py --port 8765

and point a rule of the controller at it (config, under the rule):

    relay:
      url: ws://127.0.0.1:8765/media
      protocol: twilio

Dial the rule's extension, say something, pause: you hear yourself back. Its log shows every message
that matters (start with the call's customParameters, each utterance, reply, mark and dtmf, stop).
Options: --host, --threshold (RMS of 16-bit samples that counts as speech, default 500), --pause
(seconds between the end of speech and the reply, default 0.4), --end-silence (default 0.6).
"""

from __future__ import annotations

import argparse
import base64
import collections
import itertools
import json
import logging
import os
import sys

import gevent
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

# Run as a script from the checkout: the project's package is one level up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.relay.audio import ULAW_20MS, Framer, audioop, pcm_from_ulaw  # noqa: E402

log = logging.getLogger("echo_agent")

FRAME_S = 0.02  # one µ-law chunk of 160 bytes


class Endpointer:
    """Finds the caller's utterances in 8 kHz µ-law by energy alone (no sockets, no clock: audio time).

    A 20 ms frame whose RMS is above `threshold` is loud. Speech begins at a loud frame and is confirmed
    once `min_speech_s` of loud frames came; it ends after `end_silence_s` without a loud frame, or at
    `max_utterance_s`. The utterance keeps `preroll_s` before its first loud frame and `tail_s` after its
    last one. Loud bursts shorter than `min_speech_s` (a click, a cough) are dropped.
    """

    def __init__(self, threshold: int = 500, end_silence_s: float = 0.6, min_speech_s: float = 0.2,
                 max_utterance_s: float = 15.0, preroll_s: float = 0.2, tail_s: float = 0.1):
        self.threshold = threshold
        self._end = round(end_silence_s / FRAME_S)
        self._min = round(min_speech_s / FRAME_S)
        self._max = round(max_utterance_s / FRAME_S)
        self._tail = round(tail_s / FRAME_S)
        self._framer = Framer(ULAW_20MS)
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=round(preroll_s / FRAME_S))
        self._frames: list[bytes] = []  # the utterance so far, from its pre-roll
        self._loud = 0  # loud frames in it
        self._quiet = 0  # frames since its last loud one
        self._confirmed = False

    def push(self, ulaw: bytes) -> tuple[bool, list[bytes]]:
        """(whether speech was confirmed in this audio, the utterances it finished, as µ-law)."""
        started, done = False, []
        for frame in self._framer.push(ulaw):
            loud = audioop.rms(pcm_from_ulaw(frame), 2) > self.threshold
            if not self._frames:
                if not loud:
                    self._preroll.append(frame)
                    continue
                self._frames = list(self._preroll)
                self._preroll.clear()
            self._frames.append(frame)
            self._loud += loud
            self._quiet = 0 if loud else self._quiet + 1
            if not self._confirmed and self._loud >= self._min:
                self._confirmed = started = True
            if self._quiet >= self._end or len(self._frames) >= self._max:
                keep = len(self._frames) - max(0, self._quiet - self._tail)
                if self._confirmed:
                    done.append(b"".join(self._frames[:keep]))
                self._frames, self._loud, self._quiet, self._confirmed = [], 0, 0, False
        return started, done


class EchoCall:
    """One call: reads the controller's messages, sends replies. `send` takes a text message."""

    def __init__(self, send, pause_s: float = 0.4, **endpointing):
        self._send = send
        self._pause_s = pause_s
        self._endpointer = Endpointer(**endpointing)
        self._stream_sid: str | None = None
        self._replies = itertools.count(1)
        self._playing: set[str] = set()  # marks sent and not yet echoed
        self._cleared: set[str] = set()  # of those, the ones a clear dropped
        self._timer: gevent.Greenlet | None = None  # the reply, waiting for its pause
        self._heard = b""  # what the waiting reply will say

    def on_message(self, text: str) -> bool:
        """Handles one message; False once the stream has stopped."""
        msg = json.loads(text)
        event = msg.get("event")
        if event == "connected":
            log.info("connected: protocol %s %s", msg.get("protocol"), msg.get("version"))
        elif event == "start":
            start = msg["start"]
            self._stream_sid = start["streamSid"]
            log.info("start: call %s stream %s tracks %s format %s parameters %s", start.get("callSid"),
                     self._stream_sid, start.get("tracks"), start.get("mediaFormat"), start.get("customParameters"))
        elif event == "media":
            if msg["media"].get("track", "inbound") != "inbound":
                return True  # what the caller hears, when the stream carries it: not for us
            started, utterances = self._endpointer.push(base64.b64decode(msg["media"]["payload"]))
            if started:
                self._caller_speaks()
            for audio in utterances:
                log.info("utterance of %.2f s heard; replying in %.2f s", len(audio) / 8000, self._pause_s)
                self._heard += audio
                self._timer = gevent.spawn_later(self._pause_s, self._reply)
        elif event == "mark":
            name = msg["mark"]["name"]
            self._playing.discard(name)
            if name in self._cleared:
                self._cleared.discard(name)
                log.info("%s interrupted (its mark came back after our clear)", name)
            else:
                log.info("%s played", name)
        elif event == "dtmf":
            log.info("dtmf %s", msg["dtmf"]["digit"])
        elif event == "stop":
            log.info("stop: call %s", msg["stop"].get("callSid"))
            return False
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)

    def _caller_speaks(self) -> None:
        if self._timer is not None and not self._timer.dead:
            self._timer.kill(block=False)  # they went on talking: say it all back after the next pause
            log.info("caller speaks again before the reply: it waits for the end of this utterance too")
        barged = self._playing - self._cleared
        if barged:
            log.info("caller speaks over %s: clear", ", ".join(sorted(barged)))
            self._cleared |= barged
            self._send(json.dumps({"event": "clear", "streamSid": self._stream_sid}))

    def _reply(self) -> None:
        self._timer = None  # under way: the caller speaking now interrupts it with a clear, not a kill
        audio, self._heard = self._heard, b""
        name = f"reply-{next(self._replies)}"
        for i in range(0, len(audio), ULAW_20MS):
            payload = base64.b64encode(audio[i:i + ULAW_20MS]).decode("ascii")
            self._send(json.dumps({"event": "media", "streamSid": self._stream_sid, "media": {"payload": payload}}))
        self._playing.add(name)
        self._send(json.dumps({"event": "mark", "streamSid": self._stream_sid, "mark": {"name": name}}))
        log.info("%s sent: %.2f s in %d media messages", name, len(audio) / 8000, -(-len(audio) // ULAW_20MS))


def make_app(**options):
    def app(environ, start_response):
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"a WebSocket endpoint: Twilio Media Streams\n"]
        lock = Semaphore()

        def send(text: str) -> None:
            with lock:  # the reply greenlet and the reader both send
                ws.send(text)

        call = EchoCall(send, **options)
        log.info("connection on %s", environ.get("PATH_INFO"))
        try:
            while True:
                message = ws.receive()
                if message is None:
                    break
                if not isinstance(message, str):
                    log.warning("binary frame of %d bytes ignored: Twilio sends JSON text", len(message))
                    continue
                try:
                    if not call.on_message(message):
                        break
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    log.warning("message ignored, not Twilio Media Streams (%s: %s): %.80r", type(e).__name__,
                                e, message)
        finally:
            call.close()
            ws.close()
            log.info("connection closed")
        return []

    return app


def make_server(host: str, port: int, **options) -> WSGIServer:
    return WSGIServer((host, port), make_app(**options), handler_class=WebSocketHandler, log=None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A Twilio Media Streams agent that says back what it heard.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--threshold", type=int, default=500, help="RMS of 16-bit samples that counts as speech")
    p.add_argument("--pause", type=float, default=0.4, help="seconds from the end of speech to the reply")
    p.add_argument("--end-silence", type=float, default=0.6, help="seconds of quiet that end an utterance")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = make_server(args.host, args.port, pause_s=args.pause, threshold=args.threshold,
                         end_silence_s=args.end_silence)
    server.start()
    log.info("echo agent listening on ws://%s:%d/ (Twilio Media Streams)", args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
