"""A minimal Pipecat bot that takes this controller's calls as Twilio Media Streams: FastAPI's WebSocket,
Pipecat's `parse_telephony_websocket` and `TwilioFrameSerializer`, exactly as for a call from Twilio.

It needs no API key: its pipeline only turns what the caller says into what the caller hears (an echo,
one 20 ms message late), which shows both directions work. For a real agent, put your STT, LLM and TTS
services between `transport.input()` and `transport.output()` (see README.md beside this file).

Run it (Pipecat is an optional extra of this project; pipecat-ai 1.14.0 on Python 3.11+):

    python3 -m venv /tmp/pcbot
    /tmp/pcbot/bin/pip install -e '.[agents]'          # from the checkout: pipecat-ai, fastapi, uvicorn
    /tmp/pcbot/bin/python examples/pipecat/bot.py --port 8765

and point a rule at it in the controller's config:

    relay:
      url: ws://127.0.0.1:8765/ws
      protocol: twilio
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

app = FastAPI()


class Echo(FrameProcessor):
    """Plays the caller's audio back to the caller: where a real bot has STT → LLM → TTS."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate,
                                                      num_channels=frame.num_channels))
        else:
            await self.push_frame(frame, direction)


@app.websocket("/ws")
async def call(websocket: WebSocket):
    await websocket.accept()
    # Reads exactly two messages, connected and start, as from Twilio.
    transport_type, call_data = await parse_telephony_websocket(websocket)
    logger.info(f"{transport_type} call {call_data.call_id}, stream {call_data.stream_id}, "
                f"parameters {call_data.body}")

    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id,
        call_sid=call_data.call_id,
        # auto_hang_up ends a call through Twilio's REST API, which this controller is not: the bot ends
        # a call by closing its WebSocket.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        add_wav_header=False,
        serializer=serializer,
    ))
    pipeline = Pipeline([transport.input(), Echo(), transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info(f"call {call_data.call_id} ended")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    p = argparse.ArgumentParser(description="A minimal Pipecat bot for this controller's Twilio relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
