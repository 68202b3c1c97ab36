"""A stand-in for FreeSWITCH 1.10.12 with mod_audio_stream, on real sockets, for tests and demos.

It is faithful to the captures in shared/fixtures (header names and order, reply strings, the
module's quirks and bugs) but never needs them: header templates are Python data in
`channel_events`, and every channel-specific value is generated.

    from controller.simulator import Simulator

    sim = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon").start()   # 0: ephemeral port
    sim.esl_port
    call = sim.place_call("9999", caller_id_number="1000", speech=pcm, duration_s=2.0)
    call.answered.wait(5); call.hung_up.wait(10)
    stream = sim.streams_for(call.uuid)[0]      # SimStream: url, mix, rate, request_bytes,
    stream.sent_pcm, stream.sent_text, stream.frames, stream.ended.wait(5), stream.end_reason
    sim.wait_for_command("api uuid_audio_stream", timeout=5); sim.received_commands
    sim.stop()

History for assertions: sim.received_commands (every command, in order), sim.all_connections
(each with .commands and .command_reads: which recv() each command arrived in), sim.all_calls,
sim.streams / sim.leaked_streams, sim.fired_events.

What lives where:
    switch.py             Simulator: channels, api commands, events, fault knobs
    esl_server.py         the inbound Event Socket (auth, subscriptions, filters, api/bgapi)
    channels.py           SimCall: one leg, its variables, answer and hangup
    channel_events.py     event headers and api texts as FreeSWITCH writes them (pure)
    audio_stream.py       mod_audio_stream: the uuid_audio_stream api and stream attachment
    audio_stream_rules.py the module's argument rules and replies (pure)
    ws_client.py          SimStream: the module's WebSocket client and PCM streamer
    ws_frames.py          WebSocket handshake and frames (pure)
    media.py              the call's audio on the 20 ms clock, per mix type (pure)
    signals.py            generated audio, WAV input, resampling, mixing (pure)

Fidelity: Event Socket connections have TCP_NODELAY (as mod_event_socket sets it); HEARTBEAT fires every
`Simulator(heartbeat_interval_s=20.0)` seconds (settable while running: sim.heartbeat_interval_s = 0.2;
None or 0: never; sim.fire_heartbeat() fires one now) with the captured header set; `api echo <text>`
answers <text>; `uuid_setvar_multi <uuid> a=1;b=2` is mod_commands' (splitting, replies and quirks);
place_call(..., uuid="ABC...") gives the A-leg that channel uuid, as origination_uuid does, and every api
finds a channel only by its exact (case-sensitive) uuid.

Fault knobs:
    sim.drop_esl_connections(reset=False)  every Event Socket connection closes now, no notice (RST if reset)
    sim.cut_next_event(after_bytes=N)      the next event stops after N bytes and its connection closes
    sim.delay_replies(seconds)             every api reply (and the events behind it) waits; 0 ends it
    sim.delay_handshake(seconds)           every auth and event reply waits; 0 ends it
    sim.stop_reading()                     the switch never reads the connections open now again: the
                                           kernel buffers fill and the client's sends block; new
                                           connections are read as usual
    sim.freeze_esl_connections()           the connections open now go half-open: open at TCP level, but
                                           nothing is ever sent on them again (no replies, events,
                                           HEARTBEATs) and what arrives is ignored; new ones are served
    sim.crash()                            FreeSWITCH killed (SIGKILL): every Event Socket connection and
                                           every module WebSocket ends at once (FIN, or RST when data was
                                           unread): no disconnect notice, no hangup or module events, no
                                           WebSocket close frame (stream.end_reason says "switch crashed");
                                           every call vanishes (call.vanished, hung_up set, no events);
                                           nothing listens until sim.start(), which comes back with a new
                                           Core-UUID and no calls
    sim.restart(keep_calls=False)          a clean shutdown and start (keep_calls=True: only the event
                                           socket restarts)
    sim.silent_accept = True, sim.reject_acl = True   for new connections
    per stream: stream.abort_ws_tcp(); per call: place_call(..., odd_frames=True) or
    place_call(..., frame_sizes=[...]).
"""

from .channels import SimCall
from .switch import Simulator
from .ws_client import SimStream

__all__ = ["Simulator", "SimCall", "SimStream"]
