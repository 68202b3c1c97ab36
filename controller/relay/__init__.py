"""Relaying a call's live audio to a voice agent, and playing the agent's replies into the call.

The pure pieces (no sockets, no gevent): `audio` converts the call's PCM for an agent and back (µ-law,
resampling, framing); `twilio` speaks Twilio Media Streams as Twilio sends it; `raw` is the plain protocol (a
JSON hello, then the PCM); `talkback` decides when the agent's audio goes into the call and when its marks
come back. Each protocol is one class that turns the call's events into messages and an agent's messages into
values, tested on messages alone. `link` is the shell: one WebSocket per relayed call that moves them.
"""
