"""Wiring: Event Socket events -> call state -> commands out; module audio -> recorder -> WAV.

The path of one call: CHANNEL_ANSWER arrives (`_on_answer`) -> `CallBook` matches a rule and returns
StartStream -> `_start_stream` announces the call to the recorder and writes uuid_setvar_multi (api) and
uuid_audio_stream start (bgapi) in one send -> the module connects to the recorder, which writes the WAV ->
hangup or the rule's limit ends it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import signal
import ssl
import time

import gevent
from gevent.event import Event as GeventEvent

from . import audio_stream, metrics
from .channel_uuid import call_key
from .calls import CallBook, ForgetCall, NotStreamed, StartStream, StopStream
from .config import Config, ConfigError, load_config
from .esl.backoff import Backoff
from .esl.client import CommandError, CommandTimeout, EventSocketClient, InOrder
from .esl.client import api as api_command, bgapi as bgapi_command
from .esl.protocol import Event, event_moment
from .archive import Archive
from .ops.hook import HookQueue
from .relay.link import AgentLink, CallDetails
from .relay.talkback import call_of_file
from .ops.http import HttpListener
from .recorder.recording import DELIBERATE_REASONS, INTERNAL_ERROR, LOST_REASONS, WRITE_ERROR
from .recorder.door import tls_context
from .recorder.server import RecorderServer, RecordingRegistry, StreamSpec
from .rules import CallInfo, channel_rows, match_rule

from greenswitch.esl import NotConnectedError

log = logging.getLogger("controller")

CHANNELS = {"mono": 1, "mixed": 1, "stereo": 2}
# Configuration sections read only when the controller starts (SIGHUP applies rules and limits).
RESTART_SECTIONS = ("esl", "recorder", "metrics", "logging", "http", "catalog", "storage")
# Endings that mean a recording failed (counted in fsctl_recordings_failed_total).
FAILED_REASONS = (WRITE_ERROR, INTERNAL_ERROR)


class Controller:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.registry = RecordingRegistry()
        rec = config.recorder
        self.recorder = RecorderServer(
            self.registry,
            rec.directory,
            filename_template=rec.filename_template,
            max_duration_s=rec.max_call_s,
            max_bytes=rec.max_call_bytes,
            on_detach=self._on_recording_detached,
            # Only a safety net (hangup normally ends a recording): longer than all restart attempts together.
            linger_s=300.0,
            on_close=self._on_recording_closed,
            on_finished=self._on_recording_finished,
            on_open=self._on_recording_open,
            max_streams=config.limits.recorder_max_streams,
            max_connections=config.limits.recorder_max_connections,
            max_pending_per_address=config.limits.recorder_max_pending_per_address,
            ssl_context=recorder_tls_context(rec.tls),
        )
        self.calls = CallBook(match=lambda info: match_rule(self.config.rules, info), make_token=self._token,
                              max_streams=config.limits.max_streams)
        esl = config.esl
        self.esl = EventSocketClient(
            esl.host,
            esl.port,
            esl.password,
            connect_timeout=esl.connect_timeout_s,
            command_timeout=esl.command_timeout_s,
            liveness_timeout=esl.liveness_timeout_s,
            backoff=Backoff(esl.reconnect.initial_s, esl.reconnect.max_s, esl.reconnect.multiplier,
                            esl.reconnect.jitter),
            on_connect=self._on_esl_connect,
            on_disconnect=self._on_esl_disconnect,
        )
        metrics.RECORDINGS_OPEN.set_function(lambda: len(self.recorder.open_recordings()))
        metrics.RECORDER_UPKEEP_ERRORS.set_function(lambda: self.recorder.upkeep_errors)
        metrics.LIVE_AUDIO.watch(self.recorder)
        self.esl.round_trip_observer = metrics.ESL_ROUND_TRIP.observe
        self.http: HttpListener | None = None
        self.http_port: int | None = None
        self.hooks = HookQueue(rec.directory, self._hook_for, on_change=metrics.HOOK_QUEUE.set,
                               on_outcome=lambda kind, outcome: metrics.HOOK_DELIVERIES.labels(kind, outcome).inc())
        # The catalog, the bucket and the hook for each finished recording (issue #18); each recording knows its
        # switch (StreamSpec.switch, from its CHANNEL_ANSWER's FreeSWITCH-Hostname).
        self.archive = Archive(config, submit_hook=self.hooks.submit)
        self.esl.register_handle("CHANNEL_ANSWER", self._on_answer)
        self.esl.register_handle("CHANNEL_HANGUP_COMPLETE", self._on_hangup)
        self.esl.register_handle("mod_audio_stream::connect", self._on_stream_connect)
        self.esl.register_handle("mod_audio_stream::error", self._on_stream_error)
        self.esl.register_handle("mod_audio_stream::disconnect", self._on_stream_disconnect)
        self.esl.register_handle("mod_audio_stream::json", self._on_stream_json)
        # Relayed calls: the agent's audio the module wrote to a file, playbacks, the caller's keys.
        self.esl.register_handle("mod_audio_stream::play", self._on_stream_play)
        self.esl.register_handle("PLAYBACK_STOP", self._on_playback)
        self.esl.register_handle("filestring::open", self._on_filestring)
        self.esl.register_handle("filestring::close", self._on_filestring)
        self.esl.register_handle("DTMF", self._on_dtmf)
        self.relays: dict[str, AgentLink] = {}  # calls whose audio goes to a voice agent, by call key
        # Called with (uuid, reason) for each finalised recording: the demo and tests watch here.
        self.recording_listeners: list = []
        self._wakeup = GeventEvent()
        self._stopping = GeventEvent()
        self._timer: gevent.Greenlet | None = None
        self._reconcile_retry: gevent.Greenlet | None = None
        # A failed reconcile (FreeSWITCH slow to list channels) is tried again after this long while connected.
        self.reconcile_retry_s = 5.0
        self.recorder_port: int | None = None
        # Where FreeSWITCH reaches the recorder; tests that bind port 0 set it once the port is known.
        self.public_url = config.recorder.public_url

    def _token(self) -> str:
        return self.config.recorder.token or secrets.token_urlsafe(24)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        rec = self.config.recorder
        self.recorder_port = self.recorder.start(rec.listen_host, rec.listen_port)
        if self.public_url is None:  # listen_port 0: any free port, told to FreeSWITCH in each start
            self.public_url = f"{'wss' if rec.tls else 'ws'}://{rec.listen_host}:{self.recorder_port}"
        log.info("recorder listening on %s:%s, writing to %s", rec.listen_host, self.recorder_port, rec.directory)
        self.hooks.start()
        self.archive.start()
        http = self.config.metrics
        if http is not None and http.enabled:
            self.http = HttpListener(self)  # its test calls: ops.chain.ControllerChainTest
            self.http_port = self.http.start(http.listen_host, http.listen_port)
            log.info("HTTP listener (/healthz, /metrics, /calls) on %s:%s", http.listen_host, self.http_port)
        self.esl.start()
        self._timer = gevent.spawn(self._run_timers)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        self.esl.close(timeout=min(timeout, 2.0))
        self.recorder.stop(timeout=timeout)
        self.hooks.stop()  # deliveries not made yet stay on disk for the next start
        self.archive.stop()  # so do catalog writes and uploads
        if self.http is not None:
            self.http.stop()
        for greenlet in (self._timer, self._reconcile_retry):
            if greenlet is not None:
                greenlet.kill(block=False)

    def reload(self) -> bool:
        """Re-read the rules and limits; a broken file is refused and the ones in force stay. Live calls keep
        theirs. The other sections are read at start only: a change there is logged as needing a restart."""
        if not self.config_path:
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the current rules: %s", exc)
            return False
        unapplied = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(self.config, name)]
        unapplied += [f"limits.{name}" for name in ("recorder_max_streams", "recorder_max_connections",
                                                    "recorder_max_pending_per_address")
                      if getattr(new.limits, name) != getattr(self.config.limits, name)]
        self.config = dataclasses.replace(self.config, rules=new.rules, limits=new.limits)
        self.calls.max_streams = new.limits.max_streams
        log.info("reloaded %d rules and the limits from %s", len(new.rules), self.config_path)
        if unapplied:
            log.warning("reload: %s changed in %s; restart the controller to apply %s", ", ".join(unapplied),
                        self.config_path, "them" if len(unapplied) > 1 else "it")
        return True

    def serve_forever(self) -> None:
        gevent.signal_handler(signal.SIGTERM, self._stopping.set)
        gevent.signal_handler(signal.SIGINT, self._stopping.set)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        self.start()
        self._stopping.wait()
        log.info("stopping: finalising open recordings")
        self.stop()

    # ---- events in ------------------------------------------------------------------------------------

    def _on_esl_connect(self, client) -> None:
        metrics.ESL_CONNECTED.set(1)
        self.reconcile()

    def reconcile(self) -> None:
        """After any (re)connect: events may have been missed, so ask FreeSWITCH what is live."""
        try:
            rows = channel_rows(self.esl.api("show channels as json"))
        except (CommandError, CommandTimeout, NotConnectedError, ValueError) as exc:
            # Until it succeeds, calls whose hangup was missed would hold their stream slots for good.
            log.error("reconcile: cannot list channels: %s; trying again in %g s", exc, self.reconcile_retry_s)
            pending = self._reconcile_retry  # one retry at a time (this may be it, failing again)
            if pending is None or pending.dead or pending is gevent.getcurrent():
                self._reconcile_retry = gevent.spawn_later(self.reconcile_retry_s, self._reconcile_if_connected)
            return
        # Every listed channel is alive (UNHELD, RINGING, ... too); only answered ones are streamed.
        present = {call_key(str(row["uuid"])) for row in rows if row.get("uuid")}
        answered = [CallInfo.from_channel_row(row) for row in rows
                    if row.get("callstate") in ("ACTIVE", "HELD") and row.get("uuid")]
        actions = self.calls.reconcile(answered, set(self.recorder.open_recordings()), time.monotonic(),
                                       present=present)
        log.info("reconcile: %d answered channels live, %d actions", len(answered), len(actions))
        self._apply(actions)

    def _reconcile_if_connected(self) -> None:
        # After a reconnect, the reconcile on_connect runs makes this one redundant.
        if self.esl.connected and not self._stopping.is_set():
            self.reconcile()

    def _on_esl_disconnect(self, reason: str) -> None:
        metrics.ESL_CONNECTED.set(0)
        metrics.ESL_DISCONNECTS.inc()

    def _on_recording_detached(self, uuid: str, reason: str) -> None:
        if reason in LOST_REASONS:
            # The recorder often sees a dead connection before the module's ::error reaches us.
            self._apply(self.calls.on_stream_lost(uuid, f"recorder: {reason}", time.monotonic()))

    def _on_recording_open(self, uuid: str) -> None:
        """A stream connected to the recorder: a call whose rule relays gets its agent (once per call)."""
        call = self.calls.calls.get(uuid)
        if call is None or call.rule.relay is None or uuid in self.relays:
            return
        info, rule = call.info, call.rule
        details = CallDetails(uuid, info.channel_uuid, info.caller_number, info.destination, rule.name, rule.rate,
                              CHANNELS[rule.mix], rule.metadata)
        # from_number/to_number too: the names a stock Pipecat bot reads its call data from.
        parameters = {"caller": info.caller_number, "destination": info.destination, "rule": rule.name,
                      "from_number": info.caller_number, "to_number": info.destination}
        if rule.metadata is not None:
            parameters.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in rule.metadata.items()})
        parameters.update(rule.relay.custom_parameters)
        link = AgentLink(details, rule.relay, parameters=parameters,
                         send_to_module=lambda text: self.recorder.send_text(uuid, text),
                         command=lambda text: self.esl.api(text),
                         position=lambda: self.recorder.position(uuid))
        self.relays[uuid] = link
        self.recorder.set_tap(uuid, link.tap, link.stats)
        link.start()

    def _end_relay(self, uuid: str) -> None:
        link = self.relays.pop(uuid, None)
        if link is not None:
            self.recorder.set_tap(uuid, None)
            link.stop()
            log.info("call %s: relay to %s ended: %s", uuid, link.shown_url,
                     ", ".join(f"{k}={len(v) if k == 'turns' else v}" for k, v in link.stats.items()
                               if k not in ("agent", "protocol")))

    def _on_stream_play(self, event: Event) -> None:
        link = self.relays.get(call_key(event.uuid))
        if link is None:
            return
        try:
            link.file_ready(json.loads(event.body)["file"])
        except (ValueError, KeyError, TypeError):
            log.warning("call %s: mod_audio_stream::play without a file: %s", event.uuid, event.body[:200])

    def _on_playback(self, event: Event) -> None:
        link = self.relays.get(call_key(event.uuid))
        path = event.get("Playback-File-Path")
        if link is not None and path:
            link.playback_stopped(path)

    def _on_filestring(self, event: Event) -> None:
        """A talk-back file opened or closed by a file_string broadcast. The event names no channel (the file
        interface knows none), but the module's file does: <dir>/<channel uuid>_<n>.tmp.<ext>."""
        path = event.get("File") or ""
        uuid = call_of_file(path)
        link = self.relays.get(call_key(uuid)) if uuid else None
        if link is None:
            return
        if event.subclass == "filestring::open":
            link.file_opened(path)
        else:
            link.file_closed(path)

    def _on_dtmf(self, event: Event) -> None:
        link = self.relays.get(call_key(event.uuid))
        digit = event.get("DTMF-Digit")
        if link is not None and digit:
            link.dtmf(digit)

    def _on_recording_finished(self, recording) -> None:
        self._end_relay(recording.spec.uuid)
        sidecar = recording.sidecar
        metrics.LIVE_AUDIO.finished(sidecar.frames, recording.arrived_bytes)
        for gap in sidecar.gaps:
            metrics.GAPS.labels(gap["cause"]).inc()
            metrics.GAP_SECONDS.labels(gap["cause"]).inc(gap["frames"] / sidecar.rate)
        if sidecar.gaps_unlisted:
            metrics.GAPS.labels("unlisted").inc(sidecar.gaps_unlisted)
            metrics.GAP_SECONDS.labels("unlisted").inc(sidecar.gaps_unlisted_frames / sidecar.rate)
        if recording.file_failed or not recording.sidecar_saved or sidecar.close_reason in FAILED_REASONS:
            metrics.RECORDINGS_FAILED.inc()
        if not recording.spec.discard:
            self.archive.finished(recording.spec.rule_name, recording.path, recording.sidecar_path,
                                  recording.sidecar.to_dict(), recording.spec.switch or None)

    def _hook_for(self, rule_name: str):
        """The hook in force for a rule's recordings: the rule's own, else the global one."""
        for rule in self.config.rules:
            if rule.name == rule_name and rule.hook is not None:
                return rule.hook
        return self.config.hook

    def _on_recording_closed(self, uuid: str, reason: str) -> None:
        metrics.RECORDINGS_FINISHED.labels(reason).inc()
        if reason in DELIBERATE_REASONS:
            self.calls.on_recording_finished(uuid, reason)
        for listener in self.recording_listeners:
            listener(uuid, reason)

    def _on_answer(self, event: Event) -> None:
        metrics.CALLS_ANSWERED.inc()
        info = CallInfo.from_headers(event.headers)
        spec = self.registry.lookup(info.uuid)
        if spec is not None and spec.discard and info.uuid not in self.calls.calls:
            return  # the doctor's test call: it starts its own stream
        self._apply(self.calls.on_answer(info, time.monotonic()), answered=info.uuid,
                    answered_at=event.received_at)

    def _on_hangup(self, event: Event) -> None:
        self._apply(self.calls.on_hangup(call_key(event.uuid), event_moment(event, time.time(), time.monotonic())))

    def _on_stream_connect(self, event: Event) -> None:
        log.info("call %s: module connected to the recorder", event.uuid)
        self.calls.on_stream_connected(call_key(event.uuid), time.monotonic())

    def _on_stream_error(self, event: Event) -> None:
        log.error("call %s: mod_audio_stream error %s", event.uuid, event.body)
        metrics.STREAM_ERRORS.labels(_error_code(event.body)).inc()
        self._apply(self.calls.on_stream_lost(call_key(event.uuid), f"module error {event.body}", time.monotonic()))

    def _on_stream_disconnect(self, event: Event) -> None:
        log.warning("call %s: WebSocket closed by the server side %s", event.uuid, event.body)
        metrics.STREAM_DISCONNECTS.inc()
        self._apply(self.calls.on_stream_lost(call_key(event.uuid), f"disconnected {event.body}", time.monotonic()))

    def _on_stream_json(self, event: Event) -> None:
        log.info("call %s: module relayed text %s", event.uuid, event.body)

    # ---- actions out ----------------------------------------------------------------------------------

    def _apply(self, actions, answered: str | None = None, answered_at: float = 0.0) -> None:
        """`answered`: the call whose CHANNEL_ANSWER is being handled here, in that call's own event greenlet
        (read from the socket at `answered_at`)."""
        for action in actions:
            if isinstance(action, StartStream):
                if action.call.uuid == answered:
                    # The caller is already talking: write the start from here, no hop first. This greenlet
                    # serves only this call's events (the client dispatches each channel in its own), and
                    # _start_stream waits for nothing but the write, so no other call is held up.
                    self._start_stream(action)
                    if answered_at:
                        metrics.ANSWER_TO_START.observe(time.monotonic() - answered_at)
                else:
                    gevent.spawn(self._start_stream, action)
            elif isinstance(action, StopStream):
                gevent.spawn(self._stop_stream, action.call, action.reason, action.close_reason)
            elif isinstance(action, ForgetCall):
                self.registry.forget(action.uuid)
                self.recorder.end_call(action.uuid, at=action.at)
            elif isinstance(action, NotStreamed):
                metrics.CALLS_NOT_STREAMED.labels(action.reason).inc()
                level = logging.WARNING if action.reason == "limit" else logging.INFO
                log.log(level, "call %s not streamed (%s): %s", action.uuid, action.reason, action.detail)
        self._wakeup.set()

    def _start_stream(self, start: StartStream) -> None:
        """Announce the stream to the recorder and write its commands in one send; a greenlet of its own awaits
        the results. One round trip from here to the module starting: FreeSWITCH runs an api before it reads
        the next command, so the variables (and, on a restart, the stop) are done when the start's job runs."""
        call = start.call
        rule, info = call.rule, call.info
        try:
            spec = StreamSpec(
                uuid=info.uuid, token=call.token, rate=rule.rate, channels=CHANNELS[rule.mix],
                caller=info.caller_number, destination=info.destination, rule_name=rule.name,
                metadata=audio_stream.metadata_json(rule.metadata) if rule.metadata is not None else None,
                heartbeat_s=rule.heartbeat_s,
                discard=not rule.record,  # relayed only: the recorder keeps no WAV
                mix=rule.mix,
                switch=info.switch,
            )
            url, texts = audio_stream.start_commands(info.channel_uuid, info.uuid, rule, call.token, self.public_url,
                                                     restart=start.restart)
            commands = [api_command(text) if kind == "api" else bgapi_command(text) for kind, text in texts]
        except ValueError as exc:
            # Nothing is sent for a call whose arguments would be refused (or worse, leak a WebSocket).
            log.error("call %s: not streamed, invalid stream arguments: %s", info.uuid, exc)
            self.calls.on_start_result(start, False, str(exc), time.monotonic(), permanent=True)
            return
        # A start that waited (a retry's delay, a greenlet's turn) may find the call hung up, stopped or started
        # anew by a newer action: then it goes no further, nor announces a stream nobody would forget.
        if not self.calls.still_starting(start):
            log.info("call %s: start %d abandoned: the call ended, was stopped or started anew",
                     info.uuid, start.attempt)
            return
        self.registry.expect(spec)
        if info.switch:  # for recordings an earlier version left without their own
            self.archive.switch_hostname = info.switch
        pending = self.esl.send_in_order(commands)
        gevent.spawn(self._start_result, start, pending, url)

    def _start_result(self, start: StartStream, pending: InOrder, url: str) -> None:
        rule, info = start.call.rule, start.call.info
        # The stop's reply (restarts) says nothing about the new stream: -ERR when the module had detached.
        *_, variables, started = pending.results()
        detail = _reply_detail(variables)
        if detail.startswith("+OK"):
            detail = _reply_detail(started)
        # A start whose variables were not set (the call gone: -ERR No such channel!) counts as failed whatever
        # the module said: without STREAM_EXTRA_HEADERS its connection would carry no token.
        ok = detail.startswith("+OK")
        metrics.STREAM_STARTS.labels(rule.name).inc()
        if ok:
            log.info("call %s: stream start accepted (%s %s Hz) -> %s", info.uuid, rule.mix, rule.rate, url)
        else:
            metrics.STREAM_START_FAILURES.inc()
        self._apply(self.calls.on_start_result(start, ok, detail, time.monotonic()))

    def _stop_stream(self, call, reason: str, close_reason: str | None = None) -> None:
        log.info("call %s: stopping stream: %s", call.uuid, reason)
        metrics.STREAM_STOPS.inc()
        # Stopped on purpose: the recording ends when this connection closes, whatever the call does next,
        # and a stream that comes anyway (a start that landed after the stop) is refused, not a second file.
        self.registry.forget(call.uuid)
        self.recorder.end_call(call.uuid, reason=close_reason)
        try:
            reply = self.esl.bgapi(audio_stream.stop_command(call.info.channel_uuid)).strip()
        except (CommandTimeout, NotConnectedError) as exc:
            # Lost with the connection: the module may still hold the stream (and one of its licensed
            # slots). The reconcile after the reconnect sends the stop again.
            log.warning("call %s: stop not confirmed (%s); it is sent again after the reconnect", call.uuid, exc)
            self.calls.on_stop_result(call, delivered=False)
            return
        except CommandError as exc:
            reply = str(exc)
        self.calls.on_stop_result(call, delivered=True)
        if not reply.startswith("+OK"):
            log.warning("call %s: stop answered %r", call.uuid, reply)

    def _run_timers(self) -> None:
        while not self._stopping.is_set():
            deadline = self.calls.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wakeup.wait(wait)
            self._wakeup.clear()
            self._apply_due()

    def _apply_due(self) -> None:
        actions = self.calls.due(time.monotonic())
        if actions:
            self._apply(actions)


def recorder_tls_context(tls) -> ssl.SSLContext | None:
    """The recorder's TLS (wss://) from recorder.tls, or None for plain ws://."""
    if tls is None:
        return None
    try:
        return tls_context(tls.certfile, tls.keyfile)
    except ValueError as exc:
        raise ConfigError("configuration", None, "recorder.tls", str(exc), "a PEM certificate (chain) and its "
                          "unencrypted private key") from exc


def _reply_detail(result: str | Exception) -> str:
    """A command's result for logs and the call's errors: its first line (FreeSWITCH appends a usage line to
    some errors, e.g. uuid_setvar_multi's -ERR No such channel!), or the exception's message."""
    if isinstance(result, Exception):
        return str(result)
    return result.strip().split("\n", 1)[0]


def _error_code(body: str) -> str:
    try:
        return str(json.loads(body)["message"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unknown"
