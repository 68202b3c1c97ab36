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
(each with .commands), sim.all_calls, sim.streams / sim.leaked_streams, sim.fired_events.

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

Fault knobs: sim.drop_esl_connections(reset=False), sim.cut_next_event(after_bytes=N),
sim.delay_replies(seconds), sim.restart(keep_calls=False), sim.silent_accept = True,
sim.reject_acl = True; per stream stream.abort_ws_tcp(); per call
place_call(..., odd_frames=True) or place_call(..., frame_sizes=[...]).
"""

from .channels import SimCall
from .switch import Simulator
from .ws_client import SimStream

__all__ = ["Simulator", "SimCall", "SimStream"]
