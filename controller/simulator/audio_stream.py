"""mod_audio_stream as it behaves inside FreeSWITCH: the `uuid_audio_stream` api, one attached stream
per channel, and the CUSTOM `mod_audio_stream::*` events its streams cause.

Attachment is the module's view, not the socket's: after the server closes a stream it stays
attached (stop/pause/send_text answer +OK, a new start is refused until stop); after an error
(refused, timeout, upgrade failed, TCP drop) the module detaches it by itself.
"""

from __future__ import annotations

import logging

from . import audio_stream_rules as rules
from .ws_client import SimStream

log = logging.getLogger("controller.simulator.audio_stream")

TLS_VARIABLES = (
    "STREAM_TLS_CA_FILE",
    "STREAM_TLS_KEY_FILE",
    "STREAM_TLS_CERT_FILE",
    "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION",
)


class AudioStreamModule:
    def __init__(self, switch):
        self.switch = switch
        self.streams: list[SimStream] = []  # every stream ever opened, leaked ones included

    def api(self, args: str | None) -> str:
        words = rules.separate_words(args) if args and args.strip() else []
        if rules.usage_error(words):
            return rules.USAGE
        call = self.switch.live_call(words[0])
        if call is None:
            return rules.FAILED
        request = rules.interpret(words)
        if isinstance(request, rules.Reply):
            return request.text
        if isinstance(request, rules.Start):
            return self._start(call, request)
        stream = call.attached_stream
        if stream is None:
            return rules.FAILED
        if isinstance(request, rules.Stop):
            call.attached_stream = None
            stream.delete_files()  # stream_session_cleanup: the files go before the final text and the close
            stream.close("stop", request.text)
        elif isinstance(request, rules.Pause):
            stream.paused = True
        elif isinstance(request, rules.Resume):
            stream.paused = False
        elif isinstance(request, rules.SendText):
            stream.send_text(request.text)
        return rules.SUCCESS

    def _start(self, call, request: rules.Start) -> str:
        if request.leaks:
            # The module's bug: the WebSocket is already made when the bad rate fails the start.
            stream = self._open(call, request, leaked=True)
            log.warning("%s: start with rate %d failed, but its WebSocket to %s leaks", call.uuid, request.rate, stream.url)
            return rules.FAILED
        if call.attached_stream is not None:
            return rules.FAILED
        call.attached_stream = self._open(call, request, leaked=False)
        return rules.SUCCESS

    def _open(self, call, request: rules.Start, leaked: bool) -> SimStream:
        buffer_ms, warning = rules.buffer_ms(call.get_variable("STREAM_BUFFER_SIZE"))
        if warning:
            log.warning("%s: %s", call.uuid, warning)
        headers, warning = rules.extra_headers(call.get_variable("STREAM_EXTRA_HEADERS"))
        if warning:
            log.warning("%s: %s", call.uuid, warning)
        url_text = f"{request.url.scheme}://{request.url.host}:{request.url.port}{request.url.path}"
        stream = SimStream(
            call,
            request.url,
            url_text,
            request.mix,
            request.rate,
            request.metadata,
            self._on_stream_event,
            buffer_ms=buffer_ms,
            heartbeat_s=rules.heartbeat_s(call.get_variable("STREAM_HEART_BEAT")),
            extra_headers=headers,
            frame_sizes=call.frame_sizes,
            odd_frames=call.odd_frames,
            tls_options={name: call.get_variable(name) or "" for name in TLS_VARIABLES},
            leaked=leaked,
            sent_rate=self.switch.module_stream_rate,
            temp_dir=self.switch.temp_dir,
        )
        self.streams.append(stream)
        call.streams.append(stream)
        stream.start()
        return stream

    def _on_stream_event(self, stream: SimStream, kind: str, body: str) -> None:
        call = stream.call
        if kind == "error" and call.attached_stream is stream:
            call.attached_stream = None
            stream.delete_files()  # the error closes the media bug: its cleanup deletes them
        # The module fires its events through the channel; a channel that is gone hears nothing.
        if not call.hung_up.is_set():
            self.switch.fire_stream_event(call, kind, body)

    def on_hangup(self, call) -> None:
        stream, call.attached_stream = call.attached_stream, None
        if stream is not None:
            stream.delete_files()
            stream.close("hangup")

    def shutdown(self) -> None:
        for stream in self.streams:
            stream.close("shutdown")
