"""What an operator graphs and alerts on, in Prometheus' terms (served on the HTTP listener: ops/http.py).

Nothing here runs per audio frame: frames and bytes are counted by the recordings themselves and summed when
Prometheus scrapes (``LiveAudioCollector``), gaps are counted when a recording is finalised.
"""

from __future__ import annotations

import os
import weakref

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

ESL_CONNECTED = Gauge("fsctl_esl_connected", "1 while the Event Socket is connected and subscribed")
ESL_DISCONNECTS = Counter("fsctl_esl_disconnects_total", "Event Socket connections lost")
ESL_ROUND_TRIP = Histogram("fsctl_esl_command_round_trip_seconds",
                           "From writing an Event Socket command to its reply",
                           buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
CALLS_ANSWERED = Counter("fsctl_calls_answered_total", "CHANNEL_ANSWER events seen")
CALLS_NOT_STREAMED = Counter("fsctl_calls_not_streamed_total", "Answered calls not streamed", ["reason"])
ANSWER_TO_START = Histogram("fsctl_answer_to_start_seconds",
                            "From CHANNEL_ANSWER reaching the controller to the start command's write "
                            "(first starts of calls with no start delay)",
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
STREAM_STARTS = Counter("fsctl_stream_starts_total", "uuid_audio_stream start commands sent", ["rule"])
STREAM_START_FAILURES = Counter("fsctl_stream_start_failures_total", "Start commands refused or unanswered")
STREAM_ERRORS = Counter("fsctl_stream_errors_total", "mod_audio_stream::error events", ["code"])
STREAM_DISCONNECTS = Counter("fsctl_stream_disconnects_total", "mod_audio_stream::disconnect events")
STREAM_STOPS = Counter("fsctl_stream_stops_total", "Streams stopped at a rule's time limit")
RECORDINGS_OPEN = Gauge("fsctl_recordings_open", "WebSocket streams being written to WAV now")
RECORDINGS_FINISHED = Counter("fsctl_recordings_finished_total", "Recordings finalised, by how they ended",
                              ["reason"])
RECORDINGS_FAILED = Counter("fsctl_recordings_failed_total",
                            "Recordings finalised with an error (the WAV or its sidecar could not be written)")
GAPS = Counter("fsctl_gaps_total", "Silences the recorder wrote for time without audio, by cause", ["cause"])
GAP_SECONDS = Counter("fsctl_gap_seconds_total", "Seconds of silence written for time without audio, by cause",
                      ["cause"])
HOOK_DELIVERIES = Counter("fsctl_hook_deliveries_total", "Finished-recording hook deliveries, by outcome",
                          ["kind", "outcome"])
HOOK_QUEUE = Gauge("fsctl_hook_queue", "Finished-recording hook deliveries waiting (on disk)")
RECORDER_UPKEEP_ERRORS = Gauge("fsctl_recorder_upkeep_errors", "Unexpected failures in the recorder's periodic "
                               "upkeep since start (each logged with its traceback)")


class LiveAudioCollector:
    """Frames and bytes received, and free disk, read from the recorders at scrape time."""

    def __init__(self) -> None:
        self._recorders: weakref.WeakSet = weakref.WeakSet()
        self.finished_frames = 0  # of recordings already finalised (added at finalisation)
        self.finished_bytes = 0

    def watch(self, recorder) -> None:
        self._recorders.add(recorder)

    def finished(self, frames: int, data_bytes: int) -> None:
        self.finished_frames += frames
        self.finished_bytes += data_bytes

    def collect(self):
        frames, data_bytes, live, silent = self.finished_frames, self.finished_bytes, 0, 0
        free = GaugeMetricFamily("fsctl_recordings_free_bytes", "Free space where the recordings go",
                                 labels=["directory"])
        for recorder in list(self._recorders):
            for stats in recorder.live_stats().values():
                frames += stats["frames"]
                data_bytes += stats["arrived_bytes"]
                live += stats["connected"]
                silent += stats["connected"] and stats["no_audio_warning"] is not None
            try:
                st = os.statvfs(recorder.directory)
            except OSError:
                continue
            free.add_metric([str(recorder.directory)], st.f_bavail * st.f_frsize)
        yield CounterMetricFamily("fsctl_audio_frames", "Binary WebSocket frames of audio received",
                                  value=frames)
        yield CounterMetricFamily("fsctl_audio_bytes", "Bytes of audio received from the switch",
                                  value=data_bytes)
        yield GaugeMetricFamily("fsctl_streams_live", "WebSocket streams connected to the recorder now",
                                value=live)
        yield GaugeMetricFamily("fsctl_streams_without_audio", "Mixed or stereo streams connected for 5 s or more "
                                "without a single frame (nothing is written to the channel: parked, sleeping)",
                                value=silent)
        yield free


LIVE_AUDIO = LiveAudioCollector()
REGISTRY.register(LIVE_AUDIO)
