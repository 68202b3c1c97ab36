"""What an operator graphs and alerts on. Counted here, served by prometheus_client when configured."""

from prometheus_client import Counter, Gauge, start_http_server

ESL_CONNECTED = Gauge("fsctl_esl_connected", "1 while the Event Socket is connected and subscribed")
ESL_DISCONNECTS = Counter("fsctl_esl_disconnects_total", "Event Socket connections lost")
CALLS_ANSWERED = Counter("fsctl_calls_answered_total", "CHANNEL_ANSWER events seen")
CALLS_NOT_STREAMED = Counter("fsctl_calls_not_streamed_total", "Answered calls not streamed", ["reason"])
STREAM_STARTS = Counter("fsctl_stream_starts_total", "uuid_audio_stream start commands sent", ["rule"])
STREAM_START_FAILURES = Counter("fsctl_stream_start_failures_total", "Start commands refused or unanswered")
STREAM_ERRORS = Counter("fsctl_stream_errors_total", "mod_audio_stream::error events", ["code"])
STREAM_DISCONNECTS = Counter("fsctl_stream_disconnects_total", "mod_audio_stream::disconnect events")
STREAM_STOPS = Counter("fsctl_stream_stops_total", "Streams stopped at a rule's time limit")
RECORDINGS_OPEN = Gauge("fsctl_recordings_open", "WebSocket streams being written to WAV now")
RECORDINGS_FINISHED = Counter("fsctl_recordings_finished_total", "Recordings finalised", ["reason"])


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host)
