"""Relaying a call's live audio to a voice agent: the pure pieces (no sockets, no gevent).

`audio` converts the call's PCM for an agent and back (µ-law, resampling, framing); `twilio` speaks Twilio
Media Streams as Twilio sends it; `raw` is the plain protocol (a JSON hello, then the PCM). Each protocol is
one class that turns the call's events into messages and an agent's messages into values, tested on
messages alone; the controller moves the messages over its WebSocket.
"""
