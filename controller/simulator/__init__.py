"""A stand-in for FreeSWITCH 1.10.12 with mod_audio_stream, on real sockets, for tests and demos.

It is faithful to the captures in shared/fixtures (header names and order, reply strings, the
module's quirks and bugs) but never needs them: header templates are Python data in
`channel_events`, and every channel-specific value is generated.

    from controller.simulator import Simulator

    sim = Simulator(host="127.0.0.1", esl_port=0, password="ClueCon").start()   # 0: ephemeral port
    sim.esl_port
    call = sim.place_call("9999", caller_id_number="1000", speech=pcm, duration_s=2.0)   # app="sleep"
    agent_call = sim.place_call("9998", app="endless_silence", plays=None)   # or app="park"
    call.answered.wait(5); call.hung_up.wait(10)
    stream = sim.streams_for(call.uuid)[0]      # SimStream: url, mix, rate, request_bytes,
    stream.sent_pcm, stream.sent_text, stream.frames, stream.ended.wait(5), stream.end_reason
    sim.wait_for_command("api uuid_audio_stream", timeout=5); sim.received_commands
    sim.stop()

What a call's dialplan runs once answered (place_call's app=; a null leg: originate's &app) decides what is
written to the channel, hence which mixes carry audio, and how broadcasts are taken (measured on a real switch):
    app="sleep"            9999's: its play windows (plays=, default a tone and a prompt), then sleep for
                           duration_s and hang up. Nothing is written while it sleeps: mono flows, mixed and
                           stereo send nothing (100 real calls x 15 s of answer + sleep: 0 frames each). A
                           uuid_break ends the sleep (the dialplan hangs up).
    app="park"             answer and park: nothing is ever written (no play windows unless given): mixed and
                           stereo deliver 0 bytes for the whole call. The caller hangs up after duration_s.
    app="endless_silence"  answer and `endless_playback silence_stream://-1`: silence is written at every tick
                           nothing else plays, so mixed and stereo flow for the whole call (left the caller,
                           right what it hears: zeros between broadcasts). A broadcast plays over it; uuid_break
                           (all) stops the broadcast and the call carries on. The caller hangs up after
                           duration_s. current_application shows endless_playback / silence_stream://-1.
    auto_hangup=False keeps any of them up until call.hangup().

Talking back into the call (see "Talking back" below):
    call.playbacks                  one PlaybackRecord per uuid_broadcast: path, status, asked_at, started_at,
                                    stopped_at, first_tick, end_tick, frames, heard, finished (an Event)
    call.heard                      what the caller heard: PCM at the codec rate, tick after tick from the answer
    sim.temp_dir                    where streamAudio messages become files (default: the system's temp dir)

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
    stream_audio_rules.py the module's processMessage: a server text -> ::play (and its file) or ::json (pure)
    playback.py           uuid_broadcast / uuid_break, each channel's broadcast queue on the media clock
    playback_rules.py     their arguments and replies, what a path plays, the variables a playback leaves
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

Talking back (mod_audio_stream ec2a781's processMessage; FreeSWITCH 1.10.12's mod_commands, switch_ivr_async.c,
switch_ivr.c, switch_ivr_play_say.c, mod_dptools' file_string, mod_sndfile):
  streamAudio: a text message from the WebSocket server
        {"type":"streamAudio","data":{"audioDataType":"raw|wav|mp3|ogg|pcmu|pcma","sampleRate":8000,"audioData":"<b64>"}}
    is written to `<sim.temp_dir>/<uuid>_<n>.tmp<ext>` (n from 0 per stream start; .r8 .r16 .r24 .r32 .r48 .r64 for
    raw at 8000..64000 Hz, .wav .mp3 .ogg .pcmu .pcma otherwise) and fires mod_audio_stream::play with the data
    object minus audioData plus "file", as cJSON prints it: {"audioDataType":"raw","sampleRate":8000,"file":"..."}.
    Missing data or audioData, a non-string audioData, a bad type, a raw rate it does not know, or base64 its
    decoder refuses: the error is logged (`(<uuid>) processMessage - ...`) and, as for any other text, ::json
    fires with the text verbatim. The module plays nothing. Its files are deleted at the stream's cleanup:
    `uuid_audio_stream stop`, the hangup, or an ::error; not when the server closes (the stream stays attached)
    and not after sim.crash().
  uuid_broadcast <uuid> <path> [aleg|bleg|holdb|both]   (api or bgapi; also `app::arg` for another application,
    which the simulator does not run)
    `+OK Message sent`; `-ERR invalid uuid` for no such channel; `-USAGE: <uuid> <path> [aleg|bleg|holdb|both]`
    with fewer than two words. The broadcast is queued on the channel (bleg: on the bridged partner; a third
    word naming no leg queues nothing, still +OK). Its first frame is heard sim.broadcast_start_delay_s (0.13 s,
    measured from the caller's RTP) after the api call, on a 20 ms tick boundary (so 130-150 ms);
    PLAYBACK_START fires at the tick before, with the captured header set ending in the channel variables
    (current_loop, total_loops, current_application_data=<path>, current_application=playback), then
    [Playback-File-Type: tone_stream] and Playback-File-Path; one frame per tick follows from the next tick
    (the audio resampled to the codec rate, the last frame padded with samples of -1); PLAYBACK_STOP fires right
    after the last frame is written, with the playback_* variables and `Playback-Status: done`. A broadcast
    queued behind another is heard after a hole that depends on what the channel runs (measured from the
    caller's RTP, between the first's last sample and the second's first): 100 ms in endless_playback (and a
    null leg's playback), 180 ms parked; sleep is taken as park (not measured; its loop takes broadcasts as
    park's does); any other (a bridged leg) as park.
    What plays: raw .r8/.r16/.raw (s16le), .r24/.r32 (read as 24-/32-bit samples, as mod_sndfile does: the
    module's 24 and 32 kHz files come out as noise), 16-bit .wav (channels summed), tone_stream://,
    silence_stream://, and `file_string://<f1>!<f2>!<f3>` (below). Anything else (a missing file, .r48, .r64,
    .pcmu, .pcma; .mp3/.ogg, which a real switch may play with the right modules) fails as FreeSWITCH fails a
    file it cannot open: no event at all, current_application_response=FILE NOT FOUND.
  file_string://<f1>!<f2>!...  (mod_dptools; send it over the Event Socket: a real fs_cli -x cuts a command near
    1 KB, `api` takes a 2.4 KB chain whole) ONE playback: one START/STOP pair, Playback-File-Path the whole
    string. 250 ms of samples of -1 come first when f1 is the file that opened (a non-native file: .r8, .r16,
    .wav always are). Each name is opened only when the one before it has been played to its end (play_file
    reads again when its buffer holds no more than a frame: at the tick before the first frame that needs the
    next file), so files written just in time (the module's <temp dir>/<uuid>_<n>.tmp.r8, n from 0 per stream
    start, one per streamAudio, in order) play back to back with no hole. A name that does not exist when its
    turn comes is skipped: `Can't open file <path>` (ERROR, logger controller.simulator.playback) and CUSTOM
    filestring::fail; when every name left is missing the playback ends after its last frame (padded with -1);
    when none opens at all it fails (fail events, no PLAYBACK_*, FILE NOT FOUND) and plays no lead. Each file
    opened / played to its end fires CUSTOM filestring::open / filestring::close, made as mod_dptools makes them:
    the core headers (Event-Subclass first, Event-Calling-File mod_dptools.c, next_file) then `File: <the name
    as written>`, no channel data, so no Unique-ID (a break or hangup closes the last file with no event). At
    most 128 entries (file_string_context's argv[128], switch_separate_string): with more names the 128th entry
    keeps the rest of the string (`f128!f129!...`), which names no file and fails, so 127 files play. A relative
    name is looked for under /usr/local/freeswitch/sounds. A file shorter than what the frame being made still
    lacks leaves that frame padded with -1 (a small hole: keep pieces of 20 ms or more).
  uuid_break <uuid> [all]   (also `break`)
    `+OK`; `-ERR No such channel!`; `-USAGE: <uuid> [all]` without arguments. The playing broadcast writes the
    frame it was waiting to write, then stops at that tick: PLAYBACK_STOP with `Playback-Status: break`. `all`
    drops the queued broadcasts (no events for them); without it the next one starts after the usual gap. The
    break leaves the channel's break flag set, and a break with nothing playing sets it: a call in its sleep
    (place_call with auto_hangup, a null leg's sleep) ends the sleep and the dialplan hangs up (NORMAL_CLEARING);
    a parked call (auto_hangup=False, park) or one in endless_playback (app="endless_silence") carries on. A
    broadcast taken but not yet started plays in full.
  The sleep cannot end under a broadcast: a call whose duration_s runs out while one plays (or is queued)
    hangs up when the queue is empty. A hangup stops the playing one (PLAYBACK_STOP, done, between
    CHANNEL_HANGUP and CHANNEL_HANGUP_COMPLETE) and drops the rest.
  What the caller hears: the broadcast is what the switch writes to the channel, so mixed streams carry it mixed
    with the caller, stereo streams in the right channel, mono streams not at all; it takes precedence over the
    call's plays windows (a real switch would pause a dialplan playback under it and resume it after) and over
    an endless_playback's silence.
  Knobs: Simulator(temp_dir=..., broadcast_start_delay_s=0.13, broadcast_gaps_s={...}, broadcast_gap_s=None),
    or set the attributes while running: sim.temp_dir, sim.broadcast_start_delay_s, sim.broadcast_gaps_s (a dict
    by the channel's application, merged over playback.BROADCAST_GAPS_S: endless_playback 0.10, playback 0.10,
    park 0.18, sleep 0.18; sim.broadcast_gaps_s["park"] = 0.1), sim.broadcast_gap_s (a number: one hole for
    every application; None: per application).
  Not simulated: CHANNEL_EXECUTE(_COMPLETE) events, playback_delimiter, the `app!cause::` hangup, hold music on
    the B-leg, DTMF terminators, a break cutting a dialplan playback (plays windows, a null leg's &playback; an
    endless_playback restarts at once on a real switch, so nothing is lost there), the other party's audio on a
    bridged leg's written direction (a bridged call's mixed/stereo carry only play windows and broadcasts), a
    start delay that depends on the application (measured once, 130 ms), native files and a looping stream
    inside a file_string (skipped as if missing); a file's content is taken when it is opened (a real switch
    reads it as it plays: the same for the module's files, written whole before ::play fires).

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
