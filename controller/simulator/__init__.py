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
    originate_rules.py    originate's arguments, dial strings and what a test call's application plays (pure)
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

A test call, as the switch makes it for itself (api or bgapi):
    originate {origination_uuid=<uuid>,var=value}null/any &playback(tone_stream://%(30000,0,440))
mod_loopback's null endpoint: an outbound leg named null/<target>, L16 at {rate=} (default 8000), answered at
once (CHANNEL_CREATE, CHANNEL_ANSWER before the reply `+OK <uuid>`), its caller id flipped once its application
is set, then the application runs: playback of tone_stream:// (%(on,off,hz..), L=, ;loops=, {loops=}) or
silence_stream:// writes audio to the call for as long as it plays (so mixed and stereo streams carry frames),
then the leg hangs up (NORMAL_CLEARING, as after the last dialplan instruction); park() and sleep(ms) write
nothing (mono flows, mixed and stereo send nothing); endless_playback repeats; an unknown application hangs up
with DESTINATION_OUT_OF_ORDER. originate cuts `&app(args)` at the first ')', as FreeSWITCH does: so
`&playback(tone_stream://%(1000,0,440);loops=-1)` plays its tone once and hangs up after 1 s. Replies as
mod_commands writes them: -USAGE for fewer than 2 or more than 7 words, -ERR CHAN_NOT_IMPLEMENTED for any
endpoint but null; an origination_uuid already in use leaves the leg a uuid of its own; an extension instead of
&app parks the leg (the simulator has no dialplan). `show api [name]` lists the simulator's api commands in
FreeSWITCH's text form (title line, rows, blank line, `N total.`).

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
    sim.audio_stream_loaded = False        mod_audio_stream not loaded: module_exists says false,
                                           uuid_audio_stream is `-ERR uuid_audio_stream Command not found!`,
                                           `show api uuid_audio_stream` lists 0 total
    sim.module_stream_rate = 16000         the module streams its audio at this rate whatever `start` asked
                                           for (a build that ignores the rate argument); None: as asked
    per stream: stream.abort_ws_tcp(); per call: place_call(..., odd_frames=True) or
    place_call(..., frame_sizes=[...]).
"""

from .channels import SimCall
from .switch import Simulator
from .ws_client import SimStream

__all__ = ["Simulator", "SimCall", "SimStream"]
